//! Injected faults and hostile input against the real binary: nothing
//! committed for a failed call, reservations released, no secret in any
//! log line, and the server answers the next valid request.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use nano_banana_mcp::testkit::fake_gemini::FakeGemini;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// A raw JSON-RPC session over the server's stdin/stdout, for input no
/// well-behaved client would send.
struct Raw {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
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
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        let mut r = Raw {
            child,
            stdin,
            lines,
            stderr,
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
        self.reply_to(json!(id)).await
    }

    /// The response whose id is `id` (`null` for a parse error).
    async fn reply_to(&mut self, id: Value) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .expect("a reply in time")
                .expect("read")
                .expect("the server is still there");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v.get("id") == Some(&id) {
                return v;
            }
        }
    }

    async fn call(&mut self, id: u64, tool: &str, args: Value) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}}))
            .await;
        self.reply(id).await
    }

    /// The client goes away: close both pipes, as when the editor quits.
    /// Returns how the server exited and everything it logged.
    async fn vanish(self) -> (std::process::ExitStatus, String) {
        self.exit(true).await
    }

    /// Wait for the server to exit on its own while the client keeps both
    /// pipes open (as a supervisor's SIGTERM finds it).
    async fn exit_with_pipes_open(self) -> (std::process::ExitStatus, String) {
        self.exit(false).await
    }

    async fn exit(self, close_pipes: bool) -> (std::process::ExitStatus, String) {
        let Raw {
            mut child,
            stdin,
            lines,
            stderr,
        } = self;
        let pipes = if close_pipes {
            drop((stdin, lines));
            None
        } else {
            Some((stdin, lines))
        };
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("the server exits (pipes closed, or a signal with them open)")
            .expect("wait");
        drop(pipes);
        (status, stderr.await.expect("stderr"))
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
    // JSON-RPC's parse error, with a null id: the line had none to echo.
    let e = s.reply_to(Value::Null).await;
    assert_eq!(e["error"]["code"], -32700, "{e}");
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
    let (_, log) = s.vanish().await;
    assert_no_secret(&log, &[]);
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
    let (_, log) = s.vanish().await;
    assert_no_secret(&log, &[]);
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
    let baseline = s.rss_mib();
    let r = s
        .call("generate_image", prompt("fake:drip=1500 fake:size=300000"))
        .await;
    assert!(is_error(&r));
    assert!(text_of(&r).contains("stopped sending"), "{}", text_of(&r));
    assert!(files_in(dir.path()).is_empty());
    s.assert_settled(baseline).await;
    let r = s
        .call(
            "generate_image",
            prompt("fake:bigtext=5000000 fake:size=200000"),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert!(structured(&r)["text"].as_str().expect("text").len() <= 32 << 10);
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
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
    let baseline = s.rss_mib();
    for p in [
        "fake:truncate fake:size=3MiB",
        "fake:badbase64 fake:size=3MiB",
        "fake:truncate-after-image fake:size=3MiB",
    ] {
        let r = s.call("generate_image", prompt(p)).await;
        assert!(is_error(&r), "{p}");
    }
    assert!(list_blobs(&endpoint, &container).await.is_empty());
    assert!(list_records(&endpoint, &container).await.is_empty());
    s.assert_settled(baseline).await;
    let r = s.call("generate_image", prompt("fake:size=3MiB")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 1);
    let id = structured(&r)["imageId"]
        .as_str()
        .expect("imageId")
        .to_string();
    assert_eq!(
        list_records(&endpoint, &container).await,
        vec![format!("{RECORDS_DIR}/{id}.json")]
    );
    assert_no_secret(&s.stop().await, &[]);

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
    assert_no_secret(&log, &[bad_key]);
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 1);
}

