//! The data path, start to finish: reserve memory, ask Gemini, stream the
//! response through the extractor into a storage upload, check what came
//! back, and commit — or abort, leaving nothing behind. MCP tools and the
//! command line both call `Pipeline::run`; nothing else touches Gemini or
//! storage on a request's behalf.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::extract::sniff::{self, ImageFormat};
use crate::extract::{Event, ExtractError, Extractor, Limits, Summary, Usage};
use crate::gemini::{self, GeminiClient, GeminiError, ImageOptions, RequestBody};
use crate::memory::{Budget, Busy};
use crate::store::{StorageKind, Store, StoreError, Stored, Upload};

/// What the caller learns about a stored image (the tool's structured
/// output).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    /// Where to fetch the image: an https URL (Azure, read SAS unless
    /// public) or a file:// URL (local folder).
    pub url: String,
    /// The old server's field, kept for existing prompts and scripts: the
    /// blob URL for Azure, null for local files.
    pub azure_url: Option<String>,
    /// The file path, when stored in the local folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub storage: StorageKind,
    pub blob_name: String,
    /// From the bytes themselves, not from what the model declared.
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub model: String,
    /// Text the model sent with the image, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub prompt: String,
    pub created_at: String,
    /// Gemini 3's signature for multi-turn edits; kept server-side.
    #[serde(skip)]
    #[schemars(skip)]
    pub thought_signature: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Busy(#[from] Busy),
    #[error("invalid arguments: {0}")]
    Invalid(String),
    #[error("{0}")]
    Gemini(#[from] GeminiError),
    #[error("Gemini's response could not be used: {0}")]
    Extract(#[from] ExtractError),
    #[error("Gemini reported an error mid-response: {0}")]
    Stream(String),
    #[error("{0}")]
    NoImage(String),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("Gemini stopped sending for {} s; the call was abandoned", .0.as_secs())]
    ReadTimeout(Duration),
    #[error("the request was cancelled; nothing was stored")]
    Cancelled,
    #[error("{0}")]
    Input(String),
}

impl PipelineError {
    /// A short kind for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineError::Busy(_) => "busy",
            PipelineError::Invalid(_) => "invalid",
            PipelineError::Gemini(e) => e.kind(),
            PipelineError::Extract(_) => "bad_response",
            PipelineError::Stream(_) => "stream_error",
            PipelineError::NoImage(_) => "no_image",
            PipelineError::Store(e) => e.kind(),
            PipelineError::ReadTimeout(_) => "read_timeout",
            PipelineError::Cancelled => "cancelled",
            PipelineError::Input(_) => "input",
        }
    }
}

/// Milestones of one call, for progress notifications and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Memory reserved; asking the model.
    Requesting,
    /// Response headers arrived; the model is generating.
    Waiting,
    /// Image bytes are arriving and being uploaded.
    Receiving {
        bytes: u64,
    },
    Committing,
    Committed {
        bytes: u64,
    },
}

pub trait Progress: Send + Sync {
    fn stage(&self, stage: Stage);
    fn retry(&self, _attempt: u32, _delay: Duration, _reason: &str) {}
}

impl Progress for () {
    fn stage(&self, _: Stage) {}
}

struct RetryToProgress<'a>(&'a dyn Progress);

impl gemini::RetryObserver for RetryToProgress<'_> {
    fn retrying(&self, attempt: u32, delay: Duration, reason: &str) {
        self.0.retry(attempt, delay, reason);
    }
}

/// One image request.
pub struct Job {
    pub prompt: String,
    pub options: ImageOptions,
    /// `generated` or `edited`: the blob name's prefix.
    pub prefix: &'static str,
    /// Produces the request body for each attempt.
    pub body: Box<dyn Fn() -> RequestBody + Send + Sync>,
    /// Memory the request's input streams need beyond the output path.
    pub extra_reservation: u64,
    /// Input files the body streams from; kept until the call ends.
    pub inputs: Vec<crate::inputs::Prepared>,
}

