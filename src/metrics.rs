//! Prometheus metrics: what happened (tool calls by outcome, latency,
//! bytes, Gemini and storage errors, retries) is counted as it happens;
//! what is (memory budget, RSS, allocator, cgroup usage) is read at scrape
//! time. Rendering never blocks a request.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Gauges read at scrape time (all prefixed `nano_banana_`).
const GAUGES: &[(&str, &str)] = &[
    ("memory_limit_bytes", "Memory limit the server plans for"),
    (
        "memory_budget_bytes",
        "Bytes the plan hands out (all parts)",
    ),
    (
        "memory_images_budget_bytes",
        "The image path's part of the budget",
    ),
    (
        "memory_calls_budget_bytes",
        "Waiting calls' part of the budget",
    ),
    (
        "memory_bodies_budget_bytes",
        "Request bodies' part of the budget",
    ),
    (
        "memory_connections_budget_bytes",
        "Connections' part of the budget",
    ),
    (
        "memory_sessions_budget_bytes",
        "Sessions' part of the budget",
    ),
    (
        "memory_reserved_bytes",
        "Bytes reserved by streaming responses now",
    ),
    (
        "memory_calls_reserved_bytes",
        "Bytes reserved by calls in progress now",
    ),
    (
        "memory_peak_reserved_bytes",
        "Most bytes ever reserved at once",
    ),
    (
        "memory_per_request_bytes",
        "Reservation of one streaming response",
    ),
    ("memory_per_call_bytes", "Reservation of one waiting call"),
    (
        "max_concurrent_requests",
        "Responses that can stream at once",
    ),
    (
        "max_waiting_calls",
        "Calls that can wait for Gemini at once",
    ),
    ("requests_in_flight", "Responses streaming image bytes"),
    (
        "requests_queued",
        "Started responses waiting for the image path's memory",
    ),
    (
        "calls_in_flight",
        "Calls admitted (waiting for Gemini or streaming)",
    ),
    ("calls_queued", "Calls waiting to be admitted"),
    ("process_rss_bytes", "Resident set size"),
    ("process_peak_rss_bytes", "Peak resident set size (VmHWM)"),
    ("jemalloc_allocated_bytes", "Bytes in live allocations"),
    ("jemalloc_active_bytes", "Bytes in active pages"),
    ("jemalloc_resident_bytes", "Bytes resident in the allocator"),
    (
        "jemalloc_retained_bytes",
        "Bytes retained (returned to the OS, still mapped)",
    ),
    ("cgroup_memory_usage_bytes", "The cgroup's memory usage"),
    (
        "block_pool_free_blocks",
        "Free block buffers kept for reuse",
    ),
    (
        "tasks_running",
        "Durable tasks this server runs or queues now",
    ),
];

