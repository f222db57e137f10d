//! Stateless `tools/call` without rmcp's per-request service. Over
//! stateless HTTP, rmcp serves every request with a service of its own:
//! four channels and two tasks, ~48 KiB held for as long as the call waits
//! for Gemini, which is most of what a waiting call costs. The image tools
//! (the calls that wait) are served here instead, straight from the paid
//! body to the tool and back as one JSON response.
//!
//! Only requests rmcp would certainly accept and answer with a plain JSON
//! result are taken: a single `tools/call` to `generate_image` or
//! `edit_image` whose arguments parse, no progress token (the Host was checked for every
//! route, `transport::host`), no Origin, the media types rmcp requires, a known
//! `MCP-Protocol-Version` (or none), and for 2026-07-28 the `Mcp-Method`
//! and `Mcp-Name` headers and the `_meta` keys that revision requires, all
//! agreeing with the body. Everything else (other methods, other tools,
//! anything malformed or unusual) goes to rmcp untouched, which gives its
//! own answer, so the two paths cannot disagree on what is accepted. The
//! result is shaped as rmcp shapes it for the request's revision.
//! `tests/http.rs` sends the same requests both ways and compares.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rmcp::model::{
    JsonObject, JsonRpcResponse, JsonRpcVersion2_0, ProtocolVersion, RequestId, RequestMetaObject,
    ServerJsonRpcMessage, ServerResult,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::mcp::{DirectCall, Service};

const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const MCP_METHOD: &str = "mcp-method";
const MCP_NAME: &str = "mcp-name";
const MCP_PARAM_PREFIX: &str = "mcp-param-";
const VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// A call taken by the direct path.
pub struct Direct {
    id: RequestId,
    version: ProtocolVersion,
    call: DirectCall,
}

/// The body of a request the direct path takes; any other field, and the
/// request is rmcp's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    method: String,
    params: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta", default)]
    meta: Option<RequestMetaObject>,
}

/// The one value of a header, if it has exactly one that is text.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(Some).map_err(|_| ())
}

