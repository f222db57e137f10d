//! Request bodies, built here and nowhere else. A text-only request is a
//! few hundred bytes of JSON; an edit request carries images, so it is
//! produced as a stream (JSON pieces, base64 read from the input files in
//! 192 KiB steps) with an exact Content-Length, and never assembled whole.
//! `Body::request_body` produces it afresh for each attempt.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::secret::Secret;

pub use super::models::ImageOptions;

/// An image file sent inline: a readable file whose size and type were
/// checked before the request was built.
#[derive(Debug, Clone)]
pub struct InlineFile {
    pub path: PathBuf,
    pub len: u64,
    pub mime: &'static str,
}

/// One turn of an earlier exchange, sent back for multi-turn edits with
/// Gemini 3 (which asks for its `thoughtSignature`s back).
#[derive(Debug, Clone)]
pub struct Turn {
    pub prompt: String,
    pub image: InlineFile,
    pub signature: String,
}

/// What to ask the model for: the one request type that travels from a
/// tool handler (or the command line) down to the wire.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// The model id, checked against the allow-list and the table.
    pub model: String,
    pub prompt: String,
    pub options: ImageOptions,
    /// The previous turn (continue_editing on Gemini 3).
    pub history: Option<Turn>,
    /// Images to edit or take as references, in order.
    pub images: Vec<InlineFile>,
}

impl ImageRequest {
    pub fn text(model: String, prompt: String, options: ImageOptions) -> Self {
        Self {
            model,
            prompt,
            options,
            history: None,
            images: Vec::new(),
        }
    }
}

/// A request's body, ready to be produced once per attempt.
pub(super) enum Body {
    Json(Bytes),
    Stream(StreamBody),
}

impl Body {
    pub(super) fn new(req: &ImageRequest) -> Self {
        if req.history.is_none() && req.images.is_empty() {
            Body::Json(text_request(&req.prompt, &req.options))
        } else {
            Body::Stream(stream_body(req))
        }
    }

    fn request_body(&self) -> RequestBody {
        match self {
            Body::Json(b) => RequestBody::Json(b.clone()),
            Body::Stream(s) => RequestBody::Stream {
                body: reqwest::Body::wrap_stream(s.stream()),
                len: Some(s.total),
            },
        }
    }

    /// This attempt's request.
    pub(super) fn request(
        &self,
        http: &reqwest::Client,
        url: &str,
        key: &Secret,
    ) -> reqwest::RequestBuilder {
        self.request_body().into_request(http, url, key)
    }
}

/// One attempt's body.
enum RequestBody {
    Json(Bytes),
    Stream {
        body: reqwest::Body,
        len: Option<u64>,
    },
}

/// The key as a header value marked sensitive: hyper keeps it out of
/// HTTP/2 header compression tables and `Debug` output shows no value. A
/// key that is not a valid header value (a control character) is sent
/// empty, and Gemini refuses the call as unauthenticated.
pub fn key_header(key: &Secret) -> reqwest::header::HeaderValue {
    match reqwest::header::HeaderValue::from_str(key.expose()) {
        Ok(mut v) => {
            v.set_sensitive(true);
            v
        }
        Err(_) => reqwest::header::HeaderValue::from_static(""),
    }
}

