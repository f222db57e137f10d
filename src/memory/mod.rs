//! Memory awareness for the server: where the memory limit comes from
//! ([`cgroup`]), how the allocator is configured and asked to hand freed memory
//! back ([`alloc`]), and how requests are admitted against a byte budget
//! ([`budget`]). This file only re-exports those pieces and formats byte counts
//! for people; it must not make policy decisions (budget fraction, block size,
//! queue length), which belong to the caller that wires the pieces together.
//!
//! Typical wiring in main.rs:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: memory::alloc::Allocator = memory::alloc::ALLOCATOR;
//!
//! let limit = memory::discover(&overrides);
//! let (rss, _) = memory::cgroup::proc_self_status_rss().unwrap_or_default();
//! let plan = memory::plan(limit.bytes, rss, 0.7, per_request_bytes);
//! let budget = memory::Budget::new(memory::BudgetConfig { total_bytes: plan.budget, .. });
//! let probe = budget.clone();
//! memory::spawn_idle_purger(move || {
//!     let s = probe.stats();
//!     memory::Activity { in_flight: s.in_flight, work_done: s.admitted }
//! });
//! ```

use std::fmt;

pub mod alloc;
pub mod budget;
pub mod cgroup;
pub mod pool;

pub use alloc::{
    Activity, AllocConfig, AllocStats, IdlePurgeConfig, MallctlError, spawn_idle_purger,
    spawn_idle_purger_with,
};
pub use budget::{
    Budget, BudgetConfig, BudgetStats, Busy, Edge, H2Windows, Plan, Reservation, plan,
};
pub use cgroup::{
    CgroupDir, CgroupVersion, LimitOverrides, LimitSource, MemoryLimit, discover, parse_size,
};

/// Threads of the runtime's blocking pool (file writes and fsyncs of the
/// local folder, task and image records, input temp files, stdin). Each
/// keeps its touched stack and a jemalloc thread cache (tens to hundreds
/// of KiB) for as long as it lives; tokio's default of 512 made that an
/// unplanned ~50 MiB a burst of record writes could reach. Past the cap,
/// blocking work queues (each piece is short; none waits on another).
pub const BLOCKING_THREADS: usize = 32;

/// Formats a byte count with binary units (`40 MiB`, `1.5 GiB`) for messages a
/// person reads; exact counts belong in metrics, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut unit = 0;
        let mut scaled = self.0;
        while scaled >= 1024 && unit + 1 < UNITS.len() {
            scaled /= 1024;
            unit += 1;
        }
        let divisor = 1u64 << (10 * unit);
        if self.0.is_multiple_of(divisor) {
            return write!(f, "{} {}", self.0 / divisor, UNITS[unit]);
        }
        // One decimal is enough to tell 1.5 GiB from 2 GiB; more is noise in an
        // error message.
        let value = self.0 as f64 / divisor as f64;
        let text = format!("{value:.1}");
        let text = text.strip_suffix(".0").unwrap_or(&text);
        write!(f, "{text} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::HumanBytes;

    #[test]
    fn human_bytes_picks_binary_units() {
        assert_eq!(HumanBytes(0).to_string(), "0 B");
        assert_eq!(HumanBytes(1023).to_string(), "1023 B");
        assert_eq!(HumanBytes(1024).to_string(), "1 KiB");
        assert_eq!(HumanBytes(40 << 20).to_string(), "40 MiB");
        assert_eq!(HumanBytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(HumanBytes((1 << 20) + 1).to_string(), "1 MiB");
        assert_eq!(HumanBytes(u64::MAX).to_string(), "16384 PiB");
    }
}
