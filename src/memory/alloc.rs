//! jemalloc as the process allocator: the configuration compiled into the
//! binary, allocator statistics, and handing freed memory back to the OS once
//! the server goes idle. It must not declare `#[global_allocator]` — main.rs
//! does, so there is exactly one:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: memory::alloc::Allocator = memory::alloc::ALLOCATOR;
//! ```
//!
//! It also must not decide whether memory is tight; the budget and the caller
//! do. Everything here assumes tikv-jemalloc-sys's default prefixed build
//! (`_rjem_` symbols, always the case on Linux unless the
//! `unprefixed_malloc_on_supported_platforms` feature is turned on): with an
//! unprefixed build `purge` fails to link and the configuration below is
//! silently ignored, which `config_takes_effect` in the tests would catch.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tikv_jemalloc_ctl::{epoch, raw, stats as jstats};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// The allocator type main.rs installs.
pub type Allocator = tikv_jemallocator::Jemalloc;

/// The value main.rs installs: `static GLOBAL: Allocator = ALLOCATOR;`.
pub const ALLOCATOR: Allocator = tikv_jemallocator::Jemalloc;

/// The configuration jemalloc reads at start-up.
///
/// - `background_thread:true`: decay runs on jemalloc's own thread, so freed
///   memory returns to the OS even while no request thread calls into the
///   allocator (the feature flag compiles this in too; stating it keeps the
///   intent in one place).
/// - `dirty_decay_ms:1000`: freed pages go back within about a second instead
///   of the default ten, so RSS follows the budget closely enough for a cgroup
///   limit to be safe.
/// - `muzzy_decay_ms:0`: skip the lazy `MADV_FREE` stage whose pages still count
///   against the cgroup until the kernel is under pressure.
///
/// `_RJEM_MALLOC_CONF` in the environment still overrides these at run time.
pub const MALLOC_CONF: &CStr = c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// A `const char *` that can live in a `static`.
#[repr(transparent)]
pub struct MallocConfPtr(*const c_char);

// SAFETY: the pointer refers to a 'static, immutable, NUL-terminated string;
// nothing writes through it, so sharing it between threads is sound.
unsafe impl Sync for MallocConfPtr {}

/// jemalloc's `const char *malloc_conf`, under the name the prefixed build
/// looks up. jemalloc defines it weakly as NULL, so this strong definition
/// wins at link time; `#[used]` keeps the compiler from dropping it, as no Rust
/// code reads it.
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_MALLOC_CONF: MallocConfPtr = MallocConfPtr(MALLOC_CONF.as_ptr());

/// jemalloc's index meaning "every arena" in `arena.<i>.*` names.
pub const MALLCTL_ARENAS_ALL: usize = 4096;

unsafe extern "C" {
    // tikv-jemalloc-ctl only offers reads and writes, and `arena.<i>.purge`
    // rejects both (EPERM): it must be called with all four pointers NULL.
    #[link_name = "_rjem_mallctl"]
    fn rjem_mallctl(
        name: *const c_char,
        oldp: *mut c_void,
        oldlenp: *mut usize,
        newp: *mut c_void,
        newlen: usize,
    ) -> c_int;
}

/// A mallctl call that jemalloc refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jemalloc mallctl {name} failed (errno {errno})")]
pub struct MallctlError {
    pub name: &'static str,
    pub errno: i32,
}

/// Allocator-wide byte counts (see jemalloc's `stats.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AllocStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in pages holding live allocations.
    pub active: u64,
    /// Bytes jemalloc believes are physically resident, dirty pages included.
    pub resident: u64,
    /// Bytes kept mapped but returned to the OS, reusable without `mmap`.
    pub retained: u64,
    /// Bytes in active extents mapped by the allocator.
    pub mapped: u64,
    /// Bytes of jemalloc's own bookkeeping.
    pub metadata: u64,
}

/// The options jemalloc ended up with, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocConfig {
    pub background_thread: bool,
    /// Whether background threads are running now (they can be switched off
    /// at run time, and fail to start on some sandboxes).
    pub background_thread_running: bool,
    pub dirty_decay_ms: i64,
    pub muzzy_decay_ms: i64,
    /// The string jemalloc found in `malloc_conf`; None means our symbol was
    /// not linked in.
    pub malloc_conf_symbol: Option<String>,
}

