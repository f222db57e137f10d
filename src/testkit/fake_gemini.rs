//! A fake Gemini image API server (axum), used in-process by tests and runnable
//! as a standalone binary for scripts and load runs. Owns the imitation of the
//! wire format described in `shared/design/gemini-api.md` — including its
//! awkward parts: unstable key order, lying mime types, thought images, images
//! spliced whole into one huge SSE line, Google's error envelopes, truncated
//! and corrupted bodies — plus the request/response logs tests assert on.
//!
//! Behaviour is chosen per request by `fake:NAME[=VALUE]` directives in the
//! text of the last user turn (see [`DIRECTIVES`]). Image bytes come from
//! [`super::images`]; their base64 text is cached and spliced into response
//! bodies as zero-copy slices, so a 40 MB image line is never copied per
//! request nor run through a JSON serializer.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::images::{self, Format, Synth};

/// Requests carry edit inputs as base64 (the real limit is 100 MB of it).
const BODY_LIMIT: usize = 200 * 1024 * 1024;
/// Guards against a typo like `fake:size=30GiB` eating the machine.
const MAX_SIZE: usize = 512 * 1024 * 1024;
const DEFAULT_IMAGE_BYTES: usize = 200_000;
const DEFAULT_CHUNK: usize = 64 * 1024;
/// Roughly what the real models bill per output image.
const IMAGE_TOKENS: i64 = 1290;

/// Human-readable list of the directives this fake understands, for help
/// output and error messages.
pub const DIRECTIVES: &str = "size=N[KiB|MiB|KB|MB] format=png|jpeg|webp|gif seed=N label=MIME \
images=N order=mime-after|sig-before[+...] sig thought[=N] thought-after text bigtext=N \
echo-sha safety blocked[=REASON] finish=REASON message=WORDS_WITH_UNDERSCORES status=CODE \
times=N quota=day|minute retry=SECONDS truncate truncate-after-image badbase64 \
midstream-error drip=MS latency=MS";

// ---------------------------------------------------------------------------
// Public API

/// Server-wide settings; per-request behaviour comes from prompt directives.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// When set, any other key is answered with 400 `API_KEY_INVALID`. When
    /// unset, any non-empty key is accepted. A missing key is always 403.
    pub api_key: Option<String>,
    /// Delay before the response head (overridden by `fake:latency=MS`).
    pub latency: Duration,
    /// Bytes per body write; 0 means the default of 64 KiB.
    pub chunk_size: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            api_key: None,
            latency: Duration::ZERO,
            chunk_size: DEFAULT_CHUNK,
        }
    }
}

/// One request to a generate route, as the fake understood it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// Sequence number, starting at 1; [`SentImage::request_id`] refers to it.
    pub id: u64,
    pub model: String,
    /// `generateContent` or `streamGenerateContent` (or whatever was asked).
    pub method: String,
    pub sse: bool,
    /// HTTP status the fake answered with.
    pub status: u16,
    /// Text parts of the last user turn joined by `\n`: where directives live.
    pub prompt: String,
    /// Text parts of every turn joined by `\n`.
    pub text: String,
    pub generation_config: Option<Value>,
    pub inputs: Vec<RecordedInput>,
    /// `thoughtSignature`s sent back with the history, in request order.
    pub thought_signatures: Vec<String>,
}

/// One `inlineData` part of a request; the bytes themselves are not kept.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedInput {
    /// Role of the content the part belongs to (`user` when absent).
    pub role: String,
    pub mime_type: String,
    /// Length of the decoded bytes.
    pub bytes: usize,
    /// Lower-case hex SHA-256 of the decoded bytes.
    pub sha256: String,
}

/// One image placed in a response body.
#[derive(Clone, Debug, Serialize)]
pub struct SentImage {
    pub request_id: u64,
    pub prompt: String,
    /// What the bytes are.
    pub format: Format,
    /// What the `mimeType` field said (differs under `fake:label=`).
    pub declared_mime: String,
    pub bytes: usize,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    /// An interim `"thought": true` image rather than a result.
    pub thought: bool,
    pub thought_signature: Option<String>,
    /// The whole response body was handed to the connection. False for
    /// truncated responses and for clients that went away mid-body.
    pub completed: bool,
}

/// Shared state behind the router: config, logs, and per-prompt counters.
pub struct FakeState {
    cfg: FakeConfig,
    requests: Mutex<Vec<RecordedRequest>>,
    sent: Mutex<Vec<(SentImage, Arc<AtomicBool>)>>,
    failures: Mutex<HashMap<String, u32>>,
    next_id: AtomicU64,
}

