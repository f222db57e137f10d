//! Talks to the model. Builds `generateContent` / `streamGenerateContent`
//! requests, sends them with the key in a header (never in a URL), retries
//! what the API says is retryable with jittered backoff that honours
//! `RetryInfo.retryDelay`, and turns error envelopes into messages a user
//! can act on. It takes one `ImageRequest`, builds its body itself (once
//! per attempt), and hands back the response body as a plain byte stream
//! with its read timeout inside; reading images out of it is `extract`'s
//! job. Nothing of reqwest leaves this module.

mod errors;
pub mod models;
pub mod pricing;
pub mod request;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::extract::Framing;
use crate::secret::Secret;

pub use errors::GeminiError;
pub use request::{ImageOptions, ImageRequest, InlineFile, Turn};

/// Connection settings; everything but the key is fixed at start.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    pub base_url: String,
    pub model: String,
    /// `streamGenerateContent?alt=sse` (default) or `generateContent`.
    pub streaming: bool,
    pub connect_timeout: Duration,
    /// Longest silence between two pieces of the body.
    pub read_timeout: Duration,
    /// Longest wait for the response headers of one attempt.
    pub first_byte_timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// HTTP/2 receive window per stream; the connection's is
    /// `H2_STREAMS` of them. Set from the memory plan, which pays for
    /// them (`memory::Plan::gemini_windows`).
    pub h2_stream_window: u32,
}

impl Default for GeminiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://generativelanguage.googleapis.com".into(),
            model: models::DEFAULT_MODEL.into(),
            streaming: true,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            first_byte_timeout: Duration::from_secs(180),
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            h2_stream_window: H2_MAX_STREAM_WINDOW,
        }
    }
}

/// What `generate` returns: a response whose body is ready to be read,
/// piece by piece.
pub struct Response {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    read_timeout: Duration,
    pub framing: Framing,
    pub attempts: u32,
}

/// Why the body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Nothing arrived for this long.
    Timeout(Duration),
    /// The connection broke.
    Broken,
}

impl Response {
    /// The next piece of the body, `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, BodyError> {
        use futures::StreamExt as _;
        match tokio::time::timeout(self.read_timeout, self.body.next()).await {
            Err(_) => Err(BodyError::Timeout(self.read_timeout)),
            Ok(None) => Ok(None),
            Ok(Some(Ok(c))) => Ok(Some(c)),
            Ok(Some(Err(e))) if e.is_timeout() => Err(BodyError::Timeout(self.read_timeout)),
            Ok(Some(Err(_))) => Err(BodyError::Broken),
        }
    }
}

/// Reports retries to whoever is watching (metrics, progress).
pub trait RetryObserver: Send + Sync {
    fn retrying(&self, attempt: u32, delay: Duration, reason: &str);
}

impl RetryObserver for () {
    fn retrying(&self, _: u32, _: Duration, _: &str) {}
}

/// Idle keep-alive connections kept per host (see `GeminiClient::new`).
pub const IDLE_CONNECTIONS: usize = 8;

/// HTTP/2 (Gemini over TLS negotiates it): streams one connection
/// carries, which is what Google's frontends allow, and so how many
/// stream windows the connection window covers. A call whose response has
/// started but has no image memory yet reads nothing, so its stream
/// window is the most the server can send ahead on it; with the
/// connection window at `H2_STREAMS` of them, stalled streams can never
/// use up the window the streams being read need.
pub const H2_STREAMS: u32 = 100;
/// The largest stream window the plan gives (hyper's default is 2 MiB);
/// the smallest is 64 KiB (`memory::plan`).
pub const H2_MAX_STREAM_WINDOW: u32 = 256 << 10;

#[derive(Clone)]
pub struct GeminiClient {
    http: reqwest::Client,
    cfg: Arc<GeminiConfig>,
    key: Arc<RwLock<Option<Secret>>>,
}

