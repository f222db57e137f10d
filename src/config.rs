//! Command line and environment. Every option has an `env` name; the old
//! server's variable names are kept. Bad configuration exits non-zero with
//! one clear line before any work starts. Secrets are `Secret`s from the
//! moment they are parsed.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::memory::cgroup::parse_size;
use crate::secret::Secret;

#[derive(Debug, Parser)]
#[command(
    name = "nano-banana-mcp",
    version,
    about = "Memory-aware MCP image server: Gemini image models into Azure Blob Storage or a local folder, streamed, never buffered whole.",
    after_help = "Examples:\n  nano-banana-mcp                      # MCP over stdio (what MCP clients run)\n  nano-banana-mcp serve --http 0.0.0.0:8080\n  GEMINI_API_KEY=... nano-banana-mcp generate \"a banana in space\""
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    /// `serve`'s options, for the default command: `nano-banana-mcp --http
    /// ADDR` is `nano-banana-mcp serve --http ADDR`.
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdio (the default) or streamable HTTP.
    #[command(
        after_help = "Examples:\n  nano-banana-mcp serve                       # stdio, for MCP clients\n  NANO_BANANA_AUTH_TOKEN=... nano-banana-mcp serve --http 0.0.0.0:8080 --allowed-hosts nano-banana.tools.svc"
    )]
    Serve(ServeCmd),
    /// Generate one image and print its URL or path.
    #[command(
        after_help = "Examples:\n  nano-banana-mcp generate \"a banana in space\"\n  nano-banana-mcp generate \"a city at dusk\" --aspect-ratio 16:9 --out ./images"
    )]
    Generate(GenerateCmd),
    /// Edit an image (path, https URL or data: URI) and print the result's URL or path.
    #[command(
        after_help = "Examples:\n  nano-banana-mcp edit photo.png \"make the sky pink\"\n  nano-banana-mcp edit photo.png \"in this style\" --ref style.jpg"
    )]
    Edit(EditCmd),
    /// See it work now: generate and edit with a built-in fake Gemini, no key, no account.
    #[command(after_help = "Example:\n  nano-banana-mcp demo --out /tmp/demo")]
    Demo(DemoCmd),
    /// Check the configuration and print a checklist with a fix for each problem.
    #[command(
        after_help = "Examples:\n  nano-banana-mcp doctor\n  nano-banana-mcp doctor --offline"
    )]
    Doctor(DoctorCmd),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  nano-banana-mcp completions bash > ~/.local/share/bash-completion/completions/nano-banana-mcp"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct GenerateCmd {
    /// What to draw.
    pub prompt: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args)]
pub struct ServeCmd {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub config: Config,
}

/// Output options of `generate` and `edit`.
#[derive(Debug, Args, Default)]
pub struct OutputArgs {
    /// 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9 (and 1:4, 4:1,
    /// 1:8, 8:1 on gemini-3.1-flash-image).
    #[arg(long)]
    pub aspect_ratio: Option<String>,
    /// 512, 1K, 2K or 4K, as the model makes them (README, "Models").
    #[arg(long)]
    pub image_size: Option<String>,
    /// minimal or high (Gemini 3.1 image models).
    #[arg(long)]
    pub thinking_level: Option<String>,
    /// Ground on Google Search: web, image or both.
    #[arg(long)]
    pub grounding: Option<String>,
    /// allow_all, allow_adult or allow_none.
    #[arg(long)]
    pub person_generation: Option<String>,
    /// Save into this local folder (even when Azure is configured).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EditCmd {
    /// The image to edit: a path, an https URL, a URL this server returned, or a data: URI.
    pub image: String,
    /// What to change.
    pub prompt: String,
    /// Reference images (repeatable).
    #[arg(long = "ref")]
    pub refs: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args)]
pub struct DemoCmd {
    /// Where the demo's images go.
    #[arg(long, default_value = "generated_imgs/demo")]
    pub out: PathBuf,
    /// Image size the fake returns.
    #[arg(long, default_value = "8MiB", value_parser = size_arg)]
    pub size: u64,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args)]
