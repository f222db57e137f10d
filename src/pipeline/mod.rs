//! The data path, start to finish: reserve memory, ask Gemini, stream the
//! response through the extractor into a storage upload, check what came
//! back, and commit — or abort, leaving nothing behind. MCP tools and the
//! command line both call `Pipeline::run`; nothing else touches Gemini or
//! storage on a request's behalf.
//!
//! - `mod.rs`: the request (checked once), the job, the response loop;
//! - `images`: the per-response image decisions (result or thought,
//!   sniffing, completeness);
//! - `outcome`: the stored image, the errors, the progress milestones;
//! - `naive`: the buffered reference path, for benchmarks only.

mod images;
mod naive;
pub mod outcome;
pub mod quota;
pub mod spend;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::extract::{ExtractError, Extractor, Limits, Summary, Usage};
use crate::gemini::models::AskedOptions;
use crate::gemini::pricing::{Cost, PriceTable};
use crate::gemini::{self, GeminiClient, ImageOptions, ImageRequest, Turn};
use crate::inputs::Prepared;
use crate::memory::Budget;
use crate::memory::pool::BlockPool;
use crate::store::records::ImageId;
use crate::store::{StorageKind, Store};

use images::{Images, explain_no_image};
pub use outcome::{PipelineError, Progress, Stage, StoredImage};

struct RetryToProgress<'a>(&'a dyn Progress);

impl gemini::RetryObserver for RetryToProgress<'_> {
    fn retrying(&self, attempt: u32, delay: Duration, reason: &str) {
        self.0.retry(attempt, delay, reason);
    }
}

/// A prompt and options that passed every check: only `Pipeline::request`
/// makes one, so nothing reaches Gemini unchecked.
#[derive(Debug, Clone)]
pub struct Request {
    model: String,
    prompt: String,
    options: ImageOptions,
    count: u32,
}

impl Request {
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// The model this call runs on (the server's, or the one it named).
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// Which models a call may name (`--allowed-models`); the server's own
/// model is always allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedModels {
    Any,
    Only(Vec<String>),
}

/// The longest model id a call may name, and its characters: the id goes
/// into the request's URL path, so nothing that could end or bend it.
const MAX_MODEL_ID: usize = 128;