impl GeminiClient {
    pub fn new(cfg: GeminiConfig, key: Option<Secret>) -> Result<Self, GeminiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // An idle connection keeps the read buffer it grew to while
            // streaming an image (~0.5 MiB): without a cap, a burst of 64
            // calls left 32 MiB behind in 64 idle connections. Eight stay
            // warm for reuse; the rest close when their call ends.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            // The API never redirects, and `x-goog-api-key` is a custom
            // header that reqwest would carry to whatever host a redirect
            // names: a 3xx is reported as the error it is.
            .redirect(reqwest::redirect::Policy::none())
            .http2_initial_stream_window_size(cfg.h2_stream_window)
            .http2_initial_connection_window_size(cfg.h2_stream_window.saturating_mul(H2_STREAMS))
            .user_agent(concat!("nano-banana-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GeminiError::Setup(e.to_string()))?;
        Ok(Self {
            http,
            cfg: Arc::new(cfg),
            key: Arc::new(RwLock::new(key.filter(|k| !k.is_empty()))),
        })
    }

    pub fn config(&self) -> &GeminiConfig {
        &self.cfg
    }

    pub fn set_key(&self, key: Secret) {
        if let Ok(mut k) = self.key.write() {
            *k = Some(key);
        }
    }

    pub fn has_key(&self) -> bool {
        self.key.read().map(|k| k.is_some()).unwrap_or(false)
    }

    fn current_key(&self) -> Result<Secret, GeminiError> {
        self.key
            .read()
            .ok()
            .and_then(|k| k.clone())
            .ok_or(GeminiError::NoKey)
    }

    fn url(&self, model: &str) -> (String, Framing) {
        let base = self.cfg.base_url.trim_end_matches('/');
        if self.cfg.streaming {
            (
                format!("{base}/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                Framing::Sse,
            )
        } else {
            (
                format!("{base}/v1beta/models/{model}:generateContent"),
                Framing::Json,
            )
        }
    }

    /// Send the request, retrying retryable failures before any body byte
    /// has been read. The body is produced afresh for each attempt, so
    /// streamed input files are read again from the start.
    pub async fn generate(
        &self,
        request: &ImageRequest,
        observer: &dyn RetryObserver,
    ) -> Result<Response, GeminiError> {
        let key = self.current_key()?;
        let (url, framing) = self.url(&request.model);
        let body = request::Body::new(request);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = body.request(&self.http, &url, &key);
            let result = tokio::time::timeout(self.cfg.first_byte_timeout, req.send()).await;
            let failure = match result {
                Err(_) => GeminiError::Timeout(self.cfg.first_byte_timeout),
                Ok(Err(e)) => GeminiError::from_transport(&e),
                Ok(Ok(resp)) if resp.status().is_success() => {
                    return Ok(Response {
                        body: Box::pin(resp.bytes_stream()),
                        read_timeout: self.cfg.read_timeout,
                        framing,
                        attempts: attempt,
                    });
                }
                Ok(Ok(resp)) => errors::from_response(resp, &request.model).await,
            };
            let Some(delay) = self.retry_delay(&failure, attempt) else {
                return Err(failure.after_attempts(attempt));
            };
            observer.retrying(attempt, delay, &failure.to_string());
            tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %failure, "gemini request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// How long to wait before the next attempt, or `None` to give up.
    fn retry_delay(&self, failure: &GeminiError, attempt: u32) -> Option<Duration> {
        if attempt >= self.cfg.max_attempts || !failure.is_retryable() {
            return None;
        }
        let backoff = self
            .cfg
            .retry_base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.cfg.retry_cap);
        // Full jitter on the exponential part keeps many clients apart.
        let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        match failure.server_delay() {
            // The server said when: wait that long, unless it is longer
            // than we are willing to wait at all.
            Some(d) if d > self.cfg.retry_cap => None,
            Some(d) => Some(d + Duration::from_millis(rand::random_range(0..250))),
            None => Some(jittered),
        }
    }
}
