//! The buffered reference path (`PipelineConfig::naive`): the old server's
//! way — buffer the whole response, parse it, decode the whole image,
//! upload it in one request — kept so both designs can be measured in one
//! build. Never used in production.

use std::time::Instant;

use bytes::Bytes;

use crate::extract::sniff;
use crate::extract::{ExtractError, Usage};
use crate::gemini;

use super::{Job, Pipeline, PipelineError, StoredImage};

impl Pipeline {
    /// The buffered reference path (see `PipelineConfig::naive`).
    pub(super) async fn naive(
        &self,
        first: Option<Bytes>,
        mut response: gemini::Response,
        job: Job,
        started: Instant,
    ) -> Result<StoredImage, PipelineError> {
        use base64::Engine as _;
        let mut body = first.map(Vec::from).unwrap_or_default();
        while let Some(c) = response.next_chunk().await? {
            body.extend_from_slice(&c);
        }
        let values: Vec<serde_json::Value> = match response.framing {
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
        let mut upload = self.store.upload(name, format.mime());
        upload.write(Bytes::from(bytes)).await?;
        let stored = upload.commit().await?;
        tracing::info!(
            bytes = n,
            ms = started.elapsed().as_millis() as u64,
            "image stored (naive reference path)"
        );
        Ok(StoredImage {
            url: stored.url,
            path: stored.path,
            storage: stored.storage,
            blob_name: stored.blob_name,
            content_type: format.mime(),
            bytes: n,
            sha256: sha,
            width: dims.map(|d| d.0),
            height: dims.map(|d| d.1),
            model: job.request.model.clone(),
            text: None,
            finish_reason: finish,
            usage: Usage::default(),
            grounding: Default::default(),
            cost: None,
            prompt: job.request.prompt,
            created_at: super::now_rfc3339(),
            thought_signature: None,
            preview: None,
            image_id: None,
            record_error: None,
            parent: None,
            principal: None,
        })
    }
}