fn model_id_ok(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_MODEL_ID
        && m.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The previous turn of a conversation, for continue_editing on Gemini 3.
pub struct History {
    pub prompt: String,
    pub image: Prepared,
    pub signature: String,
}

/// One image request, ready to run.
pub struct Job {
    request: ImageRequest,
    /// `generated` or `edited`: the blob name's prefix.
    prefix: &'static str,
    /// Memory the request's input streams need while the body is sent,
    /// beyond a waiting call's own.
    extra_reservation: u64,
    /// The image id this edit started from, for the new image's record.
    parent: Option<String>,
    /// Images to make: separate requests, one reservation each.
    pub count: u32,
    /// Input files the body streams from; kept until every run of the
    /// job has ended.
    _inputs: Arc<Vec<Prepared>>,
    /// How long the call may wait for admission past the queue's length
    /// cap (a task: nobody holds a connection open for it, and their
    /// number is capped by `tasks::TaskSettings::max_running`).
    patience: Option<Duration>,
    /// Who asked (`ImageRecord::principal`): written on every image the
    /// job makes, and whose per-principal spend it counts against.
    principal: Option<String>,
}

impl Job {
    /// A text-to-image request.
    pub fn generate(req: Request) -> Self {
        Self {
            request: ImageRequest::text(req.model, req.prompt, req.options),
            prefix: "generated",
            extra_reservation: 0,
            parent: None,
            count: req.count,
            _inputs: Arc::new(Vec::new()),
            patience: None,
            principal: None,
        }
    }

    /// An edit of prepared inputs (the first is the image to edit), after
    /// an earlier turn when there is one.
    pub fn edit(req: Request, history: Option<History>, images: Vec<Prepared>) -> Self {
        let count = req.count;
        let mut request = ImageRequest::text(req.model, req.prompt, req.options);
        request.images = images.iter().map(Prepared::inline).collect();
        let mut keep = images;
        if let Some(h) = history {
            request.history = Some(Turn {
                prompt: h.prompt,
                image: h.image.inline(),
                signature: h.signature,
            });
            keep.push(h.image);
        }
        Self {
            request,
            prefix: "edited",
            // Read buffer, one base64 chunk and HTTP write buffers.
            extra_reservation: 1 << 20,
            parent: None,
            count,
            _inputs: Arc::new(keep),
            patience: None,
            principal: None,
        }
    }

    /// The model the job asks for.
    pub fn model(&self) -> &str {
        &self.request.model
    }

    /// The same request once more (another of a call's `count` images):
    /// a separate generation, sharing the input files.
    pub fn again(&self) -> Self {
        Self {
            request: self.request.clone(),
            prefix: self.prefix,
            extra_reservation: self.extra_reservation,
            parent: self.parent.clone(),
            count: 1,
            _inputs: Arc::clone(&self._inputs),
            patience: self.patience,
            principal: self.principal.clone(),
        }
    }

    /// Name who asked: their id goes on every image record and their
    /// daily spend counts this job.
    pub fn with_principal(mut self, principal: Option<String>) -> Self {
        self.principal = principal;
        self
    }

    /// Name the recorded image this edit started from.
    pub fn with_parent(mut self, parent: Option<String>) -> Self {
        self.parent = parent;
        self
    }

    /// Also reserve what the transport holds for this call while it
    /// waits (rmcp's per-request service over stateless HTTP).
    pub fn with_overhead(mut self, bytes: u64) -> Self {
        self.extra_reservation += bytes;
        self
    }

    /// Let the call wait up to `wait` for admission, outside the queue's
    /// length cap (tasks).
    pub fn with_patience(mut self, wait: Option<Duration>) -> Self {
        self.patience = wait;
        self
    }
}

/// Tunables of the data path.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub limits: Limits,
    /// Put Block requests in flight per upload (Azure).
    pub blocks_in_flight: usize,
    pub max_prompt_bytes: usize,
    /// Benchmark reference only: the old server's way (buffer the whole
    /// response, parse it, decode the whole image, upload it in one
    /// request), so both designs can be measured in one build.
    pub naive: bool,
    /// Make a small JPEG preview of each image while it streams.
    pub preview: bool,
}

/// What one call holds while it waits for Gemini, and then while its
/// response has started and it waits for image memory: the tool's future
/// (what runs after the wait is boxed, so it is not carried through it),
/// the request, and the HTTP/1.1 connection to Gemini with its buffers.
/// The HTTP connection and the request body are paid for separately, at
/// the edge, and rmcp's per-request service over stateless HTTP adds
/// `mcp::RMCP_STATELESS_CALL_BYTES`. Measured over stateless HTTP on the
/// direct path (`python3 scripts/wait_cost.py`, 500 of each): a waiting
/// call held 53 KiB above idle and a started one 52, 19 of them the
/// connection, so 33-34 KiB is the call's (BENCHMARKS.md).
pub const WAITING_CALL_BYTES: u64 = 36 << 10;

/// A response whose first bytes have arrived, with when its request was
/// sent.
struct Arrived {
    first: Option<bytes::Bytes>,
    response: gemini::Response,
    started: Instant,
}

/// How long a call whose response has started waits for the image path's
/// memory before it gives up. Longer than the admission queue's wait:
/// such a call has already been paid for by Gemini, and the wait ends as
/// soon as any streaming call finishes.
pub const STREAM_WAIT: Duration = Duration::from_secs(120);

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
            + crate::extract::MAX_GROUNDING_BYTES as u64
            + if self.preview {
                crate::preview::RESERVED_BYTES
            } else {
                0
            }
            + (1 << 20)
    }
}

