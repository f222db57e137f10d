//! The fast middle layer: the tool handlers in-process, driven by rmcp's
//! real client over an in-memory pipe (`tokio::io::duplex`), against the
//! fake Gemini on a loopback port and a local folder. No binary is
//! spawned, so each test takes milliseconds; the binary-level tests keep
//! the transports and the real parts (Azurite, cgroups, signals).

mod common;

use std::sync::Arc;

use clap::Parser as _;
use common::*;
use nano_banana_mcp::app::{App, Transport};
use nano_banana_mcp::config::Cli;
use nano_banana_mcp::mcp::Service;
use nano_banana_mcp::testkit::fake_gemini::FakeGemini;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

struct InProc {
    client: RunningService<RoleClient, ()>,
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

impl InProc {
    async fn start(fake: &FakeGemini, extra: &[&str]) -> InProc {
        Self::start_with(fake, extra, |_| {}).await
    }

    /// Like `start`, with a last change to the app before it serves.
    async fn start_with(fake: &FakeGemini, extra: &[&str], tweak: impl FnOnce(&mut App)) -> InProc {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().to_str().expect("utf-8").to_string();
        let base = fake.base_url();
        let mut args = vec![
            "nano-banana-mcp",
            "--gemini-api-key",
            TEST_KEY,
            "--gemini-base-url",
            &base,
            "--gemini-retry-base-ms",
            "10",
            "--output-dir",
            &out,
            // The plan subtracts this process's RSS, which every test in
            // this binary shares with the fake Gemini: after the 10 × 9 MiB
            // progress test it is ~240 MiB (the fake builds each image whole
            // and the allocator keeps the pages). A limit far above that keeps
            // the plan independent of what ran before; tests that need a
            // tight budget set one themselves.
            "--memory-limit",
            "4GiB",
        ];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).expect("arguments");
        cli.config.validate().expect("valid");
        let mut settings = cli.config.app_settings(Transport::Stdio, true, false);
        // The test process's own environment must not choose the storage.
        settings.store.azure_connection_string = None;
        settings.store.azure_account = None;
        let mut app = App::build(settings).await.expect("app builds");
        tweak(&mut app);
        let app = Arc::new(app);
        let service = Service::new(Arc::clone(&app), cli.config.session_settings());
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            if let Ok(running) = service.session().serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        let client = ().serve(client_io).await.expect("initialize in-process");
        InProc {
            client,
            app,
            _dir: dir,
        }
    }