/// Start a slow 6 MiB call over raw stdio and return once its first blocks
/// are in the output folder, so what follows happens mid-upload.
async fn slow_call_under_way(fake: &FakeGemini, dir: &std::path::Path) -> Raw {
    let mut s = Raw::start(
        &fake.base_url(),
        dir,
        &[("NANO_BANANA_BLOCK_SIZE", "256KiB")],
    )
    .await;
    s.send(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":"gone fake:size=6MiB fake:drip=20"}}}))
        .await;
    wait_for_upload(dir).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_client_that_disappears_still_gets_its_image_stored() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = slow_call_under_way(&fake, dir.path()).await;
    // stdin and stdout close together, as when the client process dies.
    // The call in flight is finished and stored (nothing paid for is
    // thrown away); then the server exits on its own.
    let (status, log) = s.vanish().await;
    assert!(status.success(), "{status:?}\n{log}");
    let (_, stored) = only_stored_file(dir.path());
    let sent = fake.state.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].completed);
    assert_eq!(stored.len(), sent[0].bytes);
    assert!(stored.starts_with(b"\x89PNG"));
    assert_no_secret(&log, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_call_leaves_nothing_half_written() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = slow_call_under_way(&fake, dir.path()).await;
    let pid = s.child.id().expect("pid");
    let t = std::time::Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(pid as i32, 15) };
    // The client still holds stdin open: the server must not wait for it.
    let (status, log) = s.exit_with_pipes_open().await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?} to stop",
        t.elapsed()
    );
    assert!(status.success(), "{status:?}\n{log}");
    assert_abandoned(dir.path(), &fake).await;
    assert_no_secret(&log, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_leaves_no_image_and_no_record() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = slow_call_under_way(&fake, dir.path()).await;
    let pid = s.child.id().expect("pid");
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(pid as i32, 9) };
    let (status, _) = s.exit_with_pipes_open().await;
    assert!(!status.success(), "{status:?}");
    // Only the hidden temp file a killed process cannot remove is left
    // (swept at a later start once it is old): no image under a final
    // name, no record.
    let visible: Vec<String> = files_in(dir.path())
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(visible.is_empty(), "{visible:?}");
    assert!(
        records_in(dir.path()).is_empty(),
        "{:?}",
        records_in(dir.path())
    );

    // Another process on the same folder is unaffected, and what it
    // stores has its record.
    let mut b = Raw::start(&fake.base_url(), dir.path(), &[]).await;
    let r = b
        .call(
            1,
            "generate_image",
            json!({"prompt": "after fake:size=100000"}),
        )
        .await;
    let id = r["result"]["structuredContent"]["imageId"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_eq!(records_in(dir.path()), vec![format!("{id}.json")]);
    let (status, log) = b.vanish().await;
    assert!(status.success(), "{status:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_to_azure_leaves_no_blob_and_no_record() {
    let Some(endpoint) = azurite() else { return };
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let container = unique("sigkill");
    let cs = azurite_connection_string(&endpoint);
    let env = [
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("AZURE_STORAGE_CONTAINER_NAME", container.as_str()),
        ("NANO_BANANA_BLOCK_SIZE", "256KiB"),
    ];
    let mut a = Raw::start(&fake.base_url(), dir.path(), &env).await;
    a.send(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":"gone fake:size=6MiB fake:drip=20"}}}))
        .await;
    // Gemini is streaming and blocks are going up: kill it there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.state.sent().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = a.child.id().expect("pid");
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(pid as i32, 9) };
    let (status, _) = a.exit_with_pipes_open().await;
    assert!(!status.success(), "{status:?}");
    assert!(
        !fake.state.sent()[0].completed,
        "killed too late: the image was whole"
    );
    assert!(list_blobs(&endpoint, &container).await.is_empty());
    assert!(list_records(&endpoint, &container).await.is_empty());

    // Another replica on the same container is unaffected.
    let mut b = Raw::start(&fake.base_url(), dir.path(), &env).await;
    let r = b
        .call(
            1,
            "generate_image",
            json!({"prompt": "after fake:size=100000"}),
        )
        .await;
    let id = r["result"]["structuredContent"]["imageId"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 1);
    assert_eq!(
        list_records(&endpoint, &container).await,
        vec![format!("{RECORDS_DIR}/{id}.json")]
    );
    let (status, log) = b.vanish().await;
    assert!(status.success(), "{status:?}\n{log}");
}

/// The Azurite the test suite shares cannot be stopped; this one belongs to
/// one test. It keeps its data in a folder, so a restart keeps containers.
struct OwnAzurite {
    child: tokio::process::Child,
}

impl OwnAzurite {
    /// The npm-installed Azurite (scripts/test.sh installs it); None skips.
    fn bin() -> Option<std::path::PathBuf> {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob");
        if p.exists() {
            return Some(p);
        }
        assert!(
            std::env::var_os("REQUIRE_AZURITE").is_none(),
            "REQUIRE_AZURITE is set but {} is missing",
            p.display()
        );
        eprintln!("skipped: no Azurite in node_modules (npm install)");
        None
    }

    async fn start(bin: &std::path::Path, port: u16, data: &std::path::Path) -> OwnAzurite {
        let child = tokio::process::Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data)
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start Azurite");
        let mut child = child;
        // Node can take well over 10 s to start when the suite runs other
        // tests beside this one on 2 cores (seen once in CI).
        for _ in 0..1200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return OwnAzurite { child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("Azurite exited before listening on port {port}: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Azurite did not start on port {port} within 60 s");
    }

    /// Stop it the way an orchestrator does: SIGTERM, then wait.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc_kill(pid as i32, 15) };
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_stopped_mid_upload_then_back() {
    let Some(az_bin) = OwnAzurite::bin() else {
        return;
    };
    let fake = fake().await;
    let data = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let az = OwnAzurite::start(&az_bin, port, data.path()).await;
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let container = unique("outage");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((azurite_connection_string(&endpoint), container.clone())),
        env: vec![("NANO_BANANA_BLOCK_SIZE".into(), "256KiB".into())],
    })
    .await;
    let baseline = s.rss_mib();
    // ~2.5 s of download; Azurite goes away after 1 s, blocks already sent.
    let t = std::time::Instant::now();
    let (r, ()) = tokio::join!(
        s.call("generate_image", prompt("fake:size=8MiB fake:drip=15")),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            az.stop().await;
        }
    );
    let took = t.elapsed();
    assert!(is_error(&r), "succeeded without storage");
    let t_err = text_of(&r);
    assert!(
        t_err.contains("Azure") || t_err.contains("storage"),
        "{t_err}"
    );
    assert!(took < Duration::from_secs(40), "failed only after {took:?}");
    assert_no_secret(&t_err, &[]);
    s.assert_settled(baseline).await;

    // Back up on the same data: nothing was committed, and work resumes.
    let az = OwnAzurite::start(&az_bin, port, data.path()).await;
    assert!(
        list_blobs(&endpoint, &container).await.is_empty(),
        "a blob was committed for the failed call"
    );
    assert!(list_records(&endpoint, &container).await.is_empty());
    let r = s.call("generate_image", prompt("fake:size=3MiB")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    let (status, _, body) = download(v["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), v["sha256"].as_str().expect("sha256"));
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 1);
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
    az.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_container_that_may_not_be_created() {
    let Some(endpoint) = azurite() else { return };
    let fake = fake().await;
    // An object-only account SAS may write blobs but not create containers.
    let sas = account_sas("rwdlac", "o");
    let sig = sas_signature(&sas);
    let container = unique("nocreate");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((
            format!("BlobEndpoint={endpoint};SharedAccessSignature={sas}"),
            container.clone(),
        )),
        env: vec![],
    })
    .await;
    let baseline = s.rss_mib();
    let r = s.call("generate_image", prompt("fake:size=300000")).await;
    assert!(is_error(&r));
    let t = text_of(&r);
    assert!(
        t.contains(&container) && t.contains("does not exist"),
        "{t}"
    );
    assert_no_secret(&t, &[&sig]);
    // Still serving, settled, and nothing was created.
    s.assert_settled(baseline).await;
    let log = s.stop().await;
    assert!(
        log.contains("could not create the Azure container"),
        "{log}"
    );
    assert_no_secret(&log, &[&sig]);
    let http = reqwest::Client::new();
    let cs =
        nano_banana_mcp::store::connstr::parse(&azurite_connection_string(&endpoint)).expect("cs");
    assert!(
        !nano_banana_mcp::store::azure_setup::container_exists(&http, &cs, &container)
            .await
            .expect("probe")
    );
}

