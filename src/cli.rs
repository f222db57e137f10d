//! One-shot commands for a terminal: `generate`, `edit`, `demo`, `doctor`.
//! They run the same pipeline as the MCP tools (`App` + `Pipeline::run`),
//! print the result's URL or path on stdout, and report progress on stderr:
//! one updating line on a terminal, plain lines otherwise.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::{App, Transport};
use crate::config::{Config, DemoCmd, DoctorCmd, EditCmd, GenerateCmd, OutputArgs};
use crate::pipeline::{Job, Progress, Request, Stage, StoredImage};

/// Progress on stderr.
struct CliProgress {
    tty: bool,
    started: Instant,
    receiving_since: Mutex<Option<Instant>>,
}

impl CliProgress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            receiving_since: Mutex::new(None),
        }
    }

    fn show(&self, msg: &str, last: bool) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{msg}");
            if last {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{msg}");
        }
        let _ = err.flush();
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl Progress for CliProgress {
    fn stage(&self, stage: Stage) {
        let t = self.started.elapsed().as_secs_f64();
        let msg = match stage {
            Stage::Requesting => format!("[{t:5.1}s] asking Gemini…"),
            Stage::Waiting => {
                if let Ok(mut r) = self.receiving_since.lock() {
                    *r = Some(Instant::now());
                }
                format!("[{t:5.1}s] waiting for the model…")
            }
            Stage::Receiving { bytes } => {
                let since = self
                    .receiving_since
                    .lock()
                    .ok()
                    .and_then(|r| *r)
                    .map(|s| s.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                let rate = if since > 0.0 { mib(bytes) / since } else { 0.0 };
                format!(
                    "[{t:5.1}s] receiving and uploading: {:.1} MiB ({rate:.1} MiB/s)",
                    mib(bytes)
                )
            }
            Stage::Committing => format!("[{t:5.1}s] committing…"),
            Stage::Committed { bytes } => format!("[{t:5.1}s] committed {:.2} MiB", mib(bytes)),
        };
        self.show(&msg, matches!(stage, Stage::Committed { .. }));
    }

    fn retry(&self, attempt: u32, delay: Duration, reason: &str) {
        self.show(
            &format!(
                "attempt {attempt} failed ({reason}); retrying in {:.1} s",
                delay.as_secs_f64()
            ),
            true,
        );
    }
}

/// A config that stores into `out` instead of Azure, when asked.
fn with_out(cfg: &Config, out: Option<&Path>) -> Config {
    let mut c = cfg.clone();
    if let Some(dir) = out {
        c.azure_connection_string = None;
        c.azure_account = None;
        c.output_dir = dir.to_path_buf();
    }
    c
}

async fn build(cfg: &Config) -> Result<Arc<App>, String> {
    let app = App::build(cfg.app_settings(Transport::Cli, false, false))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(app))
}

/// Run a job with Ctrl-C cancelling it (nothing is stored then).
async fn run(app: &App, job: Job) -> Result<StoredImage, String> {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    let progress = CliProgress::new();
    let r = app.pipeline.run(job, &progress, &cancel).await;
    ctrl_c.abort();
    r.map_err(|e| e.to_string())
}

fn print_location(img: &StoredImage) {
    let loc = img
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| img.url.clone());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{loc}");
}

/// The prompt and options, checked as the MCP tools check them.
fn request(app: &App, prompt: String, o: &OutputArgs) -> Result<Request, String> {
    let asked = crate::gemini::models::AskedOptions {
        aspect_ratio: o.aspect_ratio.as_deref(),
        image_size: o.image_size.as_deref(),
        thinking_level: o.thinking_level.as_deref(),
        grounding: o.grounding.as_deref(),
        person_generation: o.person_generation.as_deref(),
        count: None,
    };
    app.pipeline
        .request(prompt, None, asked)
        .map_err(|e| e.to_string())
}

