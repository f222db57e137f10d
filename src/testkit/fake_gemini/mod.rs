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
//!
//! One file a job: `mod.rs` the public API (config, logs, server, routes),
//! `handle` request parsing and dispatch, `directives` the prompt
//! directives, `respond` building replies and error envelopes, `json` the
//! ordered JSON writer, `body` streaming and cuts, `tests` the contract.

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

mod body;
mod directives;
mod handle;
mod json;
mod models;
mod respond;
#[cfg(test)]
mod tests;

use body::*;
use directives::*;
use handle::*;
use json::*;
use models::*;
use respond::*;

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
pub const DIRECTIVES: &str = "size=N[KiB|MiB|KB|MB] format=png|jpeg|webp|gif picture seed=N label=MIME \
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
    /// The request's `tools` (grounding), as sent.
    pub tools: Option<Value>,
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