impl FakeState {
    pub fn new(cfg: FakeConfig) -> Arc<FakeState> {
        Arc::new(FakeState {
            cfg,
            requests: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &FakeConfig {
        &self.cfg
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub fn sent(&self) -> Vec<SentImage> {
        lock(&self.sent)
            .iter()
            .map(|(img, done)| SentImage {
                completed: done.load(Ordering::Acquire),
                ..img.clone()
            })
            .collect()
    }

    /// Forgets logged requests, sent images and `status=`/`times=` counts.
    pub fn reset(&self) {
        lock(&self.requests).clear();
        lock(&self.sent).clear();
        lock(&self.failures).clear();
    }
}

/// A fake server running on the current tokio runtime.
pub struct FakeGemini {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl FakeGemini {
    /// Binds `bind` (use port 0 for a free port) and serves in the background.
    pub async fn start(cfg: FakeConfig, bind: SocketAddr) -> io::Result<FakeGemini> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let state = FakeState::new(cfg);
        let app = router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(FakeGemini {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://ADDR`, to use as the client's Gemini base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open responses finish for a moment, then aborts.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Graceful shutdown waits for open connections; a client that
            // holds a stalled stream must not hang the test suite.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The fake's routes, for embedding in another server or binary.
pub fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/v1beta/models/{*rest}", post(generate).get(get_model))
        .route(
            "/_fake/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/_fake/requests", get(requests_log))
        .route("/_fake/sent", get(sent_log))
        .route("/_fake/reset", post(reset_logs))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves the fake until the process ends.
pub async fn serve_forever(bind: SocketAddr, cfg: FakeConfig) -> io::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        base_url = %format!("http://{addr}"),
        api_key_required = cfg.api_key.is_some(),
        "fake Gemini listening"
    );
    axum::serve(listener, router(FakeState::new(cfg))).await
}

async fn requests_log(State(st): State<Arc<FakeState>>) -> Json<Vec<RecordedRequest>> {
    Json(st.requests())
}

async fn sent_log(State(st): State<Arc<FakeState>>) -> Json<Vec<SentImage>> {
    Json(st.sent())
}

async fn reset_logs(State(st): State<Arc<FakeState>>) -> StatusCode {
    st.reset();
    StatusCode::NO_CONTENT
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take every later assertion down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Request handling

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Generate,
    Sse,
    Array,
}

/// A fully planned response: head, body pieces and pacing.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    pieces: Vec<Bytes>,
    /// End the body with an error so hyper cuts the connection.
    abort: bool,
    latency: Option<Duration>,
    drip: Duration,
    done: Option<Arc<AtomicBool>>,
}

async fn generate(
    State(st): State<Arc<FakeState>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = st.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let (model, method) = match rest.split_once(':') {
        Some((m, v)) => (m.to_string(), v.to_string()),
        None => (rest.clone(), String::new()),
    };
    let sse = query.get("alt").is_some_and(|a| a == "sse");
    let mut rec = RecordedRequest {
        id,
        model,
        method,
        sse,
        status: 0,
        prompt: String::new(),
        text: String::new(),
        generation_config: None,
        inputs: Vec::new(),
        thought_signatures: Vec::new(),
    };
    let reply = handle(&st, &mut rec, &query, &headers, body).await;
    rec.status = reply.status.as_u16();
    lock(&st.requests).push(rec);

    let latency = reply.latency.unwrap_or(st.cfg.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let chunk = if st.cfg.chunk_size == 0 {
        DEFAULT_CHUNK
    } else {
        st.cfg.chunk_size
    };
    let mut resp = Response::new(Body::from_stream(body_stream(
        reply.pieces,
        reply.abort,
        reply.drip,
        chunk,
        reply.done,
    )));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    resp
}

async fn handle(
    st: &FakeState,
    rec: &mut RecordedRequest,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Reply {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or(query.get("key").map(String::as_str))
        .filter(|k| !k.is_empty());
    match (key, &st.cfg.api_key) {
        (None, _) => {
            return error_reply(
                403,
                "Method doesn't allow unregistered callers (callers without established \
                 identity). Please use API Key or other form of API consumer identity to call \
                 this API.",
                Vec::new(),
            );
        }
        (Some(k), Some(want)) if k != want => {
            return error_reply(
                400,
                "API key not valid. Please pass a valid API key.",
                vec![J::obj([
                    ("@type", J::str("type.googleapis.com/google.rpc.ErrorInfo")),
                    ("reason", J::str("API_KEY_INVALID")),
                    ("domain", J::str("googleapis.com")),
                    (
                        "metadata",
                        J::obj([("service", J::str("generativelanguage.googleapis.com"))]),
                    ),
                ])],
            );
        }
        _ => {}
    }

    let mode = match rec.method.as_str() {
        "generateContent" => Mode::Generate,
        "streamGenerateContent" if rec.sse => Mode::Sse,
        "streamGenerateContent" => Mode::Array,
        _ => {
            return error_reply(
                404,
                &format!("Method not found: {}.", rec.method),
                Vec::new(),
            );
        }
    };
    if !model_served(&rec.model) {
        return error_reply(
            404,
            &format!(
                "models/{} is not found for API version v1beta, or is not supported for \
                 generateContent. Call ListModels to see the list of available models and \
                 their supported methods.",
                rec.model
            ),
            Vec::new(),
        );
    }

    // Decoding tens of MB of base64 is CPU work: keep it off the reactor.
    let parsed = match tokio::task::spawn_blocking(move || parse_request(&body)).await {
        Ok(Ok(p)) => p,
        Ok(Err(msg)) => return error_reply(400, &msg, Vec::new()),
        Err(e) => return error_reply(500, &format!("fake-gemini: parser failed: {e}"), vec![]),
    };
    rec.prompt = parsed.prompt;
    rec.text = parsed.text;
    rec.generation_config = parsed.generation_config;
    rec.inputs = parsed.inputs;
    rec.thought_signatures = parsed.thought_signatures;

    let d = match Directives::parse(&rec.prompt) {
        Ok(d) => d,
        Err(msg) => {
            return error_reply(400, &format!("fake-gemini: {msg}"), Vec::new());
        }
    };
    let mut reply = respond(st, rec, &d, mode).await;
    reply.latency = d.latency;
    reply
}

/// `GET /v1beta/models/{model}`: the cheap call `doctor` uses to check the
/// key and the model without generating anything.
async fn get_model(
    State(st): State<Arc<FakeState>>,
    Path(model): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or(query.get("key").map(String::as_str))
        .filter(|k| !k.is_empty());
    let reply = match (key, &st.cfg.api_key) {
        (None, _) => error_reply(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            Vec::new(),
        ),
        (Some(k), Some(want)) if k != want => error_reply(
            400,
            "API key not valid. Please pass a valid API key.",
            vec![J::obj([
                ("@type", J::str("type.googleapis.com/google.rpc.ErrorInfo")),
                ("reason", J::str("API_KEY_INVALID")),
            ])],
        ),
        _ if !model_served(&model) => error_reply(
            404,
            &format!("models/{model} is not found for API version v1beta."),
            Vec::new(),
        ),
        _ => {
            let body = serde_json::json!({
                "name": format!("models/{model}"),
                "displayName": model,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            });
            return (
                [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                body.to_string(),
            )
                .into_response();
        }
    };
    let body: Vec<u8> = reply
        .pieces
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    resp
}

fn model_served(model: &str) -> bool {
    matches!(model, "gemini-2.5-flash-image" | "gemini-3-pro-image") || model.starts_with("fake-")
}

/// Gemini 3 behaviour: thought signatures on every result image and a final
/// event of its own carrying `{"text": ""}` and the finish reason.
fn is_gemini3(model: &str) -> bool {
    model.contains("gemini-3") || model.starts_with("fake-3")
}

struct Parsed {
    prompt: String,
    text: String,
    generation_config: Option<Value>,
    inputs: Vec<RecordedInput>,
    thought_signatures: Vec<String>,
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn parse_request(body: &[u8]) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let contents = v
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let last_user = contents
        .iter()
        .rposition(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
        .unwrap_or(contents.len() - 1);

    let mut prompt = Vec::new();
    let mut text = Vec::new();
    let mut inputs = Vec::new();
    let mut thought_signatures = Vec::new();
    for (ci, content) in contents.iter().enumerate() {
        let role = content
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let parts = content
            .get("parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (pi, part) in parts.iter().enumerate() {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                text.push(t);
                if ci == last_user {
                    prompt.push(t);
                }
            }
            if let Some(sig) =
                field(part, "thoughtSignature", "thought_signature").and_then(Value::as_str)
            {
                thought_signatures.push(sig.to_string());
            }
            if let Some(inline) = field(part, "inlineData", "inline_data") {
                let mime = field(inline, "mimeType", "mime_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let data = inline
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let bytes = decode_base64(data).ok_or_else(|| {
                    let shown: String = data.chars().take(40).collect();
                    format!(
                        "Invalid value at 'contents[{ci}].parts[{pi}].inline_data.data' \
                         (TYPE_BYTES), Base64 decoding failed for \"{shown}\""
                    )
                })?;
                inputs.push(RecordedInput {
                    role: role.to_string(),
                    mime_type: mime.to_string(),
                    bytes: bytes.len(),
                    sha256: hex::encode(Sha256::digest(&bytes)),
                });
            }
        }
    }
    Ok(Parsed {
        prompt: prompt.join("\n"),
        text: text.join("\n"),
        generation_config: field(&v, "generationConfig", "generation_config").cloned(),
        inputs,
        thought_signatures,
    })
}

/// Google accepts padded or unpadded, standard or URL-safe base64.
fn decode_base64(data: &str) -> Option<Vec<u8>> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, cfg)
        .decode(data)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, cfg).decode(data))
        .ok()
}

// ---------------------------------------------------------------------------
// Directives

#[derive(Debug)]
struct Directives {
    size: usize,
    format: Format,
    seed: Option<u64>,
    label: Option<String>,
    images: usize,
    mime_after: bool,
    sig_before: bool,
    sig: bool,
    thoughts: usize,
    thought_after: bool,
    text: bool,
    bigtext: Option<usize>,
    echo_sha: bool,
    safety: bool,
    blocked: Option<String>,
    finish: Option<String>,
    message: Option<String>,
    status: Option<u16>,
    times: u32,
    quota_day: bool,
    retry: String,
    truncate: bool,
    truncate_after_image: bool,
    badbase64: bool,
    midstream_error: bool,
    drip: Duration,
    latency: Option<Duration>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            size: DEFAULT_IMAGE_BYTES,
            format: Format::Png,
            seed: None,
            label: None,
            images: 1,
            mime_after: false,
            sig_before: false,
            sig: false,
            thoughts: 0,
            thought_after: false,
            text: false,
            bigtext: None,
            echo_sha: false,
            safety: false,
            blocked: None,
            finish: None,
            message: None,
            status: None,
            times: 0,
            quota_day: false,
            retry: "1".to_string(),
            truncate: false,
            truncate_after_image: false,
            badbase64: false,
            midstream_error: false,
            drip: Duration::ZERO,
            latency: None,
        }
    }
}

impl Directives {
    /// Reads every `fake:NAME[=VALUE]` token; tokens are split on whitespace
    /// and commas, and may carry sentence punctuation around them. Unknown
    /// names and bad values are errors so a typo in a test fails loudly.
    fn parse(prompt: &str) -> Result<Directives, String> {
        let mut d = Directives::default();
        let tokens = prompt
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(|t| t.trim_matches(|c: char| "\"'()[]{};.".contains(c)));
        for token in tokens {
            let Some(directive) = token.strip_prefix("fake:") else {
                continue;
            };
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), Some(v)),
                None => (directive.to_ascii_lowercase(), None),
            };
            let need = |v: Option<&str>| {
                v.filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("fake:{name} needs a value"))
                    .map(str::to_string)
            };
            let bad = |v: &str| format!("bad value for fake:{name}: {v:?}");
            match name.as_str() {
                "size" => {
                    let v = need(value)?;
                    d.size = parse_size(&v).ok_or_else(|| bad(&v))?;
                }
                "format" => {
                    let v = need(value)?;
                    d.format = Format::parse(&v).ok_or_else(|| bad(&v))?;
                }
                "seed" => {
                    let v = need(value)?;
                    d.seed = Some(v.parse().map_err(|_| bad(&v))?);
                }
                "label" => d.label = Some(need(value)?),
                "images" => {
                    let v = need(value)?;
                    d.images = v.parse().ok().filter(|n| *n <= 16).ok_or_else(|| bad(&v))?;
                }
                "order" => {
                    let v = need(value)?;
                    for o in v.split('+') {
                        match o.to_ascii_lowercase().as_str() {
                            "mime-after" => d.mime_after = true,
                            "sig-before" => d.sig_before = true,
                            _ => return Err(bad(o)),
                        }
                    }
                }
                "sig" => d.sig = true,
                "thought" => {
                    d.thoughts = match value {
                        None => 1,
                        Some(v) => v.parse().ok().filter(|n| *n <= 8).ok_or_else(|| bad(v))?,
                    };
                }
                "thought-after" => {
                    d.thought_after = true;
                    d.thoughts = d.thoughts.max(1);
                }
                "text" => d.text = true,
                "bigtext" => {
                    let v = need(value)?;
                    d.bigtext = Some(parse_size(&v).ok_or_else(|| bad(&v))?);
                }
                "echo-sha" => d.echo_sha = true,
                "safety" => d.safety = true,
                "blocked" => {
                    d.blocked = Some(value.unwrap_or("PROHIBITED_CONTENT").to_ascii_uppercase());
                }
                "finish" => d.finish = Some(need(value)?.to_ascii_uppercase()),
                "message" => d.message = Some(need(value)?.replace('_', " ")),
                "status" => {
                    let v = need(value)?;
                    d.status = Some(
                        v.parse()
                            .ok()
                            .filter(|c| (400..600).contains(c))
                            .ok_or_else(|| bad(&v))?,
                    );
                }
                "times" => {
                    let v = need(value)?;
                    d.times = v.parse().map_err(|_| bad(&v))?;
                }
                "quota" => {
                    let v = need(value)?;
                    d.quota_day = match v.to_ascii_lowercase().as_str() {
                        "day" => true,
                        "minute" => false,
                        _ => return Err(bad(&v)),
                    };
                }
                "retry" => {
                    let v = need(value)?;
                    let v = v.trim_end_matches('s');
                    let ok = v.parse::<f64>().is_ok_and(|s| s.is_finite() && s >= 0.0);
                    if !ok {
                        return Err(bad(v));
                    }
                    d.retry = v.to_string();
                }
                "truncate" => d.truncate = true,
                "truncate-after-image" => d.truncate_after_image = true,
                "badbase64" => d.badbase64 = true,
                "midstream-error" => d.midstream_error = true,
                "drip" => {
                    let v = need(value)?;
                    d.drip = Duration::from_millis(v.parse().map_err(|_| bad(&v))?);
                }
                "latency" => {
                    let v = need(value)?;
                    d.latency = Some(Duration::from_millis(v.parse().map_err(|_| bad(&v))?));
                }
                _ => {
                    return Err(format!(
                        "unknown directive fake:{name}; known: {DIRECTIVES}"
                    ));
                }
            }
        }
        Ok(d)
    }
}