/// Answers every HTTP request on `listener` with `reply` and sends each
/// request head it read to `seen` (one thread, a few connections).
fn answer_heads(
    listener: std::net::TcpListener,
    reply: String,
    seen: std::sync::mpsc::Sender<String>,
) {
    use std::io::{Read as _, Write as _};
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut c) = conn else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = seen.send(String::from_utf8_lossy(&head).into_owned());
            let _ = c.write_all(reply.as_bytes());
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gemini_key_does_not_follow_a_redirect() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    // Where a hostile or broken endpoint sends the client: any request
    // that arrives here is a leak.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let elsewhere_at = elsewhere.local_addr().expect("addr");
    let (leak_tx, leak_rx) = std::sync::mpsc::channel();
    answer_heads(
        elsewhere,
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .into(),
        leak_tx,
    );
    let redirector = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let redirector_at = redirector.local_addr().expect("addr");
    let (hit_tx, hit_rx) = std::sync::mpsc::channel();
    answer_heads(
        redirector,
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            elsewhere_at.port()
        ),
        hit_tx,
    );
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![
            ("GEMINI_BASE_URL".into(), format!("http://{redirector_at}")),
            ("GEMINI_MAX_ATTEMPTS".into(), "1".into()),
        ],
    })
    .await;
    let r = s.call("generate_image", prompt("a redirected call")).await;
    assert!(is_error(&r), "{}", text_of(&r));
    assert!(text_of(&r).contains("307"), "{}", text_of(&r));
    let head = hit_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the redirector saw the request");
    assert!(
        head.to_ascii_lowercase().contains("x-goog-api-key"),
        "the request to the configured endpoint carries the key: {head}"
    );
    assert!(
        leak_rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "the redirect target received a request"
    );
    assert!(files_in(dir.path()).is_empty());
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
}