impl Job {
    /// A text-to-image request.
    pub fn generate(prompt: String, options: ImageOptions) -> Self {
        let body = gemini::request::text_request(&prompt, &options);
        Self {
            prompt,
            options,
            prefix: "generated",
            body: Box::new(move || RequestBody::Json(body.clone())),
            extra_reservation: 0,
            inputs: Vec::new(),
        }
    }
}

/// Tunables of the data path.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub limits: Limits,
    /// Put Block requests in flight per upload (Azure).
    pub blocks_in_flight: usize,
    pub read_timeout: Duration,
    pub max_prompt_bytes: usize,
    /// Benchmark reference only: the old server's way (buffer the whole
    /// response, parse it, decode the whole image, upload it in one
    /// request), so both designs can be measured in one build.
    pub naive: bool,
}

impl PipelineConfig {
    /// The most memory one request's output path can hold at once: the
    /// block being filled, one more (the first block, held back until the
    /// image is known to need more than one; later, the block the sha256
    /// thread is hashing, if the uploads have already let go of it), the
    /// blocks in flight, and a margin for HTTP buffers and bookkeeping.
    pub fn per_request_bytes(&self) -> u64 {
        let block = self.limits.block_size as u64;
        block * (self.blocks_in_flight as u64 + 2)
            + self.limits.max_text_bytes as u64
            + self.limits.max_signature_bytes as u64
            + (1 << 20)
    }
}

pub struct Pipeline {
    pub gemini: GeminiClient,
    pub store: Arc<Store>,
    pub budget: Budget,
    pub cfg: PipelineConfig,
    /// Block buffers shared by all requests.
    pub pool: crate::memory::pool::BlockPool,
}

impl Pipeline {
    /// Run one job to a stored image or an error; on any error nothing is
    /// left in storage.
    pub async fn run(
        &self,
        job: Job,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<ImageResult, PipelineError> {
        if job.prompt.trim().is_empty() {
            return Err(PipelineError::Invalid("prompt is empty".into()));
        }
        if job.prompt.len() > self.cfg.max_prompt_bytes {
            return Err(PipelineError::Invalid(format!(
                "prompt is {} bytes; the limit is {} (--max-prompt-bytes)",
                job.prompt.len(),
                self.cfg.max_prompt_bytes
            )));
        }
        let need = self.cfg.per_request_bytes() + job.extra_reservation;
        let _reservation = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = self.budget.reserve(need, job.prefix) => r?,
        };
        progress.stage(Stage::Requesting);
        let started = Instant::now();
        let observer = RetryToProgress(progress);
        let streaming = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = self.gemini.send(&*job.body, &observer) => r?,
        };
        progress.stage(Stage::Waiting);
        if self.cfg.naive {
            return self.naive(streaming, job, started).await;
        }
        let mut images = Images::new(&self.store, job.prefix);
        let outcome = self.stream(streaming, &mut images, progress, cancel).await;
        // Gemini's last byte has been read: what follows is the latency
        // this server adds (the last block, the commit).
        let body_done = Instant::now();
        let summary = match outcome {
            Ok(s) => s,
            Err(e) => {
                images.abort_all().await;
                return Err(e);
            }
        };
        let Some(done) = images.result.take() else {
            images.abort_all().await;
            return Err(explain_no_image(&summary));
        };
        if let Some(err) = &summary.error {
            images.abort_all().await;
            done.abort().await;
            return Err(PipelineError::Stream(format!(
                "{} {}",
                err.status, err.message
            )));
        }
        if summary.finish_reason.is_none() {
            done.abort().await;
            return Err(PipelineError::Extract(ExtractError::Truncated(
                "the stream ended before Gemini said it had finished",
            )));
        }
        progress.stage(Stage::Committing);
        let meta = done.meta.clone();
        let stored = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = done.commit(&self.store) => r?,
        };
        progress.stage(Stage::Committed { bytes: meta.bytes });
        tracing::info!(
            blob = %stored.blob_name,
            bytes = meta.bytes,
            ms = started.elapsed().as_millis() as u64,
            after_last_byte_ms = body_done.elapsed().as_millis() as u64,
            "image stored"
        );
        Ok(ImageResult {
            azure_url: (stored.storage == StorageKind::Azure).then(|| stored.url.clone()),
            url: stored.url,
            path: stored.path.map(|p| p.display().to_string()),
            storage: stored.storage,
            blob_name: stored.blob_name,
            content_type: meta.format.mime().to_string(),
            bytes: meta.bytes,
            sha256: hex::encode(meta.sha256),
            width: meta.dims.map(|d| d.0),
            height: meta.dims.map(|d| d.1),
            model: summary
                .model_version
                .clone()
                .unwrap_or_else(|| self.gemini.config().model.clone()),
            text: Some(summary.text.clone()).filter(|t| !t.trim().is_empty()),
            finish_reason: summary.finish_reason.clone(),
            usage: summary.usage.clone(),
            prompt: job.prompt,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            thought_signature: meta.thought_signature,
        })
    }

    /// Read the body to its end, feeding image blocks to storage as they
    /// are sealed.
    async fn stream(
        &self,
        streaming: gemini::Streaming,
        images: &mut Images<'_>,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Summary, PipelineError> {
        let mut extractor =
            Extractor::with_pool(streaming.framing, self.cfg.limits, self.pool.clone());
        let mut body = streaming.response.bytes_stream();
        let mut events = Vec::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
                n = tokio::time::timeout(self.cfg.read_timeout, body.next()) => n,
            };
            let chunk = match next {
                Err(_) => return Err(PipelineError::ReadTimeout(self.cfg.read_timeout)),
                Ok(None) => break,
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    let timed_out = e.is_timeout();
                    drop(e);
                    if timed_out {
                        return Err(PipelineError::ReadTimeout(self.cfg.read_timeout));
                    }
                    return Err(PipelineError::Extract(ExtractError::Truncated(
                        "the connection to Gemini broke mid-response",
                    )));
                }
            };
            extractor.feed(&chunk, &mut events)?;
            for ev in events.drain(..) {
                images.handle(ev, progress).await?;
            }
        }
        Ok(extractor.finish()?)
    }
}

