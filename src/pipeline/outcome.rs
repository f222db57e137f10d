//! What a call ends with: the stored image, or the error that says why
//! not; and the milestones reported on the way.

use std::path::PathBuf;
use std::time::Duration;

use crate::extract::sniff::ImageFormat;
use crate::extract::{ExtractError, Grounding, Usage};
use crate::gemini::GeminiError;
use crate::gemini::pricing::Cost;
use crate::memory::Busy;
use crate::store::records::{ImageId, ImageRecord, RECORD_VERSION};
use crate::store::{StorageKind, StoreError, Stored};

/// A stored image and what is known about it. Plain data: the MCP layer
/// shapes it into its wire type, the command line prints it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// An https URL (Azure, read SAS unless public) or a file:// URL.
    pub url: String,
    /// The file, for the local folder.
    pub path: Option<PathBuf>,
    pub storage: StorageKind,
    pub blob_name: String,
    /// From the bytes themselves, not from what the model declared.
    pub content_type: &'static str,
    pub bytes: u64,
    /// Hex.
    pub sha256: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub model: String,
    /// Text the model sent with the image, if any.
    pub text: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// What grounded the image (queries run, sources), when it was.
    pub grounding: Grounding,
    /// The call's estimated cost, when it ran now (not for an image found
    /// by its record).
    pub cost: Option<Cost>,
    pub prompt: String,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// Gemini 3's signature for multi-turn edits; kept server-side.
    pub thought_signature: Option<String>,
    /// The small JPEG preview (`--preview`), when one could be made.
    pub preview: Option<crate::preview::Preview>,
    /// The handle any replica finds the image by, once its record is
    /// stored (`store::records`); `None` when the record could not be
    /// written, with the reason in `record_error`.
    pub image_id: Option<String>,
    pub record_error: Option<String>,
    /// The image this one was edited from, when the edit named it by id.
    pub parent: Option<String>,
    /// Who made it (see `ImageRecord::principal`).
    pub principal: Option<String>,
}

impl StoredImage {
    /// The record the store keeps for this image.
    pub fn record(&self, id: &ImageId) -> ImageRecord {
        ImageRecord {
            version: RECORD_VERSION,
            image_id: id.to_string(),
            blob_name: self.blob_name.clone(),
            content_type: self.content_type.to_string(),
            bytes: self.bytes,
            sha256: self.sha256.clone(),
            width: self.width,
            height: self.height,
            model: self.model.clone(),
            prompt: cut(&self.prompt, KEPT_PROMPT_BYTES),
            text: self.text.as_deref().map(|t| cut(t, KEPT_TEXT_BYTES)),
            parent: self.parent.clone(),
            created_at: self.created_at.clone(),
            thought_signature: self.thought_signature.clone(),
            principal: self.principal.clone(),
        }
    }

    /// An image found by its record, at the place the store says.
    pub fn from_record(rec: ImageRecord, at: Stored) -> Self {
        Self {
            url: at.url,
            path: at.path,
            storage: at.storage,
            blob_name: rec.blob_name,
            content_type: ImageFormat::from_mime(&rec.content_type)
                .map_or("application/octet-stream", ImageFormat::mime),
            bytes: rec.bytes,
            sha256: rec.sha256,
            width: rec.width,
            height: rec.height,
            model: rec.model,
            text: rec.text,
            finish_reason: None,
            usage: Usage::default(),
            grounding: Grounding::default(),
            cost: None,
            prompt: rec.prompt,
            created_at: rec.created_at,
            thought_signature: rec.thought_signature,
            preview: None,
            image_id: Some(rec.image_id),
            record_error: None,
            parent: rec.parent,
            principal: rec.principal,
        }
    }
}

/// The longest prompt a record keeps (the previous turn continue_editing
/// sends back to Gemini); longer ones are cut on a character boundary.
pub const KEPT_PROMPT_BYTES: usize = 4 << 10;
/// The longest model text a record keeps.
pub const KEPT_TEXT_BYTES: usize = 1 << 10;

pub fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Busy(#[from] Busy),
    #[error("invalid arguments: {0}")]
    Invalid(String),
    /// An option the model does not take; the message names what does.
    #[error("{0}")]
    Unsupported(String),
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
    SpendCap(String),
}

impl PipelineError {
    /// A short kind for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineError::Busy(_) => "busy",
            PipelineError::Invalid(_) | PipelineError::Unsupported(_) => "invalid",
            PipelineError::Gemini(e) => e.kind(),
            PipelineError::Extract(_) => "bad_response",
            PipelineError::Stream(_) => "stream_error",
            PipelineError::NoImage(_) => "no_image",
            PipelineError::Store(e) => e.kind(),
            PipelineError::ReadTimeout(_) => "read_timeout",
            PipelineError::Cancelled => "cancelled",
            PipelineError::SpendCap(_) => "spend_cap",
        }
    }

    /// Failures on Gemini's side (for metrics).
    pub fn is_gemini(&self) -> bool {
        matches!(
            self,
            PipelineError::Gemini(_)
                | PipelineError::Extract(_)
                | PipelineError::Stream(_)
                | PipelineError::ReadTimeout(_)
                | PipelineError::NoImage(_)
        )
    }
}

impl From<crate::gemini::BodyError> for PipelineError {
    fn from(e: crate::gemini::BodyError) -> Self {
        match e {
            crate::gemini::BodyError::Timeout(d) => PipelineError::ReadTimeout(d),
            crate::gemini::BodyError::Broken => PipelineError::Extract(ExtractError::Truncated(
                "the connection to Gemini broke mid-response",
            )),
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