/// `123`, `1.5MiB`, `512KiB`, `2MB`, `64k`; binary units for K/KiB/M/MiB.
fn parse_size(s: &str) -> Option<usize> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1000.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1_000_000.0,
        _ => return None,
    };
    let n = (num * mult).round();
    (n.is_finite() && n >= 0.0 && n <= MAX_SIZE as f64).then_some(n as usize)
}

// ---------------------------------------------------------------------------
// Building replies

/// One image placed in a reply.
struct Img {
    synth: Synth,
    b64: Bytes,
    declared: String,
    thought: bool,
    sig: Option<String>,
}

/// What a reply says, before it is framed for a mode. Streaming sends each
/// lead text, the big text, each image and the tail text as its own event;
/// generateContent puts them all in one candidate (lead texts joined).
struct Content {
    lead: Vec<String>,
    big: Option<String>,
    imgs: Vec<Img>,
    tail: Option<String>,
}

/// Per-reply facts every envelope repeats.
struct Ctx<'a> {
    model: &'a str,
    response_id: String,
    prompt_tokens: i64,
    candidate_tokens: i64,
    thoughts_tokens: i64,
}

async fn respond(st: &FakeState, rec: &RecordedRequest, d: &Directives, mode: Mode) -> Reply {
    if let Some(code) = d.status {
        let fail = {
            let mut failures = lock(&st.failures);
            let seen = failures.entry(rec.prompt.clone()).or_insert(0);
            let fail = d.times == 0 || *seen < d.times;
            *seen = seen.saturating_add(1);
            fail
        };
        if fail {
            return status_error(code, &rec.model, d);
        }
    }

    let seed = d.seed.unwrap_or_else(|| {
        let h = Sha256::digest(rec.prompt.as_bytes());
        u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    });
    let gemini3 = is_gemini3(&rec.model);
    let finish = if let Some(reason) = &d.blocked {
        Finish::Blocked(reason.clone())
    } else if d.safety {
        let message = d.message.clone().unwrap_or_else(|| {
            "Unable to show the generated image. The generated image was filtered out because \
             it violated Google's Generative AI Prohibited Use policy. You will not be charged \
             for blocked images. Try rephrasing the prompt."
                .into()
        });
        Finish::Reason("IMAGE_SAFETY".into(), Some(message))
    } else if let Some(reason) = &d.finish {
        Finish::Reason(reason.clone(), d.message.clone())
    } else {
        Finish::Reason("STOP".into(), None)
    };
    let special = !matches!(&finish, Finish::Reason(r, _) if r == "STOP");
    let blocked = matches!(finish, Finish::Blocked(_));

    let mut imgs = Vec::new();
    if !special && !d.midstream_error {
        for i in 0..d.thoughts {
            let s = (seed ^ 0xA5A5_5A5A_0F0F_F0F0).wrapping_add(i as u64);
            imgs.push(make_image(d, s, true, false).await);
        }
        for i in 0..d.images {
            let s = seed.wrapping_add(i as u64);
            imgs.push(make_image(d, s, false, d.sig || gemini3).await);
        }
    }
    let last_sha = imgs
        .iter()
        .rev()
        .find(|i| !i.thought)
        .map(|i| i.synth.sha256.clone());

    let mut lead: Vec<String> = if blocked {
        Vec::new()
    } else if d.images == 0 && !special {
        vec![
            "Here is a description ".into(),
            "instead of an image.".into(),
        ]
    } else if d.text {
        vec!["Here is ".into(), "your image.".into()]
    } else {
        Vec::new()
    };
    let mut tail = None;
    if d.echo_sha
        && let Some(sha) = &last_sha
    {
        if lead.is_empty() {
            tail = Some(format!("sha256={sha}"));
        } else {
            lead.push(format!(" sha256={sha}"));
        }
    }
    let content = Content {
        lead,
        big: d.bigtext.filter(|_| !blocked).map(big_text),
        imgs,
        tail,
    };

    let image_count = content.imgs.iter().filter(|i| !i.thought).count() as i64;
    let thought_count = content.imgs.iter().filter(|i| i.thought).count() as i64;
    let ctx = Ctx {
        model: &rec.model,
        response_id: response_id(&rec.prompt, rec.id),
        prompt_tokens: (rec.text.len() / 4) as i64 + 258 * rec.inputs.len() as i64 + 1,
        candidate_tokens: IMAGE_TOKENS * image_count + 20,
        thoughts_tokens: if gemini3 {
            200 + IMAGE_TOKENS * thought_count
        } else {
            0
        },
    };

    let done = Arc::new(AtomicBool::new(false));
    {
        let mut sent = lock(&st.sent);
        for img in &content.imgs {
            let info = SentImage {
                request_id: rec.id,
                prompt: rec.prompt.clone(),
                format: d.format,
                declared_mime: img.declared.clone(),
                bytes: img.synth.bytes.len(),
                sha256: img.synth.sha256.clone(),
                width: img.synth.width,
                height: img.synth.height,
                thought: img.thought,
                thought_signature: img.sig.clone(),
                completed: false,
            };
            sent.push((info, done.clone()));
        }
    }

    let plan = Plan {
        ctx: &ctx,
        d,
        content: &content,
        finish: &finish,
        gemini3,
        image_count,
    };
    let (out, content_type) = match mode {
        Mode::Generate => (plan.generate(), "application/json; charset=UTF-8"),
        Mode::Sse => (plan.stream(true), "text/event-stream"),
        Mode::Array => (plan.stream(false), "application/json; charset=UTF-8"),
    };
    let (pieces, abort, complete) = out.finish();
    Reply {
        status: StatusCode::OK,
        content_type,
        pieces,
        abort,
        latency: None,
        drip: d.drip,
        // a deliberately incomplete body never counts as completed
        done: complete.then_some(done),
    }
}

