//! Shared test kit: the real server binary driven by rmcp's real client over
//! stdio, the fake Gemini in-process, and Azurite (started by
//! scripts/test.sh, found through AZURITE_BLOB_ENDPOINT).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use nano_banana_mcp::testkit::fake_gemini::{FakeConfig, FakeGemini};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;

pub const TEST_KEY: &str = "AIzaTEST-KEY-do-not-log-0123456789";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nano-banana-mcp"))
}

pub async fn fake() -> FakeGemini {
    FakeGemini::start(
        FakeConfig {
            api_key: Some(TEST_KEY.to_string()),
            ..FakeConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake gemini starts")
}

/// Azurite's blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1.
/// Without it Azure tests are skipped, unless REQUIRE_AZURITE is set (CI).
pub fn azurite() -> Option<String> {
    match std::env::var("AZURITE_BLOB_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("REQUIRE_AZURITE").is_none(),
                "REQUIRE_AZURITE is set but AZURITE_BLOB_ENDPOINT is not"
            );
            eprintln!("skipped: no Azurite (run scripts/test.sh to start one)");
            None
        }
    }
}

/// The well-known Azurite development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn azurite_connection_string(endpoint: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
}

/// A running server under test, with its captured stderr.
pub struct Server {
    pub client: RunningService<RoleClient, ()>,
    pub stderr: tokio::task::JoinHandle<String>,
    pub pid: Option<u32>,
}

pub struct ServerOpts<'a> {
    pub fake: &'a FakeGemini,
    pub out_dir: Option<&'a Path>,
    pub azure: Option<(String, String)>,
    pub env: Vec<(String, String)>,
}

pub async fn start(opts: ServerOpts<'_>) -> Server {
    start_in(opts, None).await
}

/// `start` with the working directory the client would start it in (over
/// stdio, edit inputs default to files under it).
pub async fn start_in(opts: ServerOpts<'_>, cwd: Option<&Path>) -> Server {
    let mut cmd = tokio::process::Command::new(bin());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("GEMINI_API_KEY", TEST_KEY)
        .env("GEMINI_BASE_URL", opts.fake.base_url())
        .env("GEMINI_RETRY_BASE_MS", "50")
        .env("LOG_LEVEL", "info");
    if let Some(d) = opts.out_dir {
        cmd.env("NANO_BANANA_OUTPUT_DIR", d);
    }
    if let Some((cs, container)) = &opts.azure {
        cmd.env("AZURE_STORAGE_CONNECTION_STRING", cs)
            .env("AZURE_STORAGE_CONTAINER_NAME", container);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let pid = transport.id();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });
    let client = ().serve(transport).await.expect("initialize");
    Server {
        client,
        stderr,
        pid,
    }
}

impl Server {
    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let Value::Object(map) = args else {
            panic!("arguments must be an object")
        };
        tokio::time::timeout(
            Duration::from_secs(120),
            self.client
                .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)),
        )
        .await
        .expect("tool call timed out")
        .expect("tool call")
    }

    /// The server's resident set, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let pid = self.pid.expect("pid");
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("VmRSS")
            / 1024.0
    }

    /// After a fault: the memory reservation is released (the governor's
    /// in-flight count is 0) and RSS settles within 8 MiB of `baseline_mib`.
    pub async fn assert_settled(&self, baseline_mib: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.call("get_configuration_status", json!({})).await;
            let in_flight = structured(&st)["memory"]["inFlight"].as_u64();
            let rss = self.rss_mib();
            if in_flight == Some(0) && rss <= baseline_mib + 8.0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not settled: inFlight {in_flight:?}, RSS {rss:.1} MiB against a baseline of {baseline_mib:.1}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop the server and return everything it logged.
    pub async fn stop(self) -> String {
        let _ = self.client.cancel().await;
        tokio::time::timeout(Duration::from_secs(20), self.stderr)
            .await
            .expect("stderr closes")
            .expect("stderr task")
    }
}

pub fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn is_error(r: &CallToolResult) -> bool {
    r.is_error == Some(true)
}

pub fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Download a URL with a plain HTTP client (test images are small).
#[allow(clippy::disallowed_methods)]
pub async fn download(url: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = reqwest::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, ct, resp.bytes().await.expect("body").to_vec())
}

/// Files in a folder, hidden temp files included.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != RECORDS_DIR)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The image records in a local output folder (`store::records`), temp
/// files included.
pub fn records_in(dir: &Path) -> Vec<String> {
    files_in(&dir.join(RECORDS_DIR))
}

pub use nano_banana_mcp::store::records::RECORDS_DIR;

/// The name and bytes of the one file in `dir`, which must be a stored
/// image under its final name, not a temp file.
pub fn only_stored_file(dir: &Path) -> (String, Vec<u8>) {
    let files = files_in(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        !files[0].starts_with('.'),
        "a temp file was left: {files:?}"
    );
    let bytes = std::fs::read(dir.join(&files[0])).expect("read");
    (files[0].clone(), bytes)
}

/// Image blob names in an Azurite container (a signed List Blobs),
/// records left out.
pub async fn list_blobs(endpoint: &str, container: &str) -> Vec<String> {
    let mut all = list_all_blobs(endpoint, container).await;
    all.retain(|n| !n.starts_with(&format!("{RECORDS_DIR}/")));
    all
}

/// The image records in an Azurite container.
pub async fn list_records(endpoint: &str, container: &str) -> Vec<String> {
    let mut all = list_all_blobs(endpoint, container).await;
    all.retain(|n| n.starts_with(&format!("{RECORDS_DIR}/")));
    all
}

