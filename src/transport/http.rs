//! Streamable HTTP transport and operations endpoints. `/mcp` is rmcp's
//! streamable HTTP service behind bearer-token auth, with rmcp's Host and
//! Origin checks (DNS-rebinding protection) and body cap; the stricter
//! Host check of `transport::host` runs first on every route; `/healthz` says
//! the process is alive, `/readyz` whether it takes work (503 while
//! starting and draining), `/metrics` is Prometheus text. SIGTERM or SIGINT
//! starts one shutdown path: readiness flips, new MCP requests get 503,
//! in-flight calls get up to the grace period to finish, then the process
//! exits 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

use super::direct;
use super::edge::{self, BodyLimits, ConnLimits, EdgeStats};
use super::resume;
use crate::app::{SharedApp, StartError};
use crate::auth::{OAuthSettings, Principal, Refusal, Scope, Verifier, Via};
use crate::mcp::Service;
use crate::secret::Secret;

/// Settings of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// `None` only when auth was explicitly disabled on a loopback bind.
    pub token: Option<Secret>,
    /// The operators' token: the only one configure_gemini_token accepts.
    pub admin_token: Option<Secret>,
    /// JWT access tokens from an OAuth 2.1 authorization server
    /// (`--oauth-issuer`); with a static token too, both are accepted.
    pub oauth: Option<OAuthSettings>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub stateless: bool,
    /// Serve stateless image tool calls without rmcp (`transport::direct`).
    pub direct_calls: bool,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub session_idle: Duration,
    /// A second listener for /healthz, /readyz and /metrics only, so
    /// probes are answered while the main one is saturated.
    pub ops_addr: Option<SocketAddr>,
    /// `None`: derived from the plan's connection share.
    pub max_connections: Option<usize>,
    /// `None`: derived from the plan's session share.
    pub max_sessions: Option<usize>,
    /// Time to receive a request head; also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Time to receive a request body.
    pub body_timeout: Duration,
}

struct HttpState {
    app: SharedApp,
    service: Service,
    token_hash: Option<[u8; 32]>,
    admin_hash: Option<[u8; 32]>,
    oauth: Option<Arc<Verifier>>,
    owners: SessionOwners,
    ready: AtomicBool,
    draining: AtomicBool,
    stateless: bool,
    direct_calls: bool,
    allowed_hosts: Vec<String>,
    /// Cancelled when the grace period is over: ends what is still running.
    calls_closed: CancellationToken,
    max_sessions: u64,
    body: BodyLimits,
    edge: Arc<EdgeStats>,
    sessions_refused: AtomicU64,
    /// Calls served by the direct path.
    direct_served: AtomicU64,
}

/// Sessions opened with an OAuth access token, bound to its subject: a
/// session id alone does not let another caller into the session (MCP's
/// security practices: bind session ids to the user). Bounded: past `max`
/// entries, those idle longer than the session idle time go, then the
/// least recently seen.
struct SessionOwners {
    map: std::sync::Mutex<std::collections::HashMap<String, (Arc<str>, Instant)>>,
    idle: Duration,
    max: usize,
}