/// Current allocator statistics; None if jemalloc is not answering (stats not
/// compiled in).
pub fn stats() -> Option<AllocStats> {
    // The counters are snapshots refreshed only when the epoch advances.
    epoch::advance().ok()?;
    let read = |value: tikv_jemalloc_ctl::Result<usize>| value.ok().map(|v| v as u64);
    Some(AllocStats {
        allocated: read(jstats::allocated::read())?,
        active: read(jstats::active::read())?,
        resident: read(jstats::resident::read())?,
        retained: read(jstats::retained::read())?,
        mapped: read(jstats::mapped::read())?,
        metadata: read(jstats::metadata::read())?,
    })
}

/// The configuration jemalloc is running with.
pub fn config() -> Option<AllocConfig> {
    // SAFETY: each name is NUL-terminated and read as the type jemalloc
    // documents for it (bool, ssize_t, const char *).
    unsafe {
        let symbol: *const c_char = raw::read(b"opt.malloc_conf.global_var\0").ok()?;
        let malloc_conf_symbol =
            (!symbol.is_null()).then(|| CStr::from_ptr(symbol).to_string_lossy().into_owned());
        Some(AllocConfig {
            background_thread: raw::read::<bool>(b"opt.background_thread\0").ok()?,
            background_thread_running: raw::read::<bool>(b"background_thread\0").ok()?,
            dirty_decay_ms: raw::read::<isize>(b"opt.dirty_decay_ms\0").ok()? as i64,
            muzzy_decay_ms: raw::read::<isize>(b"opt.muzzy_decay_ms\0").ok()? as i64,
            malloc_conf_symbol,
        })
    }
}

/// Returns every arena's unused dirty pages to the OS now. It walks all arenas
/// and makes syscalls, so call it from `spawn_blocking`, not on a runtime
/// thread.
pub fn purge() -> Result<(), MallctlError> {
    const NAME: &CStr = c"arena.4096.purge";
    // SAFETY: the name is NUL-terminated and this control takes no input or
    // output, which is what the NULL pointers and zero length say.
    let rc = unsafe {
        rjem_mallctl(
            NAME.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(MallctlError {
            name: "arena.4096.purge",
            errno: rc,
        })
    }
}

/// What the idle purger samples: how much work is running, and a counter that
/// moves whenever new work starts (e.g. `BudgetStats::admitted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    pub in_flight: usize,
    pub work_done: u64,
}

/// How often the idle purger samples and how long "idle" must last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePurgeConfig {
    pub interval: Duration,
    pub idle_after: Duration,
}

impl Default for IdlePurgeConfig {
    fn default() -> Self {
        IdlePurgeConfig {
            interval: Duration::from_millis(500),
            idle_after: Duration::from_secs(1),
        }
    }
}

/// Decides when to purge: once per burst of work, after in-flight has stayed
/// at zero for `idle_after`. Purging again while nothing ran would only cost
/// syscalls, since there is nothing new to give back.
#[derive(Debug)]
struct IdleTracker {
    idle_after: Duration,
    last_work: u64,
    idle_since: Option<Instant>,
    dirty: bool,
}

impl IdleTracker {
    fn new(idle_after: Duration, initial: Activity) -> Self {
        IdleTracker {
            idle_after,
            last_work: initial.work_done,
            idle_since: None,
            // Whatever ran before the purger started is as good as a burst.
            dirty: initial.in_flight > 0,
        }
    }

    /// Records a sample; true means "purge now".
    fn observe(&mut self, now: Instant, activity: Activity) -> bool {
        if activity.work_done != self.last_work {
            self.last_work = activity.work_done;
            self.dirty = true;
            self.idle_since = None;
        }
        if activity.in_flight > 0 {
            self.dirty = true;
            self.idle_since = None;
            return false;
        }
        let idle_since = *self.idle_since.get_or_insert(now);
        if self.dirty && now.saturating_duration_since(idle_since) >= self.idle_after {
            self.dirty = false;
            return true;
        }
        false
    }
}

