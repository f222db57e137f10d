//! The running service: the pipeline, the input fetcher, metrics, and what
//! the memory governor decided at start. Built once, from `AppSettings`
//! (which `config` derives from the command line and environment), and
//! shared by every MCP session and CLI command. The layers above (MCP
//! tools, transports, the command line) reach Gemini and storage only
//! through this.

pub mod keys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gemini::{GeminiClient, GeminiConfig};
use crate::inputs::{Fetcher, InputRules};
use crate::memory::{self, Budget, Edge, LimitOverrides, MemoryLimit, Plan};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineConfig, STREAM_WAIT, WAITING_CALL_BYTES};
use crate::secret::Secret;
use crate::store::StoreConfig;

/// Which transport serves this process; some tools behave differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Http,
    Cli,
}

/// How the byte budget is planned and queued.
#[derive(Debug, Clone)]
pub struct MemorySettings {
    pub overrides: LimitOverrides,
    /// Share of (limit − baseline) that requests may reserve.
    pub fraction: f64,
    pub queue_max: usize,
    pub queue_timeout: Duration,
}

/// Where edit inputs may come from, and how big they may be.
#[derive(Debug, Clone)]
pub struct InputSettings {
    /// As configured; canonicalised at build. Over stdio, empty means the
    /// working directory (and the output folder, always an input there).
    pub allowed_dirs: Vec<PathBuf>,
    /// stdio only: any readable file is an input (`--allow-any-path`).
    pub any_path: bool,
    pub allow_hosts: Vec<String>,
    pub max_input_bytes: u64,
    pub max_total_bytes: u64,
    pub temp_dir: PathBuf,
    pub max_temp_bytes: u64,
}

/// Everything `App::build` needs, one small struct per consumer.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub pipeline: PipelineConfig,
    pub memory: MemorySettings,
    pub gemini: GeminiConfig,
    /// The configured key; the saved one is used when this is `None`.
    pub gemini_key: Option<Secret>,
    pub models: ModelSettings,
    pub store: StoreConfig,
    pub inputs: InputSettings,
    pub transport: Transport,
    /// Over HTTP one client must not change the key for all: only a
    /// request with the admin token may, and only when one is set.
    pub allow_configure_token: bool,
    /// HTTP without MCP sessions (continue_editing cannot work).
    pub stateless: bool,
    /// Stateless image calls served without rmcp (`transport::direct`).
    pub direct_calls: bool,
    /// What one HTTP connection can hold at most (the transport's
    /// measured constant), for sizing stateless (connection, call) pairs.
    pub per_connection: u64,
    pub tasks: crate::tasks::TaskSettings,
    pub principals: PrincipalSettings,
}

/// Which models calls may name, what they cost, and the spend cap.
#[derive(Debug, Clone, Default)]
pub struct ModelSettings {
    /// `None`: the transport's default (any over stdio, none over HTTP).
    pub allowed: Option<Vec<String>>,
    pub prices: Option<std::path::PathBuf>,
    pub daily_cap_usd: Option<f64>,
}

/// Who may see what, and how much each caller may do.
#[derive(Debug, Clone, Default)]
pub struct PrincipalSettings {
    /// Limits per principal (`pipeline::quota`).
    pub limits: crate::pipeline::quota::QuotaSettings,
    /// Every principal may read, continue from and cancel every image and
    /// task (one team, one pool). Off: only their own.
    pub shared: bool,
}

impl ModelSettings {
    /// The allow-list for this transport.
    fn allowed(&self, transport: Transport) -> crate::pipeline::AllowedModels {
        use crate::pipeline::AllowedModels;
        let list: Vec<String> = match &self.allowed {
            None if transport == Transport::Stdio => return AllowedModels::Any,
            None => Vec::new(),
            Some(l) => l
                .iter()
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect(),
        };
        if list.iter().any(|m| m == "*") {
            AllowedModels::Any
        } else {
            AllowedModels::Only(list)
        }
    }

    fn prices(&self) -> Result<crate::gemini::pricing::PriceTable, StartError> {
        match &self.prices {
            None => Ok(Default::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| StartError::Gemini(format!("--prices {}: {e}", p.display())))?;
                crate::gemini::pricing::PriceTable::with_overrides(&text)
                    .map_err(|e| StartError::Gemini(format!("--prices {}: {e}", p.display())))
            }
        }
    }
}

/// Why the server could not start; one line each.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Memory(String),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Gemini(String),
    #[error("{0}")]
    Inputs(String),
    #[error("{0}")]
    Transport(String),
}