pub struct DoctorCmd {
    /// Skip the checks that call Gemini.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Serve MCP over streamable HTTP at ADDR (e.g. 0.0.0.0:8080) instead of stdio.
    #[arg(long, env = "NANO_BANANA_HTTP_ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Bearer token clients must send (Authorization: Bearer …).
    #[arg(long, env = "NANO_BANANA_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,
    /// File holding the bearer token (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "NANO_BANANA_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve without auth; only allowed on a loopback address.
    #[arg(long, env = "NANO_BANANA_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub no_auth: bool,
    /// Host header values accepted on /mcp (DNS-rebinding protection),
    /// comma-separated; "*" accepts any. Default: loopback names.
    #[arg(long, env = "NANO_BANANA_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origin header values accepted on /mcp (browsers), comma-separated.
    #[arg(long, env = "NANO_BANANA_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// No MCP sessions (plain round-robin load balancing); continue_editing
    /// then explains that it needs a session.
    #[arg(long, env = "NANO_BANANA_STATELESS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub stateless: bool,
    /// Stateless only: serve generate_image and edit_image calls without
    /// rmcp's per-request service (~33 KiB less per waiting call).
    /// `false` sends every request through rmcp, for comparison.
    #[arg(long, env = "NANO_BANANA_DIRECT_CALLS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub direct_calls: bool,
    /// Replaced by --admin-token; set, the server refuses to start and
    /// says so.
    #[arg(long, env = "NANO_BANANA_ALLOW_CONFIGURE_TOKEN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub allow_configure_token: bool,
    /// A second bearer token, for operators: only a request carrying it
    /// may call configure_gemini_token over HTTP (never saved to disk
    /// there). Unset: that tool is refused over HTTP.
    #[arg(long, env = "NANO_BANANA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// File holding the admin token.
    #[arg(long, env = "NANO_BANANA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Accept OAuth 2.1 JWT access tokens from this issuer (e.g.
    /// https://login.microsoftonline.com/TENANT/v2.0); its keys are found
    /// through /.well-known/openid-configuration (or RFC 8414's
    /// oauth-authorization-server). https, or http to a loopback host.
    /// Needs --resource-url. With --auth-token too, both are accepted.
    #[arg(long, env = "NANO_BANANA_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// Accepted `aud` values of access tokens (comma-separated; any one
    /// suffices). Default: the --resource-url.
    #[arg(long, env = "NANO_BANANA_OAUTH_AUDIENCE", value_delimiter = ',')]
    pub oauth_audience: Vec<String>,
    /// The canonical URL of this server's MCP endpoint as clients reach it
    /// (e.g. https://images.example.com/mcp): published in
    /// /.well-known/oauth-protected-resource. Required with --oauth-issuer.
    #[arg(long, env = "NANO_BANANA_RESOURCE_URL")]
    pub resource_url: Option<String>,
    /// Scope names, as generate=NAME,edit=NAME,read=NAME (any subset).
    /// Default: images:generate, images:edit, images:read. Scopes are read
    /// from the token's `scope`, `scp` (Entra) or `roles` (Entra app roles).
    #[arg(long, env = "NANO_BANANA_OAUTH_SCOPES", value_delimiter = ',')]
    pub oauth_scopes: Vec<String>,
    /// Seconds in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "NANO_BANANA_SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
    /// Largest HTTP request body on /mcp.
    #[arg(long, env = "NANO_BANANA_MAX_BODY_BYTES", default_value = "8MiB", value_parser = size_arg)]
    pub max_body_bytes: u64,
    /// Idle MCP sessions are closed after this many seconds.
    #[arg(long, env = "NANO_BANANA_SESSION_IDLE_SECS", default_value_t = 300)]
    pub session_idle_secs: u64,
    /// Also serve /healthz, /readyz and /metrics (only those) on this
    /// address, with its own connections, so probes are answered while
    /// the main listener is saturated.
    #[arg(long, env = "NANO_BANANA_OPS_ADDR")]
    pub ops_addr: Option<std::net::SocketAddr>,
    /// Open connections on the main listener; more are refused with 503.
    /// Default: the plan's connection share (a tenth of the budget) / 32 KiB.
    #[arg(long, env = "NANO_BANANA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Live MCP sessions over HTTP; `initialize` beyond it gets 503.
    /// Default: the plan's session share (a tenth of the budget) / 72 KiB.
    #[arg(long, env = "NANO_BANANA_MAX_HTTP_SESSIONS")]
    pub max_http_sessions: Option<usize>,
    /// Seconds to receive a request head; idle keep-alive connections
    /// close after the same time.
    #[arg(long, env = "NANO_BANANA_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds to receive a request body.
    #[arg(long, env = "NANO_BANANA_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
}

