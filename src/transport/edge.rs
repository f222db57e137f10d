//! The HTTP edge: what a client can make the server hold before a tool
//! runs. Connections are capped (the cap times a measured per-connection
//! cost is a share of the memory plan) and refused fast beyond it; hyper
//! reads at most `HEAD_CAP` bytes of a request head (431 past it) within
//! the header timeout, which also closes idle keep-alive connections; a
//! request body is paid for from the bodies budget before it is read (by
//! its declared length), read within the body timeout, counted (JSON
//! values, cheaply, before anything parses it), and paid for again at its
//! measured cost until its response is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::memory::{Budget, Busy, Reservation};

/// Largest request head (request line and headers) hyper buffers; past it
/// the client gets 431. hyper's minimum is 8 KiB.
pub const HEAD_CAP: usize = 16 << 10;

/// What one open connection can hold at most: the head buffer at its cap,
/// the write buffer, the task and hyper's state. Measured: an idle
/// connection costs ~9 KiB of RSS, one with a 16 KiB head ~26 KiB
/// (BENCHMARKS.md, "HTTP edge").
pub const PER_CONNECTION: u64 = 32 << 10;

/// One live MCP session over HTTP: the rmcp service, its channels and our
/// handler. Measured ~60 KiB (2,000 sessions held 140 MiB with no cap).
pub const PER_SESSION: u64 = 72 << 10;

/// Parsing multiplies a body: the bytes, then the strings of the
/// `serde_json::Value` tree and the tool's arguments (one of them moved,
/// not copied). Measured: 24 edits with 6 MiB `data:` URIs peaked at
/// ~9 MiB each (1.5×); 2× leaves a margin.
pub const BODY_FACTOR: u64 = 2;

/// Each JSON value costs a tree node and its share of a Vec or map on top
/// of its text. Measured: a `[0,0,…]` array (2 bytes per value) peaked at
/// ~120× its size, ~240 bytes per value.
pub const PER_JSON_VALUE: u64 = 256;

/// No MCP request needs more JSON values than this; a body with more is
/// refused before it is parsed.
pub const MAX_JSON_VALUES: u64 = 20_000;

/// Connections being refused at once (each gets a short 503 written);
/// past this, excess connections are simply closed.
const MAX_REFUSING: usize = 64;

/// How many JSON values a body holds, counted without parsing: one, plus
/// one per comma and per opening bracket outside strings (each value is
/// the first in its container or follows a comma).
pub fn count_json_values(body: &[u8]) -> u64 {
    let mut n = 1u64;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => n += 1,
            _ => {}
        }
    }
    n
}

/// What a body costs in memory once parsed.
pub fn body_cost(len: u64, values: u64) -> u64 {
    len.saturating_mul(BODY_FACTOR)
        .saturating_add(values.saturating_mul(PER_JSON_VALUE))
}

/// Limits of the body check.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

fn refuse(status: StatusCode, msg: String, retry_after: Option<Duration>) -> Response {
    let mut r = (status, msg).into_response();
    if let Some(d) = retry_after
        && let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn busy(b: &Busy) -> Response {
    match b {
        Busy::TooLarge { requested, total } => refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body would need {} of memory once parsed, but this server's share for request bodies is {}; pass large images by URL or path, or raise the memory limit",
                crate::memory::HumanBytes(*requested),
                crate::memory::HumanBytes(*total)
            ),
            None,
        ),
        _ => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("server busy: the memory for request bodies is in use ({b})"),
            b.retry_after(),
        ),
    }
}

/// Read and drop a refused body (up to the cap, within the timeout) so
/// the client, still writing, reads the refusal instead of a connection
/// reset. Holds one frame at a time.
async fn discard(mut body: Body, limits: BodyLimits) {
    let mut left = limits.max_bytes;
    let _ = tokio::time::timeout(limits.timeout, async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n >= left {
                break;
            }
            left -= n;
        }
    })
    .await;
}

/// A POST body read in full and paid for.
pub struct PaidBody {
    pub parts: axum::http::request::Parts,
    pub bytes: Bytes,
    pub paid: Reservation,
}

