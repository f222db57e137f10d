//! Durable tasks (the MCP Tasks extension, 2026-07-28) against the real
//! binary: two server processes on one store (a local folder, and one
//! Azurite container), a task started on A and polled, cancelled and
//! judged on B; a SIGKILLed owner; a restart of the server that accepted
//! the task. Requests are the wire's own (stateless HTTP, the routing
//! headers and `_meta` keys of 2026-07-28).

#![allow(clippy::disallowed_methods)] // reads small JSON-RPC replies

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nano_banana_mcp::testkit::fake_gemini::FakeGemini;
use serde_json::{Value, json};

const TOKEN: &str = "tasks-test-token-0123456789";

struct Replica {
    child: tokio::process::Child,
    base: String,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn replica(fake: &FakeGemini, out: &Path, env: &[(&str, &str)], port: u16) -> Replica {
    let mut child = tokio::process::Command::new(bin())
        .args([
            "serve",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--stateless",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GEMINI_API_KEY", TEST_KEY)
        .env("GEMINI_BASE_URL", fake.base_url())
        .env("NANO_BANANA_OUTPUT_DIR", out)
        .env("NANO_BANANA_AUTH_TOKEN", TOKEN)
        .env("LOG_LEVEL", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let err = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(err).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("[{port}] {l}");
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return Replica { child, base, port };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Replica {
    async fn signal(mut self, sig: i32) -> Option<i32> {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc_kill(pid, sig) };
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("exits")
            .expect("wait");
        status.code()
    }
}

/// One 2026-07-28 request; the JSON-RPC reply.
async fn rpc(base: &str, method: &str, name: &str, params: Value, tasks: bool) -> Value {
    rpc_2026(base, TOKEN, method, name, params, tasks).await
}

async fn start_task(base: &str, args: Value) -> String {
    let r = rpc(
        base,
        "tools/call",
        "generate_image",
        json!({"name": "generate_image", "arguments": args}),
        true,
    )
    .await;
    let res = &r["result"];
    assert_eq!(res["resultType"], "task", "{r}");
    assert_eq!(res["status"], "working", "{r}");
    assert!(res["createdAt"].is_string() && res["lastUpdatedAt"].is_string());
    assert!(res["pollIntervalMs"].as_u64().is_some());
    let id = res["taskId"].as_str().expect("taskId").to_string();
    assert!(id.starts_with("task_") && id.len() == 37, "{id}");
    id
}

async fn get(base: &str, id: &str) -> Value {
    rpc(base, "tasks/get", id, json!({"taskId": id}), true).await
}

/// Poll until the task is in a final state, at most `within`; the states
/// seen on the way and the last reply.
async fn poll(base: &str, id: &str, within: Duration) -> (Vec<String>, Value) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let r = get(base, id).await;
        let status = r["result"]["status"].as_str().unwrap_or("?").to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            return (seen, r);
        }
        assert!(status == "working", "unexpected reply while polling: {r}");
        assert!(Instant::now() < deadline, "still {status} after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Image files under their final names (temp files are dot files).
fn visible_images(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

async fn images(dir: &Path, azure: Option<(&str, &str)>) -> Vec<String> {
    match azure {
        Some((endpoint, container)) => list_blobs(endpoint, container)
            .await
            .into_iter()
            .filter(|n| !n.starts_with(".tasks/"))
            .collect(),
        None => visible_images(dir),
    }
}

/// A on B: polled to completion with the image's sha256, cancelled with
/// nothing stored, and the errors of the extension.
async fn across_replicas(
    fake: &FakeGemini,
    dir: &Path,
    env: &[(&str, &str)],
    azure: Option<(&str, &str)>,
) {
    let a = replica(fake, dir, env, free_port()).await;
    let b = replica(fake, dir, env, free_port()).await;
    fake.state.reset();

    // auto: a 2K image is a task for a client that takes tasks.
    let id = start_task(
        &a.base,
        json!({"prompt": "a lighthouse fake:latency=1500 fake:size=300000", "imageSize": "2K"}),
    )
    .await;
    let (seen, done) = poll(&b.base, &id, Duration::from_secs(30)).await;
    assert_eq!(seen, ["working", "completed"], "{done}");
    let result = &done["result"]["result"];
    assert_eq!(result["isError"], false, "{done}");
    let sent = fake.state.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        result["structuredContent"]["sha256"],
        sent[0].sha256.as_str()
    );
    assert_eq!(images(dir, azure).await.len(), 1);
    if azure.is_none() {
        let name = result["structuredContent"]["blobName"]
            .as_str()
            .expect("blobName");
        let bytes = std::fs::read(dir.join(name)).expect("stored");
        assert_eq!(sha256_hex(&bytes), sent[0].sha256);
    }
    // The same record from A.
    assert_eq!(get(&a.base, &id).await["result"]["result"], *result);

    // Without the extension the same call is answered synchronously.
    let r = rpc(
        &a.base,
        "tools/call",
        "generate_image",
        json!({"name": "generate_image", "arguments": {"prompt": "b fake:size=20000", "imageSize": "2K"}}),
        false,
    )
    .await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert!(r["result"].get("taskId").is_none());
    // auto: a 1K image on Flash is not worth a task.
    let r = rpc(
        &a.base,
        "tools/call",
        "generate_image",
        json!({"name": "generate_image", "arguments": {"prompt": "c fake:size=20000"}}),
        true,
    )
    .await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert!(r["result"].get("taskId").is_none(), "{r}");
    // Arguments a waiting task would have to keep (over 4 KiB) are served
    // synchronously, where the body stays paid for.
    let long = format!("{} fake:size=20000", "a long prompt ".repeat(400));
    let r = rpc(
        &a.base,
        "tools/call",
        "generate_image",
        json!({"name": "generate_image", "arguments": {"prompt": long, "imageSize": "2K"}}),
        true,
    )
    .await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert!(r["result"].get("taskId").is_none(), "{r}");
    assert_eq!(images(dir, azure).await.len(), 4);

    // Cancelled on B while A waits for Gemini: A stops, nothing is kept.
    let id = start_task(
        &a.base,
        json!({"prompt": "never fake:latency=60000 fake:size=300000", "n": 2}),
    )
    .await;
    let ack = rpc(&b.base, "tasks/cancel", &id, json!({"taskId": id}), true).await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    let t = Instant::now();
    let (_, last) = poll(&b.base, &id, Duration::from_secs(15)).await;
    assert_eq!(last["result"]["status"], "cancelled", "{last}");
    eprintln!("cancel on B took effect on A in {:?}", t.elapsed());
    // Cancelling again is a plain ack.
    let again = rpc(&b.base, "tasks/cancel", &id, json!({"taskId": id}), true).await;
    assert_eq!(again["result"]["resultType"], "complete", "{again}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        images(dir, azure).await.len(),
        4,
        "a cancelled task stored something"
    );

    // The extension's errors.
    let r = rpc(&b.base, "tasks/get", &id, json!({"taskId": id}), false).await;
    assert_eq!(r["error"]["code"], -32021, "{r}");
    for bad in ["task_00000000000000000000000000000000", "../../etc/passwd"] {
        let r = rpc(&b.base, "tasks/get", bad, json!({"taskId": bad}), true).await;
        assert_eq!(r["error"]["code"], -32602, "{r}");
    }
    assert_eq!(a.signal(15).await, Some(0));
    assert_eq!(b.signal(15).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_on_one_replica_is_polled_and_cancelled_on_another() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    across_replicas(&fake, dir.path(), &[], None).await;

    let Some(endpoint) = azurite() else { return };
    let container = unique("tasks");
    let cs = azurite_connection_string(&endpoint);
    let env = [
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("AZURE_STORAGE_CONTAINER_NAME", container.as_str()),
    ];
    let dir = tempfile::tempdir().expect("tmp");
    across_replicas(&fake, dir.path(), &env, Some((&endpoint, &container))).await;
}

/// A's process is killed mid-image: B reports the task failed within the
/// documented bound (20 s without a heartbeat, checked on B's next read),
/// and no image is visible.
async fn owner_killed(
    fake: &FakeGemini,
    dir: &Path,
    env: &[(&str, &str)],
    azure: Option<(&str, &str)>,
) {
    let a = replica(fake, dir, env, free_port()).await;
    let b = replica(fake, dir, env, free_port()).await;
    fake.state.reset();
    let id = start_task(
        &a.base,
        json!({"prompt": "slow fake:size=6000000 fake:drip=20", "imageSize": "4K"}),
    )
    .await;
    // Mid-image: the fake is sending and A is uploading.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.state.sent().is_empty() {
        assert!(Instant::now() < deadline, "the image never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed = Instant::now();
    a.signal(9).await;
    let (seen, last) = poll(&b.base, &id, Duration::from_secs(45)).await;
    let took = killed.elapsed();
    assert_eq!(seen, ["working", "failed"], "{last}");
    let msg = last["result"]["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("stopped"), "{last}");
    assert!(
        took <= Duration::from_secs(30),
        "failed only after {took:?}"
    );
    eprintln!("owner killed: B reported failed after {took:?}");
    assert!(
        images(dir, azure).await.is_empty(),
        "a half image is visible"
    );
    assert_eq!(b.signal(15).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_server_is_killed_is_failed_by_another() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    owner_killed(&fake, dir.path(), &[], None).await;

    let Some(endpoint) = azurite() else { return };
    let container = unique("tasks-kill");
    let cs = azurite_connection_string(&endpoint);
    let env = [
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("AZURE_STORAGE_CONTAINER_NAME", container.as_str()),
    ];
    let dir = tempfile::tempdir().expect("tmp");
    owner_killed(&fake, dir.path(), &env, Some((&endpoint, &container))).await;
}

/// SIGTERM while a task runs: the drain waits for it, the record says
/// completed, and the restarted server (same port, same folder) returns
/// the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_a_restart_of_its_server() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let env = [("NANO_BANANA_TASKS", "always")];
    let a = replica(&fake, dir.path(), &env, free_port()).await;
    let port = a.port;
    let id = start_task(
        &a.base,
        json!({"prompt": "d fake:latency=2000 fake:size=100000"}),
    )
    .await;
    let before = get(&a.base, &id).await;
    assert_eq!(before["result"]["status"], "working", "{before}");
    assert_eq!(a.signal(15).await, Some(0));
    let a = replica(&fake, dir.path(), &env, port).await;
    let after = get(&a.base, &id).await;
    assert_eq!(after["result"]["status"], "completed", "{after}");
    let sha = after["result"]["result"]["structuredContent"]["sha256"]
        .as_str()
        .expect("sha256");
    assert_eq!(sha, fake.state.sent()[0].sha256);
    let name = after["result"]["result"]["structuredContent"]["blobName"]
        .as_str()
        .expect("blobName");
    assert_eq!(
        sha256_hex(&std::fs::read(dir.path().join(name)).expect("file")),
        sha
    );
    assert_eq!(a.signal(15).await, Some(0));
}
