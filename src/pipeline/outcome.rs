//! What a call ends with: the stored image, or the error that says why
//! not; and the milestones reported on the way.

use std::path::PathBuf;
use std::time::Duration;

use crate::extract::{ExtractError, Usage};
use crate::gemini::GeminiError;
use crate::memory::Busy;
use crate::store::{StorageKind, StoreError};

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
    pub prompt: String,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// Gemini 3's signature for multi-turn edits; kept server-side.
    pub thought_signature: Option<String>,
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