impl ServeArgs {
    /// The HTTP settings, or one line saying what is wrong.
    /// The shortest bearer token HTTP mode starts with: anything shorter
    /// is guessable by a client that may try as often as it likes.
    pub const MIN_TOKEN_CHARS: usize = 16;

    pub fn http_config(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<crate::transport::http::HttpConfig, String> {
        if self.allow_configure_token {
            return Err("--allow-configure-token (NANO_BANANA_ALLOW_CONFIGURE_TOKEN) is gone: any client could replace the Gemini key for everyone. Set --admin-token (NANO_BANANA_ADMIN_TOKEN) and call configure_gemini_token with that token as the bearer token".into());
        }
        let token = read_token(&self.auth_token, &self.auth_token_file, "--auth-token")?;
        let admin_token = read_token(&self.admin_token, &self.admin_token_file, "--admin-token")?;
        if let (Some(a), Some(t)) = (&admin_token, &token)
            && a == t
        {
            return Err("--admin-token must differ from the bearer token clients use".into());
        }
        let oauth = self.oauth_settings()?;
        if oauth.is_some() && self.no_auth {
            return Err("--no-auth and --oauth-issuer contradict each other: drop one".into());
        }
        if token.is_none() && oauth.is_none() && !self.no_auth {
            return Err("HTTP mode needs a bearer token: set NANO_BANANA_AUTH_TOKEN or NANO_BANANA_AUTH_TOKEN_FILE, or OAuth with --oauth-issuer and --resource-url (or --no-auth on a loopback address)".into());
        }
        if token.is_none() && oauth.is_none() && !addr.ip().is_loopback() {
            return Err(format!(
                "--no-auth is only allowed on a loopback address, not {addr}"
            ));
        }
        let allowed_hosts = if self.allowed_hosts.is_empty() {
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
        } else {
            self.allowed_hosts.clone()
        };
        // Origins are always checked when a browser sends one: by default
        // the loopback origins and those of the allowed hosts.
        let allowed_origins = if self.allowed_origins.is_empty() {
            let mut v: Vec<String> = Vec::new();
            for h in &allowed_hosts {
                if h == "*" {
                    continue;
                }
                let host = if h.contains(':') && !h.starts_with('[') && h.matches(':').count() > 1 {
                    format!("[{h}]")
                } else {
                    h.clone()
                };
                for scheme in ["http", "https"] {
                    if host.contains("]:") || (!host.starts_with('[') && host.contains(':')) {
                        v.push(format!("{scheme}://{host}"));
                    } else {
                        v.push(format!("{scheme}://{host}:*"));
                    }
                }
            }
            v
        } else {
            self.allowed_origins.clone()
        };
        Ok(crate::transport::http::HttpConfig {
            addr,
            token,
            admin_token,
            oauth,
            allowed_hosts,
            allowed_origins,
            stateless: self.stateless,
            direct_calls: self.stateless && self.direct_calls,
            max_body_bytes: self.max_body_bytes as usize,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            session_idle: Duration::from_secs(self.session_idle_secs.max(1)),
            ops_addr: self.ops_addr,
            max_connections: self.max_connections,
            max_sessions: self.max_http_sessions,
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
        })
    }
}

impl ServeArgs {
    /// The OAuth resource server's settings, when --oauth-issuer is set.
    fn oauth_settings(&self) -> Result<Option<crate::auth::OAuthSettings>, String> {
        let Some(issuer) = self
            .oauth_issuer
            .as_deref()
            .filter(|i| !i.trim().is_empty())
        else {
            for (set, flag) in [
                (self.resource_url.is_some(), "--resource-url"),
                (!self.oauth_audience.is_empty(), "--oauth-audience"),
                (!self.oauth_scopes.is_empty(), "--oauth-scopes"),
            ] {
                if set {
                    return Err(format!(
                        "{flag} applies only to OAuth: set --oauth-issuer (NANO_BANANA_OAUTH_ISSUER) too, or drop it"
                    ));
                }
            }
            return Ok(None);
        };
        let Some(resource) = self
            .resource_url
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        else {
            return Err("--oauth-issuer needs --resource-url (NANO_BANANA_RESOURCE_URL): the URL clients use for this server's /mcp, e.g. https://images.example.com/mcp".into());
        };
        crate::auth::OAuthSettings::new(issuer, resource, &self.oauth_audience, &self.oauth_scopes)
            .map(Some)
    }
}

/// A bearer token from its value or its file, trimmed as a presented one
/// is (a value pasted with a newline would otherwise never match), and at
/// least `ServeArgs::MIN_TOKEN_CHARS` long: anything shorter is guessable
/// by a client that may try as often as it likes. Never echoed.
fn read_token(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    flag: &str,
) -> Result<Option<Secret>, String> {
    let token = match (value, file) {
        (Some(t), _) if !t.expose().trim().is_empty() => Secret::new(t.expose().trim()),
        (_, Some(f)) => {
            let t = std::fs::read_to_string(f)
                .map_err(|e| format!("{flag}-file {}: {e}", f.display()))?;
            let t = t.trim();
            if t.is_empty() {
                return Err(format!("{flag}-file {} is empty", f.display()));
            }
            Secret::new(t)
        }
        _ => return Ok(None),
    };
    let chars = token.expose().chars().count();
    if chars < ServeArgs::MIN_TOKEN_CHARS {
        return Err(format!(
            "the {flag} value is {chars} characters; use at least {} (for example `openssl rand -hex 32`)",
            ServeArgs::MIN_TOKEN_CHARS
        ));
    }
    Ok(Some(token))
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

#[derive(Debug, Args, Clone)]
pub struct Config {
    // --- Gemini ---
    /// Gemini API key (Google AI Studio).
    #[arg(long, env = "GEMINI_API_KEY", hide_env_values = true)]
    pub gemini_api_key: Option<Secret>,
    /// Gemini image model id.
    #[arg(long, env = "GEMINI_MODEL", default_value = crate::gemini::models::DEFAULT_MODEL)]
    pub gemini_model: String,
    /// Base URL of the Gemini API (a gateway, or a local fake for tests).
    #[arg(
        long,
        env = "GEMINI_BASE_URL",
        default_value = "https://generativelanguage.googleapis.com"
    )]
    pub gemini_base_url: String,
    /// Use streamGenerateContent (SSE); false uses generateContent.
    #[arg(long, env = "GEMINI_STREAMING", default_value_t = true, action = clap::ArgAction::Set)]
    pub gemini_streaming: bool,
    /// Attempts per call for retryable Gemini errors (429, 5xx).
    #[arg(long, env = "GEMINI_MAX_ATTEMPTS", default_value_t = 5)]
    pub gemini_max_attempts: u32,
    /// Longest delay between retries, and the longest server-requested
    /// delay still worth waiting for (seconds).
    #[arg(long, env = "GEMINI_RETRY_CAP_SECS", default_value_t = 60)]
    pub gemini_retry_cap_secs: u64,
    /// First retry delay in milliseconds (doubles each time, with jitter).
    #[arg(long, env = "GEMINI_RETRY_BASE_MS", default_value_t = 1000)]
    pub gemini_retry_base_ms: u64,
    /// Longest silence from Gemini mid-response (seconds).
    #[arg(long, env = "GEMINI_READ_TIMEOUT_SECS", default_value_t = 60)]
    pub gemini_read_timeout_secs: u64,
    /// Longest wait for Gemini's response headers per attempt (seconds).
    #[arg(long, env = "GEMINI_TIMEOUT_SECS", default_value_t = 180)]
    pub gemini_timeout_secs: u64,
    /// Models a call may name besides GEMINI_MODEL (comma-separated; `*`
    /// for any). Default: any over stdio, none over HTTP.
    #[arg(long, env = "NANO_BANANA_ALLOWED_MODELS", value_delimiter = ',')]
    pub allowed_models: Option<Vec<String>>,
    /// JSON file of prices that replace or add to the built-in list
    /// prices (README, "Cost").
    #[arg(long, env = "NANO_BANANA_PRICES")]
    pub prices: Option<PathBuf>,
    /// Estimated US dollars this server may spend per UTC day; calls past
    /// it are refused until 00:00 UTC. Default: no cap.
    #[arg(long, env = "NANO_BANANA_DAILY_SPEND_CAP_USD")]
    pub daily_spend_cap_usd: Option<f64>,