/// The memory limit and the plan for it (also what `doctor` reports).
/// `gemini_base` decides whether Gemini's HTTP/2 windows are paid for: an
/// https base negotiates HTTP/2, a plain http one (a local fake, a
/// gateway) speaks HTTP/1.1.
pub fn plan_memory(
    m: &MemorySettings,
    per_request: u64,
    edge: Edge,
    gemini_base: &str,
) -> (MemoryLimit, Plan) {
    let limit = memory::cgroup::discover(&m.overrides);
    let baseline = memory::cgroup::proc_self_status_rss()
        .map(|r| r.0)
        .unwrap_or(8 << 20);
    let h2 = gemini_base
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        .then_some(memory::H2Windows {
            streams: u64::from(crate::gemini::H2_STREAMS),
            max_stream_window: u64::from(crate::gemini::H2_MAX_STREAM_WINDOW),
        });
    let plan = memory::plan(
        limit.bytes,
        baseline,
        m.fraction,
        per_request,
        WAITING_CALL_BYTES,
        edge,
        h2,
    );
    (limit, plan)
}

/// What the plan is made for.
pub fn edge(
    transport: Transport,
    stateless: bool,
    direct_calls: bool,
    per_connection: u64,
) -> Edge {
    match transport {
        Transport::Stdio | Transport::Cli => Edge::Stdio,
        Transport::Http if stateless && direct_calls => Edge::StatelessDirect { per_connection },
        Transport::Http => Edge::Http {
            sessions: !stateless,
        },
    }
}

pub struct App {
    pub pipeline: Pipeline,
    /// Request bodies over HTTP: paid for before they are read and parsed
    /// (try only: a body never waits for memory).
    pub bodies: Budget,
    pub fetcher: Fetcher,
    pub metrics: Metrics,
    pub limit: MemoryLimit,
    pub plan: Plan,
    pub transport: Transport,
    pub allow_configure_token: bool,
    pub stateless: bool,
    /// Every principal sees every image and task (`PrincipalSettings`).
    pub shared_access: bool,
    /// Where `configure_gemini_token {persist: true}` writes the key.
    pub key_file: Option<PathBuf>,
    pub started: Instant,
    /// Durable tasks (the MCP Tasks extension), in the same store.
    pub tasks: Arc<crate::tasks::Tasks>,
}

pub type SharedApp = Arc<App>;

