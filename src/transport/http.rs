//! Streamable HTTP transport and operations endpoints. `/mcp` is rmcp's
//! streamable HTTP service behind bearer-token auth, with rmcp's Host and
//! Origin checks (DNS-rebinding protection) and body cap; `/healthz` says
//! the process is alive, `/readyz` whether it takes work (503 while
//! starting and draining), `/metrics` is Prometheus text. SIGTERM or SIGINT
//! starts one shutdown path: readiness flips, new MCP requests get 503,
//! in-flight calls get up to the grace period to finish, then the process
//! exits 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::app::{SharedApp, StartError};
use crate::mcp::Service;
use crate::secret::Secret;

/// Settings of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// `None` only when auth was explicitly disabled on a loopback bind.
    pub token: Option<Secret>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub stateless: bool,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub session_idle: Duration,
}

struct HttpState {
    app: SharedApp,
    token_hash: Option<[u8; 32]>,
    ready: AtomicBool,
    draining: AtomicBool,
}

/// Compare tokens in constant time by comparing fixed-size digests.
fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    expected
        .iter()
        .zip(got.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn auth(State(st): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    if st.draining.load(Ordering::Relaxed) {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down; retry on another replica",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    if let Some(expected) = &st.token_hash {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match presented {
            Some(t) if token_matches(expected, t.trim()) => {}
            _ => {
                let mut r =
                    (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"nano-banana-mcp\""),
                );
                return r;
            }
        }
    }
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<Arc<HttpState>>) -> Response {
    if st.ready.load(Ordering::Relaxed) && !st.draining.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(st): State<Arc<HttpState>>) -> Response {
    let body = st.app.metrics_text();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Serve until SIGTERM/SIGINT, then drain and return.
pub async fn serve(service: Service, cfg: HttpConfig) -> Result<(), StartError> {
    let app = service.app().clone();
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| StartError::Transport(format!("cannot listen on {}: {e}", cfg.addr)))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Transport(e.to_string()))?;
    let state = Arc::new(HttpState {
        app: Arc::clone(&app),
        token_hash: cfg
            .token
            .as_ref()
            .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });

    let sessions_closed = CancellationToken::new();
    let mut mcp_cfg = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(cfg.max_body_bytes)
        .with_cancellation_token(sessions_closed.clone())
        .with_legacy_session_mode(!cfg.stateless)
        .with_json_response(cfg.stateless);
    mcp_cfg = if cfg.allowed_hosts.iter().any(|h| h == "*") {
        mcp_cfg.disable_allowed_hosts()
    } else {
        mcp_cfg.with_allowed_hosts(cfg.allowed_hosts.clone())
    };
    if !cfg.allowed_origins.is_empty() {
        mcp_cfg = mcp_cfg
            .with_allowed_origins(cfg.allowed_origins.clone())
            .enforce_origin_validation();
    }
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(cfg.session_idle);
    let mcp = StreamableHttpService::new(move || Ok(service.session()), Arc::new(manager), mcp_cfg);

    let router = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&state));

    let purger = app.spawn_idle_purger();
    let stop_accepting = CancellationToken::new();
    // Small JSON-RPC replies must not wait for delayed ACKs (Nagle).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        addr = %local,
        auth = cfg.token.is_some(),
        stateless = cfg.stateless,
        "serving MCP over streamable HTTP at /mcp (health: /healthz, /readyz, metrics: /metrics)"
    );

    super::shutdown_signal().await;
    // One shutdown path: stop being ready, refuse new work, let calls finish.
    state.draining.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let in_flight = app.budget().stats().in_flight;
    tracing::info!(
        in_flight,
        grace_s = cfg.shutdown_grace.as_secs(),
        "draining"
    );
    while app.budget().stats().in_flight > 0 && started.elapsed() < cfg.shutdown_grace {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = app.budget().stats().in_flight;
    if left > 0 {
        tracing::warn!(left, "grace period over; abandoning calls still in flight");
    }
    sessions_closed.cancel();
    stop_accepting.cancel();
    // Open connections get a moment to see their streams end.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    purger.abort();
    tracing::info!(ms = started.elapsed().as_millis() as u64, "shut down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let expected: [u8; 32] = Sha256::digest(b"s3cret").into();
        assert!(token_matches(&expected, "s3cret"));
        assert!(!token_matches(&expected, "s3cre"));
        assert!(!token_matches(&expected, ""));
    }
}