async fn make_image(d: &Directives, seed: u64, thought: bool, sig: bool) -> Img {
    let (format, size) = (d.format, d.size);
    let built = tokio::task::spawn_blocking(move || images::synth_base64(format, size, seed)).await;
    // A panic while building is a bug in the generator; retrying on this
    // thread lets it surface in the test instead of sending an empty image.
    let (synth, b64) = match built {
        Ok(v) => v,
        Err(_) => images::synth_base64(format, size, seed),
    };
    let sig = sig.then(|| thought_signature(seed, &synth.sha256));
    Img {
        declared: d.label.clone().unwrap_or_else(|| synth.mime.to_string()),
        synth,
        b64,
        thought,
        sig,
    }
}

/// Opaque-looking and long like the real ones, and stable per image.
fn thought_signature(seed: u64, sha: &str) -> String {
    let mut raw = Vec::with_capacity(192);
    let mut h = Sha256::digest(format!("sig:{seed}:{sha}").as_bytes());
    for _ in 0..6 {
        raw.extend_from_slice(&h);
        h = Sha256::digest(h);
    }
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn response_id(prompt: &str, id: u64) -> String {
    let h = Sha256::digest(format!("resp:{id}:{prompt}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h[..17])
}

fn big_text(n: usize) -> String {
    const WORDS: &[&str] = &[
        "a", "quiet", "harbour", "at", "dusk", "with", "pink", "clouds", "over", "the", "water",
        "and", "small", "boats", "resting", "near", "old", "stone", "piers",
    ];
    let mut s = String::with_capacity(n + 16);
    let mut i = 0usize;
    while s.len() < n {
        s.push_str(WORDS[(i * 7 + i / 3) % WORDS.len()]);
        s.push(' ');
        i += 1;
    }
    s.truncate(n);
    s
}

enum Finish {
    Reason(String, Option<String>),
    Blocked(String),
}

struct Plan<'a> {
    ctx: &'a Ctx<'a>,
    d: &'a Directives,
    content: &'a Content,
    finish: &'a Finish,
    gemini3: bool,
    image_count: i64,
}

impl Plan<'_> {
    fn image_part(&self, idx: usize, whole_body: bool) -> J {
        let img = &self.content.imgs[idx];
        let is_result = Some(idx) == self.content.imgs.iter().rposition(|i| !i.thought);
        let cut = if !is_result {
            Cut::None
        } else if self.d.truncate {
            Cut::Half
        } else if self.d.truncate_after_image && whole_body {
            Cut::After
        } else {
            Cut::None
        };
        let data = J::Data(DataSpec {
            b64: img.b64.clone(),
            bad: self.d.badbase64 && is_result,
            cut,
        });
        let inline = if self.d.mime_after {
            J::obj([("data", data), ("mimeType", J::str(&img.declared))])
        } else {
            J::obj([("mimeType", J::str(&img.declared)), ("data", data)])
        };
        let mut fields = Vec::new();
        if img.thought && !self.d.thought_after {
            fields.push(("thought", J::Bool(true)));
        }
        let sig = img.sig.as_ref().map(|s| ("thoughtSignature", J::str(s)));
        if self.d.sig_before
            && let Some(s) = sig.clone()
        {
            fields.push(s);
        }
        fields.push(("inlineData", inline));
        if !self.d.sig_before
            && let Some(s) = sig
        {
            fields.push(s);
        }
        if img.thought && self.d.thought_after {
            fields.push(("thought", J::Bool(true)));
        }
        J::Obj(fields)
    }

    fn usage(&self, full: bool) -> J {
        let c = self.ctx;
        if !full {
            return J::obj([
                ("promptTokenCount", J::Num(c.prompt_tokens)),
                ("totalTokenCount", J::Num(c.prompt_tokens)),
            ]);
        }
        let mut f = vec![
            ("promptTokenCount", J::Num(c.prompt_tokens)),
            ("candidatesTokenCount", J::Num(c.candidate_tokens)),
            (
                "totalTokenCount",
                J::Num(c.prompt_tokens + c.candidate_tokens + c.thoughts_tokens),
            ),
        ];
        if c.thoughts_tokens > 0 {
            f.push(("thoughtsTokenCount", J::Num(c.thoughts_tokens)));
        }
        f.push((
            "promptTokensDetails",
            J::Arr(vec![J::obj([
                ("modality", J::str("TEXT")),
                ("tokenCount", J::Num(c.prompt_tokens)),
            ])]),
        ));
        if self.image_count > 0 {
            f.push((
                "candidatesTokensDetails",
                J::Arr(vec![J::obj([
                    ("modality", J::str("IMAGE")),
                    ("tokenCount", J::Num(IMAGE_TOKENS * self.image_count)),
                ])]),
            ));
        }
        J::Obj(f)
    }

    fn envelope(&self, candidate: Option<J>, full_usage: bool) -> J {
        let mut f = Vec::new();
        if let Some(c) = candidate {
            f.push(("candidates", J::Arr(vec![c])));
        }
        if let Finish::Blocked(reason) = self.finish {
            f.push(("promptFeedback", J::obj([("blockReason", J::str(reason))])));
        }
        f.push(("usageMetadata", self.usage(full_usage)));
        f.push(("modelVersion", J::str(self.ctx.model)));
        f.push(("responseId", J::str(&self.ctx.response_id)));
        J::Obj(f)
    }

    fn candidate(&self, parts: Vec<J>, finish: bool) -> J {
        let mut f = Vec::new();
        if !parts.is_empty() {
            f.push((
                "content",
                J::obj([("parts", J::Arr(parts)), ("role", J::str("model"))]),
            ));
        }
        if finish && let Finish::Reason(reason, message) = self.finish {
            f.push(("finishReason", J::str(reason)));
            if let Some(m) = message {
                f.push(("finishMessage", J::str(m)));
            }
        }
        f.push(("index", J::Num(0)));
        J::Obj(f)
    }

    /// generateContent: one pretty-printed object holding every part.
    fn generate(&self) -> Out {
        let c = self.content;
        let body = if matches!(self.finish, Finish::Blocked(_)) {
            self.envelope(None, false)
        } else {
            let mut parts = Vec::new();
            if !c.lead.is_empty() {
                parts.push(text_part(&c.lead.concat()));
            }
            if let Some(big) = &c.big {
                parts.push(text_part(big));
            }
            for i in 0..c.imgs.len() {
                parts.push(self.image_part(i, true));
            }
            if let Some(tail) = &c.tail {
                parts.push(text_part(tail));
            }
            self.envelope(Some(self.candidate(parts, true)), true)
        };
        let mut out = Out::default();
        write_json(&mut out, &body, true, 0);
        out.raw(b"\n");
        out
    }

    /// streamGenerateContent: SSE events, or a streamed JSON array.
    fn stream(&self, sse: bool) -> Out {
        let c = self.content;
        let mut events = Vec::new();
        // false: the body ends without its final event (or closing bracket)
        let mut complete = true;
        if matches!(self.finish, Finish::Blocked(_)) {
            events.push(self.envelope(None, false));
        } else {
            let mut parts: Vec<J> = c.lead.iter().map(|t| text_part(t)).collect();
            parts.extend(c.big.as_deref().map(text_part));
            let error = self.d.midstream_error;
            if !error {
                parts.extend((0..c.imgs.len()).map(|i| self.image_part(i, false)));
                parts.extend(c.tail.as_deref().map(text_part));
            }
            let special = !matches!(self.finish, Finish::Reason(r, _) if r == "STOP");
            // Real streams put finishReason on the last event; Gemini 3 ends
            // with an extra `{"text": ""}` event; truncate-after-image needs
            // the finish in an event of its own so it can be withheld.
            let separate = self.gemini3
                || special
                || error
                || parts.is_empty()
                || (self.d.truncate_after_image && self.image_count > 0);
            let n = parts.len();
            for (i, part) in parts.into_iter().enumerate() {
                let last = i + 1 == n && !separate;
                events.push(self.envelope(Some(self.candidate(vec![part], last)), last));
            }
            if error {
                events.push(error_json(500, "Internal error encountered.", Vec::new()));
            } else if self.d.truncate_after_image && self.image_count > 0 {
                complete = false;
            } else if separate {
                let parts = if special {
                    Vec::new()
                } else {
                    vec![text_part("")]
                };
                events.push(self.envelope(Some(self.candidate(parts, true)), true));
            }
        }

        let mut out = Out::default();
        if !sse {
            out.raw(b"[");
        }
        for (i, ev) in events.iter().enumerate() {
            if sse {
                out.raw(b"data: ");
                write_json(&mut out, ev, false, 0);
                out.raw(b"\r\n\r\n");
            } else {
                if i > 0 {
                    out.raw(b",\r\n");
                }
                write_json(&mut out, ev, true, 0);
            }
        }
        if !sse && complete {
            out.raw(b"]");
        }
        out.incomplete |= !complete;
        out
    }
}

fn text_part(t: &str) -> J {
    J::obj([("text", J::str(t))])
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    }
}