impl RequestBody {
    fn into_request(
        self,
        http: &reqwest::Client,
        url: &str,
        key: &Secret,
    ) -> reqwest::RequestBuilder {
        let req = http
            .post(url)
            .header("x-goog-api-key", key_header(key))
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
fn generation_config(opts: &ImageOptions) -> Value {
    let mut image_config = serde_json::Map::new();
    if let Some(r) = &opts.aspect_ratio {
        image_config.insert("aspectRatio".into(), json!(r));
    }
    if let Some(s) = &opts.image_size {
        image_config.insert("imageSize".into(), json!(s));
    }
    if let Some(p) = &opts.person_generation {
        image_config.insert("personGeneration".into(), json!(p));
    }
    let mut cfg = json!({ "responseModalities": ["TEXT", "IMAGE"] });
    if !image_config.is_empty() {
        cfg["imageConfig"] = Value::Object(image_config);
    }
    if let Some(level) = &opts.thinking_level {
        cfg["thinkingConfig"] = json!({ "thinkingLevel": level });
    }
    cfg
}

/// The request's fields after `contents`: `generationConfig`, and `tools`
/// when grounding was asked for. Web search alone is the tool's default
/// (`{"googleSearch": {}}`); image search is named in `searchTypes`.
fn tail_fields(opts: &ImageOptions) -> String {
    let mut out = format!(r#","generationConfig":{}"#, generation_config(opts));
    if let Some(search) = opts.search {
        let tool = if search.image {
            let mut types = serde_json::Map::new();
            if search.web {
                types.insert("webSearch".into(), json!({}));
            }
            types.insert("imageSearch".into(), json!({}));
            json!({ "googleSearch": { "searchTypes": types } })
        } else {
            json!({ "googleSearch": {} })
        };
        out.push_str(&format!(r#","tools":[{tool}]"#));
    }
    out
}

/// The whole body of a text-to-image request.
fn text_request(prompt: &str, opts: &ImageOptions) -> Bytes {
    let contents = json!([{ "role": "user", "parts": [{ "text": prompt }] }]);
    Bytes::from(format!(r#"{{"contents":{contents}{}}}"#, tail_fields(opts)))
}

/// Pieces of a streamed request body.
enum Segment {
    Bytes(Bytes),
    /// A file, sent as base64.
    File(PathBuf, u64),
}

fn b64_len(n: u64) -> u64 {
    n.div_ceil(3) * 4
}

/// The body of an edit: the previous turn (if any), the images as
/// `inlineData` parts streamed from their files, then the prompt.
/// Content-Length is exact because every size is known.
fn stream_body(req: &ImageRequest) -> StreamBody {
    let mut segs: Vec<Segment> = Vec::new();
    let json_str = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut text = String::from(r#"{"contents":["#);
    if let Some(h) = &req.history {
        text.push_str(&format!(
            r#"{{"role":"user","parts":[{{"text":{}}}]}},{{"role":"model","parts":[{{"inlineData":{{"mimeType":"{}","data":""#,
            json_str(&h.prompt),
            h.image.mime
        ));
        segs.push(Segment::Bytes(Bytes::from(std::mem::take(&mut text))));
        segs.push(Segment::File(h.image.path.clone(), h.image.len));
        text.push_str(&format!(
            r#""}},"thoughtSignature":{}}}]}},"#,
            json_str(&h.signature)
        ));
    }
    text.push_str(r#"{"role":"user","parts":["#);
    for (i, img) in req.images.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"inlineData":{{"mimeType":"{}","data":""#,
            img.mime
        ));
        segs.push(Segment::Bytes(Bytes::from(std::mem::take(&mut text))));
        segs.push(Segment::File(img.path.clone(), img.len));
        text.push_str(r#""}}"#);
    }
    if !req.images.is_empty() {
        text.push(',');
    }
    text.push_str(&format!(
        r#"{{"text":{}}}]}}]{}}}"#,
        json_str(&req.prompt),
        tail_fields(&req.options)
    ));
    segs.push(Segment::Bytes(Bytes::from(text)));
    let total: u64 = segs
        .iter()
        .map(|s| match s {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File(_, n) => b64_len(*n),
        })
        .sum();
    StreamBody {
        segs: Arc::new(segs),
        total,
    }
}

/// A streamed body that can be produced again for each attempt.
pub(super) struct StreamBody {
    segs: Arc<Vec<Segment>>,
    total: u64,
}

impl StreamBody {
    fn stream(&self) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
        let segs = Arc::clone(&self.segs);
        futures::stream::iter(0..segs.len())
            .map(move |i| segment_stream(&segs[i]))
            .flatten()
            .boxed()
    }
}

/// Raw bytes read per step: a multiple of 3, so each chunk encodes to
/// whole base64 quads and chunks can simply be concatenated.
const READ_STEP: usize = (3 * 64) << 10;

fn segment_stream(
    seg: &Segment,
) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    match seg {
        Segment::Bytes(b) => futures::stream::once(futures::future::ready(Ok(b.clone()))).boxed(),
        Segment::File(path, len) => {
            let path = path.clone();
            let len = *len;
            futures::stream::try_unfold(
                (None::<tokio::fs::File>, path, 0u64, vec![0u8; READ_STEP]),
                move |(file, path, sent, mut buf)| async move {
                    if sent >= len {
                        return Ok(None);
                    }
                    let mut f = match file {
                        Some(f) => f,
                        None => tokio::fs::File::open(&path).await?,
                    };
                    // Fill the whole step (short reads would break quads).
                    let want = READ_STEP.min((len - sent) as usize);
                    let mut n = 0;
                    while n < want {
                        let k = f.read(&mut buf[n..want]).await?;
                        if k == 0 {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "input file shrank while it was being sent",
                            ));
                        }
                        n += k;
                    }
                    let mut out = BytesMut::zeroed(b64_len(n as u64) as usize);
                    let m = base64::engine::general_purpose::STANDARD
                        .encode_slice(&buf[..n], &mut out)
                        .map_err(std::io::Error::other)?;
                    out.truncate(m);
                    Ok(Some((out.freeze(), (Some(f), path, sent + n as u64, buf))))
                },
            )
            .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_request_shape() {
        let opts = ImageOptions {
            aspect_ratio: Some("16:9".into()),
            image_size: Some("2K".into()),
            thinking_level: Some("HIGH".into()),
            search: Some(super::super::models::Search {
                web: true,
                image: true,
            }),
            person_generation: Some("ALLOW_NONE".into()),
        };
        let v: Value = serde_json::from_slice(&text_request("a \"cat\"", &opts)).expect("json");
        assert_eq!(v["contents"][0]["parts"][0]["text"], "a \"cat\"");
        let g = &v["generationConfig"];
        assert_eq!(g["imageConfig"]["imageSize"], "2K");
        assert_eq!(g["imageConfig"]["personGeneration"], "ALLOW_NONE");
        assert_eq!(g["responseModalities"][1], "IMAGE");
        assert_eq!(g["thinkingConfig"], json!({"thinkingLevel": "HIGH"}));
        assert_eq!(
            v["tools"],
            json!([{"googleSearch": {"searchTypes": {"webSearch": {}, "imageSearch": {}}}}])
        );
        let web = ImageOptions {
            search: Some(super::super::models::Search {
                web: true,
                image: false,
            }),
            ..ImageOptions::default()
        };
        let v: Value = serde_json::from_slice(&text_request("x", &web)).expect("json");
        assert_eq!(v["tools"], json!([{"googleSearch": {}}]));
        let bare: Value =
            serde_json::from_slice(&text_request("x", &ImageOptions::default())).expect("json");
        assert!(bare["generationConfig"].get("imageConfig").is_none());
        assert!(bare["generationConfig"].get("thinkingConfig").is_none());
        assert!(bare.get("tools").is_none());
    }

    #[tokio::test]
    async fn edit_body_is_valid_json_with_exact_length() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut img = b"\x89PNG\r\n\x1a\n".to_vec();
        img.extend((0..(READ_STEP * 2 + 5)).map(|i| (i % 251) as u8));
        let p = dir.path().join("a.png");
        std::fs::write(&p, &img).expect("write");
        let file = InlineFile {
            path: p,
            len: img.len() as u64,
            mime: "image/png",
        };
        let req = ImageRequest {
            model: "m".into(),
            prompt: "make it pink".into(),
            options: ImageOptions {
                search: Some(super::super::models::Search {
                    web: true,
                    image: false,
                }),
                ..ImageOptions::default()
            },
            history: Some(Turn {
                prompt: "first \"one\"".into(),
                image: file.clone(),
                signature: "c2ln".into(),
            }),
            images: vec![file],
        };
        let body = stream_body(&req);
        // Produced twice, as for a retry.
        for _ in 0..2 {
            let mut stream = body.stream();
            let mut all = Vec::new();
            while let Some(c) = stream.next().await {
                all.extend_from_slice(&c.expect("chunk"));
            }
            assert_eq!(all.len() as u64, body.total);
            let v: serde_json::Value = serde_json::from_slice(&all).expect("valid JSON");
            let decode = |d: &serde_json::Value| {
                base64::engine::general_purpose::STANDARD
                    .decode(d.as_str().expect("data"))
                    .expect("b64")
            };
            assert_eq!(
                decode(&v["contents"][2]["parts"][0]["inlineData"]["data"]),
                img
            );
            assert_eq!(
                decode(&v["contents"][1]["parts"][0]["inlineData"]["data"]),
                img
            );
            assert_eq!(v["contents"][1]["parts"][0]["thoughtSignature"], "c2ln");
            assert_eq!(v["contents"][1]["role"], "model");
            assert_eq!(v["contents"][2]["parts"][1]["text"], "make it pink");
            assert_eq!(v["tools"][0]["googleSearch"], json!({}));
        }
    }
}
