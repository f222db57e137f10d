//! The per-response image decisions. A response may carry several images
//! (interim `thought` images, then the result); this keeps the one
//! streaming now and the last finished non-thought image, uploading as the
//! blocks arrive and committing nothing until the body has ended. Key
//! order in Gemini's JSON is not reliable, so each decision waits for the
//! part's end: the real type comes from the bytes (sniffed from the first
//! block), a thought image is dropped even when the flag comes last, and
//! an image whose last bytes do not look whole is refused.

use std::sync::Arc;

use crate::extract::sniff::{self, ImageFormat};
use crate::extract::{Event, ExtractError, Summary};
use crate::store::{Store, StoreError, Stored, Upload};

use super::{PipelineError, Progress, Stage};
use crate::preview::Previewer;

/// Facts about an image, gathered while it streams.
#[derive(Debug, Clone)]
pub(super) struct ImageMeta {
    pub format: ImageFormat,
    pub dims: Option<(u32, u32)>,
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub thought_signature: Option<String>,
}

/// A finished image, uploaded but not yet visible.
pub(super) struct Done {
    upload: Upload,
    pub meta: ImageMeta,
    /// Its preview decoder, fed every byte (`--preview`).
    pub preview: Option<Previewer>,
}

impl Done {
    pub async fn commit(self) -> Result<Stored, StoreError> {
        self.upload.commit().await
    }

    pub async fn abort(self) {
        self.upload.abort().await;
    }
}

struct Current {
    image: u32,
    format: ImageFormat,
    dims: Option<(u32, u32)>,
    head: Vec<u8>,
    upload: Upload,
    bytes: u64,
    preview: Option<Previewer>,
}

/// Images of one response: the one streaming now, and the last finished
/// non-thought image (the result, uncommitted).
pub(super) struct Images {
    store: Arc<Store>,
    prefix: &'static str,
    preview: bool,
    current: Option<Current>,
    result: Option<Done>,
}

impl Images {
    pub fn new(store: Arc<Store>, prefix: &'static str, preview: bool) -> Self {
        Self {
            store,
            prefix,
            preview,
            current: None,
            result: None,
        }
    }

    /// The result, once the body has ended.
    pub fn take_result(&mut self) -> Option<Done> {
        self.result.take()
    }