impl SessionOwners {
    fn new(idle: Duration, max: usize) -> Self {
        Self {
            map: std::sync::Mutex::new(std::collections::HashMap::new()),
            idle,
            max: max.max(16),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Arc<str>, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `p` may use session `sid` (any caller may use a session
    /// nobody bound).
    fn allows(&self, sid: &str, p: &Principal) -> bool {
        match self.lock().get_mut(sid) {
            Some((owner, seen)) if p.via == Via::OAuth && **owner == *p.id => {
                *seen = Instant::now();
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    fn bind(&self, sid: &str, p: &Principal) {
        if p.via != Via::OAuth {
            return;
        }
        let mut m = self.lock();
        if m.len() >= self.max {
            let idle = self.idle;
            m.retain(|_, (_, seen)| seen.elapsed() < idle);
        }
        if m.len() >= self.max
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(sid.to_owned(), (Arc::clone(&p.id), Instant::now()));
    }

    fn forget(&self, sid: &str) {
        self.lock().remove(sid);
    }
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

/// Every route of the MCP listener: the Host allow-list and Host
/// oddities, before auth (`transport::host`).
async fn host_guard(State(st): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    match super::host::check(req.uri(), req.headers(), &st.allowed_hosts) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(reason = %refusal, "request refused by the Host check");
            (refusal.status(), format!("{refusal}\n")).into_response()
        }
    }
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
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let principal = match who(&st, presented).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let mut req = req;
    if principal.via == Via::AdminToken {
        // rmcp hands the request's parts (with their extensions) to the
        // tool, which is how configure_gemini_token knows.
        req.extensions_mut().insert(crate::mcp::AdminCaller);
    }
    // Tool handlers and tasks read who is calling from here.
    req.extensions_mut().insert(principal.clone());
    let session = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(sid) = &session
        && !st.owners.allows(sid, &principal)
    {
        tracing::info!(principal = %principal, "refused: the MCP session belongs to another caller");
        return (
            StatusCode::NOT_FOUND,
            "no such MCP session for this caller; initialize a new one\n",
        )
            .into_response();
    }
    // A request without a session id starts a session (initialize):
    // refused while the session share of the plan is spent.
    if !st.stateless
        && req.method() == axum::http::Method::POST
        && !req.headers().contains_key("mcp-session-id")
        && st.service.live_sessions() >= st.max_sessions
    {
        st.sessions_refused.fetch_add(1, Ordering::Relaxed);
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "server busy: {} MCP sessions are open (the limit, --max-http-sessions); retry later or on another replica",
                st.max_sessions
            ),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    if req.method() == axum::http::Method::DELETE {
        // rmcp ends the session and answers 202, which the spec does not
        // list for DELETE and SDK clients log as a failed termination.
        let resp = next.run(req).await;
        if resp.status().is_success()
            && let Some(sid) = &session
        {
            st.owners.forget(sid);
        }
        if resp.status() == StatusCode::ACCEPTED {
            return StatusCode::NO_CONTENT.into_response();
        }
        return resp;
    }
    if req.method() == axum::http::Method::GET {
        let last = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let resp = next.run(req).await;
        return match last {
            Some(id) => resume::without_event(resp, id),
            None => resp,
        };
    }
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let paid = match edge::read_paid_body(&st.app.bodies, st.body, req).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    if st.direct_calls
        && paid.parts.uri.path() == "/mcp"
        && let Some(call) = direct::take(&paid.parts.headers, &paid.bytes)
    {
        if let Some(scope) = crate::auth::needed("tools/call", Some(call.tool()))
            && !principal.may(scope)
        {
            return insufficient_scope(&st, &principal, scope);
        }
        // Parsed into the call's arguments: the body's bytes go now; its
        // payment stays with the call until the arguments are files (an
        // edit's `data:` URI is still in them until its turn to prepare).
        let edge::PaidBody { parts, bytes, paid } = paid;
        drop((parts, bytes));
        st.direct_served.fetch_add(1, Ordering::Relaxed);
        return direct::serve(st.service.clone(), call, paid, principal, &st.calls_closed).await;
    }
    // After the direct path, which parses what it takes only once: one
    // pass finds what the body asks for and whether it is JSON at all.
    match super::peek::needs(&paid.bytes) {
        Ok(needed) => {
            if let Some(scope) = needed.iter().find(|s| !principal.may(*s)) {
                return insufficient_scope(&st, &principal, scope);
            }
        }
        Err(err) => {
            if let Some(refusal) = parse_error(&paid.parts.headers, &err) {
                return refusal;
            }
            // Not JSON, and not declared as JSON: rmcp refuses it (415)
            // without running anything.
        }
    }
    let resp = paid.forward(next).await;
    // A new session: bound to whoever opened it.
    if !st.stateless
        && session.is_none()
        && let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        st.owners.bind(sid, &principal);
    }
    resp
}

/// The principal a request's bearer token stands for, or the answer that
/// refuses it. The static and admin tokens are compared first (both, so
/// timing tells nothing), then an OAuth access token is checked.
async fn who(st: &HttpState, presented: Option<&str>) -> Result<Principal, Response> {
    let client = match (&st.token_hash, presented) {
        (Some(expected), Some(t)) => token_matches(expected, t),
        _ => false,
    };
    let admin = match (&st.admin_hash, presented) {
        (Some(expected), Some(t)) => token_matches(expected, t),
        _ => false,
    };
    if admin {
        return Ok(Principal::admin());
    }
    if client {
        return Ok(Principal::static_token());
    }
    let Some(v) = &st.oauth else {
        if st.token_hash.is_none() {
            // --no-auth, loopback only (config refuses it elsewhere).
            return Ok(Principal::anonymous());
        }
        let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"nano-banana-mcp\""),
        );
        return Err(r);
    };
    let Some(token) = presented.filter(|t| !t.is_empty()) else {
        let body = format!(
            "this server needs an OAuth access token (Authorization: Bearer …) from {}; its metadata is at {}\n",
            v.settings().issuer,
            v.settings().metadata_url()
        );
        return Err(challenge(v, StatusCode::UNAUTHORIZED, None, body));
    };
    match v.verify(token).await {
        Ok(p) => {
            tracing::debug!(principal = %p, scopes = ?p.scopes, "OAuth token accepted");
            Ok(p)
        }
        Err(Refusal::Unavailable) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", Refusal::Unavailable),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Err(r)
        }
        Err(why) => {
            // The reason, never the token.
            tracing::debug!(reason = why.kind(), why = %why, "OAuth token refused");
            let body = format!("bearer token refused: {why}\n");
            Err(challenge(v, StatusCode::UNAUTHORIZED, Some(&why), body))
        }
    }
}

/// A 401 with the OAuth challenge.
fn challenge(v: &Verifier, status: StatusCode, why: Option<&Refusal>, body: String) -> Response {
    let mut r = (status, body).into_response();
    if let Ok(h) = HeaderValue::from_str(&v.settings().challenge(why)) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, h);
    }
    r
}