impl App {
    /// Discover the memory limit, plan the budget, open storage and the
    /// Gemini client.
    pub async fn build(s: AppSettings) -> Result<App, StartError> {
        let (limit, plan) = plan_memory(
            &s.memory,
            s.pipeline.per_request_bytes(),
            edge(s.transport, s.stateless, s.direct_calls, s.per_connection),
            &s.gemini.base_url,
        );
        if s.memory.overrides.max_old_space_size_mib.is_some() {
            tracing::info!(
                "MAX_OLD_SPACE_SIZE is accepted as a compatibility alias: it caps the memory limit (MiB); prefer NANO_BANANA_MEMORY_LIMIT"
            );
        }
        if plan.max_waiting == 0 {
            return Err(StartError::Memory(format!(
                "memory limit {} MiB ({}) leaves nothing for waiting calls; raise the limit",
                limit.bytes >> 20,
                limit.source,
            )));
        }
        if plan.max_concurrent == 0 {
            return Err(StartError::Memory(format!(
                "memory limit {} MiB ({}) leaves {} MiB for images, but one request needs {} MiB; raise the limit or lower --block-size / --blocks-in-flight",
                limit.bytes >> 20,
                limit.source,
                plan.images >> 20,
                plan.per_request >> 20
            )));
        }
        tracing::info!(
            "memory limit {} MiB from {}, budget {} MiB (images {} MiB, waiting calls {} MiB, bodies {} MiB{}, connections {} MiB, sessions {} MiB, Gemini HTTP/2 windows {} MiB): {} images streaming ({} MiB each), {} calls waiting ({} KiB each)",
            limit.bytes >> 20,
            limit.source,
            plan.budget >> 20,
            plan.images >> 20,
            plan.calls >> 20,
            plan.bodies >> 20,
            if plan.pooled {
                " (the calls' pool)"
            } else {
                ""
            },
            plan.connections >> 20,
            plan.sessions >> 20,
            plan.gemini_windows >> 20,
            plan.max_concurrent,
            plan.per_request >> 20,
            plan.max_waiting,
            plan.per_call >> 10,
        );
        let calls = Budget::new(memory::BudgetConfig {
            total_bytes: plan.calls,
            max_queue: s.memory.queue_max,
            queue_timeout: s.memory.queue_timeout,
        });
        // Only calls holding a `calls` reservation wait here, so the queue
        // needs no cap of its own; its wait is longer than admission's.
        let budget = Budget::new(memory::BudgetConfig {
            total_bytes: plan.images,
            max_queue: usize::MAX,
            queue_timeout: STREAM_WAIT.max(s.memory.queue_timeout),
        });

        let store = Arc::new(
            crate::store::open(&s.store)
                .await
                .map_err(StartError::Storage)?,
        );

        let key = keys::resolve(s.gemini_key.as_ref());
        if key.is_some() && s.gemini_key.as_ref().is_none_or(|k| k.is_empty()) {
            tracing::info!("using the Gemini API key saved by configure_gemini_token");
        }
        if let Some(new) = crate::gemini::models::retired(&s.gemini.model) {
            tracing::warn!(
                "GEMINI_MODEL={} is retired and answers 404; use {new}",
                s.gemini.model
            );
        } else if let Some(new) = crate::gemini::models::deprecated(&s.gemini.model) {
            tracing::warn!(
                "GEMINI_MODEL={} is announced for shutdown; move to {new}",
                s.gemini.model
            );
        }
        let allowed_models = s.models.allowed(s.transport);
        let prices = s.models.prices()?;
        if prices.rates(&s.gemini.model).is_none() {
            tracing::info!(model = %s.gemini.model, "no price for this model: results carry token counts without a cost estimate (add it with --prices)");
        }
        let spend = crate::pipeline::spend::SpendCap::new(s.models.daily_cap_usd);
        let mut gemini_cfg = s.gemini;
        if plan.h2_stream_window > 0 {
            gemini_cfg.h2_stream_window = u32::try_from(plan.h2_stream_window).unwrap_or(u32::MAX);
        }
        let gemini =
            GeminiClient::new(gemini_cfg, key).map_err(|e| StartError::Gemini(e.to_string()))?;
        if !gemini.has_key() {
            tracing::warn!(
                "no Gemini API key yet: set GEMINI_API_KEY or call configure_gemini_token"
            );
        }

        let mut allowed_dirs = Vec::new();
        for d in &s.inputs.allowed_dirs {
            let c = std::fs::canonicalize(d)
                .map_err(|e| StartError::Inputs(format!("--allowed-dir {}: {e}", d.display())))?;
            allowed_dirs.push(c);
        }
        let stdio = s.transport == Transport::Stdio;
        if !stdio && s.inputs.any_path {
            return Err(StartError::Inputs(
                "--allow-any-path is for stdio only; over HTTP inputs come from --allowed-dir"
                    .into(),
            ));
        }
        if stdio && s.inputs.any_path {
            if !allowed_dirs.is_empty() {
                return Err(StartError::Inputs(
                    "--allow-any-path and --allowed-dir exclude each other".into(),
                ));
            }
            tracing::warn!(
                "--allow-any-path: edit_image may send any file this user can read to Gemini"
            );
        } else if stdio && allowed_dirs.is_empty() {
            // A prompt-injected model must not reach the user's whole disk:
            // the folder the client started the server in (a project), and
            // the output folder. Not the filesystem root, which some
            // clients start servers in.
            match std::env::current_dir().and_then(std::fs::canonicalize) {
                Ok(cwd) if cwd.parent().is_some() => {
                    tracing::info!(dir = %cwd.display(), "edit inputs: files under the working directory and the output folder (widen with --allowed-dir)");
                    allowed_dirs.push(cwd);
                }
                _ => tracing::warn!(
                    "edit inputs: only the output folder (the working directory is the filesystem root or unknown); allow folders with --allowed-dir"
                ),
            }
        }
        crate::inputs::remove_stale_temp_files(&s.inputs.temp_dir);
        let fetcher = Fetcher {
            disk: Budget::new(memory::BudgetConfig {
                total_bytes: s.inputs.max_temp_bytes,
                max_queue: 0,
                queue_timeout: Duration::ZERO,
            }),
            preparing: Arc::new(tokio::sync::Semaphore::new(crate::inputs::PREPARE_AT_ONCE)),
            rules: InputRules {
                enforce_dirs: !(stdio && s.inputs.any_path),
                output_folder_by_path: s.transport != Transport::Http,
                allowed_dirs,
                allow_hosts: s.inputs.allow_hosts,
                max_input_bytes: s.inputs.max_input_bytes,
                max_total_bytes: s.inputs.max_total_bytes,
                temp_dir: s.inputs.temp_dir,
                download_timeout: Duration::from_secs(120),
                max_redirects: 3,
            },
            store: Arc::clone(&store),
        };
        let block_size = s.pipeline.limits.block_size;
        // Bodies only ever try (they never wait for memory), so sharing
        // the calls' pool adds no waits; see `Edge::StatelessDirect`.
        let bodies = if plan.pooled {
            calls.clone()
        } else {
            Budget::new(memory::BudgetConfig {
                total_bytes: plan.bodies,
                max_queue: 0,
                queue_timeout: Duration::ZERO,
            })
        };
        let mut task_settings = s.tasks.clone();
        if task_settings.max_admitted == 0 {
            // Measured in 128 MiB stateless (BENCHMARKS.md, "Tasks"): 105
            // tasks at Gemini at once peaked at 92-95 MiB, 176 at 121 MiB,
            // 200 were OOM-killed (before the blocking pool was capped).
            // A sixth of the waiting calls with fixed shares, a tenth of
            // the (connection, call) pairs, which are 1.7 times as many.
            let divisor = if plan.pooled { 10 } else { 6 };
            task_settings.max_admitted = usize::try_from(plan.max_waiting / divisor)
                .unwrap_or(usize::MAX)
                .max(1);
        }
        if task_settings.max_running == 0 {
            // A task waiting its turn holds ~16 KiB (measured, BENCHMARKS.md
            // "Tasks") and at most 4 KiB of arguments.
            task_settings.max_running = usize::try_from(plan.max_waiting * 3 / 2)
                .unwrap_or(usize::MAX)
                .clamp(1, 1000);
        }
        let tasks = crate::tasks::Tasks::new(Arc::clone(&store), task_settings);
        Ok(App {
            bodies,
            tasks,
            pipeline: Pipeline {
                gemini,
                store,
                calls,
                budget,
                // Enough free buffers for every admitted request's blocks.
                pool: crate::memory::pool::BlockPool::new(
                    block_size,
                    (plan.max_concurrent as usize)
                        .saturating_mul(s.pipeline.blocks_in_flight + 2)
                        .min(1024),
                ),
                cfg: s.pipeline,
                allowed_models,
                prices,
                spend,
                quotas: crate::pipeline::quota::Quotas::new(s.principals.limits),
            },
            fetcher,
            metrics: Metrics::new(),
            limit,
            plan,
            transport: s.transport,
            allow_configure_token: s.allow_configure_token,
            stateless: s.stateless,
            shared_access: s.principals.shared,
            key_file: keys::key_file(),
            started: Instant::now(),
        })
    }