/// Starts a task that purges jemalloc once the server has gone idle after
/// work, with the default timing (sample every 500 ms, idle for 1 s).
/// `probe` must be cheap; it runs on a runtime thread every interval. Must be
/// called inside a tokio runtime.
pub fn spawn_idle_purger<F>(probe: F) -> JoinHandle<()>
where
    F: Fn() -> Activity + Send + 'static,
{
    spawn_idle_purger_with(IdlePurgeConfig::default(), probe)
}

/// [`spawn_idle_purger`] with explicit timing.
pub fn spawn_idle_purger_with<F>(config: IdlePurgeConfig, probe: F) -> JoinHandle<()>
where
    F: Fn() -> Activity + Send + 'static,
{
    spawn_idle_loop(config, probe, purge_and_log)
}

fn purge_and_log() {
    let before = stats();
    let started = Instant::now();
    match purge() {
        Ok(()) => {
            let after = stats();
            tracing::debug!(
                resident_before = before.map(|s| s.resident),
                resident_after = after.map(|s| s.resident),
                took_us = started.elapsed().as_micros() as u64,
                "jemalloc purged after idle"
            );
        }
        Err(error) => tracing::warn!(%error, "jemalloc purge failed"),
    }
}

fn spawn_idle_loop<F, P>(config: IdlePurgeConfig, probe: F, action: P) -> JoinHandle<()>
where
    F: Fn() -> Activity + Send + 'static,
    P: Fn() + Send + Sync + 'static,
{
    let action = Arc::new(action);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(config.interval);
        // After a stall, one late sample is enough; a burst of catch-up ticks
        // would only repeat it.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tracker = IdleTracker::new(config.idle_after, probe());
        loop {
            ticker.tick().await;
            if tracker.observe(Instant::now(), probe()) {
                let action = Arc::clone(&action);
                if let Err(error) = tokio::task::spawn_blocking(move || action()).await {
                    tracing::warn!(%error, "idle purge task failed");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    const MIB: u64 = 1 << 20;

    /// Reads a number from /proc/self/status, for an outside view of RSS.
    fn vm_rss() -> u64 {
        super::super::cgroup::proc_self_status_rss()
            .map(|(rss, _)| rss)
            .unwrap_or(0)
    }

    #[test]
    fn config_takes_effect() {
        let config = config().expect("jemalloc answers mallctl");
        eprintln!("jemalloc config: {config:?}");
        assert_eq!(
            config.malloc_conf_symbol.as_deref(),
            Some(MALLOC_CONF.to_str().unwrap()),
            "jemalloc did not see _rjem_malloc_conf"
        );
        assert!(config.background_thread);
        // 10000 is jemalloc's default; 1000 can only come from our string.
        assert_eq!(config.dirty_decay_ms, 1000);
        assert_eq!(config.muzzy_decay_ms, 0);
    }

    #[test]
    fn purge_returns_freed_memory() {
        const CHUNK: usize = 4 << 20;
        const CHUNKS: usize = 50;
        let before = stats().unwrap();
        // Non-zero fill so every page is touched and really resident.
        let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| vec![(i as u8) | 1; CHUNK]).collect();
        std::hint::black_box(&chunks);
        let loaded = stats().unwrap();
        let rss_loaded = vm_rss();
        assert!(
            loaded.allocated >= before.allocated + 190 * MIB,
            "the test binary is not allocating through jemalloc: {before:?} -> {loaded:?}"
        );
        drop(chunks);
        let freed = stats().unwrap();
        purge().unwrap();
        let purged = stats().unwrap();
        let rss_purged = vm_rss();
        eprintln!(
            "resident MiB: loaded {} freed {} purged {}; VmRSS MiB: loaded {} purged {}",
            loaded.resident / MIB,
            freed.resident / MIB,
            purged.resident / MIB,
            rss_loaded / MIB,
            rss_purged / MIB
        );
        assert!(
            loaded.resident.saturating_sub(purged.resident) > 150 * MIB,
            "{loaded:?} -> {purged:?}"
        );
        assert!(rss_loaded.saturating_sub(rss_purged) > 150 * MIB);
    }

    #[test]
    fn stats_are_consistent() {
        let s = stats().unwrap();
        assert!(s.allocated > 0);
        assert!(s.active >= s.allocated);
        assert!(s.mapped >= s.active);
        assert!(s.resident >= s.active);
        assert!(s.metadata > 0);
    }

    fn sample(in_flight: usize, work_done: u64) -> Activity {
        Activity {
            in_flight,
            work_done,
        }
    }

    #[test]
    fn tracker_purges_once_per_burst() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut tracker = IdleTracker::new(Duration::from_secs(1), sample(0, 0));
        // Idle from the start: nothing to give back.
        assert!(!tracker.observe(at(0), sample(0, 0)));
        assert!(!tracker.observe(at(5000), sample(0, 0)));
        // Busy: never purge, however long.
        assert!(!tracker.observe(at(5500), sample(2, 3)));
        assert!(!tracker.observe(at(9000), sample(1, 4)));
        // Idle, but not for long enough yet.
        assert!(!tracker.observe(at(9500), sample(0, 4)));
        assert!(!tracker.observe(at(10000), sample(0, 4)));
        assert!(tracker.observe(at(10500), sample(0, 4)));
        // Once only.
        assert!(!tracker.observe(at(11000), sample(0, 4)));
        assert!(!tracker.observe(at(60000), sample(0, 4)));
        // A short request that started and finished between samples still
        // counts as work.
        assert!(!tracker.observe(at(60500), sample(0, 5)));
        assert!(!tracker.observe(at(61000), sample(0, 5)));
        assert!(tracker.observe(at(61500), sample(0, 5)));
    }

    #[test]
    fn tracker_idle_timer_restarts_on_work() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut tracker = IdleTracker::new(Duration::from_secs(1), sample(1, 0));
        assert!(!tracker.observe(at(0), sample(0, 0)));
        assert!(!tracker.observe(at(900), sample(0, 1)));
        assert!(!tracker.observe(at(1500), sample(0, 1)));
        assert!(tracker.observe(at(1900), sample(0, 1)));
    }

    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn idle_loop_purges_once_after_work() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let work_done = Arc::new(AtomicU64::new(0));
        let purges = Arc::new(AtomicUsize::new(0));
        let probe = {
            let (in_flight, work_done) = (Arc::clone(&in_flight), Arc::clone(&work_done));
            move || Activity {
                in_flight: in_flight.load(Ordering::SeqCst),
                work_done: work_done.load(Ordering::SeqCst),
            }
        };
        let counter = Arc::clone(&purges);
        let config = IdlePurgeConfig {
            interval: Duration::from_millis(10),
            idle_after: Duration::from_millis(50),
        };
        let task = spawn_idle_loop(config, probe, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let settle = Duration::from_millis(200);

        tokio::time::sleep(settle).await;
        assert_eq!(purges.load(Ordering::SeqCst), 0, "purged with no work");

        in_flight.store(1, Ordering::SeqCst);
        work_done.store(1, Ordering::SeqCst);
        tokio::time::sleep(settle).await;
        assert_eq!(purges.load(Ordering::SeqCst), 0, "purged while busy");

        in_flight.store(0, Ordering::SeqCst);
        wait_for("first purge", || purges.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(settle).await;
        assert_eq!(purges.load(Ordering::SeqCst), 1, "purged again while idle");

        work_done.store(2, Ordering::SeqCst);
        wait_for("second purge", || purges.load(Ordering::SeqCst) == 2).await;

        task.abort();
    }

    #[tokio::test]
    async fn idle_purger_runs_real_purge() {
        let work_done = Arc::new(AtomicU64::new(0));
        let probe = {
            let work_done = Arc::clone(&work_done);
            move || Activity {
                in_flight: 0,
                work_done: work_done.load(Ordering::SeqCst),
            }
        };
        let config = IdlePurgeConfig {
            interval: Duration::from_millis(10),
            idle_after: Duration::from_millis(20),
        };
        let task = spawn_idle_purger_with(config, probe);
        work_done.store(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!task.is_finished(), "the purger loop must keep running");
        task.abort();
    }
}