    // --- Principals (who is calling: a token's subject or label) ---
    /// Calls one principal may start per minute, per replica. Default: no limit.
    #[arg(
        long,
        env = "NANO_BANANA_PRINCIPAL_CALLS_PER_MINUTE",
        default_value_t = 0
    )]
    pub principal_calls_per_minute: u32,
    /// Calls one principal may have running at once, per replica. Default: no limit.
    #[arg(
        long,
        env = "NANO_BANANA_PRINCIPAL_CONCURRENT_CALLS",
        default_value_t = 0
    )]
    pub principal_concurrent_calls: u32,
    /// Estimated US dollars one principal may spend per UTC day, per
    /// replica. Default: no cap (the server-wide cap still applies).
    #[arg(long, env = "NANO_BANANA_PRINCIPAL_DAILY_SPEND_USD")]
    pub principal_daily_spend_usd: Option<f64>,
    /// Every principal may read, continue from and cancel every image and
    /// task. Default: each only their own.
    #[arg(long, env = "NANO_BANANA_SHARED_ACCESS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub shared_access: bool,

    // --- Storage ---
    /// Azure Storage connection string (account key, SAS, or
    /// UseDevelopmentStorage=true). Without it, images go to --output-dir.
    #[arg(long, env = "AZURE_STORAGE_CONNECTION_STRING", hide_env_values = true)]
    pub azure_connection_string: Option<Secret>,
    /// Azure Storage account name, for workload/managed identity (no
    /// connection string).
    #[arg(long, env = "AZURE_STORAGE_ACCOUNT")]
    pub azure_account: Option<String>,
    /// Blob container.
    #[arg(
        long,
        env = "AZURE_STORAGE_CONTAINER_NAME",
        default_value = "nano-banana-images"
    )]
    pub azure_container: String,
    /// Create the container (private) at start if it is missing.
    #[arg(long, env = "AZURE_CREATE_CONTAINER", default_value_t = true, action = clap::ArgAction::Set)]
    pub azure_create_container: bool,
    /// Return plain blob URLs (only for containers made public on purpose)
    /// instead of read-only SAS URLs.
    #[arg(long, env = "AZURE_PUBLIC_URLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub azure_public_urls: bool,
    /// Lifetime of returned SAS URLs, in hours.
    #[arg(long, env = "AZURE_SAS_TTL_HOURS", default_value_t = 12)]
    pub azure_sas_ttl_hours: u64,
    /// Local folder for images when Azure is not configured.
    #[arg(long, env = "NANO_BANANA_OUTPUT_DIR", default_value = "generated_imgs")]
    pub output_dir: PathBuf,

    // --- Memory and limits ---
    /// Image bytes per storage block (Azure Put Block size).
    #[arg(long, env = "NANO_BANANA_BLOCK_SIZE", default_value = "2MiB", value_parser = size_arg)]
    pub block_size: u64,
    /// Block uploads in flight per request.
    #[arg(long, env = "NANO_BANANA_BLOCKS_IN_FLIGHT", default_value_t = 2)]
    pub blocks_in_flight: usize,
    /// Largest image accepted from Gemini.
    #[arg(long, env = "NANO_BANANA_MAX_IMAGE_BYTES", default_value = "100MiB", value_parser = size_arg)]
    pub max_image_bytes: u64,
    /// Largest prompt accepted.
    #[arg(long, env = "NANO_BANANA_MAX_PROMPT_BYTES", default_value = "32KiB", value_parser = size_arg)]
    pub max_prompt_bytes: u64,
    /// Longest JSON-RPC line accepted on stdin.
    #[arg(long, env = "NANO_BANANA_MAX_LINE_BYTES", default_value = "8MiB", value_parser = size_arg)]
    pub max_line_bytes: u64,
    /// Memory limit to plan for; default: the container's cgroup limit,
    /// else host RAM.
    #[arg(long, env = "NANO_BANANA_MEMORY_LIMIT", value_parser = size_arg)]
    pub memory_limit: Option<u64>,
    /// The old Node server's heap cap in MiB, accepted as a memory cap.
    #[arg(long, env = "MAX_OLD_SPACE_SIZE", hide = true)]
    pub max_old_space_size: Option<u64>,
    /// Share of (limit - baseline) that requests may reserve.
    #[arg(long, env = "NANO_BANANA_MEMORY_FRACTION", default_value_t = 0.75)]
    pub memory_fraction: f64,
    /// Requests allowed to wait for memory before new ones are refused.
    #[arg(long, env = "NANO_BANANA_QUEUE_MAX", default_value_t = 64)]
    pub queue_max: usize,
    /// Longest wait for memory before a "busy" error (seconds).
    #[arg(long, env = "NANO_BANANA_QUEUE_TIMEOUT_SECS", default_value_t = 30)]
    pub queue_timeout_secs: u64,

    /// When an image tool call from a client that declared the MCP Tasks
    /// extension runs as a durable task: `auto` (2K/4K, gemini-3-pro-image,
    /// n > 1), `always`, or `off` (the extension is not advertised).
    #[arg(long, env = "NANO_BANANA_TASKS", value_enum, default_value_t = crate::tasks::TaskMode::Auto)]
    pub tasks: crate::tasks::TaskMode,
    /// How long a task's record is kept after the task was created (seconds).
    #[arg(long, env = "NANO_BANANA_TASK_TTL_SECS", default_value_t = 3600)]
    pub task_ttl_secs: u64,
    /// Tasks one server runs or queues at once; more are refused as busy.
    /// Default: 1.5 × the waiting calls the memory plan admits, at most 1000.
    #[arg(long, env = "NANO_BANANA_MAX_TASKS")]
    pub max_tasks: Option<usize>,
    /// Tasks that may be asking Gemini or streaming at once; the rest wait
    /// their turn holding only their arguments. Default: derived from the
    /// memory plan.
    #[arg(long, env = "NANO_BANANA_MAX_ADMITTED_TASKS")]
    pub max_admitted_tasks: Option<usize>,

    /// Benchmark reference: process responses the old server's way (buffer,
    /// parse, decode, upload whole). Never use in production.
    #[arg(long, env = "NANO_BANANA_NAIVE_REFERENCE", default_value_t = false, action = clap::ArgAction::Set, hide = true)]
    pub naive_reference: bool,

    /// Return a small JPEG preview (at most 256 px, 48 KiB) of each image
    /// beside its link, made while the image streams. Off by default: it
    /// costs the model context on every call, and 4 MiB more memory per
    /// streaming image.
    #[arg(long, env = "NANO_BANANA_PREVIEW", default_value_t = false, action = clap::ArgAction::Set)]
    pub preview: bool,

    // --- Edit inputs ---
    /// Directories local input paths must be under (comma-separated in the
    /// env var). Over HTTP none by default; over stdio the working
    /// directory by default (the output folder is always one there).
    #[arg(
        long = "allowed-dir",
        env = "NANO_BANANA_ALLOWED_DIRS",
        value_delimiter = ','
    )]
    pub allowed_dirs: Vec<PathBuf>,
    /// stdio only: let edit inputs be any file this user can read (the
    /// behaviour before allowed directories applied to stdio).
    #[arg(long, env = "NANO_BANANA_ALLOW_ANY_PATH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_any_path: bool,
    /// Hosts (`host` or `host:port`) whose URLs may be fetched even though
    /// they resolve to private addresses, and over plain http.
    #[arg(
        long = "allow-url-host",
        env = "NANO_BANANA_ALLOW_URL_HOSTS",
        value_delimiter = ','
    )]
    pub allow_url_hosts: Vec<String>,
    /// Largest input image (file, URL, blob or data: URI).
    #[arg(long, env = "NANO_BANANA_MAX_INPUT_BYTES", default_value = "40MiB", value_parser = size_arg)]
    pub max_input_bytes: u64,
    /// Largest total of all input images of one call (Gemini takes 100 MB
    /// of base64 inline).
    #[arg(long, env = "NANO_BANANA_MAX_TOTAL_INPUT_BYTES", default_value = "70MiB", value_parser = size_arg)]
    pub max_total_input_bytes: u64,
    /// Where downloaded inputs wait while they are sent (deleted after).
    #[arg(long, env = "NANO_BANANA_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Most bytes all calls' input temp files may hold on disk together
    /// (the example k8s /tmp emptyDir is 256Mi); past it, an input is
    /// refused as busy before it is written.
    #[arg(long, env = "NANO_BANANA_MAX_TEMP_BYTES", default_value = "192MiB", value_parser = size_arg)]
    pub max_temp_bytes: u64,
    /// Sessions whose last image is remembered for continue_editing.
    #[arg(long, env = "NANO_BANANA_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,
    /// How long a session's last image is remembered (hours).
    #[arg(long, env = "NANO_BANANA_SESSION_TTL_HOURS", default_value_t = 24)]
    pub session_ttl_hours: u64,

    // --- Logging ---
    /// Log format on stderr: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Log filter (tracing-subscriber syntax), e.g. info or debug.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Command {
    /// The configuration this subcommand runs with (`None` for those that
    /// take none).
    pub fn config(&self) -> Option<&Config> {
        match self {
            Command::Serve(c) => Some(&c.config),
            Command::Generate(c) => Some(&c.config),
            Command::Edit(c) => Some(&c.config),
            Command::Demo(c) => Some(&c.config),
            Command::Doctor(c) => Some(&c.config),
            Command::Completions { .. } => None,
        }
    }
}

