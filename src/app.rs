//! The running service's shared state: the pipeline, what the memory
//! governor decided at start, and the settings that tools report. Built
//! once by `main` and shared by every MCP session and CLI command.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::memory::{self, Budget, MemoryLimit, Plan};
use crate::pipeline::Pipeline;

/// Which transport serves this process; some tools behave differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Http,
    Cli,
}

pub struct App {
    pub pipeline: Pipeline,
    pub fetcher: crate::inputs::Fetcher,
    pub sessions: crate::mcp::Sessions,
    pub metrics: crate::metrics::Metrics,
    pub limit: MemoryLimit,
    pub plan: Plan,
    pub transport: Transport,
    /// Over HTTP one client must not change the key for all.
    pub allow_configure_token: bool,
    /// HTTP without MCP sessions (continue_editing cannot work).
    pub stateless: bool,
    /// Where `configure_gemini_token {persist: true}` writes the key.
    pub key_file: Option<std::path::PathBuf>,
    pub started: Instant,
}

/// Figures for `get_configuration_status` and metrics.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStatus {
    pub limit_bytes: u64,
    pub limit_source: String,
    pub baseline_bytes: u64,
    pub budget_bytes: u64,
    pub per_request_bytes: u64,
    pub max_concurrent: u64,
    pub reserved_bytes: u64,
    pub in_flight: u64,
    pub queued: u64,
    pub busy_rejections: u64,
    pub rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub allocator_resident_bytes: Option<u64>,
}

impl App {
    pub fn budget(&self) -> &Budget {
        &self.pipeline.budget
    }

    pub fn memory_status(&self) -> MemoryStatus {
        let b = self.budget().stats();
        let rss = memory::cgroup::proc_self_status_rss();
        MemoryStatus {
            limit_bytes: self.limit.bytes,
            limit_source: self.limit.source.to_string(),
            baseline_bytes: self.plan.baseline,
            budget_bytes: self.plan.budget,
            per_request_bytes: self.plan.per_request,
            max_concurrent: self.plan.max_concurrent,
            reserved_bytes: b.reserved_bytes,
            in_flight: b.in_flight as u64,
            queued: b.queued as u64,
            busy_rejections: b.rejections_busy,
            rss_bytes: rss.map(|r| r.0),
            peak_rss_bytes: rss.map(|r| r.1),
            allocator_resident_bytes: memory::alloc::stats().map(|s| s.resident),
        }
    }
}

pub type SharedApp = Arc<App>;

/// Everything `App::build` needs besides the configuration.
pub struct BuildOptions {
    pub transport: Transport,
    pub allow_configure_token: bool,
    pub stateless: bool,
}