impl PaidBody {
    /// Hand the request on; the payment is held until the response (for
    /// SSE, the stream) is done.
    pub async fn forward(self, next: axum::middleware::Next) -> Response {
        let resp = next
            .run(Request::from_parts(self.parts, Body::from(self.bytes)))
            .await;
        let paid = Arc::new(self.paid);
        resp.map(move |b| {
            Body::new(b.map_frame(move |f| {
                let _held = &paid;
                f
            }))
        })
    }
}

/// Pay for a POST body before it is read and parsed, then read it: the
/// body, or the refusal to send (413, 408, 400, 503).
pub async fn read_paid_body(
    bodies: &Budget,
    limits: BodyLimits,
    req: Request,
) -> Result<PaidBody, Response> {
    let max = limits.max_bytes as u64;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    if let Some(n) = declared
        && n > max
    {
        discard(body, limits).await;
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is {n} bytes; the limit is {max} (--max-body-bytes)"),
            None,
        ));
    }
    // Before the first byte: the declared length, or the cap when unknown.
    let mut paid = match bodies.try_reserve(body_cost(declared.unwrap_or(max), 0)) {
        Ok(r) => r,
        Err(b) => {
            discard(body, limits).await;
            return Err(busy(&b));
        }
    };
    let read = tokio::time::timeout(
        limits.timeout,
        http_body_util::Limited::new(body, limits.max_bytes).collect(),
    )
    .await;
    let bytes = match read {
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s",
                    limits.timeout.as_secs()
                ),
                None,
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is over the limit of {max} bytes (--max-body-bytes)"),
                None,
            ));
        }
        Ok(Err(e)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("request body could not be read: {e}"),
                None,
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let values = count_json_values(&bytes);
    if values > MAX_JSON_VALUES {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body holds about {values} JSON values; the limit is {MAX_JSON_VALUES}"
            ),
            None,
        ));
    }
    let cost = body_cost(bytes.len() as u64, values);
    if cost > paid.bytes() {
        if let Err(b) = paid.grow(cost - paid.bytes()) {
            return Err(busy(&b));
        }
    } else if cost < paid.bytes() {
        // Give back what a declared length over-estimated (or keep the
        // larger payment when the exact one cannot be had right now).
        if let Ok(exact) = bodies.try_reserve(cost) {
            paid = exact;
        }
    }
    Ok(PaidBody { parts, bytes, paid })
}

/// Counters of the edge, for /metrics.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub open: AtomicU64,
    pub refused: AtomicU64,
}

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Accept connections until `stop`, each served by hyper (HTTP/1.1) with
/// the head cap and header timeout; beyond `max_connections`, a
/// connection gets a short 503 and is closed.
pub async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    stats: Arc<EdgeStats>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small JSON-RPC replies must not wait for delayed ACKs (Nagle).
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Ok(p) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    let _p = p;
                    refuse_connection(tcp).await;
                });
            }
            continue;
        };
        let router = router.clone();
        let stop = stop.clone();
        let stats = Arc::clone(&stats);
        stats.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(HEAD_CAP)
                .keep_alive(true);
            let conn = b.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Write a short 503 to a connection over the cap, then read and drop
/// what the client is still sending (a little, briefly) before closing:
/// closing with unread bytes would make the kernel reset the connection,
/// and the client would see the reset, not the answer.
async fn refuse_connection(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt as _;
    const MSG: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nConnection: close\r\n\r\nserver busy: too many connections; retry soon\n";
    const DRAIN_BYTES: usize = 64 << 10;
    const DRAIN_TIME: Duration = Duration::from_millis(250);
    if tokio::time::timeout(Duration::from_secs(1), tcp.write_all(MSG))
        .await
        .is_err()
    {
        return;
    }
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut seen = 0;
        while seen < DRAIN_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings() {
        assert_eq!(count_json_values(b"0"), 1);
        assert_eq!(count_json_values(b"[0,0,0]"), 4);
        assert_eq!(count_json_values(br#"{"a":"x,[{","b":[1,2]}"#), 5);
        assert_eq!(count_json_values(br#"{"a":"q\",\\","b":1}"#), 3);
        let big = format!("[{}0]", "0,".repeat(100_000));
        assert!(count_json_values(big.as_bytes()) > MAX_JSON_VALUES);
    }

    #[test]
    fn cost_grows_with_values_and_saturates() {
        assert_eq!(body_cost(100, 1), 200 + PER_JSON_VALUE);
        assert_eq!(body_cost(u64::MAX, u64::MAX), u64::MAX);
    }
}