impl Config {
    /// Checks clap cannot express; one clear line each.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.block_size >= 64 << 10 && self.block_size <= 256 << 20) {
            return Err("--block-size must be between 64KiB and 256MiB".into());
        }
        if self.blocks_in_flight == 0 || self.blocks_in_flight > 64 {
            return Err("--blocks-in-flight must be between 1 and 64".into());
        }
        if !(self.memory_fraction > 0.0 && self.memory_fraction <= 1.0) {
            return Err("--memory-fraction must be in (0, 1]".into());
        }
        if url::Url::parse(&self.gemini_base_url).is_err() {
            return Err(format!(
                "GEMINI_BASE_URL {:?} is not a URL",
                self.gemini_base_url
            ));
        }
        if let Some(cap) = self.daily_spend_cap_usd
            && !(cap.is_finite() && cap >= 0.0)
        {
            return Err("--daily-spend-cap-usd must be a number of dollars >= 0".into());
        }
        if let Some(cap) = self.principal_daily_spend_usd
            && !(cap.is_finite() && cap >= 0.0)
        {
            return Err("--principal-daily-spend-usd must be a number of dollars >= 0".into());
        }
        if self.gemini_max_attempts == 0 {
            return Err("--gemini-max-attempts must be at least 1".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err("--log-format must be text or json".into());
        }
        Ok(())
    }
}