fn status_error(code: u16, model: &str, d: &Directives) -> Reply {
    let retry = &d.retry;
    let (message, details) = match code {
        429 => {
            let (quota_id, limit) = if d.quota_day {
                ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "100")
            } else {
                ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10")
            };
            let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
            let message = format!(
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, head to: \
                 https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for \
                 metric: {metric}, limit: {limit}, model: {model}\nPlease retry in {retry}s."
            );
            let details = vec![
                J::obj([
                    (
                        "@type",
                        J::str("type.googleapis.com/google.rpc.QuotaFailure"),
                    ),
                    (
                        "violations",
                        J::Arr(vec![J::obj([
                            ("quotaMetric", J::str(metric)),
                            ("quotaId", J::str(quota_id)),
                            (
                                "quotaDimensions",
                                J::obj([("location", J::str("global")), ("model", J::str(model))]),
                            ),
                            ("quotaValue", J::str(limit)),
                        ])]),
                    ),
                ]),
                J::obj([
                    ("@type", J::str("type.googleapis.com/google.rpc.Help")),
                    (
                        "links",
                        J::Arr(vec![J::obj([
                            ("description", J::str("Learn more about Gemini API quotas")),
                            (
                                "url",
                                J::str("https://ai.google.dev/gemini-api/docs/rate-limits"),
                            ),
                        ])]),
                    ),
                ]),
                J::obj([
                    ("@type", J::str("type.googleapis.com/google.rpc.RetryInfo")),
                    ("retryDelay", J::str(&format!("{retry}s"))),
                ]),
            ];
            (message, details)
        }
        400 => ("Request contains an invalid argument.".to_string(), vec![]),
        403 => (
            "The caller does not have permission".to_string(),
            Vec::new(),
        ),
        404 => ("Requested entity was not found.".to_string(), Vec::new()),
        500 => (
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting"
                .to_string(),
            Vec::new(),
        ),
        503 => (
            "The model is overloaded. Please try again later.".to_string(),
            Vec::new(),
        ),
        504 | 408 => (
            "Deadline expired before operation could complete.".to_string(),
            Vec::new(),
        ),
        _ => (format!("fake-gemini: HTTP {code} on request"), Vec::new()),
    };
    error_reply(code, &message, details)
}

fn error_json(code: u16, message: &str, details: Vec<J>) -> J {
    let mut f = vec![
        ("code", J::Num(i64::from(code))),
        ("message", J::str(message)),
        ("status", J::str(status_name(code))),
    ];
    if !details.is_empty() {
        f.push(("details", J::Arr(details)));
    }
    J::obj([("error", J::Obj(f))])
}

/// Errors come back pretty-printed in Google's envelope, whatever the mode.
fn error_reply(code: u16, message: &str, details: Vec<J>) -> Reply {
    let mut out = Out::default();
    write_json(&mut out, &error_json(code, message, details), true, 0);
    out.raw(b"\n");
    let (pieces, _, _) = out.finish();
    Reply {
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        content_type: "application/json; charset=UTF-8",
        pieces,
        abort: false,
        latency: None,
        drip: Duration::ZERO,
        done: None,
    }
}

// ---------------------------------------------------------------------------
// JSON output with fixed key order and spliced base64

/// A tiny ordered JSON tree. serde_json's `Value` sorts keys (without the
/// crate-wide `preserve_order` feature) and would copy the image string; the
/// fake needs both a chosen key order and zero-copy splicing.
#[derive(Clone)]
enum J {
    Str(String),
    Num(i64),
    Bool(bool),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
    Data(DataSpec),
}

impl J {
    fn str(s: &str) -> J {
        J::Str(s.to_string())
    }