pub async fn generate(cmd: GenerateCmd) -> Result<(), String> {
    let cfg = with_out(&cmd.config, cmd.output.out.as_deref());
    let app = build(&cfg).await?;
    let req = request(&app, cmd.prompt, &cmd.output)?;
    let img = run(&app, Job::generate(req)).await?;
    print_location(&img);
    Ok(())
}

async fn edit_with(app: &App, cmd: EditCmd) -> Result<StoredImage, String> {
    let req = request(app, cmd.prompt, &cmd.output)?;
    let mut specs = vec![cmd.image];
    specs.extend(cmd.refs);
    let images = app
        .fetcher
        .prepare_all(&specs, req.model())
        .await
        .map_err(|e| e.to_string())?;
    run(app, Job::edit(req, None, images)).await
}

pub async fn edit(cmd: EditCmd) -> Result<(), String> {
    let cfg = with_out(&cmd.config, cmd.output.out.as_deref());
    let app = build(&cfg).await?;
    let img = edit_with(&app, cmd).await?;
    print_location(&img);
    Ok(())
}

fn sha256_file(p: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    use std::io::Read as _;
    let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The built-in fake Gemini in a child process, so the demo's memory
/// figures are the server's alone.
///
/// The fake is its own program, installed next to this one by `cargo
/// install` (the container image ships the server alone).
fn fake_gemini_exe() -> Result<std::path::PathBuf, String> {
    const NAME: &str = "nano-banana-fake-gemini";
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let sibling = exe.with_file_name(NAME);
    if sibling.is_file() {
        return Ok(sibling);
    }
    Err(format!(
        "demo needs {NAME} next to {} (cargo install --path . installs both; the container image ships the server alone)",
        exe.display()
    ))
}

struct FakeChild {
    child: tokio::process::Child,
    base: String,
}

impl FakeChild {
    async fn start() -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let exe = fake_gemini_exe()?;
        let child = tokio::process::Command::new(exe)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .env("LOG_LEVEL", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the fake Gemini: {e}"))?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self {
                    child,
                    base: format!("http://127.0.0.1:{port}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the fake Gemini did not start".into())
    }

    async fn log(&self, what: &str) -> Result<serde_json::Value, String> {
        let resp = reqwest::get(format!("{}/_fake/{what}", self.base))
            .await
            .map_err(|e| e.to_string())?;
        let body = crate::capped::read_body(resp, 1 << 20).await;
        if body.truncated {
            return Err("the fake's log is too large or broke off".into());
        }
        serde_json::from_slice(&body.bytes).map_err(|e| e.to_string())
    }
}

/// Generate, then edit, against the built-in fake Gemini and a local folder.
pub async fn demo(cmd: DemoCmd) -> Result<(), String> {
    let mut fake = FakeChild::start().await?;
    let mut c = with_out(&cmd.config, Some(&cmd.out));
    c.gemini_base_url = fake.base.clone();
    c.gemini_api_key = Some(crate::secret::Secret::new("demo-key-not-real"));
    c.gemini_model = crate::gemini::models::DEFAULT_MODEL.into();
    let app = build(&c).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "nano-banana-mcp demo — uses a LOCAL FAKE Gemini (no key, no network); it draws simple pictures from the prompt's words and applies the edit's colour to them.\n"
        );
    }
    let size = cmd.size;
    let req = request(
        &app,
        format!("a banana riding a rocket at night fake:picture fake:size={size} fake:text"),
        &OutputArgs::default(),
    )?;
    let gen_img = run(&app, Job::generate(req)).await?;
    let gen_path = gen_img
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let edit_img = edit_with(
        &app,
        EditCmd {
            image: gen_path.clone(),
            prompt: format!("make it pink fake:picture fake:size={}", size / 2),
            refs: vec![],
            output: OutputArgs::default(),
            config: c.clone(),
        },
    )
    .await?;
    let sent = fake.log("sent").await?;
    let requests = fake.log("requests").await?;
    let _ = fake.child.kill().await;
    let sent_shas: Vec<&str> = sent
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["sha256"].as_str()).collect())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for (what, img) in [("generated", &gen_img), ("edited", &edit_img)] {
        let path = img
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let on_disk = sha256_file(Path::new(&path))?;
        let matches = sent_shas.contains(&on_disk.as_str());
        let _ = writeln!(
            out,
            "{what:9} {path}\n          {} bytes, {}x{}, sha256 {on_disk} ({})",
            img.bytes,
            img.width.unwrap_or(0),
            img.height.unwrap_or(0),
            if matches {
                "matches what Gemini sent"
            } else {
                "DOES NOT match what Gemini sent"
            }
        );
        if !matches {
            return Err("a stored image differs from what the fake sent".into());
        }
    }
    let input_ok = requests
        .as_array()
        .and_then(|a| a.last())
        .and_then(|r| r["inputs"][0]["sha256"].as_str())
        == Some(gen_img.sha256.as_str());
    let peak_rss = crate::memory::cgroup::proc_self_status_rss().map_or(0, |r| r.1);
    let _ = writeln!(
        out,
        "\nedit input sent to Gemini: {}\nmemory: peak RSS {:.1} MiB (idle {:.1} MiB) for {:.1} MiB images; limit {:.0} MiB ({}), budget {:.0} MiB: {} images streaming at once, {} calls waiting for Gemini",
        if input_ok {
            "byte-identical to the generated image"
        } else {
            "MISMATCH"
        },
        mib(peak_rss),
        mib(app.plan.baseline),
        mib(size),
        mib(app.limit.bytes),
        app.limit.source,
        mib(app.plan.budget),
        app.plan.max_concurrent,
        app.plan.max_waiting,
    );
    let _ = writeln!(
        out,
        "\nFor real images: export GEMINI_API_KEY=<your key from Google AI Studio> and run: nano-banana-mcp generate \"your prompt\""
    );
    if !input_ok {
        return Err("the edit input sent to Gemini differs from the generated image".into());
    }
    Ok(())
}