pub struct Pipeline {
    pub gemini: GeminiClient,
    pub store: Arc<Store>,
    /// Calls admitted and not yet streaming: `WAITING_CALL_BYTES` each
    /// (plus an edit's input buffers), in a bounded FIFO queue.
    pub calls: Budget,
    /// Responses streaming image bytes: `per_request_bytes` each. Only a
    /// call holding a `calls` reservation waits here, so this queue is
    /// bounded by that budget.
    pub budget: Budget,
    pub cfg: PipelineConfig,
    /// Block buffers shared by all requests.
    pub pool: BlockPool,
    pub allowed_models: AllowedModels,
    pub prices: PriceTable,
    pub spend: spend::SpendCap,
    /// Limits per principal (calls per minute, at once, spend per day).
    pub quotas: quota::Quotas,
}

impl Pipeline {
    /// The model a call uses unless it names another.
    pub fn model(&self) -> &str {
        &self.gemini.config().model
    }

    /// The models a call may name, for messages and the status tool.
    pub fn allowed_models(&self) -> Vec<String> {
        match &self.allowed_models {
            AllowedModels::Any => vec!["*".into()],
            AllowedModels::Only(list) => {
                let mut all = vec![self.model().to_string()];
                all.extend(list.iter().filter(|m| *m != self.model()).cloned());
                all
            }
        }
    }

    /// A bounded metrics label for a model: the table's id for a model it
    /// knows, the server's own model, or "other".
    pub fn model_label(&self, model: &str) -> String {
        let info = gemini::models::info(model);
        if info.family != gemini::models::Family::Unknown {
            info.id.to_string()
        } else if model == self.model() {
            model.to_string()
        } else {
            "other".into()
        }
    }

    /// The model a call named, if it may: not retired, on the allow-list.
    fn pick_model(&self, asked: Option<&str>) -> Result<String, PipelineError> {
        let Some(m) = asked.map(str::trim).filter(|m| !m.is_empty()) else {
            return Ok(self.model().to_string());
        };
        if m == self.model() {
            return Ok(m.to_string());
        }
        if !model_id_ok(m) {
            return Err(PipelineError::Invalid(format!(
                "model {:?} is not a model id (letters, digits, '.', '-' and '_', at most {MAX_MODEL_ID})",
                outcome::cut(m, 64)
            )));
        }
        if let Some(new) = gemini::models::retired(m) {
            return Err(PipelineError::Unsupported(format!(
                "model {m} was shut down; use {new}"
            )));
        }
        match &self.allowed_models {
            AllowedModels::Any => Ok(m.to_string()),
            AllowedModels::Only(list) if list.iter().any(|a| a == m) => Ok(m.to_string()),
            AllowedModels::Only(_) => Err(PipelineError::Unsupported(format!(
                "model {m} is not allowed on this server; it allows {} (the operator sets NANO_BANANA_ALLOWED_MODELS)",
                self.allowed_models().join(", ")
            ))),
        }
    }

    /// Check a prompt, the model and its options, once, before any input
    /// is fetched or memory reserved.
    pub fn request(
        &self,
        prompt: String,
        model: Option<&str>,
        asked: AskedOptions<'_>,
    ) -> Result<Request, PipelineError> {
        let count = asked.count.unwrap_or(1);
        if !(1..=gemini::models::MAX_IMAGES_PER_CALL).contains(&count) {
            return Err(PipelineError::Invalid(format!(
                "n is {count}; ask for 1 to {} images",
                gemini::models::MAX_IMAGES_PER_CALL
            )));
        }
        let model = self.pick_model(model)?;
        let options =
            gemini::models::validate(&model, asked).map_err(PipelineError::Unsupported)?;
        if prompt.trim().is_empty() {
            return Err(PipelineError::Invalid("prompt is empty".into()));
        }
        if prompt.len() > self.cfg.max_prompt_bytes {
            return Err(PipelineError::Invalid(format!(
                "prompt is {} bytes; the limit is {} (--max-prompt-bytes)",
                prompt.len(),
                self.cfg.max_prompt_bytes
            )));
        }
        Ok(Request {
            model,
            prompt,
            options,
            count,
        })
    }