    fn obj<const N: usize>(fields: [(&'static str, J); N]) -> J {
        J::Obj(fields.into())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    None,
    /// Stop halfway through the base64 and abort the connection.
    Half,
    /// Stop right after the closing quote, ending the body cleanly.
    After,
}

#[derive(Clone)]
struct DataSpec {
    b64: Bytes,
    bad: bool,
    cut: Cut,
}

/// Body under construction: small text accumulates in `buf`, big base64 is
/// pushed as its own shared `Bytes`. Once stopped, further writes vanish.
#[derive(Default)]
struct Out {
    pieces: Vec<Bytes>,
    buf: Vec<u8>,
    stopped: bool,
    abort: bool,
    /// The body deliberately lacks its end (cut, or final event withheld).
    incomplete: bool,
}

impl Out {
    fn raw(&mut self, s: &[u8]) {
        if !self.stopped {
            self.buf.extend_from_slice(s);
        }
    }

    fn splice(&mut self, b: Bytes) {
        if self.stopped || b.is_empty() {
            return;
        }
        self.flush();
        self.pieces.push(b);
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.pieces.push(Bytes::from(std::mem::take(&mut self.buf)));
        }
    }

    fn stop(&mut self, abort: bool) {
        self.flush();
        self.stopped = true;
        self.abort = abort;
        self.incomplete = true;
    }

    /// Returns the pieces, whether to abort after them, and whether the
    /// body is complete.
    fn finish(mut self) -> (Vec<Bytes>, bool, bool) {
        self.flush();
        (self.pieces, self.abort, !self.incomplete)
    }
}

fn write_str(out: &mut Out, s: &str) {
    out.raw(b"\"");
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.raw(&s.as_bytes()[start..i]);
        match esc {
            Some(e) => out.raw(e),
            None => out.raw(format!("\\u{:04x}", c as u32).as_bytes()),
        }
        start = i + c.len_utf8();
    }
    out.raw(&s.as_bytes()[start..]);
    out.raw(b"\"");
}

fn newline(out: &mut Out, depth: usize) {
    out.raw(b"\n");
    for _ in 0..depth {
        out.raw(b"  ");
    }
}

/// Pretty mode matches Google's non-streaming bodies (2-space indent).
/// Compact mode matches its SSE lines, which keep a space after each colon:
/// `{"candidates": [{"content": {"parts": [...`.
fn write_json(out: &mut Out, j: &J, pretty: bool, depth: usize) {
    match j {
        J::Str(s) => write_str(out, s),
        J::Num(n) => out.raw(n.to_string().as_bytes()),
        J::Bool(b) => out.raw(if *b { b"true" } else { b"false" }),
        J::Arr(items) => {
            if items.is_empty() {
                out.raw(b"[]");
                return;
            }
            out.raw(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.raw(b",");
                }
                if pretty {
                    newline(out, depth + 1);
                }
                write_json(out, item, pretty, depth + 1);
            }
            if pretty {
                newline(out, depth);
            }
            out.raw(b"]");
        }
        J::Obj(fields) => {
            if fields.is_empty() {
                out.raw(b"{}");
                return;
            }
            out.raw(b"{");
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.raw(b",");
                }
                if pretty {
                    newline(out, depth + 1);
                }
                write_str(out, k);
                out.raw(b": ");
                write_json(out, v, pretty, depth + 1);
            }
            if pretty {
                newline(out, depth);
            }
            out.raw(b"}");
        }
        J::Data(spec) => {
            out.raw(b"\"");
            let b64 = &spec.b64;
            match spec.cut {
                Cut::Half => {
                    out.splice(b64.slice(..b64.len() / 2));
                    out.stop(true);
                    return;
                }
                _ if spec.bad => {
                    // quartet-aligned so the corruption is a whole bogus group
                    let mid = (b64.len() / 2) & !3;
                    out.splice(b64.slice(..mid));
                    out.raw(b"!!!!");
                    out.splice(b64.slice(mid..));
                }
                _ => out.splice(b64.clone()),
            }
            out.raw(b"\"");
            if spec.cut == Cut::After {
                out.stop(false);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Body streaming

struct Cursor {
    pieces: VecDeque<Bytes>,
    chunk: usize,
    drip: Duration,
    abort: bool,
    done: Option<Arc<AtomicBool>>,
    started: bool,
    finished: bool,
}

impl Cursor {
    fn mark_done(&self) {
        if let Some(d) = &self.done {
            d.store(true, Ordering::Release);
        }
    }
}

/// Streams `pieces` in `chunk`-sized zero-copy slices, sleeping `drip`
/// between writes; when `abort`, ends with an error so hyper drops the
/// connection mid-body, which is what a real cut looks like to a client.
fn body_stream(
    pieces: Vec<Bytes>,
    abort: bool,
    drip: Duration,
    chunk: usize,
    done: Option<Arc<AtomicBool>>,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let cursor = Cursor {
        pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
        chunk: chunk.max(1),
        drip,
        abort,
        done,
        started: false,
        finished: false,
    };
    futures::stream::unfold(cursor, |mut cur| async move {
        if cur.finished {
            return None;
        }
        let Some(front) = cur.pieces.front_mut() else {
            cur.finished = true;
            if cur.abort {
                // Give hyper a moment to flush what was already written, so
                // the client really receives the partial body before the cut.
                tokio::time::sleep(Duration::from_millis(30)).await;
                let err = io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fake-gemini: response truncated on purpose",
                );
                return Some((Err(err), cur));
            }
            cur.mark_done();
            return None;
        };
        let n = cur.chunk.min(front.len());
        let slice = front.split_to(n);
        if front.is_empty() {
            cur.pieces.pop_front();
        }
        if cur.started && !cur.drip.is_zero() {
            tokio::time::sleep(cur.drip).await;
        }
        cur.started = true;
        if cur.pieces.is_empty() && !cur.abort {
            // Marked before the last write so a client that has read the
            // whole body always observes `completed`.
            cur.mark_done();
        }
        Some((Ok(slice), cur))
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // small test bodies
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    const KEY: &str = "test-key";

    async fn start() -> FakeGemini {
        start_with(FakeConfig::default()).await
    }

    async fn start_with(cfg: FakeConfig) -> FakeGemini {
        FakeGemini::start(cfg, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("fake starts")
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    fn body_for(prompt: &str) -> String {
        json!({
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}
        })
        .to_string()
    }

    async fn call(fake: &FakeGemini, model: &str, tail: &str, body: String) -> reqwest::Response {
        client()
            .post(format!("{}/v1beta/models/{model}:{tail}", fake.base_url()))
            .header("x-goog-api-key", KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    async fn sse(fake: &FakeGemini, model: &str, prompt: &str) -> String {
        let resp = call(
            fake,
            model,
            "streamGenerateContent?alt=sse",
            body_for(prompt),
        )
        .await;
        let status = resp.status();
        let ct = resp.headers().get("content-type").cloned();
        let text = String::from_utf8(resp.bytes().await.expect("body").to_vec()).expect("utf8");
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            ct.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        text
    }

    fn events(body: &str) -> Vec<Value> {
        assert!(body.ends_with("\r\n\r\n"), "event framing");
        body.split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let line = e.strip_prefix("data: ").expect("data: prefix");
                assert!(!line.contains('\n'), "one line per event");
                serde_json::from_str(line).expect("event is JSON")
            })
            .collect()
    }

    fn parts(ev: &Value) -> Vec<Value> {
        ev["candidates"][0]["content"]["parts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn decode_sha(part: &Value) -> (usize, String) {
        let data = part["inlineData"]["data"].as_str().expect("data");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64");
        (bytes.len(), hex::encode(Sha256::digest(&bytes)))
    }

    fn image_parts(evs: &[Value]) -> Vec<Value> {
        evs.iter()
            .flat_map(parts)
            .filter(|p| p.get("inlineData").is_some())
            .collect()
    }

    #[tokio::test]
    async fn sse_image_round_trip() {
        let fake = start().await;
        let prompt = "a red fox fake:size=300KiB, fake:text";
        let body = sse(&fake, "gemini-2.5-flash-image", prompt).await;
        // Google's SSE lines keep a space after colons.
        assert!(body.starts_with("data: {\"candidates\": [{\"content\": {\"parts\": ["));
        let evs = events(&body);
        assert_eq!(evs.len(), 3, "two text events then the image");
        assert_eq!(parts(&evs[0])[0]["text"], "Here is ");
        let last = &evs[2];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["candidates"][0]["content"]["role"], "model");
        assert_eq!(last["modelVersion"], "gemini-2.5-flash-image");
        assert!(last["usageMetadata"]["candidatesTokenCount"].as_i64() > Some(1000));
        let imgs = image_parts(&evs);
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0]["inlineData"]["mimeType"], "image/png");
        let (len, sha) = decode_sha(&imgs[0]);
        assert_eq!(len, 300 * 1024);

        let sent = fake.state.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].sha256, sha);
        assert_eq!(sent[0].bytes, len);
        assert!(sent[0].completed);
        assert!(!sent[0].thought);
        assert_eq!(sent[0].prompt, prompt);
        let reqs = fake.state.requests();
        assert!(reqs[0].sse && reqs[0].method == "streamGenerateContent");
        fake.stop().await;
    }

    #[tokio::test]
    async fn json_array_mode() {
        let fake = start().await;
        let resp = call(
            &fake,
            "fake-model",
            "streamGenerateContent",
            body_for("fake:text fake:format=jpeg fake:size=20000"),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("body");
        assert!(body.starts_with(b"[{\n  \"candidates\""));
        assert!(body.windows(4).any(|w| w == b"},\r\n"));
        let arr: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        assert_eq!(arr.len(), 3);
        let imgs = image_parts(&arr);
        assert_eq!(imgs[0]["inlineData"]["mimeType"], "image/jpeg");
        let (_, sha) = decode_sha(&imgs[0]);
        assert_eq!(fake.state.sent()[0].sha256, sha);
        assert!(!fake.state.requests()[0].sse);
        fake.stop().await;
    }

    #[tokio::test]
    async fn generate_content_is_pretty() {
        let fake = start().await;
        let resp = call(
            &fake,
            "gemini-2.5-flash-image",
            "generateContent",
            body_for("fake:text fake:size=64KiB"),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        assert!(
            body.starts_with("{\n  \"candidates\": [\n    {\n      \"content\": {\n"),
            "{}",
            &body[..200]
        );
        let v: Value = serde_json::from_str(&body).expect("json");
        let ps = parts(&v);
        assert_eq!(ps[0]["text"], "Here is your image.");
        let (len, sha) = decode_sha(&ps[1]);
        assert_eq!(len, 64 * 1024);
        assert_eq!(fake.state.sent()[0].sha256, sha);
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["candidates"][0]["index"], 0);
        assert_eq!(v["responseId"].as_str().map(str::len), Some(23));
        fake.stop().await;
    }

    #[tokio::test]
    async fn quota_429_with_retry_info_then_success() {
        let fake = start().await;
        let prompt = "cat fake:status=429 fake:times=1 fake:retry=0.4 fake:size=1000";
        let resp = call(
            &fake,
            "gemini-2.5-flash-image",
            "generateContent",
            body_for(prompt),
        )
        .await;
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().get("retry-after").is_none());
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
        assert_eq!(err["error"]["code"], 429);
        assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
        let msg = err["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("You exceeded your current quota"));
        assert!(msg.ends_with("Please retry in 0.4s."));
        let details = err["error"]["details"].as_array().expect("details");
        let retry = details
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            .expect("RetryInfo");
        assert_eq!(retry["retryDelay"], "0.4s");
        let quota = &details[0]["violations"][0]["quotaId"];
        assert_eq!(
            quota,
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        );

        let resp = call(
            &fake,
            "gemini-2.5-flash-image",
            "generateContent",
            body_for(prompt),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(fake.state.sent().len(), 1);

        let day = "fake:status=429 fake:quota=day";
        for _ in 0..2 {
            let resp = call(
                &fake,
                "gemini-2.5-flash-image",
                "generateContent",
                body_for(day),
            )
            .await;
            assert_eq!(resp.status(), 429, "times absent: always fails");
            let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
            let id = &err["error"]["details"][0]["violations"][0]["quotaId"];
            assert!(id.as_str().unwrap_or_default().contains("PerDay"));
        }
        let statuses: Vec<u16> = fake.state.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 200, 429, 429]);
        fake.stop().await;
    }

    #[tokio::test]
    async fn other_status_codes_use_google_envelope() {
        let fake = start().await;
        for (code, status) in [
            (500, "INTERNAL"),
            (503, "UNAVAILABLE"),
            (504, "DEADLINE_EXCEEDED"),
            (400, "INVALID_ARGUMENT"),
            (403, "PERMISSION_DENIED"),
        ] {
            let prompt = format!("fake:status={code}");
            let resp = call(
                &fake,
                "fake-x",
                "streamGenerateContent?alt=sse",
                body_for(&prompt),
            )
            .await;
            assert_eq!(resp.status().as_u16(), code);
            let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
            assert_eq!(err["error"]["status"], status);
            if code == 503 {
                assert_eq!(
                    err["error"]["message"],
                    "The model is overloaded. Please try again later."
                );
            }
        }
        fake.stop().await;
    }

    #[tokio::test]
    async fn bad_and_missing_keys() {
        let fake = start_with(FakeConfig {
            api_key: Some(KEY.into()),
            ..FakeConfig::default()
        })
        .await;
        let url = format!(
            "{}/v1beta/models/gemini-2.5-flash-image:generateContent",
            fake.base_url()
        );
        let resp = client()
            .post(&url)
            .header("x-goog-api-key", "wrong")
            .body(body_for("x"))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 400);
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            err["error"]["message"],
            "API key not valid. Please pass a valid API key."
        );
        assert_eq!(err["error"]["details"][0]["reason"], "API_KEY_INVALID");
        assert_eq!(err["error"]["details"][0]["domain"], "googleapis.com");

        let resp = client()
            .post(&url)
            .body(body_for("x"))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 403);
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert_eq!(err["error"]["status"], "PERMISSION_DENIED");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Method doesn't allow unregistered callers")
        );

        let resp = client()
            .post(format!("{url}?key={KEY}"))
            .body(body_for("fake:size=500"))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200, "?key= works too");
        let statuses: Vec<u16> = fake.state.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400, 403, 200]);
        fake.stop().await;
    }

    #[tokio::test]
    async fn retired_and_unknown_models_are_404() {
        let fake = start().await;
        for model in [
            "gemini-2.5-flash-image-preview",
            "gemini-3-pro-image-preview",
            "gemini-9-ultra",
        ] {
            let resp = call(&fake, model, "generateContent", body_for("x")).await;
            assert_eq!(resp.status(), 404);
            let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
            assert_eq!(err["error"]["status"], "NOT_FOUND");
            let expected = format!(
                "models/{model} is not found for API version v1beta, or is not supported for \
                 generateContent. Call ListModels to see the list of available models and their \
                 supported methods."
            );
            assert_eq!(err["error"]["message"], expected.as_str());
        }
        for model in ["gemini-3-pro-image", "fake-anything"] {
            let resp = call(&fake, model, "generateContent", body_for("fake:size=500")).await;
            assert_eq!(resp.status(), 200, "{model}");
        }
        fake.stop().await;
    }

    #[tokio::test]
    async fn truncate_yields_body_error() {
        let fake = start().await;
        let resp = call(
            &fake,
            "gemini-2.5-flash-image",
            "streamGenerateContent?alt=sse",
            body_for("fake:truncate fake:size=1MiB"),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut got = 0usize;
        let mut failed = false;
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a cut body is an error, not a clean end");
        // about half of the ~1.4 MB of base64 arrived before the cut
        assert!(got > 500_000 && got < 900_000, "got {got}");
        let sent = fake.state.sent();
        assert!(!sent[0].completed);

        let resp = call(
            &fake,
            "gemini-2.5-flash-image",
            "generateContent",
            body_for("fake:truncate fake:size=100KiB"),
        )
        .await;
        assert!(resp.bytes().await.is_err());
        fake.stop().await;
    }

    #[tokio::test]
    async fn truncate_after_image_ends_cleanly_without_finish() {
        let fake = start().await;
        let body = sse(
            &fake,
            "gemini-2.5-flash-image",
            "fake:truncate-after-image fake:size=10000",
        )
        .await;
        let evs = events(&body);
        assert_eq!(image_parts(&evs).len(), 1);
        assert!(
            evs.iter()
                .all(|e| e["candidates"][0].get("finishReason").is_none())
        );
        assert!(!fake.state.sent()[0].completed);

        let resp = call(
            &fake,
            "fake-x",
            "streamGenerateContent",
            body_for("fake:truncate-after-image fake:size=10000"),
        )
        .await;
        let body = resp.bytes().await.expect("clean end");
        assert!(body.ends_with(b"}"), "no closing bracket");
        assert!(serde_json::from_slice::<Value>(&body).is_err());
        fake.stop().await;
    }

    #[tokio::test]
    async fn thought_images_and_signatures() {
        let fake = start().await;
        let body = sse(&fake, "gemini-3-pro-image", "fake:thought fake:size=50000").await;
        let evs = events(&body);
        assert_eq!(
            evs.len(),
            3,
            "thought image, result image, final empty text"
        );
        let first = &parts(&evs[0])[0];
        assert_eq!(first["thought"], true);
        let result = &parts(&evs[1])[0];
        assert!(result.get("thought").is_none());
        assert!(
            result["thoughtSignature"]
                .as_str()
                .is_some_and(|s| s.len() > 100)
        );
        assert!(evs[1]["candidates"][0].get("finishReason").is_none());
        assert_eq!(parts(&evs[2])[0]["text"], "");
        assert_eq!(evs[2]["candidates"][0]["finishReason"], "STOP");
        assert!(evs[2]["usageMetadata"]["thoughtsTokenCount"].as_i64() > Some(0));

        let sent = fake.state.sent();
        assert_eq!(sent.len(), 2);
        assert!(sent[0].thought && !sent[1].thought);
        assert_ne!(sent[0].sha256, sent[1].sha256);
        assert_eq!(decode_sha(first).1, sent[0].sha256);
        assert_eq!(decode_sha(result).1, sent[1].sha256);
        assert_eq!(
            sent[1].thought_signature.as_deref(),
            result["thoughtSignature"].as_str()
        );

        // thought-after: the flag follows the image data on the wire
        let body = sse(&fake, "fake-x", "fake:thought-after fake:size=2000").await;
        let first_event = body.split("\r\n\r\n").next().unwrap_or_default();
        let data_at = first_event.find("\"inlineData\"").expect("inlineData");
        let thought_at = first_event.find("\"thought\"").expect("thought");
        assert!(data_at < thought_at);
        fake.stop().await;
    }

    #[tokio::test]
    async fn key_order_and_lying_mime() {
        let fake = start().await;
        let body = sse(
            &fake,
            "fake-x",
            "fake:order=mime-after+sig-before fake:sig fake:format=jpeg fake:label=image/png \
             fake:size=3000",
        )
        .await;
        let at = |k: &str| body.find(k).expect(k);
        assert!(at("\"data\"") < at("\"mimeType\""));
        assert!(at("\"thoughtSignature\"") < at("\"inlineData\""));
        let evs = events(&body);
        let img = &image_parts(&evs)[0];
        assert_eq!(img["inlineData"]["mimeType"], "image/png");
        let data = img["inlineData"]["data"].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("b64");
        assert_eq!(Format::sniff(&bytes), Some(Format::Jpeg));
        let sent = &fake.state.sent()[0];
        assert_eq!(sent.format, Format::Jpeg);
        assert_eq!(sent.declared_mime, "image/png");
        fake.stop().await;
    }

    #[tokio::test]
    async fn safety_blocked_and_finish_reasons() {
        let fake = start().await;
        let body = sse(&fake, "fake-x", "fake:safety").await;
        let evs = events(&body);
        let cand = &evs[evs.len() - 1]["candidates"][0];
        assert_eq!(cand["finishReason"], "IMAGE_SAFETY");
        assert!(cand.get("content").is_none());
        assert!(
            cand["finishMessage"]
                .as_str()
                .is_some_and(|m| m.contains("You will not be charged"))
        );

        let resp = call(&fake, "fake-x", "generateContent", body_for("fake:blocked")).await;
        let v: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert!(v.get("candidates").is_none());
        assert_eq!(v["promptFeedback"]["blockReason"], "PROHIBITED_CONTENT");

        let resp = call(
            &fake,
            "fake-x",
            "generateContent",
            body_for("fake:finish=recitation fake:message=Too_close_to_a_source"),
        )
        .await;
        let v: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert_eq!(v["candidates"][0]["finishReason"], "RECITATION");
        assert_eq!(v["candidates"][0]["finishMessage"], "Too close to a source");
        assert!(fake.state.sent().is_empty());
        fake.stop().await;
    }

    #[tokio::test]
    async fn text_only_bigtext_and_echo_sha() {
        let fake = start().await;
        let body = sse(&fake, "fake-x", "fake:images=0").await;
        let evs = events(&body);
        assert!(image_parts(&evs).is_empty());
        assert_eq!(evs[evs.len() - 1]["candidates"][0]["finishReason"], "STOP");
        assert!(fake.state.sent().is_empty());

        let body = sse(
            &fake,
            "fake-x",
            "fake:bigtext=100000 fake:echo-sha fake:size=999",
        )
        .await;
        let evs = events(&body);
        assert_eq!(
            parts(&evs[0])[0]["text"].as_str().map(str::len),
            Some(100_000)
        );
        let tail = parts(&evs[evs.len() - 1])[0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(tail, format!("sha256={}", fake.state.sent()[0].sha256));

        let resp = call(
            &fake,
            "fake-x",
            "generateContent",
            body_for("fake:text fake:echo-sha"),
        )
        .await;
        let v: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        let text = parts(&v)[0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(text.starts_with("Here is your image. sha256="));
        assert!(text.ends_with(&fake.state.sent()[1].sha256));
        fake.stop().await;
    }

    #[tokio::test]
    async fn badbase64_and_midstream_error() {
        let fake = start().await;
        let body = sse(&fake, "fake-x", "fake:badbase64 fake:size=5000").await;
        let evs = events(&body);
        let data = image_parts(&evs)[0]["inlineData"]["data"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(data.contains("!!!!"));
        assert!(
            base64::engine::general_purpose::STANDARD
                .decode(&data)
                .is_err()
        );

        let body = sse(&fake, "fake-x", "fake:text fake:midstream-error").await;
        let evs = events(&body);
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[2]["error"]["code"], 500);
        assert_eq!(evs[2]["error"]["status"], "INTERNAL");
        assert!(image_parts(&evs).is_empty());
        fake.stop().await;
    }

    #[tokio::test]
    async fn snake_case_request_recorded() {
        let fake = start().await;
        let img = images::synth(Format::Png, 4000, 11);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&img.bytes);
        let body = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "first turn"}]},
                {"role": "model", "parts": [
                    {"inline_data": {"mime_type": "image/png", "data": b64},
                     "thought_signature": "c2lnLW9uZQ=="}]},
                {"role": "user", "parts": [{"text": "now make it blue"}, {"text": "fake:size=700"}]}
            ],
            "generation_config": {"response_modalities": ["IMAGE"],
                                  "image_config": {"aspect_ratio": "16:9"}}
        });
        let resp = call(&fake, "fake-x", "generateContent", body.to_string()).await;
        assert_eq!(resp.status(), 200);
        let rec = &fake.state.requests()[0];
        assert_eq!(rec.prompt, "now make it blue\nfake:size=700");
        assert_eq!(rec.text, "first turn\nnow make it blue\nfake:size=700");
        assert_eq!(
            rec.generation_config
                .as_ref()
                .map(|g| &g["image_config"]["aspect_ratio"]),
            Some(&json!("16:9"))
        );
        assert_eq!(rec.thought_signatures, ["c2lnLW9uZQ=="]);
        assert_eq!(rec.inputs.len(), 1);
        assert_eq!(rec.inputs[0].role, "model");
        assert_eq!(rec.inputs[0].mime_type, "image/png");
        assert_eq!(rec.inputs[0].sha256, img.sha256);
        assert_eq!(fake.state.sent()[0].bytes, 700);
        fake.stop().await;
    }

    #[tokio::test]
    async fn edit_request_inline_data_recorded() {
        let fake = start().await;
        let a = images::synth(Format::Jpeg, 3 * 1024 * 1024, 21);
        let b = images::synth(Format::Webp, 10_000, 22);
        let enc = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = json!({
            "contents": [{"role": "user", "parts": [
                {"text": "merge these fake:size=2000"},
                {"inlineData": {"mimeType": "image/jpeg", "data": enc(&a.bytes)}},
                {"inlineData": {"data": enc(&b.bytes), "mimeType": "image/webp"}}
            ]}],
            "generationConfig": {"imageConfig": {"imageSize": "2K"}}
        });
        let resp = call(
            &fake,
            "gemini-3-pro-image",
            "generateContent",
            body.to_string(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let rec = &fake.state.requests()[0];
        let got: Vec<(&str, usize, &str)> = rec
            .inputs
            .iter()
            .map(|i| (i.mime_type.as_str(), i.bytes, i.sha256.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("image/jpeg", a.bytes.len(), a.sha256.as_str()),
                ("image/webp", b.bytes.len(), b.sha256.as_str())
            ]
        );
        assert_eq!(
            rec.generation_config
                .as_ref()
                .map(|g| &g["imageConfig"]["imageSize"]),
            Some(&json!("2K"))
        );

        let bad = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]}]});
        let resp = call(&fake, "fake-x", "generateContent", bad.to_string()).await;
        assert_eq!(resp.status(), 400);
        fake.stop().await;
    }

    #[tokio::test]
    async fn unknown_directive_is_400() {
        let fake = start().await;
        let resp = call(
            &fake,
            "fake-x",
            "generateContent",
            body_for("fake:sise=1MiB"),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("fake:sise")
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn latency_drip_and_chunking() {
        let fake = start_with(FakeConfig {
            chunk_size: 1000,
            ..FakeConfig::default()
        })
        .await;
        let t = Instant::now();
        let resp = call(
            &fake,
            "fake-x",
            "generateContent",
            body_for("fake:latency=200 fake:size=500"),
        )
        .await;
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(resp.status(), 200);

        let t = Instant::now();
        let resp = call(
            &fake,
            "fake-x",
            "generateContent",
            body_for("fake:drip=20 fake:size=6000"),
        )
        .await;
        let body = resp.bytes().await.expect("body");
        // ~8 KB in 1000-byte writes with 20 ms between them
        assert!(body.len() > 8000);
        assert!(
            t.elapsed() >= Duration::from_millis(140),
            "{:?}",
            t.elapsed()
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn fake_endpoints_serve_logs() {
        let fake = start().await;
        let _ = call(
            &fake,
            "fake-x",
            "generateContent",
            body_for("fake:size=500"),
        )
        .await;
        let get = |p: &str| client().get(format!("{}{p}", fake.base_url())).send();
        let health: Value = serde_json::from_slice(
            &get("/_fake/health")
                .await
                .expect("h")
                .bytes()
                .await
                .expect("b"),
        )
        .expect("j");
        assert_eq!(health["ok"], true);
        let sent: Value = serde_json::from_slice(
            &get("/_fake/sent")
                .await
                .expect("s")
                .bytes()
                .await
                .expect("b"),
        )
        .expect("j");
        assert_eq!(sent[0]["format"], "png");
        assert_eq!(sent[0]["bytes"], 500);
        let reqs: Value = serde_json::from_slice(
            &get("/_fake/requests")
                .await
                .expect("r")
                .bytes()
                .await
                .expect("b"),
        )
        .expect("j");
        assert_eq!(reqs[0]["model"], "fake-x");
        let reset = client()
            .post(format!("{}/_fake/reset", fake.base_url()))
            .send()
            .await
            .expect("reset");
        assert_eq!(reset.status(), 204);
        assert!(fake.state.requests().is_empty() && fake.state.sent().is_empty());
        fake.stop().await;
    }

    #[test]
    fn directive_parsing() {
        assert_eq!(parse_size("1.5MiB"), Some(1_572_864));
        assert_eq!(parse_size("512KiB"), Some(524_288));
        assert_eq!(parse_size("2MB"), Some(2_000_000));
        assert_eq!(parse_size("300"), Some(300));
        assert_eq!(parse_size("3GiB"), None);
        let d = Directives::parse("draw (fake:size=1KiB), \"fake:format=gif\". fake:retry=2.5s")
            .expect("parses");
        assert_eq!(
            (d.size, d.format, d.retry.as_str()),
            (1024, Format::Gif, "2.5")
        );
        assert!(Directives::parse("fake:status=200").is_err());
        assert!(Directives::parse("fake:size").is_err());
        assert!(Directives::parse("plain prompt with fake: nothing").is_err());
        let d = Directives::parse("no directives here").expect("parses");
        assert_eq!(d.size, DEFAULT_IMAGE_BYTES);
    }
}