pub struct Metrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    image_bytes: Counter,
    gemini_errors: Family<Labels, Counter>,
    storage_errors: Family<Labels, Counter>,
    retries: Counter,
    gauges: Vec<(&'static str, Gauge)>,
    busy: Counter<u64, AtomicU64>,
    tokens: Family<Labels, Counter>,
    spend: Family<Labels, Counter<f64, AtomicU64>>,
    search_queries: Family<Labels, Counter>,
    spend_refusals: Counter,
    principal_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nano_banana");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome",
            calls.clone(),
        );
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 14))
        });
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency by tool",
            latency.clone(),
        );
        let image_bytes = Counter::default();
        registry.register(
            "image_bytes",
            "Image bytes streamed from Gemini into storage",
            image_bytes.clone(),
        );
        let gemini_errors = Family::<Labels, Counter>::default();
        registry.register(
            "gemini_errors",
            "Gemini failures by kind",
            gemini_errors.clone(),
        );
        let storage_errors = Family::<Labels, Counter>::default();
        registry.register(
            "storage_errors",
            "Storage failures by kind",
            storage_errors.clone(),
        );
        let retries = Counter::default();
        registry.register("gemini_retries", "Gemini requests retried", retries.clone());
        let busy = Counter::<u64, AtomicU64>::default();
        registry.register(
            "busy_rejections",
            "Calls refused because the memory budget was spent",
            busy.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        registry.register(
            "gemini_tokens",
            "Tokens Gemini reported, by model and kind (input, image, text: output text and thinking)",
            tokens.clone(),
        );
        let spend = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "estimated_spend_usd",
            "Estimated Gemini spend in US dollars by model (list prices, README \"Cost\")",
            spend.clone(),
        );
        let search_queries = Family::<Labels, Counter>::default();
        registry.register(
            "gemini_search_queries",
            "Google Search queries grounded calls ran, by model",
            search_queries.clone(),
        );
        let spend_refusals = Counter::default();
        registry.register(
            "spend_cap_refusals",
            "Calls refused because the daily spend cap was reached",
            spend_refusals.clone(),
        );
        let principal_refusals = Counter::default();
        registry.register(
            "principal_limit_refusals",
            "Calls refused by a per-principal limit (calls per minute, calls at once)",
            principal_refusals.clone(),
        );
        let mut gauges = Vec::new();
        for (name, help) in GAUGES {
            let g = Gauge::default();
            registry.register(*name, *help, g.clone());
            gauges.push((*name, g));
        }
        Self {
            registry,
            calls,
            latency,
            image_bytes,
            gemini_errors,
            storage_errors,
            retries,
            gauges,
            busy,
            tokens,
            spend,
            search_queries,
            spend_refusals,
            principal_refusals,
        }
    }

    /// Count what one response cost. `model` is a label: the caller
    /// passes a bounded set of names (`pipeline::Pipeline::model_label`).
    pub fn cost(&self, model: &str, cost: &crate::gemini::pricing::Cost) {
        for (kind, n) in [
            ("input", cost.input_tokens),
            ("image", cost.image_tokens),
            ("text", cost.text_tokens),
        ] {
            self.tokens
                .get_or_create(&vec![("model", model.to_string()), ("kind", kind.into())])
                .inc_by(n);
        }
        if cost.search_queries > 0 {
            self.search_queries
                .get_or_create(&vec![("model", model.to_string())])
                .inc_by(cost.search_queries);
        }
        if let Some(usd) = cost.usd {
            self.spend
                .get_or_create(&vec![("model", model.to_string())])
                .inc_by(usd);
        }
    }

    pub fn spend_refused(&self) {
        self.spend_refusals.inc();
    }

    pub fn principal_refused(&self) {
        self.principal_refusals.inc();
    }

    /// Record one finished tool call; `outcome` is "ok" or an error kind.
    pub fn call(&self, tool: &str, outcome: &str, took: Duration, bytes: u64) {
        self.calls
            .get_or_create(&vec![
                ("tool", tool.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("tool", tool.to_string())])
            .observe(took.as_secs_f64());
        if bytes > 0 {
            self.image_bytes.inc_by(bytes);
        }
    }

    pub fn error(&self, err: &crate::pipeline::PipelineError) {
        let family = match err {
            crate::pipeline::PipelineError::Store(_) => &self.storage_errors,
            e if e.is_gemini() => &self.gemini_errors,
            _ => return,
        };
        family
            .get_or_create(&vec![("kind", err.kind().to_string())])
            .inc();
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    /// The text exposition, with gauges read now.
    pub fn render(
        &self,
        limit: &crate::memory::MemoryLimit,
        plan: &crate::memory::Plan,
        b: &crate::memory::BudgetStats,
        calls: &crate::memory::BudgetStats,
        pool_free_blocks: usize,
        tasks_running: usize,
    ) -> String {
        let set = |name: &'static str, v: u64| {
            if let Some((_, g)) = self.gauges.iter().find(|(n, _)| *n == name) {
                g.set(v.min(i64::MAX as u64) as i64);
            }
        };
        set("memory_limit_bytes", limit.bytes);
        set("memory_budget_bytes", plan.budget);
        set("memory_images_budget_bytes", plan.images);
        set("memory_calls_budget_bytes", plan.calls);
        set("memory_bodies_budget_bytes", plan.bodies);
        set("memory_connections_budget_bytes", plan.connections);
        set("memory_sessions_budget_bytes", plan.sessions);
        set("memory_reserved_bytes", b.reserved_bytes);
        set("memory_peak_reserved_bytes", b.peak_reserved);
        set("memory_calls_reserved_bytes", calls.reserved_bytes);
        set("memory_per_request_bytes", plan.per_request);
        set("memory_per_call_bytes", plan.per_call);
        set("max_concurrent_requests", plan.max_concurrent);
        set("max_waiting_calls", plan.max_waiting);
        set("requests_in_flight", b.in_flight as u64);
        set("requests_queued", b.queued as u64);
        set("calls_in_flight", calls.in_flight as u64);
        set("calls_queued", calls.queued as u64);
        if let Some((rss, peak)) = crate::memory::cgroup::proc_self_status_rss() {
            set("process_rss_bytes", rss);
            set("process_peak_rss_bytes", peak);
        }
        if let Some(s) = crate::memory::alloc::stats() {
            set("jemalloc_allocated_bytes", s.allocated);
            set("jemalloc_active_bytes", s.active);
            set("jemalloc_resident_bytes", s.resident);
            set("jemalloc_retained_bytes", s.retained);
        }
        if let Some(dir) = crate::memory::cgroup::locate()
            && let Some(u) = crate::memory::cgroup::read_cgroup_memory_usage(&dir.path, dir.version)
        {
            set("cgroup_memory_usage_bytes", u);
        }
        set("block_pool_free_blocks", pool_free_blocks as u64);
        set("tasks_running", tasks_running as u64);
        // The budgets count rejections themselves; mirror their total.
        let seen = self.busy.get();
        let total = b.rejections_busy + calls.rejections_busy;
        if total > seen {
            self.busy.inc_by(total - seen);
        }
        let mut out = String::with_capacity(8 << 10);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