impl Pipeline {
    /// The buffered reference path (see `PipelineConfig::naive`).
    async fn naive(
        &self,
        streaming: gemini::Streaming,
        job: Job,
        started: Instant,
    ) -> Result<ImageResult, PipelineError> {
        use base64::Engine as _;
        let mut body = Vec::new();
        let mut stream = streaming.response.bytes_stream();
        while let Some(c) = stream.next().await {
            let c = c.map_err(|_| {
                PipelineError::Extract(ExtractError::Truncated("the connection broke"))
            })?;
            body.extend_from_slice(&c);
        }
        let values: Vec<serde_json::Value> = match streaming.framing {
            crate::extract::Framing::Json => {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(serde_json::Value::Array(a)) => a,
                    Ok(v) => vec![v],
                    Err(_) => return Err(PipelineError::Extract(ExtractError::Syntax("json"))),
                }
            }
            crate::extract::Framing::Sse => String::from_utf8_lossy(&body)
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|l| serde_json::from_str(l.trim()).ok())
                .collect(),
        };
        drop(body);
        let mut data = None;
        let mut finish = None;
        for v in &values {
            for part in v["candidates"][0]["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if part["thought"] == true {
                    continue;
                }
                if let Some(d) = part["inlineData"]["data"].as_str() {
                    data = Some(d.to_string());
                }
            }
            if let Some(f) = v["candidates"][0]["finishReason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        drop(values);
        let b64 = data.ok_or_else(|| PipelineError::NoImage("no image".into()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| PipelineError::Extract(ExtractError::InvalidBase64("naive")))?;
        drop(b64);
        let format =
            sniff::sniff(&bytes).ok_or_else(|| PipelineError::NoImage("not an image".into()))?;
        let dims = sniff::dimensions(format, &bytes);
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let n = bytes.len() as u64;
        let name = crate::store::blob_name(job.prefix, format.extension());
        let stored = self
            .store
            .put_small(name, format.mime(), Bytes::from(bytes))
            .await?;
        tracing::info!(
            bytes = n,
            ms = started.elapsed().as_millis() as u64,
            "image stored (naive reference path)"
        );
        Ok(ImageResult {
            azure_url: (stored.storage == StorageKind::Azure).then(|| stored.url.clone()),
            url: stored.url,
            path: stored.path.map(|p| p.display().to_string()),
            storage: stored.storage,
            blob_name: stored.blob_name,
            content_type: format.mime().to_string(),
            bytes: n,
            sha256: sha,
            width: dims.map(|d| d.0),
            height: dims.map(|d| d.1),
            model: self.gemini.config().model.clone(),
            text: None,
            finish_reason: finish,
            usage: Usage::default(),
            prompt: job.prompt,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            thought_signature: None,
        })
    }
}

