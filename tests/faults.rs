//! Injected faults and hostile input against the real binary: nothing
//! committed for a failed call, reservations released, no secret in any
//! log line, and the server answers the next valid request.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// A raw JSON-RPC session over the server's stdin/stdout, for input no
/// well-behaved client would send.
struct Raw {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Raw {
    async fn start(fake_url: &str, out: &std::path::Path, env: &[(&str, &str)]) -> Raw {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GEMINI_API_KEY", TEST_KEY)
            .env("GEMINI_BASE_URL", fake_url)
            .env("NANO_BANANA_OUTPUT_DIR", out)
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut r = Raw {
            child,
            stdin,
            lines,
        };
        r.send(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}})).await;
        r.reply(0).await;
        r.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
        r
    }

    async fn send(&mut self, v: &Value) {
        self.write(format!("{v}\n").as_bytes()).await;
    }

    async fn write(&mut self, b: &[u8]) {
        self.stdin.write_all(b).await.expect("write");
        self.stdin.flush().await.expect("flush");
    }

    /// The response with this id (notifications are skipped).
    async fn reply(&mut self, id: u64) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .expect("a reply in time")
                .expect("read")
                .expect("the server is still there");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    async fn call(&mut self, id: u64, tool: &str, args: Value) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}}))
            .await;
        self.reply(id).await
    }

    fn hwm_mib(&self) -> f64 {
        let pid = self.child.id().expect("pid");
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kb: f64 = s
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmHWM");
        kb / 1024.0
    }
}

fn in_flight(status: &Value) -> u64 {
    status["result"]["structuredContent"]["memory"]["inFlight"]
        .as_u64()
        .expect("inFlight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stdin_does_not_take_the_server_down() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Raw::start(&fake.base_url(), dir.path(), &[]).await;
    s.write(b"{this is not json\n").await;
    // 100 MB on one line: dropped at the 8 MiB cap, never buffered whole.
    let chunk = vec![b'x'; 1 << 20];
    s.write(b"{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"ping\",\"params\":{\"pad\":\"")
        .await;
    for _ in 0..100 {
        s.write(&chunk).await;
    }
    s.write(b"\"}}\n").await;
    let r = s.call(1, "no_such_tool", json!({})).await;
    assert!(
        r.get("error").is_some() || r["result"]["isError"] == true,
        "{r}"
    );
    let r = s.call(2, "generate_image", json!({"prompt": 5})).await;
    assert!(
        r.get("error").is_some() || r["result"]["isError"] == true,
        "{r}"
    );
    let r = s
        .call(3, "generate_image", json!({"prompt": "x".repeat(1 << 20)}))
        .await;
    assert_eq!(r["result"]["isError"], true);
    assert!(r.to_string().contains("--max-prompt-bytes"));
    let r = s
        .call(
            4,
            "generate_image",
            json!({"prompt": "fine fake:size=100000"}),
        )
        .await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    let hwm = s.hwm_mib();
    assert!(hwm < 48.0, "peak RSS {hwm:.1} MiB after a 100 MB line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_commits_nothing_and_releases_memory() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Raw::start(
        &fake.base_url(),
        dir.path(),
        &[("NANO_BANANA_BLOCK_SIZE", "256KiB")],
    )
    .await;
    s.send(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":"slow fake:size=4MiB fake:drip=20"}}}))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"user"}}))
        .await;
    let mut released = false;
    for i in 0..40 {
        let st = s.call(100 + i, "get_configuration_status", json!({})).await;
        if in_flight(&st) == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "the reservation was not released");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    let r = s
        .call(
            200,
            "generate_image",
            json!({"prompt": "after fake:size=100000"}),
        )
        .await;
    assert_eq!(r["result"]["isError"], false, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_big_text_and_timeouts() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![("GEMINI_READ_TIMEOUT_SECS".into(), "1".into())],
    })
    .await;
    let r = s
        .call("generate_image", prompt("fake:drip=1500 fake:size=300000"))
        .await;
    assert!(is_error(&r));
    assert!(text_of(&r).contains("stopped sending"), "{}", text_of(&r));
    assert!(files_in(dir.path()).is_empty());
    let r = s
        .call(
            "generate_image",
            prompt("fake:bigtext=5000000 fake:size=200000"),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert!(structured(&r)["text"].as_str().expect("text").len() <= 32 << 10);
    let log = s.stop().await;
    assert!(!log.contains(TEST_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_faults_leave_no_blob_and_no_secret() {
    let Some(endpoint) = azurite() else { return };
    let fake = fake().await;
    let container = unique("faults");
    let cs = azurite_connection_string(&endpoint);
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((cs.clone(), container.clone())),
        env: vec![("NANO_BANANA_BLOCK_SIZE".into(), "256KiB".into())],
    })
    .await;
    for p in [
        "fake:truncate fake:size=3MiB",
        "fake:badbase64 fake:size=3MiB",
        "fake:truncate-after-image fake:size=3MiB",
    ] {
        let r = s.call("generate_image", prompt(p)).await;
        assert!(is_error(&r), "{p}");
    }
    assert!(list_blobs(&endpoint, &container).await.is_empty());
    let r = s.call("generate_image", prompt("fake:size=3MiB")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 1);
    s.stop().await;

    // A wrong account key: a clear message about credentials, no secret.
    let bad_key =
        "QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5QmFkS2V5";
    let bad = cs.replace(AZURITE_KEY, bad_key);
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((bad, container.clone())),
        env: vec![],
    })
    .await;
    let r = s.call("generate_image", prompt("fake:size=3MiB")).await;
    assert!(is_error(&r));
    let t = text_of(&r);
    assert!(t.contains("AZURE_STORAGE_CONNECTION_STRING"), "{t}");
    assert!(!t.contains(bad_key) && !t.contains("sig="));
    let log = s.stop().await;
    assert!(!log.contains(bad_key) && !log.contains(TEST_KEY));
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 1);
}