/// One line of the doctor's checklist.
struct Check {
    name: &'static str,
    ok: Option<bool>,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: Some(true),
            detail: detail.into(),
            fix: None,
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            ok: Some(false),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: None,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// Check the configuration like a support engineer would. Returns whether
/// everything passed.
pub async fn doctor(cmd: DoctorCmd) -> Result<bool, String> {
    let cfg = &cmd.config;
    let mut checks = Vec::new();
    let key = crate::app::keys::resolve(cfg.gemini_api_key.as_ref());
    checks.push(match &key {
        Some(_) => Check::pass("Gemini API key", "present (not shown)"),
        None => Check::fail(
            "Gemini API key",
            "not set",
            "export GEMINI_API_KEY=<key from https://aistudio.google.com/apikey>",
        ),
    });
    let model = &cfg.gemini_model;
    checks.push(match crate::gemini::models::retired(model) {
        Some(new) => Check::fail(
            "Gemini model",
            format!("{model} is retired and answers 404"),
            format!("export GEMINI_MODEL={new}"),
        ),
        None => match crate::gemini::models::info(model).family {
            crate::gemini::models::Family::Unknown => Check::pass(
                "Gemini model",
                format!("{model} (not a model this version knows; settings are not checked)"),
            ),
            _ => match crate::gemini::models::deprecated(model) {
                Some(new) => Check::pass(
                    "Gemini model",
                    format!("{model} (announced for shutdown: move to {new})"),
                ),
                None => Check::pass("Gemini model", model.clone()),
            },
        },
    });
    checks.push(if cmd.offline {
        Check::skip("Gemini reachable", "skipped (--offline)")
    } else if let Some(key) = &key {
        gemini_reachable(cfg, key).await
    } else {
        Check::skip("Gemini reachable", "skipped: no key")
    });
    storage_checks(cfg, &mut checks).await;
    let per_request = cfg.pipeline_config().per_request_bytes();
    // The plan for a shared HTTP endpoint, where memory matters most.
    let edge = crate::memory::Edge::Http { sessions: true };
    let (limit, plan) = crate::app::plan_memory(
        &cfg.memory_settings(),
        per_request,
        edge,
        &cfg.gemini_base_url,
    );
    let detail = format!(
        "limit {:.0} MiB from {}; budget {:.0} MiB over HTTP (images {:.0}, waiting calls {:.0}, request bodies {:.0}, connections {:.0}, sessions {:.0}, Gemini HTTP/2 windows {:.1}); {} images streaming at once ({:.1} MiB each), {} calls waiting ({} KiB each)",
        mib(limit.bytes),
        limit.source,
        mib(plan.budget),
        mib(plan.images),
        mib(plan.calls),
        mib(plan.bodies),
        mib(plan.connections),
        mib(plan.sessions),
        mib(plan.gemini_windows),
        plan.max_concurrent,
        mib(per_request),
        plan.max_waiting,
        plan.per_call >> 10
    );
    checks.push(if !plan.is_viable() {
        Check::fail(
            "Memory",
            detail,
            "raise the container's memory limit (or --memory-limit), or lower --block-size / --blocks-in-flight",
        )
    } else {
        Check::pass("Memory", detail)
    });

    let mut out = std::io::stdout().lock();
    let mut all_ok = true;
    for c in &checks {
        let mark = match c.ok {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "-",
        };
        let _ = writeln!(out, "{mark} {:20} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "  {:20} fix: {fix}", "");
        }
        all_ok &= c.ok != Some(false);
    }
    let _ = writeln!(
        out,
        "\n{}",
        if all_ok {
            "All checks passed."
        } else {
            "Some checks failed; see the fixes above."
        }
    );
    Ok(all_ok)
}

async fn gemini_reachable(cfg: &Config, key: &crate::secret::Secret) -> Check {
    let name = "Gemini reachable";
    let url = format!(
        "{}/v1beta/models/{}",
        cfg.gemini_base_url.trim_end_matches('/'),
        cfg.gemini_model
    );
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(h) => h,
        Err(e) => return Check::fail(name, e.to_string(), "check the TLS setup"),
    };
    match http
        .get(&url)
        .header("x-goog-api-key", crate::gemini::request::key_header(key))
        .send()
        .await
    {
        Err(e) => Check::fail(
            name,
            format!(
                "cannot reach {}: {}",
                cfg.gemini_base_url,
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string())
            ),
            "check the network / proxy, or GEMINI_BASE_URL",
        ),
        Ok(r) if r.status().is_success() => Check::pass(
            name,
            format!(
                "{} answers; the key and model are accepted",
                cfg.gemini_base_url
            ),
        ),
        Ok(r) => {
            let code = r.status().as_u16();
            let body = crate::capped::read_body(r, 64 << 10).await;
            let err = crate::gemini::GeminiError::from_status(code, &body.bytes, &cfg.gemini_model);
            let fix = match &err {
                crate::gemini::GeminiError::BadKey { .. } => "set GEMINI_API_KEY to a valid key",
                crate::gemini::GeminiError::ModelNotFound { .. } => {
                    "set GEMINI_MODEL=gemini-3.1-flash-image (or another available image model)"
                }
                _ => "see the message; retry later if the service is overloaded",
            };
            Check::fail(name, err.to_string(), fix)
        }
    }
}

