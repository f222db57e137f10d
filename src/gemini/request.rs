//! Request bodies. A text-only request is a few hundred bytes of JSON; an
//! edit request carries images, so it is produced as a stream (see
//! `crate::inputs`) and never assembled whole.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::secret::Secret;

pub use super::models::ImageOptions;

/// A non-image part that precedes or follows the images.
#[derive(Debug, Clone)]
pub enum InputPart {
    Text(String),
}

/// One attempt's body.
pub enum RequestBody {
    Json(Bytes),
    Stream {
        body: reqwest::Body,
        len: Option<u64>,
    },
}

impl RequestBody {
    pub(super) fn into_request(
        self,
        http: &reqwest::Client,
        url: &str,
        key: &Secret,
    ) -> reqwest::RequestBuilder {
        let req = http
            .post(url)
            .header("x-goog-api-key", key.expose())
            .header("content-type", "application/json");
        match self {
            RequestBody::Json(b) => req.body(b),
            RequestBody::Stream { body, len } => {
                let req = req.body(body);
                match len {
                    Some(n) => req.header("content-length", n),
                    None => req,
                }
            }
        }
    }
}

/// `generationConfig` for an image request.
pub fn generation_config(opts: &ImageOptions) -> Value {
    let mut image_config = serde_json::Map::new();
    if let Some(r) = &opts.aspect_ratio {
        image_config.insert("aspectRatio".into(), json!(r));
    }
    if let Some(s) = &opts.image_size {
        image_config.insert("imageSize".into(), json!(s));
    }
    let mut cfg = json!({ "responseModalities": ["TEXT", "IMAGE"] });
    if !image_config.is_empty() {
        cfg["imageConfig"] = Value::Object(image_config);
    }
    cfg
}

/// The whole body of a text-to-image request.
pub fn text_request(prompt: &str, opts: &ImageOptions) -> Bytes {
    let body = json!({
        "contents": [{ "role": "user", "parts": [{ "text": prompt }] }],
        "generationConfig": generation_config(opts),
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_request_shape() {
        let opts = ImageOptions {
            aspect_ratio: Some("16:9".into()),
            image_size: Some("2K".into()),
        };
        let v: Value = serde_json::from_slice(&text_request("a \"cat\"", &opts)).expect("json");
        assert_eq!(v["contents"][0]["parts"][0]["text"], "a \"cat\"");
        assert_eq!(v["generationConfig"]["imageConfig"]["imageSize"], "2K");
        assert_eq!(v["generationConfig"]["responseModalities"][1], "IMAGE");
        let bare: Value =
            serde_json::from_slice(&text_request("x", &ImageOptions::default())).expect("json");
        assert!(bare["generationConfig"].get("imageConfig").is_none());
    }
}
