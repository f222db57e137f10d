//! The streamable HTTP transport against the real binary: auth, Host
//! checks, a generate over rmcp's HTTP client with progress, metrics, the
//! configure_gemini_token refusal, stateless mode, SIGTERM draining, and a
//! client that hangs up mid-call (stateless: cancelled; session: finished
//! and kept for the session).

#![allow(clippy::disallowed_methods)] // reads small /metrics and JSON-RPC replies

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nano_banana_mcp::testkit::fake_gemini::FakeGemini;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

const TOKEN: &str = "http-test-token-0123456789";

struct HttpServer {
    child: tokio::process::Child,
    base: String,
    stderr: tokio::task::JoinHandle<String>,
}

async fn start_http(fake_url: &str, out: &std::path::Path, extra: &[&str]) -> HttpServer {
    start_http_env(fake_url, out, extra, &[]).await
}

async fn start_http_env(
    fake_url: &str,
    out: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> HttpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(["serve", "--http", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GEMINI_API_KEY", TEST_KEY)
        .env("GEMINI_BASE_URL", fake_url)
        .env("NANO_BANANA_OUTPUT_DIR", out)
        .env("NANO_BANANA_AUTH_TOKEN", TOKEN)
        .env("LOG_LEVEL", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return HttpServer {
                child,
                base,
                stderr,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

impl HttpServer {
    async fn sigterm(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc_kill(pid, 15) };
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within the grace period")
            .expect("wait");
        (status.code(), self.stderr.await.expect("stderr"))
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

async fn client(base: &str) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(TOKEN),
    );
    ().serve(transport).await.expect("initialize over HTTP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_end_to_end() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let srv = start_http(&fake.base_url(), dir.path(), &[]).await;
    let http = reqwest::Client::new();

    // No token, wrong token, wrong Host: refused before MCP.
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let post = |auth: Option<&str>, host: Option<&str>| {
        let mut r = http
            .post(format!("{}/mcp", srv.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(a) = auth {
            r = r.header("authorization", format!("Bearer {a}"));
        }
        if let Some(h) = host {
            r = r.header("host", h);
        }
        r.send()
    };
    assert_eq!(post(None, None).await.expect("send").status(), 401);
    assert_eq!(post(Some("nope"), None).await.expect("send").status(), 401);
    let rebinding = post(Some(TOKEN), Some("evil.example.com"))
        .await
        .expect("send");
    assert!(
        rebinding.status().is_client_error(),
        "{}",
        rebinding.status()
    );

    // A real MCP client over HTTP.
    let c = client(&srv.base).await;
    let tools = c.list_all_tools().await.expect("list");
    assert_eq!(tools.len(), 6);
    let mut params = CallToolRequestParams::new("generate_image").with_arguments(
        json!({"prompt": "over http fake:size=2MiB"})
            .as_object()
            .cloned()
            .expect("object"),
    );
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.set_progress_token(rmcp::model::ProgressToken(
        rmcp::model::NumberOrString::Number(7),
    ));
    params.meta = Some(meta);
    let r = c.call_tool(params).await.expect("call");
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    let bytes = std::fs::read(v["path"].as_str().expect("path")).expect("file");
    assert_eq!(
        sha256_hex(&bytes),
        fake.state.sent().last().expect("sent").sha256
    );

    let r = c
        .call_tool(
            CallToolRequestParams::new("configure_gemini_token").with_arguments(
                json!({"apiKey": "AIzaNEWKEY-123456"})
                    .as_object()
                    .cloned()
                    .expect("o"),
            ),
        )
        .await
        .expect("call");
    assert!(is_error(&r) && text_of(&r).contains("--admin-token"));
    let r = c
        .call_tool(
            CallToolRequestParams::new("continue_editing").with_arguments(
                json!({"prompt": "pinker fake:size=100000"})
                    .as_object()
                    .cloned()
                    .expect("o"),
            ),
        )
        .await
        .expect("call");
    assert!(
        !is_error(&r),
        "a stateful session remembers its image: {}",
        text_of(&r)
    );

    // /metrics on the MCP listener is behind the token (the ops listener
    // serves scrapers without one).
    let anonymous = http
        .get(format!("{}/metrics", srv.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(anonymous.status(), 401);
    let metrics = http
        .get(format!("{}/metrics", srv.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("metrics");
    let mut text = String::new();
    {
        use futures::StreamExt as _;
        let mut s = metrics.bytes_stream();
        while let Some(c) = s.next().await {
            text.push_str(&String::from_utf8_lossy(&c.expect("chunk")));
        }
    }
    assert!(
        text.contains(r#"nano_banana_tool_calls_total{tool="generate_image",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(text.contains("nano_banana_memory_budget_bytes"));
    assert!(text.contains("nano_banana_image_bytes_total"));
    // Two 1K images on the default model: 1,120 image tokens each, and
    // their estimated cost by model.
    assert!(
        text.contains(
            r#"nano_banana_gemini_tokens_total{model="gemini-3.1-flash-image",kind="image"} 2240"#
        ),
        "{text}"
    );
    let spend: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"nano_banana_estimated_spend_usd_total{model="gemini-3.1-flash-image"} "#,
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("spend by model");
    assert!(spend > 2.0 * 0.0672 && spend < 2.0 * 0.07, "{spend}");
    drop(c);

    // SIGTERM while a slow call runs: readiness flips, the call finishes, exit 0.
    let c = client(&srv.base).await;
    let asked = fake.state.requests().len();
    let slow = tokio::spawn(async move {
        let r = c
            .call_tool(
                CallToolRequestParams::new("generate_image").with_arguments(
                    json!({"prompt": "slow fake:latency=1500 fake:size=100000"})
                        .as_object()
                        .cloned()
                        .expect("o"),
                ),
            )
            .await;
        (r, c)
    });
    // The signal goes once the call is in flight (it has asked Gemini),
    // not after a fixed sleep that a loaded machine can outrun.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.state.requests().len() == asked {
        assert!(
            Instant::now() < deadline,
            "the slow call never reached Gemini"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = srv.base.clone();
    let term = tokio::spawn(srv.sigterm());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "readiness flips while draining");
    let (r, _c) = tokio::time::timeout(Duration::from_secs(60), slow)
        .await
        .expect("the in-flight call answers within a minute")
        .expect("join");
    let r = r.expect("the in-flight call completes");
    assert!(!is_error(&r), "{}", text_of(&r));
    let (code, log) = term.await.expect("join");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("draining"));
    assert_no_secret(&log, &[TOKEN]);
}

/// One tool call over an rmcp HTTP client.
async fn call(
    c: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tool: &'static str,
    args: serde_json::Value,
) -> rmcp::model::CallToolResult {
    c.call_tool(
        CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().expect("object")),
    )
    .await
    .expect("call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_mode_continues_by_image_id() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let srv = start_http(&fake.base_url(), dir.path(), &["--stateless"]).await;
    let c = client(&srv.base).await;
    let r = call(
        &c,
        "generate_image",
        json!({"prompt": "x fake:size=100000"}),
    )
    .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let first = structured(&r);
    let id = first["imageId"].as_str().expect("imageId").to_string();
    assert!(
        text_of(&r).contains(&id),
        "the text JSON carries the id too"
    );
    assert_eq!(records_in(dir.path()), vec![format!("{id}.json")]);

    // No session to remember the last image: the error says what to pass.
    let r = call(&c, "continue_editing", json!({"prompt": "again"})).await;
    assert!(
        is_error(&r) && text_of(&r).contains("imageId"),
        "{}",
        text_of(&r)
    );
    let r = call(&c, "get_last_image_info", json!({})).await;
    assert!(
        is_error(&r) && text_of(&r).contains("imageId"),
        "{}",
        text_of(&r)
    );

    // Over HTTP every caller's images share the output folder: a path or
    // file:// URL into it is not an input (the id is).
    let path = first["path"].as_str().expect("path").to_string();
    for p in [path.clone(), format!("file://{path}")] {
        let r = call(&c, "edit_image", json!({"prompt": "x", "imagePath": p})).await;
        assert!(
            is_error(&r) && text_of(&r).contains("not a readable file inside"),
            "{p}: {}",
            text_of(&r)
        );
    }

    // With the id, both work, and the edit names its parent.
    let r = call(
        &c,
        "continue_editing",
        json!({"prompt": "again fake:size=50000", "imageId": id}),
    )
    .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let second = structured(&r);
    assert_eq!(second["parentImageId"], id.as_str());
    let req = fake.state.requests().pop().expect("request");
    assert_eq!(req.inputs[0].sha256, first["sha256"].as_str().expect("sha"));
    let r = call(&c, "get_last_image_info", json!({"imageId": id})).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert_eq!(structured(&r)["image"]["sha256"], first["sha256"]);

    // Stateless, the server cannot tell callers apart: nothing is listed,
    // but the image reads back by its id.
    assert!(c.list_all_resources().await.expect("list").is_empty());
    let read = c
        .read_resource(rmcp::model::ReadResourceRequestParams::new(format!(
            "nano-banana://images/{id}"
        )))
        .await
        .expect("resources/read");
    assert!(format!("{read:?}").contains(first["sha256"].as_str().expect("sha")));

    // Ids that are not ours, or not ids at all, are refused plainly, and
    // edit_image wants exactly one of imageId and imagePath.
    for (tool, args, want) in [
        (
            "continue_editing",
            json!({"prompt": "x", "imageId": "img_0123456789abcdef0123456789abcdef"}),
            "no image with imageId",
        ),
        (
            "get_last_image_info",
            json!({"imageId": "../../etc/passwd"}),
            "is not an imageId",
        ),
        (
            "edit_image",
            json!({"prompt": "x", "imageId": id, "imagePath": "/x.png"}),
            "not both",
        ),
        ("edit_image", json!({"prompt": "x"}), "imageId"),
    ] {
        let r = call(&c, tool, args).await;
        assert!(
            is_error(&r) && text_of(&r).contains(want),
            "{tool}: {}",
            text_of(&r)
        );
    }
    drop(c);
    let (code, _) = srv.sigterm().await;
    assert_eq!(code, Some(0));
}

/// Two servers on one store: what A made, B continues by id, with A's
/// exact bytes and, for Gemini 3, A's thought signature.
async fn second_replica_continues(fake: &FakeGemini, out: &std::path::Path, env: &[(&str, &str)]) {
    let a = start_http_env(&fake.base_url(), out, &["--stateless"], env).await;
    let b = start_http_env(&fake.base_url(), out, &["--stateless"], env).await;
    let ca = client(&a.base).await;
    let r = call(
        &ca,
        "generate_image",
        json!({"prompt": "a cat fake:size=300000"}),
    )
    .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let made = structured(&r);
    let id = made["imageId"].as_str().expect("imageId").to_string();
    let sig = fake.state.sent().pop().expect("sent").thought_signature;
    assert!(sig.is_some(), "gemini-3 responses carry a signature");
    drop(ca);
    let (code, _) = a.sigterm().await;
    assert_eq!(code, Some(0));

    // A is gone; B has never seen this image.
    let cb = client(&b.base).await;
    let r = call(&cb, "get_last_image_info", json!({"imageId": id})).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert_eq!(structured(&r)["image"]["sha256"], made["sha256"]);
    let r = call(
        &cb,
        "continue_editing",
        json!({"prompt": "add a hat fake:size=200000", "imageId": id}),
    )
    .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert_eq!(structured(&r)["parentImageId"], id.as_str());
    let req = fake.state.requests().pop().expect("request");
    assert_eq!(req.thought_signatures, vec![sig.expect("sig")]);
    assert_eq!(req.inputs.len(), 1);
    assert_eq!(req.inputs[0].role, "model");
    assert_eq!(req.inputs[0].sha256, made["sha256"].as_str().expect("sha"));
    assert!(
        req.text.contains("a cat"),
        "the earlier turn's prompt goes back"
    );
    drop(cb);
    let (code, _) = b.sigterm().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_continues_by_image_id() {
    let fake = fake().await;
    let gemini3 = [("GEMINI_MODEL", "gemini-3-pro-image")];
    let dir = tempfile::tempdir().expect("tmp");
    second_replica_continues(&fake, dir.path(), &gemini3).await;
    assert_eq!(records_in(dir.path()).len(), 2);

    let Some(endpoint) = azurite() else { return };
    let container = unique("replicas");
    let cs = azurite_connection_string(&endpoint);
    let env = [
        gemini3[0],
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("AZURE_STORAGE_CONTAINER_NAME", container.as_str()),
    ];
    second_replica_continues(&fake, dir.path(), &env).await;
    assert_eq!(list_records(&endpoint, &container).await.len(), 2);
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 2);
}

/// The `nano_banana_<name>` value from /metrics.
async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("nano_banana_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// A POST to /mcp with the token, the given content type and the Accept
/// header rmcp asks for; nothing else.
fn mcp_raw(base: &str, content_type: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", content_type)
        .header("accept", "application/json, text/event-stream")
}

/// POST one JSON-RPC message to /mcp (raw, so the test can walk away).
fn mcp_post(
    base: &str,
    session: Option<&str>,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    let mut r = mcp_raw(base, "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .json(body);
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    r
}

async fn wait_idle(base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Every call holds a calls reservation; a streaming one an image one too.
    while metric(base, "calls_in_flight").await != 0.0
        || metric(base, "requests_in_flight").await != 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the reservation was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_that_disconnects_mid_call() {
    let fake = fake().await;
    let call = |id: u64, prompt: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":prompt}}});
    let slow = "leaving fake:size=6MiB fake:drip=20";

    // Stateless: the call belongs to its HTTP request; hanging up cancels it.
    let dir = tempfile::tempdir().expect("tmp");
    let srv = start_http(
        &fake.base_url(),
        dir.path(),
        &["--stateless", "--block-size", "256KiB"],
    )
    .await;
    let pending = tokio::spawn(mcp_post(&srv.base, None, &call(1, slow)).send());
    wait_for_upload(dir.path()).await;
    pending.abort();
    let _ = pending.await;
    wait_idle(&srv.base).await;
    assert_abandoned(dir.path(), &fake).await;
    let (code, log) = srv.sigterm().await;
    assert_eq!(code, Some(0));
    assert_no_secret(&log, &[TOKEN]);

    // Sessions: the call belongs to the session; the client may come back
    // for the result.
    let dir = tempfile::tempdir().expect("tmp");
    let srv = start_http(&fake.base_url(), dir.path(), &["--block-size", "256KiB"]).await;
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"leaver","version":"1"}}});
    let r = mcp_post(&srv.base, None, &init).send().await.expect("init");
    let sid = r.headers()["mcp-session-id"]
        .to_str()
        .expect("sid")
        .to_string();
    drop(r);
    mcp_post(
        &srv.base,
        Some(&sid),
        &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .send()
    .await
    .expect("initialized");
    let pending = tokio::spawn(mcp_post(&srv.base, Some(&sid), &call(2, slow)).send());
    wait_for_upload(dir.path()).await;
    pending.abort();
    let _ = pending.await;
    wait_idle(&srv.base).await;
    let (name, stored) = only_stored_file(dir.path());
    let r = mcp_post(
        &srv.base,
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_last_image_info","arguments":{}}}),
    )
    .send()
    .await
    .expect("post");
    // The reply is one SSE event; its data line is the JSON-RPC response.
    let text = r.text().await.expect("text");
    let reply: serde_json::Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .find_map(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC reply in {text}"));
    let image = &reply["result"]["structuredContent"]["image"];
    assert_eq!(image["blobName"], name.as_str(), "{reply}");
    assert_eq!(image["sha256"], sha256_hex(&stored).as_str());
    let (code, log) = srv.sigterm().await;
    assert_eq!(code, Some(0));
    assert_no_secret(&log, &[TOKEN]);
}

/// Read what the server answers on a raw connection, up to `n` bytes.
async fn raw_exchange(addr: &str, send: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(send).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_refuses_what_it_cannot_pay_for() {
    let fake = fake().await;
    let out = tempfile::tempdir().expect("tempdir");
    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let ops = format!("127.0.0.1:{ops_port}");
    let srv = start_http(
        &fake.base_url(),
        out.path(),
        &[
            "--max-connections",
            "6",
            "--max-http-sessions",
            "2",
            "--ops-addr",
            &ops,
        ],
    )
    .await;
    let addr = srv.base.trim_start_matches("http://").to_string();

    // A head over the 16 KiB cap: 431, not a growing buffer.
    let mut head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40 << 10));
    let got = raw_exchange(&addr, &head).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");

    // A body of many JSON values is refused before anything parses it.
    let many = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "generate_image",
        "arguments": {"prompt": "x", "junk": vec![0; 30_000]}}});
    let r = mcp_post(&srv.base, None, &many).send().await.expect("post");
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap_or_default().contains("JSON values"));

    // Two sessions fit; the third initialize gets 503 with Retry-After.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "edge", "version": "1"}}});
    for _ in 0..2 {
        let r = mcp_post(&srv.base, None, &init).send().await.expect("post");
        assert_eq!(r.status(), 200);
    }
    let r = mcp_post(&srv.base, None, &init).send().await.expect("post");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(metric(&srv.base, "mcp_sessions_live").await, 2.0);

    // Fill the connection cap with idle connections: the next one is
    // refused at once, and the ops listener still answers probes. The
    // clients above have dropped their connections, but the server may
    // not have seen them close yet: wait (asking the ops listener, which
    // is not counted) until none is open, then until all six are.
    let ops_base = format!("http://{ops}");
    let open_becomes = |want: f64| {
        let ops_base = ops_base.clone();
        async move {
            for _ in 0..100 {
                if metric(&ops_base, "http_connections_open").await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("http_connections_open never became {want}");
        }
    };
    open_becomes(0.0).await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    open_becomes(6.0).await;
    let got = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    let r = reqwest::get(format!("http://{ops}/healthz"))
        .await
        .expect("ops");
    assert_eq!(r.status(), 200);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::get(format!("{}/healthz", srv.base))
        .await
        .expect("main");
    assert_eq!(r.status(), 200);
    let (code, log) = srv.sigterm().await;
    assert_eq!(code, Some(0), "{log}");
}

const ADMIN: &str = "http-admin-token-9876543210";

async fn client_with(
    base: &str,
    token: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(token),
    );
    ().serve(transport).await.expect("initialize over HTTP")
}

async fn configure(
    c: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    args: serde_json::Value,
) -> rmcp::model::CallToolResult {
    c.call_tool(
        CallToolRequestParams::new("configure_gemini_token")
            .with_arguments(args.as_object().cloned().expect("o")),
    )
    .await
    .expect("call")
}

/// Over HTTP only the admin token may change the Gemini key, only in
/// memory; the clients' token may not, and `persist` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_configures_the_key_and_never_saves_it() {
    let fake = fake().await;
    let out = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("home");
    let home_s = home.path().to_str().expect("utf-8").to_string();
    let srv = start_http_env(
        &fake.base_url(),
        out.path(),
        &[],
        &[
            ("NANO_BANANA_ADMIN_TOKEN", ADMIN),
            ("HOME", &home_s),
            ("XDG_CONFIG_HOME", &home_s),
        ],
    )
    .await;
    let user = client_with(&srv.base, TOKEN).await;
    let r = configure(&user, json!({"apiKey": "AIzaNEWKEY-123456"})).await;
    assert!(
        is_error(&r) && text_of(&r).contains("needs the admin token"),
        "{}",
        text_of(&r)
    );
    let admin = client_with(&srv.base, ADMIN).await;
    let r = configure(
        &admin,
        json!({"apiKey": "AIzaNEWKEY-123456", "persist": true}),
    )
    .await;
    assert!(
        is_error(&r) && text_of(&r).contains("never saved"),
        "{}",
        text_of(&r)
    );
    // Neither changed the key: a generate still works.
    let gen_args = json!({"prompt": "still the old key fake:size=50000"});
    let gen_call = || {
        CallToolRequestParams::new("generate_image")
            .with_arguments(gen_args.as_object().cloned().expect("o"))
    };
    let r = user.call_tool(gen_call()).await.expect("call");
    assert!(!is_error(&r), "{}", text_of(&r));
    // The admin's change applies to every caller (the fake knows only the
    // test key, so Gemini now refuses it), and reverting works too.
    let r = configure(&admin, json!({"apiKey": "AIzaNEWKEY-123456"})).await;
    assert!(
        !is_error(&r) && text_of(&r).contains("memory only"),
        "{}",
        text_of(&r)
    );
    let r = user.call_tool(gen_call()).await.expect("call");
    assert!(
        is_error(&r) && text_of(&r).contains("rejected the API key"),
        "{}",
        text_of(&r)
    );
    let r = configure(&admin, json!({"apiKey": TEST_KEY})).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let r = user.call_tool(gen_call()).await.expect("call");
    assert!(!is_error(&r), "{}", text_of(&r));
    let saved: Vec<_> = walk(home.path());
    assert!(saved.is_empty(), "nothing written under HOME: {saved:?}");
    drop((user, admin));
    let (code, log) = srv.sigterm().await;
    assert_eq!(code, Some(0), "{log}");
    assert_no_secret(&log, &[ADMIN, "AIzaNEWKEY-123456"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}

/// The Host allow-list holds on every route of the MCP listener, and Host
/// oddities are refused whatever the list says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_checks_cover_every_route_and_refuse_oddities() {
    let fake = fake().await;
    let out = tempfile::tempdir().expect("tempdir");
    let srv = start_http(&fake.base_url(), out.path(), &[]).await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let req = |target: &str, hosts: &[&str]| {
        let mut r = format!("GET {target} HTTP/1.1\r\n{auth}");
        for h in hosts {
            r.push_str(&format!("Host: {h}\r\n"));
        }
        r.push_str("Connection: close\r\n\r\n");
        r
    };
    let status = |got: &str| got.split(' ').nth(1).unwrap_or("").to_string();
    for route in ["/healthz", "/readyz", "/metrics"] {
        let ok = raw_exchange(&addr, req(route, &["127.0.0.1"]).as_bytes()).await;
        assert_eq!(status(&ok), "200", "{route}: {ok}");
        let evil = raw_exchange(&addr, req(route, &["evil.example"]).as_bytes()).await;
        assert_eq!(status(&evil), "403", "{route}: {evil}");
    }
    let odd: [(&str, &[&str]); 5] = [
        ("/healthz", &["127.0.0.1", "127.0.0.1"]),
        ("/healthz", &["user@127.0.0.1"]),
        ("/healthz", &["127.0.0.1:99999"]),
        ("/healthz", &["127.0.0.1:80x"]),
        ("http://evil.example/healthz", &["127.0.0.1"]),
    ];
    for (target, hosts) in odd {
        let got = raw_exchange(&addr, req(target, hosts).as_bytes()).await;
        assert_eq!(status(&got), "400", "{target} {hosts:?}: {got}");
    }
    // Absolute form naming the Host itself is fine.
    let same = raw_exchange(
        &addr,
        req(
            &format!(
                "http://127.0.0.1:{}/healthz",
                addr.rsplit(':').next().expect("port")
            ),
            &[&addr],
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&same), "200", "{same}");
    let (code, log) = srv.sigterm().await;
    assert_eq!(code, Some(0), "{log}");
}

/// A JSON-RPC message without what differs from call to call (URLs, blob
/// names, times, hashes): every string and number inside a successful
/// tool result is blanked; content blocks keep their types.
fn message_shape(mut v: serde_json::Value) -> String {
    fn blank(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = "<s>".into(),
            serde_json::Value::Number(_) => *v = json!(0),
            serde_json::Value::Array(a) => a.iter_mut().for_each(blank),
            serde_json::Value::Object(o) => o.values_mut().for_each(blank),
            _ => {}
        }
    }
    let ok = v["result"]["isError"] != json!(true);
    if ok && let Some(result) = v.get_mut("result") {
        if let Some(x) = result.get_mut("structuredContent") {
            blank(x);
        }
        if let Some(x) = result.get_mut("content") {
            let types: Vec<serde_json::Value> = x
                .as_array()
                .map(|a| a.iter().map(|b| b["type"].clone()).collect())
                .unwrap_or_default();
            blank(x);
            *x = json!({"types": types, "blocks": x.clone()});
        }
    }
    v.to_string()
}

/// Status, media type and the messages of a reply (JSON, or the data
/// lines of SSE), each reduced by [`message_shape`].
async fn reply_shape(r: reqwest::Response) -> String {
    let status = r.status().as_u16();
    let media = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.expect("body");
    let messages: Vec<String> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => vec![message_shape(v)],
        Err(_) => text
            .lines()
            .filter(|l| !l.starts_with("id:") && !l.is_empty())
            .map(|l| {
                l.strip_prefix("data:")
                    .and_then(|d| serde_json::from_str(d.trim()).ok())
                    .map_or_else(|| l.to_string(), message_shape)
            })
            .collect(),
    };
    format!("{status} {media} {}", messages.join("|"))
}

/// The direct path (stateless tool calls without rmcp's per-request
/// service) answers exactly as rmcp does, on every revision, and leaves
/// everything it does not take to rmcp: the same requests against a
/// server with `--direct-calls false` give the same replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_answer_as_rmcp_does() {
    let fake = fake().await;
    let dir_a = tempfile::tempdir().expect("tmp");
    let dir_b = tempfile::tempdir().expect("tmp");
    let direct = start_http(&fake.base_url(), dir_a.path(), &["--stateless"]).await;
    let via_rmcp = start_http(
        &fake.base_url(),
        dir_b.path(),
        &["--stateless", "--direct-calls", "false"],
    )
    .await;

    let png = nano_banana_mcp::testkit::images::synth(
        nano_banana_mcp::testkit::images::Format::Png,
        20_000,
        9,
    )
    .bytes;
    let data_uri = {
        use base64::Engine as _;
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        )
    };
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let call = |name: &str, args: serde_json::Value, meta: Option<&serde_json::Value>| {
        let mut params = json!({"name": name, "arguments": args});
        if let Some(m) = meta {
            params["_meta"] = m.clone();
        }
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})
    };
    let gen_args = json!({"prompt": "a red square fake:size=30000"});
    let current: &[(&str, &str)] = &[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "generate_image"),
    ];
    // (what, headers beyond the usual ones, body, taken by the direct path)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, serde_json::Value, bool);
    let cases: Vec<Case> = vec![
        (
            "no version header",
            vec![],
            call("generate_image", gen_args.clone(), None),
            true,
        ),
        (
            "2025-06-18",
            vec![("mcp-protocol-version", "2025-06-18")],
            call("generate_image", gen_args.clone(), None),
            true,
        ),
        (
            "2025-11-25 edit of a data: URI",
            vec![("mcp-protocol-version", "2025-11-25")],
            call(
                "edit_image",
                json!({"imagePath": data_uri, "prompt": "pink fake:size=30000"}),
                None,
            ),
            true,
        ),
        (
            "2026-07-28",
            current.to_vec(),
            call("generate_image", gen_args.clone(), Some(&meta)),
            true,
        ),
        (
            "tool error: empty prompt",
            vec![("mcp-protocol-version", "2025-11-25")],
            call("generate_image", json!({"prompt": " "}), None),
            true,
        ),
        (
            "tool error: bad aspect ratio, 2026-07-28",
            current.to_vec(),
            call(
                "generate_image",
                json!({"prompt": "x", "aspectRatio": "7:3"}),
                Some(&meta),
            ),
            true,
        ),
        (
            "tool error: unreadable input",
            vec![],
            call(
                "edit_image",
                json!({"imagePath": "data:image/png;base64,!!!!", "prompt": "x"}),
                None,
            ),
            true,
        ),
        (
            "2026-07-28 without Mcp-Name",
            current[..2].to_vec(),
            call("generate_image", gen_args.clone(), Some(&meta)),
            false,
        ),
        (
            "2026-07-28 without _meta",
            current.to_vec(),
            call("generate_image", gen_args.clone(), None),
            false,
        ),
        (
            "Mcp-Name disagrees",
            vec![
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "edit_image"),
            ],
            call("generate_image", gen_args.clone(), Some(&meta)),
            false,
        ),
        (
            "unknown version",
            vec![("mcp-protocol-version", "2030-01-01")],
            call("generate_image", gen_args.clone(), None),
            false,
        ),
        (
            "invalid arguments",
            vec![],
            call("generate_image", json!({"prompt": 5}), None),
            false,
        ),
        (
            "progress asked for",
            vec![],
            {
                let mut c = call("generate_image", gen_args.clone(), None);
                c["params"]["_meta"] = json!({"progressToken": "p1"});
                c
            },
            false,
        ),
        (
            "another tool",
            vec![],
            call("get_last_image_info", json!({}), None),
            false,
        ),
        (
            "tools/list",
            vec![],
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {}}),
            false,
        ),
    ];
    let taken = cases.iter().filter(|c| c.3).count() as f64;
    for (what, headers, body, _) in &cases {
        let mut shapes = Vec::new();
        for srv in [&direct, &via_rmcp] {
            let mut r = mcp_raw(&srv.base, "application/json").json(body);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            shapes.push(reply_shape(r.send().await.expect("post")).await);
        }
        assert_eq!(shapes[0], shapes[1], "{what}");
    }
    // The comparison means something only if the direct path served the
    // cases it should, and only those.
    assert_eq!(metric(&direct.base, "direct_calls_total").await, taken);
    assert_eq!(metric(&via_rmcp.base, "direct_calls_total").await, 0.0);
    // Both stored the same images.
    assert_eq!(files_in(dir_a.path()).len(), files_in(dir_b.path()).len());
    assert_eq!(files_in(dir_a.path()).len(), 5);
    // The plans: on the direct path bodies draw on the waiting calls' pool
    // and there is one connection per waiting call; through rmcp, which
    // holds a body to the end of its response, bodies keep a share of
    // their own. A plain-http Gemini (the fake) pays for no HTTP/2 windows.
    let pool = metric(&direct.base, "memory_calls_budget_bytes").await;
    assert_eq!(metric(&direct.base, "http_body_budget_bytes").await, pool);
    assert_eq!(
        metric(&direct.base, "memory_bodies_budget_bytes").await,
        pool
    );
    let (per_connection, per_call) = (32.0 * 1024.0, 36.0 * 1024.0);
    let pairs = metric(&direct.base, "memory_connections_budget_bytes").await / per_connection;
    assert!(
        pairs >= 16.0 && pool >= pairs * per_call,
        "pairs {pairs}, pool {pool}"
    );
    assert_eq!(
        metric(&direct.base, "max_waiting_calls").await,
        (pool / per_call).floor()
    );
    let shared = metric(&via_rmcp.base, "memory_calls_budget_bytes").await;
    assert_ne!(
        metric(&via_rmcp.base, "http_body_budget_bytes").await,
        shared
    );
    for srv in [&direct, &via_rmcp] {
        assert_eq!(metric(&srv.base, "gemini_h2_windows_bytes").await, 0.0);
    }
    for srv in [direct, via_rmcp] {
        let (code, log) = srv.sigterm().await;
        assert_eq!(code, Some(0));
        assert_no_secret(&log, &[TOKEN]);
    }
}