impl Config {
    /// The settings of every layer, derived here once.
    pub fn app_settings(
        &self,
        transport: crate::app::Transport,
        allow_configure_token: bool,
        stateless: bool,
    ) -> crate::app::AppSettings {
        crate::app::AppSettings {
            pipeline: self.pipeline_config(),
            memory: self.memory_settings(),
            gemini: crate::gemini::GeminiConfig {
                base_url: self.gemini_base_url.clone(),
                model: self.gemini_model.clone(),
                streaming: self.gemini_streaming,
                read_timeout: Duration::from_secs(self.gemini_read_timeout_secs),
                first_byte_timeout: Duration::from_secs(self.gemini_timeout_secs),
                max_attempts: self.gemini_max_attempts,
                retry_base: Duration::from_millis(self.gemini_retry_base_ms),
                retry_cap: Duration::from_secs(self.gemini_retry_cap_secs),
                ..crate::gemini::GeminiConfig::default()
            },
            gemini_key: self.gemini_api_key.clone(),
            models: crate::app::ModelSettings {
                allowed: self.allowed_models.clone(),
                prices: self.prices.clone(),
                daily_cap_usd: self.daily_spend_cap_usd,
            },
            principals: crate::app::PrincipalSettings {
                limits: crate::pipeline::quota::QuotaSettings {
                    calls_per_minute: self.principal_calls_per_minute,
                    concurrent: self.principal_concurrent_calls,
                    daily_spend_usd: self.principal_daily_spend_usd,
                },
                shared: self.shared_access,
            },
            store: self.store_config(),
            inputs: crate::app::InputSettings {
                allowed_dirs: self.allowed_dirs.clone(),
                any_path: self.allow_any_path,
                allow_hosts: self.allow_url_hosts.clone(),
                max_input_bytes: self.max_input_bytes,
                max_total_bytes: self.max_total_input_bytes,
                temp_dir: self.temp_dir.clone().unwrap_or_else(std::env::temp_dir),
                max_temp_bytes: self.max_temp_bytes,
            },
            transport,
            allow_configure_token,
            stateless,
            // Set by the HTTP transport (`serve_command`).
            direct_calls: false,
            per_connection: 0,
            tasks: crate::tasks::TaskSettings {
                mode: self.tasks,
                ttl: Duration::from_secs(self.task_ttl_secs.max(60)),
                max_running: self.max_tasks.unwrap_or(0),
                max_admitted: self.max_admitted_tasks.unwrap_or(0),
                ..crate::tasks::TaskSettings::default()
            },
        }
    }