    pub async fn handle(
        &mut self,
        ev: Event,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        match ev {
            Event::Block(b) => {
                if b.index == 0 {
                    if let Some(old) = self.current.take() {
                        old.upload.abort().await;
                    }
                    let format = sniff::sniff(&b.data).ok_or_else(|| {
                        PipelineError::NoImage(format!(
                            "Gemini sent image data that is not PNG, JPEG, WebP, GIF or HEIC (it starts with {})",
                            hex::encode(&b.data[..b.data.len().min(8)])
                        ))
                    })?;
                    let dims = sniff::dimensions(format, &b.data);
                    let name = crate::store::blob_name(self.prefix, format.extension());
                    let mut cur = Current {
                        image: b.image,
                        format,
                        dims,
                        head: b.data[..b.data.len().min(64)].to_vec(),
                        bytes: b.data.len() as u64,
                        upload: self.store.upload(name, format.mime()),
                        preview: if self.preview {
                            Previewer::start(format)
                        } else {
                            None
                        },
                    };
                    if let Some(p) = cur.preview.as_mut() {
                        p.feed(&b.data).await;
                    }
                    // The upload holds the first block until it knows
                    // whether the image needs more than one.
                    cur.upload.write(b.data).await?;
                    self.current = Some(cur);
                } else if let Some(cur) = self.current.as_mut().filter(|c| c.image == b.image) {
                    cur.bytes += b.data.len() as u64;
                    if let Some(p) = cur.preview.as_mut() {
                        p.feed(&b.data).await;
                    }
                    cur.upload.write(b.data).await?;
                    progress.stage(Stage::Receiving { bytes: cur.bytes });
                }
            }
            Event::End(end) => {
                let Some(cur) = self.current.take().filter(|c| c.image == end.image) else {
                    // A thought image skipped without decoding, or empty data.
                    return Ok(());
                };
                if end.thought {
                    cur.upload.abort().await;
                    return Ok(());
                }
                if !sniff::looks_complete(cur.format, &cur.head, &end.tail, end.bytes) {
                    cur.upload.abort().await;
                    return Err(PipelineError::Extract(ExtractError::Truncated(
                        "the image data ends before the image does",
                    )));
                }
                if cur.upload.is_empty() {
                    return Ok(());
                }
                let done = Done {
                    preview: cur.preview,
                    upload: cur.upload,
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

    pub async fn abort_all(&mut self) {
        if let Some(c) = self.current.take() {
            c.upload.abort().await;
        }
        if let Some(d) = self.result.take() {
            d.abort().await;
        }
    }
}

/// Why there is no image, in plain words.
pub(super) fn explain_no_image(s: &Summary) -> PipelineError {
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
            PipelineError::NoImage(format!(
                "Gemini made no image ({reason}): {}. {}",
                msg.trim_end_matches('.'),
                next_step(reason)
            ))
        }
        None => PipelineError::Extract(ExtractError::Truncated(
            "the response ended before any image or finish reason",
        )),
    }
}

/// What to do next: retry only what can succeed.
fn next_step(reason: &str) -> &'static str {
    match reason {
        "SAFETY"
        | "IMAGE_SAFETY"
        | "PROHIBITED_CONTENT"
        | "IMAGE_PROHIBITED_CONTENT"
        | "BLOCKLIST"
        | "SPII"
        | "RECITATION"
        | "IMAGE_RECITATION"
        | "LANGUAGE" => {
            "The same request will be refused again: change the prompt (or the input images)."
        }
        _ => "Trying again may work; ask for an image explicitly in the prompt.",
    }
}

fn plain_reason(reason: &str) -> &'static str {
    match reason {
        "IMAGE_OTHER" | "OTHER" => "the model stopped for a reason it did not name",
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => {
            "the model tried to use a tool and failed"
        }
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
        let safety = Summary {
            finish_reason: Some("IMAGE_SAFETY".into()),
            finish_message: Some("filtered out. You will not be charged".into()),
            ..Summary::default()
        };
        let text = Summary {
            finish_reason: Some("STOP".into()),
            text: "I can't draw that".into(),
            ..Summary::default()
        };
        for (summary, says) in [
            (&blocked, "blocked the prompt (PROHIBITED_CONTENT)"),
            (&safety, "You will not be charged"),
            (&text, "I can't draw that"),
        ] {
            assert!(
                explain_no_image(summary).to_string().contains(says),
                "{says}"
            );
        }
        assert!(matches!(
            explain_no_image(&Summary::default()),
            PipelineError::Extract(ExtractError::Truncated(_))
        ));
        // Every reason the API documents has words of its own and the
        // right next step: change the request, or try again.
        for (reason, words, again) in [
            ("IMAGE_PROHIBITED_CONTENT", "prohibited-use", false),
            ("IMAGE_RECITATION", "existing material", false),
            ("IMAGE_SAFETY", "safety", false),
            ("SPII", "personal information", false),
            ("NO_IMAGE", "did not produce an image", true),
            ("IMAGE_OTHER", "did not name", true),
            ("OTHER", "did not name", true),
            ("TOO_MANY_TOOL_CALLS", "tool", true),
            ("MAX_TOKENS", "token limit", true),
        ] {
            let e = explain_no_image(&Summary {
                finish_reason: Some(reason.into()),
                ..Summary::default()
            })
            .to_string();
            assert!(e.contains(reason) && e.contains(words), "{e}");
            assert_eq!(e.contains("Trying again may work"), again, "{e}");
            assert_eq!(e.contains("refused again"), !again, "{e}");
        }
    }
}