/// Answers the spec asks for where rmcp gives others: DELETE of a session
/// is 204 (rmcp: 202, which SDK clients log as a failed termination), and
/// a JSON body that is not JSON is 400 with JSON-RPC's -32700 and a null
/// id (rmcp: 415), with sessions and without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_parse_errors_answer_as_the_spec_says() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let srv = start_http(&fake.base_url(), dir.path(), &[]).await;
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"deleter","version":"1"}}});
    let r = mcp_post(&srv.base, None, &init).send().await.expect("init");
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"]
        .to_str()
        .expect("sid")
        .to_string();
    drop(r);
    let del = || {
        reqwest::Client::new()
            .delete(format!("{}/mcp", srv.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", &sid)
    };
    let r = del().send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert!(r.text().await.expect("body").is_empty());
    // The session is gone: using it again is rmcp's 404.
    let r = mcp_post(
        &srv.base,
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    )
    .send()
    .await
    .expect("post");
    assert_eq!(r.status(), 404);

    let stateless_dir = tempfile::tempdir().expect("tmp");
    let stateless = start_http(&fake.base_url(), stateless_dir.path(), &["--stateless"]).await;
    for base in [&srv.base, &stateless.base] {
        for body in [&b"{\"jsonrpc\":\"2.0\",\"id\":1,"[..], b"not json", b""] {
            let r = mcp_raw(base, "application/json")
                .body(body.to_vec())
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 400, "{body:?}");
            let v: serde_json::Value = r.json().await.expect("a JSON-RPC error");
            assert_eq!(v["error"]["code"], -32700, "{v}");
            assert_eq!(v["id"], serde_json::Value::Null, "{v}");
        }
        // A wrong media type keeps rmcp's 415.
        let r = mcp_raw(base, "text/plain")
            .body("not json")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 415);
    }
    for srv in [srv, stateless] {
        let (code, _) = srv.sigterm().await;
        assert_eq!(code, Some(0));
    }
}