    /// Run one job to a stored image or an error; on any error nothing is
    /// left in storage.
    pub async fn run(
        &self,
        job: Job,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<StoredImage, PipelineError> {
        self.run_billed(job, progress, cancel).await.0
    }

    /// [`Pipeline::run`], and for a run that failed after Gemini sent an
    /// image (the stream then cut short or erred, or storing failed),
    /// what that answer is estimated to cost: Gemini bills an image it
    /// sent whether or not it was kept, so the spend cap and the metrics
    /// count it too. A filtered or blocked answer costs nothing.
    pub async fn run_billed(
        &self,
        job: Job,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> (Result<StoredImage, PipelineError>, Option<Cost>) {
        let parent = job.parent.clone();
        let principal = job.principal.clone();
        let model = job.request.model.clone();
        // The spend caps are checked first: a refusal costs nothing.
        let worst = self.prices.upper_bound(&model);
        let own = match self.quotas.hold_spend(principal.as_deref(), worst) {
            Ok(h) => h,
            Err(e) => return (Err(PipelineError::SpendCap(e.message)), None),
        };
        let hold = match self.spend.hold(worst) {
            Ok(h) => h,
            Err(e) => return (Err(PipelineError::SpendCap(e)), None),
        };
        let mut answered = None;
        let mut img = match self.store_image(job, progress, cancel, &mut answered).await {
            Ok(img) => img,
            Err(e) => {
                let cost =
                    answered.map(|(usage, queries)| self.prices.estimate(&model, &usage, queries));
                let usd = cost.as_ref().and_then(|c| c.usd).unwrap_or(0.0);
                hold.settle(usd);
                own.settle(usd);
                return (Err(e), cost);
            }
        };
        let cost = self
            .prices
            .estimate(&model, &img.usage, img.grounding.queries());
        hold.settle(cost.usd.unwrap_or(0.0));
        own.settle(cost.usd.unwrap_or(0.0));
        img.cost = Some(cost);
        img.parent = parent;
        img.principal = principal;
        self.record(&mut img).await;
        (Ok(img), None)
    }

    /// Store the record that lets any replica find `img` by id. The image
    /// is committed already and stays: a record that cannot be written
    /// costs the image its id, not the call (the result says why).
    async fn record(&self, img: &mut StoredImage) {
        let id = ImageId::new();
        match Box::pin(self.store.put_record(&img.record(&id))).await {
            Ok(()) => img.image_id = Some(id.to_string()),
            Err(e) => {
                tracing::warn!(blob = %img.blob_name, error = %e, "could not store the image record");
                img.record_error = Some(e.to_string());
            }
        }
    }

    async fn store_image(
        &self,
        job: Job,
        progress: &dyn Progress,
        cancel: &CancellationToken,
        answered: &mut Option<(Usage, u64)>,
    ) -> Result<StoredImage, PipelineError> {
        // Two reservations, taken in one order (calls, then images) and
        // never the other way round, so no cycle of waits can form: a call
        // waiting for image memory holds only a call reservation, and
        // image holders wait for nothing but Gemini and storage, which
        // end within their timeouts.
        let waiting = WAITING_CALL_BYTES + job.extra_reservation;
        let _call = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = async {
                match job.patience {
                    Some(wait) => self.calls.reserve_patient(waiting, job.prefix, wait).await,
                    None => self.calls.reserve(waiting, job.prefix).await,
                }
            } => r?,
        };
        progress.stage(Stage::Requesting);
        let started = Instant::now();
        let observer = RetryToProgress(progress);
        let mut response = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = self.gemini.generate(&job.request, &observer) => r?,
        };
        progress.stage(Stage::Waiting);
        // Waiting costs nothing: the image path's memory is taken when the
        // first bytes of the body arrive. Until it is granted, this call
        // reads no further, and flow control keeps the rest of the body
        // on Gemini's side.
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            c = response.next_chunk() => c?,
        };
        let _image = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = self.budget.reserve(self.cfg.per_request_bytes(), job.prefix) => r?,
        };
        // Boxed: a waiting call's future is sized by its largest state,
        // and what follows (the stream, the image's blocks, the commit) is
        // only ever live while the call holds image memory.
        Box::pin(self.stream_and_commit(
            Arrived {
                first,
                response,
                started,
            },
            job,
            progress,
            cancel,
            answered,
        ))
        .await
    }

    /// The part of [`Self::store_image`] after its image memory is granted.
    async fn stream_and_commit(
        &self,
        arrived: Arrived,
        job: Job,
        progress: &dyn Progress,
        cancel: &CancellationToken,
        answered: &mut Option<(Usage, u64)>,
    ) -> Result<StoredImage, PipelineError> {
        let Arrived {
            first,
            response,
            started,
        } = arrived;
        if self.cfg.naive {
            return self.naive(first, response, job, started).await;
        }
        let mut images = Images::new(Arc::clone(&self.store), job.prefix, self.cfg.preview);
        let outcome = self
            .stream(first, response, &mut images, progress, cancel)
            .await;
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
        let Some(mut done) = images.take_result() else {
            images.abort_all().await;
            return Err(explain_no_image(&summary));
        };
        // An image came: from here on a failure is billed (a filtered or
        // blocked answer is not, as Google says).
        *answered = Some((summary.usage.clone(), summary.grounding.queries()));
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
        let preview = match done.preview.take() {
            Some(p) => p.finish().await,
            None => None,
        };
        let stored = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            r = done.commit() => r?,
        };
        progress.stage(Stage::Committed { bytes: meta.bytes });
        tracing::info!(
            blob = %stored.blob_name,
            bytes = meta.bytes,
            ms = started.elapsed().as_millis() as u64,
            after_last_byte_ms = body_done.elapsed().as_millis() as u64,
            "image stored"
        );
        Ok(StoredImage {
            url: stored.url,
            path: stored.path,
            storage: stored.storage,
            blob_name: stored.blob_name,
            content_type: meta.format.mime(),
            bytes: meta.bytes,
            sha256: hex::encode(meta.sha256),
            width: meta.dims.map(|d| d.0),
            height: meta.dims.map(|d| d.1),
            model: summary
                .model_version
                .clone()
                .unwrap_or_else(|| job.request.model.clone()),
            text: Some(summary.text.clone()).filter(|t| !t.trim().is_empty()),
            finish_reason: summary.finish_reason.clone(),
            usage: summary.usage.clone(),
            grounding: summary.grounding.clone(),
            cost: None,
            prompt: job.request.prompt,
            created_at: now_rfc3339(),
            thought_signature: meta.thought_signature,
            preview,
            image_id: None,
            record_error: None,
            parent: None,
            principal: None,
        })
    }

    /// Read the body to its end, feeding image blocks to storage as they
    /// are sealed.
    async fn stream(
        &self,
        first: Option<bytes::Bytes>,
        mut response: gemini::Response,
        images: &mut Images,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Summary, PipelineError> {
        let mut extractor =
            Extractor::with_pool(response.framing, self.cfg.limits, self.pool.clone());
        let mut events = Vec::new();
        let mut next = first;
        while let Some(chunk) = next {
            extractor.feed(&chunk, &mut events)?;
            for ev in events.drain(..) {
                images.handle(ev, progress).await?;
            }
            next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
                n = response.next_chunk() => n?,
            };
        }
        Ok(extractor.finish()?)
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl StoredImage {
    /// True when the image went to Azure Blob Storage.
    pub fn is_azure(&self) -> bool {
        self.storage == StorageKind::Azure
    }
}