/// Facts about an image, gathered while it streams.
#[derive(Debug, Clone)]
struct ImageMeta {
    format: ImageFormat,
    dims: Option<(u32, u32)>,
    bytes: u64,
    sha256: [u8; 32],
    thought_signature: Option<String>,
}

/// Where a finished image's bytes are.
enum Held {
    /// The whole image fit in one block: one Put Blob at commit.
    Small(Bytes),
    Upload(Upload),
}

struct Done {
    name: String,
    held: Held,
    meta: ImageMeta,
}

impl Done {
    async fn commit(self, store: &Store) -> Result<Stored, StoreError> {
        match self.held {
            Held::Small(b) => store.put_small(self.name, self.meta.format.mime(), b).await,
            Held::Upload(u) => u.commit().await,
        }
    }

    async fn abort(self) {
        if let Held::Upload(u) = self.held {
            u.abort().await;
        }
    }
}

struct Current {
    image: u32,
    name: String,
    format: ImageFormat,
    dims: Option<(u32, u32)>,
    head: Vec<u8>,
    first: Option<Bytes>,
    upload: Option<Upload>,
    bytes: u64,
}

/// Images of one response: the one streaming now, and the last finished
/// non-thought image (the result, uncommitted).
struct Images<'a> {
    store: &'a Store,
    prefix: &'static str,
    current: Option<Current>,
    result: Option<Done>,
}

impl<'a> Images<'a> {
    fn new(store: &'a Store, prefix: &'static str) -> Self {
        Self {
            store,
            prefix,
            current: None,
            result: None,
        }
    }

    async fn handle(&mut self, ev: Event, progress: &dyn Progress) -> Result<(), PipelineError> {
        match ev {
            Event::Block(b) => {
                if b.index == 0 {
                    if let Some(old) = self.current.take() {
                        abort_current(old).await;
                    }
                    let format = sniff::sniff(&b.data).ok_or_else(|| {
                        PipelineError::NoImage(format!(
                            "Gemini sent image data that is not PNG, JPEG, WebP, GIF or HEIC (it starts with {})",
                            hex::encode(&b.data[..b.data.len().min(8)])
                        ))
                    })?;
                    let dims = sniff::dimensions(format, &b.data);
                    self.current = Some(Current {
                        image: b.image,
                        name: crate::store::blob_name(self.prefix, format.extension()),
                        format,
                        dims,
                        head: b.data[..b.data.len().min(64)].to_vec(),
                        bytes: b.data.len() as u64,
                        first: Some(b.data),
                        upload: None,
                    });
                } else if let Some(cur) = self.current.as_mut().filter(|c| c.image == b.image) {
                    cur.bytes += b.data.len() as u64;
                    if cur.upload.is_none() {
                        let mut up = self
                            .store
                            .begin(cur.name.clone(), cur.format.mime())
                            .await?;
                        if let Some(first) = cur.first.take() {
                            up.write(first).await?;
                        }
                        cur.upload = Some(up);
                    }
                    if let Some(up) = cur.upload.as_mut() {
                        up.write(b.data).await?;
                    }
                    progress.stage(Stage::Receiving { bytes: cur.bytes });
                }
            }
            Event::End(end) => {
                let Some(cur) = self.current.take().filter(|c| c.image == end.image) else {
                    // A thought image skipped without decoding, or empty data.
                    return Ok(());
                };
                if end.thought {
                    abort_current(cur).await;
                    return Ok(());
                }
                if !sniff::looks_complete(cur.format, &cur.head, &end.tail, end.bytes) {
                    abort_current(cur).await;
                    return Err(PipelineError::Extract(ExtractError::Truncated(
                        "the image data ends before the image does",
                    )));
                }
                let held = match (cur.upload, cur.first) {
                    (Some(u), _) => Held::Upload(u),
                    (None, Some(b)) => Held::Small(b),
                    (None, None) => return Ok(()),
                };
                let done = Done {
                    name: cur.name,
                    held,
                    meta: ImageMeta {
                        format: cur.format,
                        dims: cur.dims,
                        bytes: end.bytes,
                        sha256: end.sha256,
                        thought_signature: end.thought_signature,
                    },
                };
                // The last non-thought image is the result.
                if let Some(old) = self.result.replace(done) {
                    old.abort().await;
                }
            }
        }
        Ok(())
    }