/// Accepts both `application/json` and `text/event-stream`, with nothing
/// that needs careful parsing (quotes, weights).
pub fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.contains('"') || value.contains(';') {
            return false;
        }
        for entry in value.split(',') {
            let essence = entry.trim();
            json |= essence.eq_ignore_ascii_case("application/json");
            sse |= essence.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

pub fn is_json(headers: &HeaderMap) -> bool {
    single(headers, header::CONTENT_TYPE.as_str())
        .ok()
        .flatten()
        .is_some_and(|v| {
            let essence = v.split_once(';').map_or(v, |(e, _)| e);
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

impl Direct {
    /// The tool called.
    pub fn tool(&self) -> &'static str {
        self.call.tool()
    }
}

/// The call, when the direct path may take this request.
pub fn take(headers: &HeaderMap, body: &[u8]) -> Option<Direct> {
    if !accepts_json_and_sse(headers)
        || !is_json(headers)
        || headers.contains_key(header::ORIGIN)
        || headers.contains_key("mcp-session-id")
        || headers
            .keys()
            .any(|k| k.as_str().starts_with(MCP_PARAM_PREFIX))
    {
        return None;
    }
    let header_version = single(headers, PROTOCOL_VERSION).ok()?;
    let version = match header_version {
        Some(v) => ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .find(|k| k.as_str() == v)?
            .clone(),
        None => ProtocolVersion::V_2025_03_26,
    };
    let env: Envelope = serde_json::from_slice(body).ok()?;
    let _ = env.jsonrpc;
    if env.method != "tools/call" {
        return None;
    }
    let meta = env.params.meta.unwrap_or_default();
    // Progress goes out over SSE (rmcp's); a version that does not parse
    // is rmcp's to judge.
    // A client that takes tasks may get one (mcp::tasks decides).
    if meta.contains_key("progressToken")
        || (meta.contains_key(VERSION_KEY) && meta.protocol_version().is_none())
        || meta
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks())
    {
        return None;
    }
    let current = version.as_str() >= ProtocolVersion::V_2026_07_28.as_str();
    match meta.protocol_version() {
        // The revision named in the body must be the header's.
        Some(v) if header_version != Some(v.as_str()) => return None,
        Some(_) => {}
        // 2026-07-28 carries its version in every request's _meta.
        None if current => return None,
        None => {}
    }
    if current {
        if !meta
            .missing_required_keys(&ProtocolVersion::V_2026_07_28)
            .is_empty()
        {
            return None;
        }
        // The routing headers, which must agree with the body.
        if single(headers, MCP_METHOD).ok()? != Some("tools/call")
            || single(headers, MCP_NAME).ok()? != Some(env.params.name.as_str())
        {
            return None;
        }
    }
    let call = DirectCall::parse(&env.params.name, env.params.arguments)?;
    Some(Direct {
        id: env.id,
        version,
        call,
    })
}

/// Run a call taken by [`take`] and answer it as rmcp would. The tool runs
/// in a task of its own with a token that is cancelled when this future is
/// dropped (the client went away) or when `shutdown` is (the grace period
/// is over), so cancellation takes the same path as an MCP cancel: nothing
/// half-written is left.
pub async fn serve(
    service: Service,
    d: Direct,
    body: crate::memory::Reservation,
    principal: Principal,
    shutdown: &CancellationToken,
) -> Response {
    let ct = shutdown.child_token();
    let _cancel_on_drop = ct.clone().drop_guard();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let Direct { id, version, call } = d;
    tokio::spawn(async move {
        let result = service.call_direct(call, ct, Some(body), principal).await;
        let _ = tx.send(result);
    });
    let Ok(result) = rx.await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "tool call ended without a result",
        )
            .into_response();
    };
    let mut result = ServerResult::CallToolResult(result);
    if version.as_str() >= ProtocolVersion::V_2026_07_28.as_str() {
        result.fill_missing_cache_hints();
    } else {
        result.strip_result_type_for_legacy_peer();
        result.strip_non_object_output_for_legacy_peer();
    }
    let message = ServerJsonRpcMessage::Response(JsonRpcResponse {
        jsonrpc: JsonRpcVersion2_0,
        id,
        result,
    });
    match serde_json::to_vec(&message) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialize json response: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const BASE: &[(&str, &str)] = &[
        ("host", "127.0.0.1:8080"),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
    ];

    fn with(extra: &[(&str, &str)]) -> HeaderMap {
        let mut all = BASE.to_vec();
        all.extend_from_slice(extra);
        headers(&all)
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":"a"}}}"#;

    #[test]
    fn takes_a_plain_legacy_call() {
        let d = take(&with(&[]), CALL.as_bytes()).expect("taken");
        assert_eq!(d.version, ProtocolVersion::V_2025_03_26);
        let d = take(
            &with(&[("mcp-protocol-version", "2025-11-25")]),
            CALL.as_bytes(),
        )
        .expect("taken");
        assert_eq!(d.version.as_str(), "2025-11-25");
    }

    #[test]
    fn leaves_anything_unusual_to_rmcp() {
        let cases: Vec<(HeaderMap, String)> = vec![
            (with(&[("origin", "http://127.0.0.1")]), CALL.into()),
            (with(&[("mcp-protocol-version", "1999-01-01")]), CALL.into()),
            (with(&[("mcp-session-id", "x")]), CALL.into()),
            (headers(&[BASE[0], ("accept", "*/*"), BASE[2]]), CALL.into()),
            (
                headers(&[BASE[0], BASE[1], ("content-type", "text/plain")]),
                CALL.into(),
            ),
            (
                with(&[]),
                CALL.replace("generate_image", "get_configuration_status"),
            ),
            (with(&[]), CALL.replace("tools/call", "tools/list")),
            (with(&[]), CALL.replace(r#""prompt":"a""#, r#""prompt":1"#)),
            (
                with(&[]),
                CALL.replace(r#""id":7,"#, r#""id":7,"extra":1,"#),
            ),
            (
                with(&[]),
                CALL.replace(
                    r#""arguments""#,
                    r#""_meta":{"progressToken":1},"arguments""#,
                ),
            ),
            (with(&[]), "not json".into()),
            // 2026-07-28 without its _meta keys or routing headers.
            (with(&[("mcp-protocol-version", "2026-07-28")]), CALL.into()),
        ];
        for (i, (h, body)) in cases.iter().enumerate() {
            assert!(take(h, body.as_bytes()).is_none(), "case {i} was taken");
        }
    }

    #[test]
    fn current_revision_needs_meta_and_routing_headers() {
        let body = CALL.replace(
            r#""arguments""#,
            r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},"arguments""#,
        );
        let full = with(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "generate_image"),
        ]);
        let d = take(&full, body.as_bytes()).expect("taken");
        assert_eq!(d.version, ProtocolVersion::V_2026_07_28);
        for missing in ["mcp-method", "mcp-name"] {
            let mut h = full.clone();
            h.remove(missing);
            assert!(take(&h, body.as_bytes()).is_none(), "{missing}");
        }
        let mut h = full.clone();
        h.insert("mcp-name", HeaderValue::from_static("edit_image"));
        assert!(take(&h, body.as_bytes()).is_none());
        // Header and body disagree on the revision.
        let mut h = full.clone();
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        assert!(take(&h, body.as_bytes()).is_none());
    }
}