async fn list_all_blobs(endpoint: &str, container: &str) -> Vec<String> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStore as _;
    let cs = nano_banana_mcp::store::connstr::parse(&azurite_connection_string(endpoint))
        .expect("connection string");
    let store = cs.builder(container).build().expect("store");
    let list: Vec<_> = store.list(None).try_collect().await.unwrap_or_default();
    let mut names: Vec<String> = list.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000_000)
            .unwrap_or(0)
    )
}

pub fn prompt(directives: &str) -> Value {
    json!({ "prompt": format!("a test image {directives}") })
}

// Shared access signatures for the emulator account, signed here with the
// public development key.

pub fn iso8601(time: SystemTime) -> String {
    // Only used for SAS expiry in tests; a day-resolution date a year ahead
    // is plenty and avoids a calendar dependency.
    let secs = time.duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let year = 1970 + secs / 31_556_952 + 1;
    format!("{year}-01-01T00:00:00Z")
}

/// The `sig` value of a SAS query string (what must never appear in output).
pub fn sas_signature(sas: &str) -> String {
    sas.split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .expect("sig")
        .to_string()
}

/// Account SAS (version 2020-12-06+ string-to-sign) for the emulator account.
pub fn account_sas(permissions: &str, resource_types: &str) -> String {
    account_sas_until(permissions, resource_types, &iso8601(SystemTime::now()))
}

pub fn account_sas_until(permissions: &str, resource_types: &str, expiry: &str) -> String {
    let version = "2022-11-02";
    let to_sign = format!(
        "devstoreaccount1\n{permissions}\nb\n{resource_types}\n\n{expiry}\n\n\n{version}\n\n"
    );
    let sig = sign(&to_sign);
    format!(
        "sv={version}&ss=b&srt={resource_types}&sp={permissions}&se={}&sig={}",
        encode(expiry),
        encode(&sig)
    )
}

/// Service SAS scoped to one container (`sr=c`), which cannot create it.
pub fn container_sas(container: &str, permissions: &str) -> String {
    let version = "2022-11-02";
    let expiry = iso8601(SystemTime::now());
    let resource = format!("/blob/devstoreaccount1/{container}");
    let to_sign =
        format!("{permissions}\n\n{expiry}\n{resource}\n\n\n\n{version}\nc\n\n\n\n\n\n\n");
    let sig = sign(&to_sign);
    format!(
        "sv={version}&sr=c&sp={permissions}&se={}&sig={}",
        encode(&expiry),
        encode(&sig)
    )
}

/// Read-style service SAS for one blob (`sr=b`), in the form the server
/// signs: what a caller holding the account key could make.
pub fn blob_sas(
    container: &str,
    blob: &str,
    permissions: &str,
    start: &str,
    expiry: &str,
) -> String {
    let version = "2023-11-03";
    let resource = format!("/blob/devstoreaccount1/{container}/{blob}");
    let to_sign =
        format!("{permissions}\n{start}\n{expiry}\n{resource}\n\n\n\n{version}\nb\n\n\n\n\n\n\n");
    let sig = sign(&to_sign);
    format!(
        "sv={version}&sp={permissions}&st={}&se={}&sr=b&sig={}",
        encode(start),
        encode(expiry),
        encode(&sig)
    )
}

pub fn sign(to_sign: &str) -> String {
    let key = BASE64.decode(AZURITE_KEY).expect("key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac");
    mac.update(to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// No secret of the test set-up in a log or message: the Gemini key, the
/// account key, any SAS signature or bearer token, and `extra` (the secrets
/// a test adds).
pub fn assert_no_secret(text: &str, extra: &[&str]) {
    for s in [TEST_KEY, AZURITE_KEY, "sig="].iter().chain(extra) {
        assert!(!text.contains(s), "a secret ({s:.6}…) leaked into: {text}");
    }
}

/// Wait until an upload has put its first blocks into `dir`, so what a test
/// does next happens mid-upload.
pub async fn wait_for_upload(dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while files_in(dir).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no upload started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a cancelled slow call (`fake:size=6MiB fake:drip=20`): nothing in
/// `dir`, not even a temp file, and the Gemini response was abandoned — had
/// the server kept reading, the fake would have sent it all within ~2.6 s.
pub async fn assert_abandoned(dir: &Path, fake: &FakeGemini) {
    assert!(files_in(dir).is_empty(), "left behind: {:?}", files_in(dir));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !fake.state.sent()[0].completed,
        "Gemini was read to the end"
    );
}

/// One MCP 2026-07-28 request over HTTP with a bearer token (its version
/// and capabilities in `_meta`, the routing headers set); the JSON-RPC
/// reply, from a JSON body or the first SSE event. `tasks` declares the
/// Tasks extension.
#[allow(dead_code)] // not every test binary sends these
#[allow(clippy::disallowed_methods)] // a small JSON-RPC reply, read whole
pub async fn rpc_2026(
    base: &str,
    token: &str,
    method: &str,
    name: &str,
    mut params: serde_json::Value,
    tasks: bool,
) -> serde_json::Value {
    let caps = if tasks {
        serde_json::json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    } else {
        serde_json::json!({})
    };
    params["_meta"] = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
    });
    let r = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .timeout(Duration::from_secs(60))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .header("mcp-name", name)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .expect("post");
    let text = r.text().await.expect("body");
    let json_text = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&text);
    serde_json::from_str(json_text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