impl App {
    /// Discover the memory limit, plan the budget, open storage and the
    /// Gemini client. Errors are one line, for start-up.
    pub async fn build(cfg: &crate::config::Config, opts: BuildOptions) -> Result<App, String> {
        use crate::extract::Limits;
        use crate::pipeline::PipelineConfig;

        let pipeline_cfg = PipelineConfig {
            limits: Limits {
                block_size: cfg.block_size as usize,
                max_image_bytes: cfg.max_image_bytes,
                ..Limits::default()
            },
            blocks_in_flight: cfg.blocks_in_flight,
            read_timeout: std::time::Duration::from_secs(cfg.gemini_read_timeout_secs),
            max_prompt_bytes: cfg.max_prompt_bytes as usize,
            naive: cfg.naive_reference,
        };

        let limit = memory::cgroup::discover(&memory::cgroup::LimitOverrides {
            memory_limit_bytes: cfg.memory_limit,
            max_old_space_size_mib: cfg.max_old_space_size,
        });
        if cfg.max_old_space_size.is_some() {
            tracing::info!(
                "MAX_OLD_SPACE_SIZE is accepted as a compatibility alias: it caps the memory limit (MiB); prefer NANO_BANANA_MEMORY_LIMIT"
            );
        }
        let baseline = memory::cgroup::proc_self_status_rss()
            .map(|r| r.0)
            .unwrap_or(8 << 20);
        let plan = memory::plan(
            limit.bytes,
            baseline,
            cfg.memory_fraction,
            pipeline_cfg.per_request_bytes(),
        );
        if plan.max_concurrent == 0 {
            return Err(format!(
                "memory limit {} MiB ({}) leaves {} MiB for requests, but one request needs {} MiB; raise the limit or lower --block-size / --blocks-in-flight",
                limit.bytes >> 20,
                limit.source,
                plan.budget >> 20,
                plan.per_request >> 20
            ));
        }
        tracing::info!(
            "memory limit {} MiB from {}, budget {} MiB, {} concurrent ({} MiB each)",
            limit.bytes >> 20,
            limit.source,
            plan.budget >> 20,
            plan.max_concurrent,
            plan.per_request >> 20
        );
        let budget = Budget::new(memory::BudgetConfig {
            total_bytes: plan.budget,
            max_queue: cfg.queue_max,
            queue_timeout: std::time::Duration::from_secs(cfg.queue_timeout_secs),
        });

        let store = crate::store::open(cfg).await?;

        let key = cfg.gemini_api_key.clone().or_else(|| {
            let k = crate::config::key_file().and_then(|p| crate::config::load_persisted_key(&p));
            if k.is_some() {
                tracing::info!("using the Gemini API key saved by configure_gemini_token");
            }
            k
        });
        if let Some(new) = crate::gemini::models::retired(&cfg.gemini_model) {
            tracing::warn!(
                "GEMINI_MODEL={} is retired and answers 404; use {new}",
                cfg.gemini_model
            );
        }
        let gemini = crate::gemini::GeminiClient::new(
            crate::gemini::GeminiConfig {
                base_url: cfg.gemini_base_url.clone(),
                model: cfg.gemini_model.clone(),
                streaming: cfg.gemini_streaming,
                read_timeout: std::time::Duration::from_secs(cfg.gemini_read_timeout_secs),
                first_byte_timeout: std::time::Duration::from_secs(cfg.gemini_timeout_secs),
                max_attempts: cfg.gemini_max_attempts,
                retry_base: std::time::Duration::from_millis(cfg.gemini_retry_base_ms),
                retry_cap: std::time::Duration::from_secs(cfg.gemini_retry_cap_secs),
                ..crate::gemini::GeminiConfig::default()
            },
            key,
        )
        .map_err(|e| e.to_string())?;
        if !gemini.has_key() {
            tracing::warn!(
                "no Gemini API key yet: set GEMINI_API_KEY or call configure_gemini_token"
            );
        }

        let store = Arc::new(store);
        let mut allowed_dirs = Vec::new();
        for d in &cfg.allowed_dirs {
            let c = std::fs::canonicalize(d)
                .map_err(|e| format!("--allowed-dir {}: {e}", d.display()))?;
            allowed_dirs.push(c);
        }
        let temp_dir = cfg.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let fetcher = crate::inputs::Fetcher {
            rules: crate::inputs::InputRules {
                enforce_dirs: opts.transport == Transport::Http || !allowed_dirs.is_empty(),
                allowed_dirs,
                allow_hosts: cfg.allow_url_hosts.clone(),
                max_input_bytes: cfg.max_input_bytes,
                max_total_bytes: cfg.max_total_input_bytes,
                temp_dir,
                download_timeout: std::time::Duration::from_secs(120),
                max_redirects: 3,
            },
            store: Arc::clone(&store),
        };
        Ok(App {
            pipeline: Pipeline {
                gemini,
                store,
                budget,
                // Enough free buffers for every admitted request's blocks.
                pool: crate::memory::pool::BlockPool::new(
                    cfg.block_size as usize,
                    (plan.max_concurrent as usize)
                        .saturating_mul(cfg.blocks_in_flight + 2)
                        .min(1024),
                ),
                cfg: pipeline_cfg,
            },
            fetcher,
            metrics: crate::metrics::Metrics::new(),
            sessions: crate::mcp::Sessions::new(
                cfg.max_sessions,
                std::time::Duration::from_secs(cfg.session_ttl_hours * 3600),
            ),
            limit,
            plan,
            transport: opts.transport,
            allow_configure_token: opts.allow_configure_token,
            stateless: opts.stateless,
            key_file: crate::config::key_file(),
            started: Instant::now(),
        })
    }
}