async fn storage_checks(cfg: &Config, checks: &mut Vec<Check>) {
    use crate::store::{azure_setup, connstr};
    if let Some(cs) = &cfg.azure_connection_string {
        let parsed = match connstr::parse(cs.expose()) {
            Ok(p) => {
                checks.push(Check::pass(
                    "Azure connection",
                    format!(
                        "parses: account {}, endpoint {}",
                        p.account, p.blob_endpoint
                    ),
                ));
                p
            }
            Err(e) => {
                checks.push(Check::fail(
                    "Azure connection",
                    e.to_string(),
                    "copy the connection string again from the portal (Access keys), or use UseDevelopmentStorage=true for Azurite",
                ));
                return;
            }
        };
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                checks.push(Check::fail("Azure container", e.to_string(), "check TLS"));
                return;
            }
        };
        let container = &cfg.azure_container;
        let exists = azure_setup::container_exists(&http, &parsed, container).await;
        let status = match exists {
            Ok(true) => Check::pass("Azure container", format!("{container} exists")),
            Ok(false) if cfg.azure_create_container => {
                match azure_setup::ensure_container(&http, &parsed, container).await {
                    Ok(_) => {
                        Check::pass("Azure container", format!("{container} created (private)"))
                    }
                    Err(e) => Check::fail(
                        "Azure container",
                        e.to_string(),
                        "create the container, or use credentials allowed to create it",
                    ),
                }
            }
            Ok(false) => Check::fail(
                "Azure container",
                format!("{container} does not exist"),
                "create it, or set AZURE_CREATE_CONTAINER=true",
            ),
            Err(e) => Check::fail(
                "Azure container",
                e.to_string(),
                format!(
                    "is {} reachable (Azurite running, firewall, private endpoint)?",
                    parsed.blob_endpoint
                ),
            ),
        };
        let reachable = status.ok == Some(true);
        checks.push(status);
        if !reachable {
            checks.push(Check::skip("Azure test blob", "skipped: no container"));
            return;
        }
        let store = match crate::store::azure::AzureStore::new(parsed, &doctor_azure_options(cfg)) {
            Ok(s) => s,
            Err(e) => {
                checks.push(Check::fail(
                    "Azure test blob",
                    e.to_string(),
                    "check the connection string",
                ));
                return;
            }
        };
        checks.push(test_blob(&store).await);
    } else if let Some(account) = &cfg.azure_account {
        match crate::store::azure::AzureStore::with_identity(account, &doctor_azure_options(cfg)) {
            Ok(store) => checks.push(test_blob(&store).await),
            Err(e) => checks.push(Check::fail(
                "Azure identity",
                e.to_string(),
                "check AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE",
            )),
        }
    } else {
        let dir = &cfg.output_dir;
        let probe = dir.join(format!(".doctor-{:08x}", rand::random::<u32>()));
        let r = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&probe, b"probe"))
            .and_then(|_| std::fs::remove_file(&probe));
        checks.push(match r {
            Ok(()) => Check::pass(
                "Local folder",
                format!(
                    "{} is writable (set AZURE_STORAGE_CONNECTION_STRING to use Azure)",
                    dir.display()
                ),
            ),
            Err(e) => Check::fail(
                "Local folder",
                format!("{}: {e}", dir.display()),
                "set NANO_BANANA_OUTPUT_DIR to a writable folder",
            ),
        });
    }
}

/// The doctor's probe store: one block in flight, one-hour URLs.
fn doctor_azure_options(cfg: &Config) -> crate::store::azure::AzureOptions {
    crate::store::azure::AzureOptions {
        sas_ttl: Duration::from_secs(3600),
        max_in_flight: 1,
        ..cfg.store_config().azure_options()
    }
}

async fn test_blob(store: &crate::store::azure::AzureStore) -> Check {
    use object_store::ObjectStoreExt as _;
    let name = format!(".doctor-probe-{:08x}", rand::random::<u32>());
    let path = object_store::path::Path::from(name.as_str());
    let os = store.object_store();
    let r = async {
        os.put(&path, bytes::Bytes::from_static(b"probe").into())
            .await?;
        os.delete(&path).await
    }
    .await;
    match r {
        Ok(()) => Check::pass("Azure test blob", "written and deleted"),
        Err(e) => Check::fail(
            "Azure test blob",
            crate::store::azure::describe_error(e),
            "the credentials need write and delete rights on the container",
        ),
    }
}