/// The SSE events (`id`, `data`) in a stream's text.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|ev| {
            let field = |name: &str| {
                ev.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_string())
            };
            Some((field("id:")?, field("data:").unwrap_or_default()))
        })
        .collect()
}

/// Resuming a call's SSE stream (GET with Last-Event-ID) brings only what
/// the client has not seen: after the last event it had, nothing again;
/// after the result, an empty stream that ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_streams_do_not_repeat_what_the_client_had() {
    use futures::StreamExt as _;
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let srv = start_http(&fake.base_url(), dir.path(), &[]).await;
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"resumer","version":"1"}}});
    let r = mcp_post(&srv.base, None, &init).send().await.expect("init");
    let sid = r.headers()["mcp-session-id"]
        .to_str()
        .expect("sid")
        .to_string();
    drop(r);
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let r = mcp_post(&srv.base, Some(&sid), &note)
        .send()
        .await
        .expect("note");
    assert!(r.status().is_success());

    // A slow call with progress: read its stream up to the first progress
    // event (after rmcp's priming event, which has no data), then lose the
    // connection, as a client on a flaky network does; with a session,
    // the call goes on.
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"generate_image","_meta":{"progressToken":"p1"},
        "arguments":{"prompt":"slow fake:size=2MiB fake:drip=60"}}});
    let r = mcp_post(&srv.base, Some(&sid), &call)
        .send()
        .await
        .expect("call");
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    let progress = |text: &str| {
        sse_events(text)
            .into_iter()
            .find(|(_, data)| data.contains("notifications/progress"))
    };
    while progress(&seen).is_none() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    let (first_id, _) = progress(&seen).expect("progress");
    let resume = |last: String| {
        let base = srv.base.clone();
        let sid = sid.clone();
        async move {
            let r = reqwest::Client::new()
                .get(format!("{base}/mcp"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("accept", "text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .header("mcp-session-id", &sid)
                .header("last-event-id", &last)
                .send()
                .await
                .expect("resume");
            assert_eq!(r.status(), 200);
            let text = tokio::time::timeout(Duration::from_secs(10), r.text())
                .await
                .expect("a finished stream resumes and ends")
                .expect("body");
            sse_events(&text)
        }
    };
    // Resumed while the call runs: the rest of the stream, to the result,
    // without the event the client had.
    let rest = resume(first_id.clone()).await;
    assert!(
        rest.iter().all(|(id, _)| *id != first_id),
        "the event the client had came again: {rest:?}"
    );
    let (result_id, result) = rest.last().cloned().expect("the rest of the stream");
    assert!(
        result.contains("\"result\""),
        "the result comes last: {result}"
    );
    let again = resume(result_id).await;
    assert!(again.is_empty(), "replayed after the result: {again:?}");
    let (code, _) = srv.sigterm().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_trimmed_like_a_presented_one() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let padded = format!("  {TOKEN}\n");
    let srv = start_http_env(
        &fake.base_url(),
        dir.path(),
        &[],
        &[("NANO_BANANA_AUTH_TOKEN", padded.as_str())],
    )
    .await;
    let c = client(&srv.base).await;
    assert_eq!(c.list_all_tools().await.expect("list").len(), 6);
}

/// An https Gemini base negotiates HTTP/2, where what Gemini sends ahead
/// is held in the process: the plan pays for it first (100 stream windows
/// of 64-256 KiB, 7 % of the budget), and the rest is split as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gemini_base_pays_for_its_http2_windows() {
    let dir = tempfile::tempdir().expect("tmp");
    let limit = ["--memory-limit", "128MiB"];
    let https = start_http("https://127.0.0.1:9", dir.path(), &limit).await;
    let plain = start_http("http://127.0.0.1:9", dir.path(), &limit).await;
    let windows = metric(&https.base, "gemini_h2_windows_bytes").await;
    // 7 % of ~89 MiB over 100 streams is under 64 KiB: the floor.
    assert_eq!(windows, 100.0 * 64.0 * 1024.0);
    assert_eq!(metric(&plain.base, "gemini_h2_windows_bytes").await, 0.0);
    // Paid for out of the same budget: what is split is smaller by it.
    let split = |b: &str| {
        let b = b.to_string();
        async move {
            let mut sum = 0.0;
            for part in ["images", "calls", "bodies", "connections", "sessions"] {
                sum += metric(&b, &format!("memory_{part}_budget_bytes")).await;
            }
            (sum, metric(&b, "memory_budget_bytes").await)
        }
    };
    let (https_parts, https_budget) = split(&https.base).await;
    let (plain_parts, plain_budget) = split(&plain.base).await;
    assert!((https_budget - plain_budget).abs() < 2.0 * 1024.0 * 1024.0);
    assert!(https_parts + windows <= https_budget + 1.0);
    assert!(https_parts < plain_parts);
    for srv in [https, plain] {
        let (code, _) = srv.sigterm().await;
        assert_eq!(code, Some(0));
    }
}