    async fn call(&self, tool: &str, args: Value) -> rmcp::model::CallToolResult {
        let Value::Object(map) = args else {
            panic!("arguments must be an object")
        };
        self.client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map))
            .await
            .expect("tool call")
    }

    /// The files in the output folder (the records' folder left out).
    fn files(&self) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self._dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    }

    fn records(&self) -> Vec<String> {
        records_in(self._dir.path())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_then_continue_sends_the_stored_bytes_back() {
    let fake = fake().await;
    let s = InProc::start(&fake, &[]).await;
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "a fox fake:size=300KiB", "aspectRatio": "16:9"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    assert_eq!(v["storage"], "local");
    assert!(v["azureUrl"].is_null(), "local images have no azureUrl");
    let path = v["path"].as_str().expect("path");
    let bytes = std::fs::read(path).expect("stored file");
    let sent = fake.state.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sha256_hex(&bytes), sent[0].sha256);
    assert_eq!(v["sha256"], sent[0].sha256);
    assert_eq!(
        fake.state.requests()[0]
            .generation_config
            .as_ref()
            .expect("config")["imageConfig"]["aspectRatio"],
        "16:9"
    );

    let info = s.call("get_last_image_info", json!({})).await;
    assert_eq!(structured(&info)["image"]["sha256"], sent[0].sha256);

    // The session's own image is listed as a resource, and reads back as
    // its record (the link, not the bytes).
    let id = v["imageId"].as_str().expect("imageId");
    let listed = s.client.list_all_resources().await.expect("resources/list");
    let uris: Vec<&str> = listed.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, vec![format!("nano-banana://images/{id}")]);
    let read = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uris[0]))
        .await
        .expect("resources/read");
    let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("not text: {read:?}");
    };
    let record: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(record["sha256"], sent[0].sha256);
    assert_eq!(record["imageId"], id);
    assert!(
        !text.contains("thoughtSignature"),
        "the signature stays server-side"
    );
    let missing = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "nano-banana://images/img_0123456789abcdef0123456789abcdef",
        ))
        .await
        .expect_err("no such image");
    assert!(
        missing.to_string().contains("no image with imageId"),
        "{missing}"
    );

    let r2 = s
        .call(
            "continue_editing",
            json!({"prompt": "make it pink fake:size=1000"}),
        )
        .await;
    assert!(!is_error(&r2), "{}", text_of(&r2));
    let reqs = fake.state.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].inputs[0].sha256, sent[0].sha256,
        "the stored bytes went back"
    );
    assert!(
        structured(&r2)["blobName"]
            .as_str()
            .expect("name")
            .starts_with("edited-")
    );
    assert_eq!(s.files().len(), 2, "{:?}", s.files());
    assert_eq!(s.records().len(), 2, "{:?}", s.records());
    assert_eq!(s.app.budget().stats().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_before_any_request() {
    let fake = fake().await;
    let s = InProc::start(&fake, &["--max-prompt-bytes", "64KiB"]).await;
    for (tool, args, says) in [
        (
            "generate_image",
            json!({"prompt": "x", "imageSize": "8K"}),
            "8K",
        ),
        (
            "generate_image",
            json!({"prompt": "   "}),
            "prompt is empty",
        ),
        (
            "generate_image",
            json!({"prompt": "y".repeat(70 << 10)}),
            "--max-prompt-bytes",
        ),
        (
            "edit_image",
            json!({"imagePath": "/nonexistent/a.png", "prompt": "z".repeat(70 << 10)}),
            "--max-prompt-bytes",
        ),
        (
            "continue_editing",
            json!({"prompt": "again"}),
            "no previous image",
        ),
    ] {
        let r = s.call(tool, args).await;
        assert!(is_error(&r), "{tool}");
        assert!(text_of(&r).contains(says), "{tool}: {}", text_of(&r));
    }
    assert!(fake.state.requests().is_empty(), "nothing reached Gemini");
    assert!(s.files().is_empty());
    let metrics = s.app.metrics_text();
    assert!(
        metrics.contains(
            "nano_banana_tool_calls_total{tool=\"generate_image\",outcome=\"invalid\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_responses_leave_nothing_stored() {
    let fake = fake().await;
    let s = InProc::start(&fake, &[]).await;
    for (prompt, says) in [
        ("fake:truncate fake:size=3MiB", "Gemini"),
        ("fake:safety", "IMAGE_SAFETY"),
        ("fake:badbase64 fake:size=5000", "base64"),
        ("fake:status=400", "400"),
    ] {
        let r = s.call("generate_image", json!({ "prompt": prompt })).await;
        assert!(is_error(&r), "{prompt}");
        assert!(text_of(&r).contains(says), "{prompt}: {}", text_of(&r));
    }
    assert!(s.files().is_empty(), "{:?}", s.files());
    assert_eq!(s.app.budget().stats().in_flight, 0);
    // The interim thought image is dropped; the result is stored.
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "fake:thought fake:size=50000"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let sent = fake.state.sent();
    let result = sent.iter().rfind(|i| !i.thought).expect("result image");
    assert_eq!(structured(&r)["sha256"], result.sha256);
    assert_eq!(s.files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_tools_share_one_description_of_their_options() {
    let fake = fake().await;
    let s = InProc::start(&fake, &[]).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let schema_of = |name: &str| {
        let t = tools.iter().find(|t| t.name == name).expect(name);
        Value::Object((*t.input_schema).clone())
    };
    let generate = schema_of("generate_image");
    for name in ["edit_image", "continue_editing"] {
        let other = schema_of(name);
        for field in ["aspectRatio", "imageSize"] {
            let d = &other["properties"][field]["description"];
            assert!(d.is_string(), "{name}.{field} has a description: {other}");
            assert_eq!(
                d, &generate["properties"][field]["description"],
                "{name}.{field}"
            );
        }
    }
    assert_eq!(generate["required"], json!(["prompt"]));
}

/// The server's own output, line by line, up to the response with `id`:
/// the progress values it carried, in the order they were written.
async fn progress_until_result(
    lines: &mut tokio::io::Lines<
        tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    >,
    id: u64,
) -> (Vec<f64>, Value) {
    let mut seen = Vec::new();
    loop {
        let line = lines.next_line().await.expect("read").expect("a line");
        let v: Value = serde_json::from_str(&line).expect("JSON-RPC");
        if v["method"] == "notifications/progress" {
            seen.push(v["params"]["progress"].as_f64().expect("progress"));
        } else if v["id"] == id {
            return (seen, v);
        }
    }
}

type RawLines =
    tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>;

/// A raw MCP session on the in-process server, initialized: what the
/// server writes, line by line, and where to write.
async fn raw_session(s: &InProc) -> (tokio::io::WriteHalf<tokio::io::DuplexStream>, RawLines) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let service = Service::new(
        Arc::clone(&s.app),
        nano_banana_mcp::mcp::SessionSettings {
            max: 10,
            ttl: std::time::Duration::from_secs(60),
        },
    );
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = service.session().serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let (read, mut write) = tokio::io::split(client_io);
    let mut lines = tokio::io::BufReader::new(read).lines();
    for v in [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ] {
        write
            .write_all(format!("{v}\n").as_bytes())
            .await
            .expect("write");
        if v["id"] == 0 {
            let _ = progress_until_result(&mut lines, 0).await;
        }
    }
    (write, lines)
}

/// While a call waits for Gemini, progress keeps coming at least every
/// PROGRESS_KEEPALIVE (5 s), so a client that resets its timeout on
/// progress keeps waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_keeps_coming_while_gemini_thinks() {
    use tokio::io::AsyncWriteExt as _;
    let fake = fake().await;
    let s = InProc::start(&fake, &[]).await;
    let (mut write, mut lines) = raw_session(&s).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "generate_image",
        "arguments": {"prompt": "slow fake:latency=16000 fake:size=50000"},
        "_meta": {"progressToken": "k"}}});
    write
        .write_all(format!("{call}\n").as_bytes())
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut at = Vec::new();
    loop {
        let line = lines.next_line().await.expect("read").expect("a line");
        let v: Value = serde_json::from_str(&line).expect("JSON-RPC");
        if v["method"] == "notifications/progress" {
            let msg = v["params"]["message"].as_str().unwrap_or("").to_string();
            at.push((started.elapsed().as_secs_f64(), msg));
        } else if v["id"] == 1 {
            assert!(v["result"]["isError"] != true, "{v}");
            break;
        }
    }
    let keepalive: Vec<f64> = at
        .iter()
        .filter(|(_, m)| m.contains("s so far"))
        .map(|(t, _)| *t)
        .collect();
    // 16 s of waiting: at 5, 10 and 15 s.
    assert_eq!(keepalive.len(), 3, "{at:?}");
    for w in keepalive.windows(2) {
        assert!((4.5..5.8).contains(&(w[1] - w[0])), "{at:?}");
    }
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| *g < 5.8), "a silence over 5 s: {at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_written_in_order_and_before_the_result() {
    use tokio::io::AsyncWriteExt as _;
    let fake = fake().await;
    let s = InProc::start(&fake, &[]).await;
    // The raw wire, so that what is checked is the order the server wrote.
    let (mut write, mut lines) = raw_session(&s).await;
    let mut send = async |v: Value| {
        write
            .write_all(format!("{v}\n").as_bytes())
            .await
            .expect("write");
    };
    for id in 1..=10u64 {
        send(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "generate_image",
            "arguments": {"prompt": format!("round {id} fake:size=9MiB")},
            "_meta": {"progressToken": id}}}),
        )
        .await;
        let (seen, result) = progress_until_result(&mut lines, id).await;
        assert!(result["result"]["isError"] != true, "{result}");
        assert!(seen.len() >= 5, "call {id}: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "call {id}: out of order {seen:?}"
        );
    }
    // A token too long to repeat in every notification gets no progress.
    send(
        json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {
        "name": "generate_image",
        "arguments": {"prompt": "fake:size=3MiB"},
        "_meta": {"progressToken": "t".repeat(64 << 10)}}}),
    )
    .await;
    let (seen, result) = progress_until_result(&mut lines, 11).await;
    assert!(result["result"]["isError"] != true, "{result}");
    assert!(seen.is_empty(), "{seen:?}");
}