    async fn abort_all(&mut self) {
        if let Some(c) = self.current.take() {
            abort_current(c).await;
        }
        if let Some(d) = self.result.take() {
            d.abort().await;
        }
    }
}

async fn abort_current(c: Current) {
    if let Some(u) = c.upload {
        u.abort().await;
    }
}

/// Why there is no image, in plain words.
fn explain_no_image(s: &Summary) -> PipelineError {
    if let Some(err) = &s.error {
        return PipelineError::Stream(format!("{} {}", err.status, err.message).trim().to_string());
    }
    if let Some(reason) = &s.block_reason {
        let msg = s.block_message.as_deref().unwrap_or(plain_reason(reason));
        return PipelineError::NoImage(format!(
            "Gemini blocked the prompt ({reason}): {msg}. Rephrase the prompt and try again."
        ));
    }
    match s.finish_reason.as_deref() {
        Some("STOP") | Some("MAX_TOKENS") | None if !s.text.trim().is_empty() => {
            let text: String = s.text.chars().take(500).collect();
            PipelineError::NoImage(format!(
                "Gemini answered with text and no image: \"{text}\". Ask for an image explicitly, or rephrase."
            ))
        }
        Some(reason) => {
            let msg = s.finish_message.as_deref().unwrap_or(plain_reason(reason));
            PipelineError::NoImage(format!("Gemini made no image ({reason}): {msg}"))
        }
        None => PipelineError::Extract(ExtractError::Truncated(
            "the response ended before any image or finish reason",
        )),
    }
}

fn plain_reason(reason: &str) -> &'static str {
    match reason {
        "SAFETY" | "IMAGE_SAFETY" => "the output was filtered by safety rules",
        "PROHIBITED_CONTENT" | "IMAGE_PROHIBITED_CONTENT" => {
            "the request or its output falls under the prohibited-use policy"
        }
        "RECITATION" | "IMAGE_RECITATION" => "the output resembled existing material too closely",
        "BLOCKLIST" => "the request contains blocked terms",
        "SPII" => "the output would contain sensitive personal information",
        "LANGUAGE" => "the language of the request is not supported",
        "NO_IMAGE" => "the model did not produce an image",
        "MAX_TOKENS" => "the output hit the token limit",
        "STOP" => "the model finished without an image",
        _ => "no further reason was given",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_image_explanations_are_plain() {
        let blocked = Summary {
            block_reason: Some("PROHIBITED_CONTENT".into()),
            ..Summary::default()
        };
        assert!(
            explain_no_image(&blocked)
                .to_string()
                .contains("blocked the prompt (PROHIBITED_CONTENT)")
        );
        let safety = Summary {
            finish_reason: Some("IMAGE_SAFETY".into()),
            finish_message: Some("filtered out. You will not be charged".into()),
            ..Summary::default()
        };
        assert!(
            explain_no_image(&safety)
                .to_string()
                .contains("You will not be charged")
        );
        let text = Summary {
            finish_reason: Some("STOP".into()),
            text: "I can't draw that".into(),
            ..Summary::default()
        };
        assert!(
            explain_no_image(&text)
                .to_string()
                .contains("I can't draw that")
        );
        assert!(matches!(
            explain_no_image(&Summary::default()),
            PipelineError::Extract(ExtractError::Truncated(_))
        ));
    }
}