    /// The image path's budget: responses streaming now.
    pub fn budget(&self) -> &Budget {
        &self.pipeline.budget
    }

    /// Calls in progress, streaming or not.
    pub fn calls(&self) -> &Budget {
        &self.pipeline.calls
    }

    /// The Prometheus text exposition, read now.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(
            &self.limit,
            &self.plan,
            &self.budget().stats(),
            &self.pipeline.calls.stats(),
            self.pipeline.pool.stats().free,
            self.tasks.running(),
        )
    }

    /// Give memory back to the OS once the server has been idle for a
    /// second after work.
    pub fn spawn_idle_purger(&self) -> tokio::task::JoinHandle<()> {
        // Every call holds a `calls` reservation, streaming or not.
        let calls = self.pipeline.calls.clone();
        let pool = self.pipeline.pool.clone();
        memory::spawn_idle_purger(move || {
            let s = calls.stats();
            if s.in_flight == 0 {
                // Free buffers go back to the allocator, which then purges.
                pool.clear();
            }
            memory::Activity {
                in_flight: s.in_flight,
                work_done: s.admitted,
            }
        })
    }

    pub fn has_gemini_key(&self) -> bool {
        self.pipeline.gemini.has_key()
    }

    /// The Gemini endpoint's scheme and host (no path, no secrets).
    pub fn gemini_endpoint(&self) -> String {
        url::Url::parse(&self.pipeline.gemini.config().base_url)
            .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")))
            .unwrap_or_default()
    }

    pub fn gemini_streaming(&self) -> bool {
        self.pipeline.gemini.config().streaming
    }

    /// Where images go, for status reports (no secrets).
    pub fn storage_description(&self) -> String {
        self.pipeline.store.describe()
    }

    /// Use this key from now on; with `persist`, also save it (0600) and
    /// say where.
    pub fn set_gemini_key(&self, key: &str, persist: bool) -> Result<Option<PathBuf>, KeyError> {
        self.pipeline.gemini.set_key(Secret::new(key));
        if !persist {
            return Ok(None);
        }
        let path = self.key_file.clone().ok_or(KeyError::NoConfigDir)?;
        keys::persist_key(&path, key).map_err(KeyError::Save)?;
        Ok(Some(path))
    }
}

/// Why a key was set but not saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no user config directory is known (set XDG_CONFIG_HOME or HOME)")]
    NoConfigDir,
    #[error("the key is set, but saving it failed: {0}")]
    Save(std::io::Error),
}