/// Waiting for Gemini costs a call's reservation, not the image path's:
/// with room for one streaming response, six calls all wait at Gemini
/// at once, and they stream one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_calls_do_not_hold_the_image_path() {
    use nano_banana_mcp::memory::{Budget, BudgetConfig};
    use nano_banana_mcp::pipeline::WAITING_CALL_BYTES;
    let fake = fake().await;
    let mut one = 0;
    let s = InProc::start_with(&fake, &[], |app| {
        one = app.pipeline.cfg.per_request_bytes();
        app.pipeline.budget = Budget::new(BudgetConfig {
            total_bytes: one,
            max_queue: usize::MAX,
            queue_timeout: std::time::Duration::from_secs(60),
        });
    })
    .await;
    let calls = (0..6).map(|i| {
        s.call(
            "generate_image",
            json!({"prompt": format!("wait {i} fake:latency=1500 fake:size=3MiB")}),
        )
    });
    // All six reach Gemini before the first answer starts (1.5 s): none
    // waits for another's image memory first.
    let all_arrived = async {
        while fake.state.requests().len() < 6 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        s.files().len()
    };
    let (results, files_then) = tokio::join!(futures::future::join_all(calls), all_arrived);
    assert_eq!(files_then, 0, "a call waited for another to finish first");
    for r in &results {
        assert!(!is_error(r), "{}", text_of(r));
    }
    let (calls, images) = (s.app.calls().stats(), s.app.budget().stats());
    assert!(
        calls.peak_reserved >= 6 * WAITING_CALL_BYTES,
        "all six waited at Gemini at once: {calls:?}"
    );
    assert_eq!(images.peak_reserved, one, "one response streamed at a time");
    assert_eq!(
        (images.admitted, images.in_flight, calls.in_flight),
        (6, 0, 0)
    );
    let mut want: Vec<_> = fake.state.sent().into_iter().map(|x| x.sha256).collect();
    let mut got: Vec<_> = s
        .files()
        .iter()
        .map(|p| sha256_hex(&std::fs::read(p).expect("stored")))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every image stored whole");
}