    pub fn pipeline_config(&self) -> crate::pipeline::PipelineConfig {
        crate::pipeline::PipelineConfig {
            limits: crate::extract::Limits {
                block_size: self.block_size as usize,
                max_image_bytes: self.max_image_bytes,
                ..crate::extract::Limits::default()
            },
            blocks_in_flight: self.blocks_in_flight,
            max_prompt_bytes: self.max_prompt_bytes as usize,
            naive: self.naive_reference,
            preview: self.preview,
        }
    }

    pub fn memory_settings(&self) -> crate::app::MemorySettings {
        crate::app::MemorySettings {
            overrides: crate::memory::LimitOverrides {
                memory_limit_bytes: self.memory_limit,
                max_old_space_size_mib: self.max_old_space_size,
            },
            fraction: self.memory_fraction,
            queue_max: self.queue_max,
            queue_timeout: Duration::from_secs(self.queue_timeout_secs),
        }
    }

    pub fn store_config(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig {
            azure_connection_string: self.azure_connection_string.clone(),
            azure_account: self.azure_account.clone(),
            container: self.azure_container.clone(),
            create_container: self.azure_create_container,
            public_urls: self.azure_public_urls,
            sas_ttl: Duration::from_secs(self.azure_sas_ttl_hours * 3600),
            blocks_in_flight: self.blocks_in_flight,
            output_dir: self.output_dir.clone(),
        }
    }