/// A 403 for a valid token without the scope the request needs.
fn insufficient_scope(st: &HttpState, principal: &Principal, scope: Scope) -> Response {
    let Some(v) = &st.oauth else {
        // Only OAuth principals hold fewer than all scopes.
        return (StatusCode::FORBIDDEN, "not allowed\n").into_response();
    };
    let name = v.settings().scopes.name(scope);
    tracing::debug!(principal = %principal, scope = name, "request refused: missing scope");
    let mut r = (
        StatusCode::FORBIDDEN,
        format!(
            "this request needs the scope {name}, which the access token does not grant; ask the authorization server for a token with it\n"
        ),
    )
        .into_response();
    if let Ok(h) = HeaderValue::from_str(&v.settings().insufficient_scope(scope)) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, h);
    }
    r
}

/// The Protected Resource Metadata (RFC 9728); 404 without OAuth.
async fn protected_resource(State(st): State<Arc<HttpState>>) -> Response {
    match &st.oauth {
        Some(v) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                // Public facts; browser-based clients read them too.
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            v.settings().metadata().to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no OAuth on this server (--oauth-issuer is not set)\n",
        )
            .into_response(),
    }
}

/// A JSON body that is not JSON gets JSON-RPC's parse error (-32700,
/// `id: null`) with 400, rather than rmcp's 415, which says the media
/// type is wrong when it is not. Checked without building anything
/// (`transport::peek`), and only where rmcp would get as far as parsing (both
/// media types accepted, a JSON content type), so its 406 and 415 for
/// those keep their meaning.
fn parse_error(headers: &axum::http::HeaderMap, err: &serde_json::Error) -> Option<Response> {
    if !direct::accepts_json_and_sse(headers) || !direct::is_json(headers) {
        return None;
    }
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32700, "message": format!("Parse error: {err}")},
    });
    Some(
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            reply.to_string(),
        )
            .into_response(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<Arc<HttpState>>) -> Response {
    if st.ready.load(Ordering::Relaxed) && !st.draining.load(Ordering::Relaxed) {
        match &st.oauth {
            // Ready all the same: the keys are fetched again on the next
            // request and every 30 s, and calls with the static token work.
            Some(v) if !v.loaded() => {
                "ready\noauth: the issuer's keys are not loaded yet (unreachable?); retrying\n"
                    .into_response()
            }
            _ => "ready\n".into_response(),
        }
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(st): State<Arc<HttpState>>) -> Response {
    let mut body = st.app.metrics_text();
    edge_metrics(&st, &mut body);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The edge's gauges and counters, appended before the OpenMetrics `# EOF`.
fn edge_metrics(st: &HttpState, out: &mut String) {
    use std::fmt::Write;
    let eof = out.rfind("# EOF").unwrap_or(out.len());
    let mut extra = String::new();
    let b = st.app.bodies.stats();
    let auth = |f: fn(&crate::auth::AuthStats) -> &AtomicU64| {
        st.oauth
            .as_ref()
            .map_or(0, |v| f(&v.stats).load(Ordering::Relaxed))
    };
    let rows: [(&str, &str, &str, u64); 13] = [
        (
            "http_connections_open",
            "gauge",
            "Open HTTP connections",
            st.edge.open.load(Ordering::Relaxed),
        ),
        (
            "http_connections_refused",
            "counter",
            "Connections refused at the connection cap",
            st.edge.refused.load(Ordering::Relaxed),
        ),
        (
            "mcp_sessions_live",
            "gauge",
            "Live MCP session handlers",
            st.service.live_sessions(),
        ),
        (
            "mcp_sessions_max",
            "gauge",
            "Cap on live MCP sessions",
            st.max_sessions,
        ),
        (
            "mcp_sessions_refused",
            "counter",
            "initialize requests refused at the session cap",
            st.sessions_refused.load(Ordering::Relaxed),
        ),
        (
            "direct_calls",
            "counter",
            "Stateless tool calls served without rmcp's per-request service",
            st.direct_served.load(Ordering::Relaxed),
        ),
        (
            "http_body_reserved_bytes",
            "gauge",
            "Bytes reserved for request bodies (stateless: the pool bodies share with waiting calls, both counted)",
            b.reserved_bytes,
        ),
        (
            "http_body_budget_bytes",
            "gauge",
            "Budget for request bodies (stateless: the pool bodies share with waiting calls)",
            b.total_bytes,
        ),
        (
            "gemini_h2_windows_bytes",
            "gauge",
            "What Gemini may send ahead unread over HTTP/2 (the plan pays for it; 0 over HTTP/1.1)",
            st.app.plan.gemini_windows,
        ),
        (
            "oauth_tokens_accepted",
            "counter",
            "OAuth access tokens accepted",
            auth(|s| &s.accepted),
        ),
        (
            "oauth_tokens_refused",
            "counter",
            "OAuth access tokens refused (expired, wrong audience, bad signature, ...)",
            auth(|s| &s.refused),
        ),
        (
            "oauth_key_fetches",
            "counter",
            "Fetches of the issuer's signing keys (JWKS)",
            auth(|s| &s.key_fetches),
        ),
        (
            "oauth_key_fetch_failures",
            "counter",
            "Fetches of the issuer's signing keys that failed",
            auth(|s| &s.key_fetch_failures),
        ),
    ];
    for (name, kind, help, v) in rows {
        let name = format!("nano_banana_{name}");
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.clone()
        };
        let _ = writeln!(
            extra,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {v}"
        );
    }
    out.insert_str(eof, &extra);
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
    let per_connection = edge::PER_CONNECTION;
    let max_connections = cfg
        .max_connections
        .unwrap_or((app.plan.connections / per_connection).clamp(16, 1 << 20) as usize);
    let max_sessions = cfg
        .max_sessions
        .map(|n| n as u64)
        .unwrap_or((app.plan.sessions / 2 / edge::PER_SESSION).max(4));
    let sessions_closed = CancellationToken::new();
    let oauth = match &cfg.oauth {
        Some(settings) => {
            let v = Arc::new(Verifier::new(settings.clone()).map_err(StartError::Transport)?);
            // Unreachable at start is not fatal: retried on the first
            // request and in the background.
            v.start().await;
            if settings.resource.scheme() == "http" && !crate::auth::is_loopback(&settings.resource)
            {
                tracing::warn!(resource = %settings.resource, "--resource-url is plain http: tokens cross the network in clear");
            }
            Some(v)
        }
        None => None,
    };
    let state = Arc::new(HttpState {
        app: Arc::clone(&app),
        service: service.clone(),
        stateless: cfg.stateless,
        direct_calls: cfg.direct_calls,
        allowed_hosts: cfg.allowed_hosts.clone(),
        calls_closed: sessions_closed.clone(),
        max_sessions,
        body: BodyLimits {
            max_bytes: cfg.max_body_bytes,
            timeout: cfg.body_timeout,
        },
        edge: Arc::new(EdgeStats::default()),
        sessions_refused: AtomicU64::new(0),
        direct_served: AtomicU64::new(0),
        token_hash: cfg
            .token
            .as_ref()
            .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        admin_hash: cfg
            .admin_token
            .as_ref()
            .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        oauth: oauth.clone(),
        owners: SessionOwners::new(
            cfg.session_idle,
            usize::try_from(max_sessions).unwrap_or(usize::MAX / 4) * 2,
        ),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });

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

    // /metrics is behind the token here (it names limits, models and
    // load); the ops listener, which carries no MCP, serves it to
    // scrapers without one.
    let mut router = axum::Router::new()
        .nest_service("/mcp", mcp)
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // RFC 9728: the bare form, and the one suffixed with /mcp's path.
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        );
    // A --resource-url whose path is not /mcp (a proxy's prefix): its
    // suffixed form too.
    if let Some(o) = &cfg.oauth {
        let path = o.metadata_path();
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        if plain
            && path != "/.well-known/oauth-protected-resource"
            && path != "/.well-known/oauth-protected-resource/mcp"
        {
            router = router.route(&path, get(protected_resource));
        }
    }
    let router = router
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            host_guard,
        ))
        .with_state(Arc::clone(&state));

    let purger = app.spawn_idle_purger();
    let key_refresher = oauth.as_ref().map(Verifier::spawn_refresher);
    let task_beat = app.tasks.spawn_background();
    let stop_accepting = CancellationToken::new();
    let conn_limits = ConnLimits {
        max_connections,
        header_timeout: cfg.header_timeout,
    };
    let ops = match cfg.ops_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                StartError::Transport(format!("cannot listen on {addr} (--ops-addr): {e}"))
            })?;
            let ops_router = axum::Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics))
                .with_state(Arc::clone(&state));
            let limits = ConnLimits {
                max_connections: 64,
                header_timeout: cfg.header_timeout,
            };
            tracing::info!(addr = %addr, "probes and metrics also on the ops listener");
            Some(tokio::spawn(edge::accept_loop(
                l,
                ops_router,
                limits,
                Arc::new(EdgeStats::default()),
                stop_accepting.clone(),
            )))
        }
        None => None,
    };
    let server = tokio::spawn(edge::accept_loop(
        listener,
        router,
        conn_limits,
        Arc::clone(&state.edge),
        stop_accepting.clone(),
    ));
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        addr = %local,
        auth = if cfg.oauth.is_some() {
            if cfg.token.is_some() { "oauth+static" } else { "oauth" }
        } else if cfg.token.is_some() {
            "static"
        } else {
            "none"
        },
        stateless = cfg.stateless,
        direct_calls = cfg.direct_calls,
        max_connections,
        max_sessions,
        "serving MCP over streamable HTTP at /mcp (health: /healthz, /readyz, metrics: /metrics)"
    );

    super::shutdown_signal().await;
    // One shutdown path: stop being ready, refuse new work, let calls finish.
    state.draining.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let in_flight = app.calls().stats().in_flight;
    tracing::info!(
        in_flight,
        grace_s = cfg.shutdown_grace.as_secs(),
        "draining"
    );
    // Tasks run on with nobody connected: they are waited for too.
    let busy = || app.calls().stats().in_flight + app.tasks.running();
    while busy() > 0 && started.elapsed() < cfg.shutdown_grace {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = busy();
    if left > 0 {
        tracing::warn!(left, "grace period over; abandoning calls still in flight");
    }
    // What is left of the tasks is stopped and recorded as failed, so no
    // poller waits for a heartbeat that will not come.
    app.tasks.shutdown(Duration::from_secs(5)).await;
    task_beat.abort();
    sessions_closed.cancel();
    stop_accepting.cancel();
    // Open connections get a moment to see their streams end.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    if let Some(ops) = ops {
        ops.abort();
    }
    purger.abort();
    if let Some(r) = key_refresher {
        r.abort();
    }
    tracing::info!(ms = started.elapsed().as_millis() as u64, "shut down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_opened_with_an_access_token_belong_to_its_subject() {
        let owners = SessionOwners::new(Duration::from_secs(300), 16);
        let a = Principal::oauth("alice", crate::auth::Scopes::ALL);
        let b = Principal::oauth("bob", crate::auth::Scopes::ALL);
        owners.bind("s1", &a);
        assert!(owners.allows("s1", &a));
        assert!(!owners.allows("s1", &b));
        assert!(!owners.allows("s1", &Principal::static_token()));
        // Sessions opened with the static token are not bound.
        owners.bind("s2", &Principal::static_token());
        assert!(owners.allows("s2", &b));
        assert!(owners.allows("unknown", &b));
        owners.forget("s1");
        assert!(owners.allows("s1", &b));
        // Bounded: the least recently seen goes first.
        for i in 0..40 {
            owners.bind(&format!("x{i}"), &a);
        }
        assert!(owners.lock().len() <= 16);
        assert!(!owners.allows("x39", &b), "the newest is kept");
    }

    #[test]
    fn tokens_compare_by_digest() {
        let expected: [u8; 32] = Sha256::digest(b"s3cret").into();
        assert!(token_matches(&expected, "s3cret"));
        assert!(!token_matches(&expected, "s3cre"));
        assert!(!token_matches(&expected, ""));
    }
}