    pub fn session_settings(&self) -> crate::mcp::SessionSettings {
        crate::mcp::SessionSettings {
            max: self.max_sessions,
            ttl: Duration::from_secs(self.session_ttl_hours * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let cli = Cli::try_parse_from(["x"]).expect("parse");
        cli.config.validate().expect("valid");
        assert_eq!(cli.config.block_size, 2 << 20);
        assert_eq!(cli.config.gemini_model, "gemini-3.1-flash-image");
        assert_eq!(cli.config.azure_container, "nano-banana-images");
    }

    fn http(args: &[&str]) -> Result<crate::transport::http::HttpConfig, String> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.serve
            .http_config("127.0.0.1:8080".parse().expect("addr"))
    }

    #[test]
    fn oauth_flags_are_checked_together() {
        let c = http(&[
            "--oauth-issuer",
            "https://login.example.com/t/v2.0",
            "--resource-url",
            "https://images.example.com/mcp",
            "--oauth-audience",
            "api://images,https://images.example.com/mcp",
            "--oauth-scopes",
            "generate=Images.Generate,read=Images.Read",
        ])
        .expect("valid");
        let o = c.oauth.expect("oauth on");
        assert!(c.token.is_none(), "no static token needed");
        assert_eq!(o.audiences.len(), 2);
        assert_eq!(o.scopes.generate, "Images.Generate");
        assert_eq!(o.scopes.edit, "images:edit");
        let e = http(&["--oauth-issuer", "https://login.example.com"]).unwrap_err();
        assert!(e.contains("--resource-url"), "{e}");
        let e = http(&[
            "--oauth-issuer",
            "http://login.example.com",
            "--resource-url",
            "https://i.example.com/mcp",
        ])
        .unwrap_err();
        assert!(e.contains("https"), "{e}");
        let e = http(&["--resource-url", "https://i.example.com/mcp", "--no-auth"]).unwrap_err();
        assert!(e.contains("--oauth-issuer"), "{e}");
        let e = http(&[
            "--oauth-issuer",
            "http://127.0.0.1:9",
            "--resource-url",
            "http://127.0.0.1:8080/mcp",
            "--no-auth",
        ])
        .unwrap_err();
        assert!(e.contains("contradict"), "{e}");
        // Static only, as before.
        let c = http(&["--auth-token", "0123456789abcdef0123"]).expect("static");
        assert!(c.oauth.is_none() && c.token.is_some());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["x", "--block-size", "lots"]).is_err());
        let cli = Cli::try_parse_from(["x", "--block-size", "1KiB"]).expect("parse");
        assert!(cli.config.validate().is_err());
    }
}
