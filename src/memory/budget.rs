//! Admission control: a request reserves the bytes it may need before it
//! starts, out of one budget sized by [`plan`], and waits in a bounded FIFO
//! queue while the budget is spent. It must not measure memory or guess request
//! sizes — callers say how many bytes they will hold, and this only counts
//! them, which is why the budget is sized with headroom below the real limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::HumanBytes;

/// Semaphore permits are KiB so `acquire_many_owned(u32)` covers budgets up to
/// 4 TiB; requests round up, so the semaphore never admits more than the
/// budget.
const PERMIT_BYTES: u64 = 1024;

/// What a [`Budget`] is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Bytes all reservations together may hold.
    pub total_bytes: u64,
    /// Requests that may wait for memory at once; more are turned away at once.
    pub max_queue: usize,
    /// How long one request waits before it is turned away.
    pub queue_timeout: Duration,
}

/// A snapshot for metrics and health endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BudgetStats {
    pub total_bytes: u64,
    /// Bytes held by live reservations, as requested (not rounded to KiB).
    pub reserved_bytes: u64,
    /// Live reservations.
    pub in_flight: usize,
    /// Requests waiting for memory now.
    pub queued: usize,
    /// Largest `reserved_bytes` seen.
    pub peak_reserved: u64,
    /// Requests turned away because the budget was spent (queue full, wait
    /// timed out, or no room for a try-only reservation or growth).
    pub rejections_busy: u64,
    /// Requests turned away because they exceed the whole budget.
    pub rejections_too_large: u64,
    /// Reservations granted since start.
    pub admitted: u64,
}

/// Why a reservation was refused. The messages are meant for the MCP client's
/// user, so each says what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error(
        "server busy: memory budget in use by {in_flight} requests and the wait queue \
         ({max_queue}) is full; retry in {} s",
        whole_seconds(.retry_after)
    )]
    QueueFull {
        in_flight: usize,
        max_queue: usize,
        retry_after: Duration,
    },
    #[error(
        "server busy: waited {} s for memory; retry in {} s",
        rounded_seconds(.waited),
        whole_seconds(.retry_after)
    )]
    Timeout {
        waited: Duration,
        retry_after: Duration,
    },
    /// The budget had no room and the caller asked not to wait.
    #[error(
        "server busy: memory budget is fully reserved by {in_flight} requests; retry in {} s",
        whole_seconds(.retry_after)
    )]
    Exhausted {
        in_flight: usize,
        retry_after: Duration,
    },
    #[error(
        "request needs {} but the whole memory budget is {}; raise --memory-limit or lower \
         --block-size",
        HumanBytes(*.requested),
        HumanBytes(*.total)
    )]
    TooLarge { requested: u64, total: u64 },
}

impl Busy {
    /// When to try again, for a `Retry-After` header; None when retrying
    /// cannot help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Busy::QueueFull { retry_after, .. }
            | Busy::Timeout { retry_after, .. }
            | Busy::Exhausted { retry_after, .. } => Some(*retry_after),
            Busy::TooLarge { .. } => None,
        }
    }
}

fn whole_seconds(duration: &Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn rounded_seconds(duration: &Duration) -> u64 {
    (duration.as_millis().saturating_add(500) / 1000) as u64
}

/// A shared byte budget; clones share it.
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BudgetConfig,
    semaphore: Arc<Semaphore>,
    total_permits: u64,
    reserved_bytes: AtomicU64,
    peak_reserved: AtomicU64,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    rejections_busy: AtomicU64,
    rejections_too_large: AtomicU64,
    admitted: AtomicU64,
    /// Moving average of how long reservations are held, in ms; 0 until the
    /// first one ends.
    hold_avg_ms: AtomicU64,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Self {
        let max_permits = Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u64;
        let total_permits = (config.total_bytes / PERMIT_BYTES).min(max_permits);
        Budget {
            inner: Arc::new(Inner {
                config,
                semaphore: Arc::new(Semaphore::new(total_permits as usize)),
                total_permits,
                reserved_bytes: AtomicU64::new(0),
                peak_reserved: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                rejections_busy: AtomicU64::new(0),
                rejections_too_large: AtomicU64::new(0),
                admitted: AtomicU64::new(0),
                hold_avg_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Reserves `bytes`, waiting in FIFO order behind earlier requests for at
    /// most `queue_timeout`. `what` names the request in logs. Dropping the
    /// returned future gives up the place in the queue.
    pub async fn reserve(&self, bytes: u64, what: &'static str) -> Result<Reservation, Busy> {
        let inner = &self.inner;
        let permits = inner.permits_for(bytes)?;
        // A free permit implies nobody is queued (tokio hands released permits
        // to waiters first), so this fast path cannot overtake anyone.
        if let Ok(permit) = Arc::clone(&inner.semaphore).try_acquire_many_owned(permits) {
            return Ok(self.admit(permit, bytes));
        }
        let Some(slot) = QueueSlot::enter(inner) else {
            inner.rejections_busy.fetch_add(1, Ordering::Relaxed);
            let busy = Busy::QueueFull {
                in_flight: inner.in_flight.load(Ordering::Relaxed),
                max_queue: inner.config.max_queue,
                retry_after: inner.retry_after(),
            };
            tracing::debug!(what, bytes, %busy, "memory budget: rejected");
            return Err(busy);
        };
        tracing::debug!(what, bytes, "memory budget: waiting");
        let started = Instant::now();
        let acquire = Arc::clone(&inner.semaphore).acquire_many_owned(permits);
        let outcome = tokio::time::timeout(inner.config.queue_timeout, acquire).await;
        let retry_after = inner.retry_after();
        drop(slot);
        match outcome {
            Ok(Ok(permit)) => Ok(self.admit(permit, bytes)),
            // The semaphore is never closed; treat it as busy rather than panic.
            Ok(Err(_closed)) => Err(inner.exhausted()),
            Err(_elapsed) => {
                inner.rejections_busy.fetch_add(1, Ordering::Relaxed);
                let busy = Busy::Timeout {
                    waited: started.elapsed(),
                    retry_after,
                };
                tracing::debug!(what, bytes, %busy, "memory budget: rejected");
                Err(busy)
            }
        }
    }

    /// Reserves `bytes`, waiting in FIFO order for at most `wait`, past
    /// the queue's length cap: for callers whose number is bounded
    /// elsewhere (tasks).
    pub async fn reserve_patient(
        &self,
        bytes: u64,
        what: &'static str,
        wait: Duration,
    ) -> Result<Reservation, Busy> {
        let inner = &self.inner;
        let permits = inner.permits_for(bytes)?;
        if let Ok(permit) = Arc::clone(&inner.semaphore).try_acquire_many_owned(permits) {
            return Ok(self.admit(permit, bytes));
        }
        inner.queued.fetch_add(1, Ordering::AcqRel);
        let slot = QueueSlot {
            queued: &inner.queued,
        };
        tracing::debug!(what, bytes, "memory budget: waiting (patient)");
        let started = Instant::now();
        let acquire = Arc::clone(&inner.semaphore).acquire_many_owned(permits);
        let outcome = tokio::time::timeout(wait, acquire).await;
        let retry_after = inner.retry_after();
        drop(slot);
        match outcome {
            Ok(Ok(permit)) => Ok(self.admit(permit, bytes)),
            Ok(Err(_closed)) => Err(inner.exhausted()),
            Err(_elapsed) => {
                inner.rejections_busy.fetch_add(1, Ordering::Relaxed);
                Err(Busy::Timeout {
                    waited: started.elapsed(),
                    retry_after,
                })
            }
        }
    }

    /// Reserves `bytes` only if they are free now.
    pub fn try_reserve(&self, bytes: u64) -> Result<Reservation, Busy> {
        let permits = self.inner.permits_for(bytes)?;
        match Arc::clone(&self.inner.semaphore).try_acquire_many_owned(permits) {
            Ok(permit) => Ok(self.admit(permit, bytes)),
            Err(_) => Err(self.inner.exhausted()),
        }
    }

    pub fn stats(&self) -> BudgetStats {
        let inner = &self.inner;
        BudgetStats {
            total_bytes: inner.config.total_bytes,
            reserved_bytes: inner.reserved_bytes.load(Ordering::Relaxed),
            in_flight: inner.in_flight.load(Ordering::Relaxed),
            queued: inner.queued.load(Ordering::Relaxed),
            peak_reserved: inner.peak_reserved.load(Ordering::Relaxed),
            rejections_busy: inner.rejections_busy.load(Ordering::Relaxed),
            rejections_too_large: inner.rejections_too_large.load(Ordering::Relaxed),
            admitted: inner.admitted.load(Ordering::Relaxed),
        }
    }

    pub fn config(&self) -> BudgetConfig {
        self.inner.config
    }

    fn admit(&self, permit: OwnedSemaphorePermit, bytes: u64) -> Reservation {
        let inner = &self.inner;
        inner.in_flight.fetch_add(1, Ordering::Relaxed);
        inner.admitted.fetch_add(1, Ordering::Relaxed);
        inner.add_reserved(bytes);
        Reservation {
            inner: Arc::clone(inner),
            permit,
            bytes,
            since: Instant::now(),
        }
    }
}

impl Inner {
    fn permits_for(&self, bytes: u64) -> Result<u32, Busy> {
        let permits = bytes.div_ceil(PERMIT_BYTES);
        if permits > self.total_permits {
            self.rejections_too_large.fetch_add(1, Ordering::Relaxed);
            return Err(Busy::TooLarge {
                requested: bytes,
                total: self.config.total_bytes,
            });
        }
        // total_permits fits in u32 by construction.
        Ok(u32::try_from(permits).unwrap_or(u32::MAX))
    }

    fn add_reserved(&self, bytes: u64) {
        let now = self.reserved_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_reserved.fetch_max(now, Ordering::Relaxed);
    }

    fn exhausted(&self) -> Busy {
        self.rejections_busy.fetch_add(1, Ordering::Relaxed);
        Busy::Exhausted {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            retry_after: self.retry_after(),
        }
    }

    /// A hint, not a promise: the time for the queue ahead plus this request to
    /// get through, assuming reservations keep being held about as long as
    /// they have been (a moving average) and `in_flight` of them finish per
    /// such period. Before any reservation has ended there is no history, so
    /// half the queue timeout is used. Clamped to 1 s..=queue timeout and
    /// rounded up to whole seconds, as `Retry-After` carries seconds.
    fn retry_after(&self) -> Duration {
        let floor = Duration::from_secs(1);
        let ceiling = self.config.queue_timeout.max(floor);
        let average_ms = self.hold_avg_ms.load(Ordering::Relaxed);
        let estimate = if average_ms == 0 {
            self.config.queue_timeout / 2
        } else {
            let draining = self.in_flight.load(Ordering::Relaxed).max(1) as u64;
            let ahead = self.queued.load(Ordering::Relaxed) as u64 + 1;
            Duration::from_millis(average_ms.saturating_mul(ahead.div_ceil(draining)))
        };
        let clamped = estimate.clamp(floor, ceiling);
        Duration::from_secs(whole_seconds(&clamped))
    }

    fn record_hold(&self, held: Duration) {
        let sample = u64::try_from(held.as_millis()).unwrap_or(u64::MAX).max(1);
        // Weight 1/8: follows a change of workload within a few dozen requests
        // without one slow request swinging the estimate.
        let _ = self
            .hold_avg_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    (old.saturating_mul(7).saturating_add(sample) / 8).max(1)
                })
            });
    }
}

/// A place in the wait queue; leaving it (also by cancellation) frees it.
struct QueueSlot<'a> {
    queued: &'a AtomicUsize,
}

impl<'a> QueueSlot<'a> {
    fn enter(inner: &'a Inner) -> Option<Self> {
        let max = inner.config.max_queue;
        inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max).then_some(queued + 1)
            })
            .ok()?;
        Some(QueueSlot {
            queued: &inner.queued,
        })
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes held from the budget; dropping it gives them back.
#[derive(Debug)]
pub struct Reservation {
    inner: Arc<Inner>,
    permit: OwnedSemaphorePermit,
    bytes: u64,
    since: Instant,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `extra` bytes without waiting, e.g. when an input turns out larger
    /// than announced. Not waiting matters: a request that holds memory and
    /// waits for more can deadlock with others doing the same.
    pub fn grow(&mut self, extra: u64) -> Result<(), Busy> {
        let inner = &self.inner;
        let Some(new_bytes) = self.bytes.checked_add(extra) else {
            inner.rejections_too_large.fetch_add(1, Ordering::Relaxed);
            return Err(Busy::TooLarge {
                requested: u64::MAX,
                total: inner.config.total_bytes,
            });
        };
        let new_permits = inner.permits_for(new_bytes)?;
        let held = u32::try_from(self.permit.num_permits()).unwrap_or(u32::MAX);
        let missing = new_permits.saturating_sub(held);
        if missing > 0 {
            match Arc::clone(&inner.semaphore).try_acquire_many_owned(missing) {
                Ok(more) => self.permit.merge(more),
                Err(_) => return Err(inner.exhausted()),
            }
        }
        inner.add_reserved(extra);
        self.bytes = new_bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Counters drop before the permit (a field, dropped after this body)
        // goes back, so the next request admitted never sees them overlap.
        self.inner
            .reserved_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.inner.record_hold(self.since.elapsed());
    }
}

/// How the memory limit is split, for the startup log and for sizing the
/// [`Budget`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub limit: u64,
    /// RSS before serving anything (runtime, TLS, code).
    pub baseline: u64,
    /// Bytes the plan hands out; split into the parts below.
    pub budget: u64,
    /// What Gemini may send ahead over HTTP/2 and the server holds unread:
    /// the connection's receive window (`h2_streams` stream windows). 0
    /// when the base URL is plain HTTP (HTTP/1.1 leaves unread bytes in
    /// the socket).
    pub gemini_windows: u64,
    /// The stream window those windows are made of (0 without HTTP/2).
    pub h2_stream_window: u64,
    /// Request bodies and their parsed form (HTTP), reserved per request.
    pub bodies: u64,
    /// Open HTTP connections: a cap times a measured constant.
    pub connections: u64,
    /// Live HTTP MCP sessions: a cap times a measured constant.
    pub sessions: u64,
    /// Calls in progress that are not streaming image bytes (waiting for
    /// Gemini, sending an edit's inputs), reserved per call.
    pub calls: u64,
    /// What the image path may reserve: calls whose response is streaming.
    pub images: u64,
    /// Bytes one streaming response reserves from `images`.
    pub per_request: u64,
    /// Bytes one waiting call reserves from `calls`.
    pub per_call: u64,
    /// Responses that stream side by side; 0 means the limit is too small
    /// to serve even one, which the caller reports instead of starting.
    pub max_concurrent: u64,
    /// Calls that can wait for Gemini at once.
    pub max_waiting: u64,
    /// Request bodies and waiting calls draw on one pool (`calls`, which
    /// `bodies` then equals): stateless HTTP on the direct path, where a
    /// call gives its body's payment back before it waits for Gemini.
    pub pooled: bool,
}

impl Plan {
    pub fn is_viable(&self) -> bool {
        self.max_concurrent > 0 && self.max_waiting > 0
    }
}

/// What the process serves, so the plan gives nothing to a part that
/// cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// One client over stdin/stdout: no connections, bodies or sessions.
    Stdio,
    /// HTTP, with MCP sessions unless `sessions` is false (stateless).
    Http { sessions: bool },
    /// Stateless HTTP whose image calls are served on the direct path
    /// (`transport::direct`): a call's body is paid for, parsed, and its
    /// payment given back before the call reserves anything else, so
    /// bodies and waiting calls can share one pool without a call ever
    /// holding one part of it while it waits for another. A waiting call
    /// holds one connection (`per_connection`) and one call reservation.
    StatelessDirect { per_connection: u64 },
}

/// Shares of the budget. Over HTTP, waiting calls far outnumber streaming
/// ones (a call waits 10-30 s for Gemini and streams for well under one),
/// so waiting calls and their connections get a large part and the image
/// path a smaller one than over stdio. Stateless HTTP through rmcp
/// (`--direct-calls=false`) keeps no sessions, and every waiting call
/// holds one connection and one call reservation, so connections and
/// calls get fixed shares; on the direct path (the default) they are
/// sized as pairs instead (`Edge::StatelessDirect`). Over stdio there is one client: the
/// image path keeps the share it has always had, waiting calls get a
/// small part, and the rest is headroom.
pub const BODY_SHARE: f64 = 0.20;
pub const CONNECTION_SHARE: f64 = 0.15;
pub const SESSION_SHARE: f64 = 0.10;
pub const CALL_SHARE: f64 = 0.20;
pub const STATELESS_CONNECTION_SHARE: f64 = 0.22;
pub const STATELESS_CALL_SHARE: f64 = 0.28;
pub const STDIO_IMAGE_SHARE: f64 = 0.55;
/// Stateless HTTP on the direct path: the image path's share, rounded
/// down to whole responses; the rest is (connection, call) pairs.
pub const STATELESS_IMAGE_SHARE: f64 = 0.30;
pub const STDIO_CALL_SHARE: f64 = 0.10;
/// Gemini over HTTP/2: the share of the budget its receive windows get,
/// as `H2Windows::streams` stream windows of 64 to 256 KiB each. A small
/// pod gets small windows (64 KiB a round trip: ~6 MB/s per stream at
/// 10 ms) rather than windows it cannot pay for.
pub const H2_WINDOW_SHARE: f64 = 0.07;
pub const H2_MIN_STREAM_WINDOW: u64 = 64 << 10;

/// Gemini over HTTP/2, for [`plan`]: how many streams one connection
/// carries and the largest window worth giving one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Windows {
    pub streams: u64,
    pub max_stream_window: u64,
}

fn share(bytes: u64, fraction: f64) -> u64 {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    // `as` saturates and floors, and the min guards against rounding up past
    // what is actually there.
    ((bytes as f64 * fraction) as u64).min(bytes)
}

/// Splits `limit`: `budget = (limit - baseline_rss) * fraction`. The rest,
/// `1 - fraction` of what is above the baseline, is headroom for what the
/// budget does not count: the async runtime, TLS buffers, and allocator
/// slack (fragmentation, dirty pages not yet returned). With `h2` (Gemini
/// over HTTP/2), its receive windows are paid for first. Of the rest,
/// fixed shares go to request bodies, connections and sessions (each
/// bounded by its own cap) and to waiting calls; the image path gets the
/// rest. `fraction` is clamped to 0..=1 (NaN counts as 0). A `per_request`
/// or `per_call` of 0 is a caller error and yields a plan that is not viable.
pub fn plan(
    limit: u64,
    baseline_rss: u64,
    fraction: f64,
    per_request: u64,
    per_call: u64,
    edge: Edge,
    h2: Option<H2Windows>,
) -> Plan {
    let above_baseline = limit.saturating_sub(baseline_rss);
    let whole = share(above_baseline, fraction);
    let (h2_stream_window, gemini_windows) = match h2 {
        Some(h) if h.streams > 0 => {
            let window = (share(whole, H2_WINDOW_SHARE) / h.streams).clamp(
                H2_MIN_STREAM_WINDOW,
                h.max_stream_window.max(H2_MIN_STREAM_WINDOW),
            ) & !1023;
            (window, window.saturating_mul(h.streams).min(whole))
        }
        _ => (0, 0),
    };
    // What is left once the windows are paid for is split below.
    let budget = whole - gemini_windows;
    let pooled = matches!(edge, Edge::StatelessDirect { .. });
    let (bodies, connections, sessions, calls, images) = match edge {
        Edge::StatelessDirect { per_connection } => {
            // Whole responses only: what a share leaves over is worth more
            // to waiting calls than to a fraction of a response.
            let streams = share(budget, STATELESS_IMAGE_SHARE)
                .checked_div(per_request)
                .unwrap_or(0);
            let images = streams.saturating_mul(per_request).min(budget);
            let rest = budget - images;
            let pairs = rest
                .checked_div(per_connection.saturating_add(per_call))
                .unwrap_or(0);
            let connections = pairs.saturating_mul(per_connection).min(rest);
            let calls = rest - connections;
            (calls, connections, 0, calls, images)
        }
        Edge::Stdio => (
            0,
            0,
            0,
            share(budget, STDIO_CALL_SHARE),
            share(budget, STDIO_IMAGE_SHARE),
        ),
        Edge::Http { sessions } => {
            let bodies = share(budget, BODY_SHARE);
            let (connections, sessions, calls) = if sessions {
                (
                    share(budget, CONNECTION_SHARE),
                    share(budget, SESSION_SHARE),
                    share(budget, CALL_SHARE),
                )
            } else {
                (
                    share(budget, STATELESS_CONNECTION_SHARE),
                    0,
                    share(budget, STATELESS_CALL_SHARE),
                )
            };
            let images = budget - bodies - connections - sessions - calls;
            (bodies, connections, sessions, calls, images)
        }
    };
    Plan {
        limit,
        baseline: baseline_rss,
        budget: whole,
        gemini_windows,
        h2_stream_window,
        bodies,
        connections,
        sessions,
        calls,
        images,
        per_request,
        per_call,
        max_concurrent: images.checked_div(per_request).unwrap_or(0),
        max_waiting: calls.checked_div(per_call).unwrap_or(0),
        pooled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn budget(total_bytes: u64, max_queue: usize, queue_timeout: Duration) -> Budget {
        Budget::new(BudgetConfig {
            total_bytes,
            max_queue,
            queue_timeout,
        })
    }

    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn seventeenth_waits_until_one_drops() {
        let b = budget(16 * MIB, 4, Duration::from_secs(30));
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(b.reserve(MIB, "test").await.unwrap());
        }
        assert_eq!(b.stats().reserved_bytes, 16 * MIB);
        assert!(matches!(
            b.try_reserve(1),
            Err(Busy::Exhausted { in_flight: 16, .. })
        ));

        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(MIB, "seventeenth").await })
        };
        wait_for("the 17th to queue", || b.stats().queued == 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());

        drop(held.pop());
        let seventeenth = waiter.await.unwrap().unwrap();
        assert_eq!(seventeenth.bytes(), MIB);
        let stats = b.stats();
        assert_eq!((stats.in_flight, stats.queued), (16, 0));
        assert_eq!(stats.admitted, 17);
        assert_eq!(stats.reserved_bytes, 16 * MIB);
    }

    #[tokio::test]
    async fn queue_full_rejects_immediately() {
        let b = budget(4 * MIB, 1, Duration::from_secs(30));
        let _all = b.reserve(4 * MIB, "test").await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(MIB, "queued").await })
        };
        wait_for("one queued", || b.stats().queued == 1).await;

        let started = Instant::now();
        let err = b.reserve(MIB, "third").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(matches!(
            err,
            Busy::QueueFull {
                in_flight: 1,
                max_queue: 1,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "server busy: memory budget in use by 1 requests and the wait queue (1) is full; \
             retry in 15 s"
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(15)));
        assert_eq!(b.stats().rejections_busy, 1);
        waiter.abort();
    }

    #[tokio::test]
    async fn zero_queue_never_waits() {
        let b = budget(MIB, 0, Duration::from_secs(30));
        let _all = b.reserve(MIB, "test").await.unwrap();
        assert!(matches!(
            b.reserve(1, "next").await,
            Err(Busy::QueueFull { max_queue: 0, .. })
        ));
    }

    #[tokio::test]
    async fn wait_times_out() {
        let b = budget(MIB, 8, Duration::from_millis(50));
        let _all = b.reserve(MIB, "test").await.unwrap();
        let started = Instant::now();
        let err = b.reserve(MIB, "late").await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(50));
        let Busy::Timeout {
            waited,
            retry_after,
        } = err
        else {
            panic!("expected Timeout, got {err:?}");
        };
        assert!(waited >= Duration::from_millis(50));
        // Clamped up to the 1 s floor.
        assert_eq!(retry_after, Duration::from_secs(1));
        assert_eq!(
            err.to_string(),
            "server busy: waited 0 s for memory; retry in 1 s"
        );
        let stats = b.stats();
        assert_eq!((stats.queued, stats.rejections_busy), (0, 1));
    }

    #[test]
    fn messages_read_well() {
        let timeout = Busy::Timeout {
            waited: Duration::from_millis(30_200),
            retry_after: Duration::from_secs(10),
        };
        assert_eq!(
            timeout.to_string(),
            "server busy: waited 30 s for memory; retry in 10 s"
        );
        let exhausted = Busy::Exhausted {
            in_flight: 3,
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(
            exhausted.to_string(),
            "server busy: memory budget is fully reserved by 3 requests; retry in 2 s"
        );
    }

    #[tokio::test]
    async fn too_large_is_refused_without_waiting() {
        let b = budget(32 * MIB, 4, Duration::from_secs(30));
        let err = b.reserve(40 * MIB, "huge").await.unwrap_err();
        assert_eq!(
            err,
            Busy::TooLarge {
                requested: 40 * MIB,
                total: 32 * MIB
            }
        );
        assert_eq!(
            err.to_string(),
            "request needs 40 MiB but the whole memory budget is 32 MiB; raise --memory-limit \
             or lower --block-size"
        );
        assert_eq!(err.retry_after(), None);
        assert!(b.try_reserve(32 * MIB + 1).is_err());
        // Exactly the budget fits.
        drop(b.try_reserve(32 * MIB).unwrap());
        let stats = b.stats();
        assert_eq!((stats.rejections_too_large, stats.rejections_busy), (2, 0));
    }

    #[test]
    fn requests_round_up_to_kib() {
        let b = budget(4 * 1024, 0, Duration::from_secs(1));
        let held: Vec<_> = (0..4).map(|_| b.try_reserve(1).unwrap()).collect();
        assert!(matches!(b.try_reserve(1), Err(Busy::Exhausted { .. })));
        assert_eq!(b.stats().reserved_bytes, 4);
        drop(held);
        // Zero bytes is a valid (free) reservation.
        assert_eq!(b.try_reserve(0).unwrap().bytes(), 0);
        // A budget under 1 KiB admits nothing but empty requests.
        let tiny = budget(1000, 0, Duration::from_secs(1));
        assert!(matches!(tiny.try_reserve(1), Err(Busy::TooLarge { .. })));
    }

    #[test]
    fn stats_and_drop_release() {
        let b = budget(10 * MIB, 2, Duration::from_secs(5));
        let r1 = b.try_reserve(3 * MIB + 5).unwrap();
        let r2 = b.try_reserve(2 * MIB).unwrap();
        let stats = b.stats();
        assert_eq!(stats.total_bytes, 10 * MIB);
        assert_eq!(stats.reserved_bytes, 5 * MIB + 5);
        assert_eq!(stats.in_flight, 2);
        assert_eq!(stats.admitted, 2);
        drop(r1);
        let stats = b.stats();
        assert_eq!((stats.reserved_bytes, stats.in_flight), (2 * MIB, 1));
        assert_eq!(stats.peak_reserved, 5 * MIB + 5);
        drop(r2);
        let stats = b.stats();
        assert_eq!(
            (stats.reserved_bytes, stats.in_flight, stats.queued),
            (0, 0, 0)
        );
        // Everything came back: the whole budget is free again.
        drop(b.try_reserve(10 * MIB).unwrap());
        assert_eq!(b.stats().admitted, 3);
        assert_eq!(b.stats().peak_reserved, 10 * MIB);
    }

    #[test]
    fn grow_takes_more_or_fails_without_waiting() {
        let b = budget(8 * MIB, 2, Duration::from_secs(5));
        let mut r = b.try_reserve(MIB).unwrap();
        r.grow(2 * MIB).unwrap();
        assert_eq!(r.bytes(), 3 * MIB);
        assert_eq!(b.stats().reserved_bytes, 3 * MIB);
        r.grow(0).unwrap();
        // Growth within the already-rounded KiB needs no new permits.
        let mut small = b.try_reserve(1).unwrap();
        small.grow(1023).unwrap();
        assert_eq!(small.bytes(), 1024);

        let other = b.try_reserve(4 * MIB).unwrap();
        assert!(matches!(r.grow(2 * MIB), Err(Busy::Exhausted { .. })));
        assert_eq!(r.bytes(), 3 * MIB);
        assert!(matches!(r.grow(6 * MIB), Err(Busy::TooLarge { .. })));
        assert!(matches!(r.grow(u64::MAX), Err(Busy::TooLarge { .. })));
        drop(other);
        r.grow(4 * MIB).unwrap();
        drop(small);
        drop(r);
        let stats = b.stats();
        assert_eq!((stats.reserved_bytes, stats.in_flight), (0, 0));
        // The grown permits came back too.
        drop(b.try_reserve(8 * MIB).unwrap());
    }

    #[tokio::test]
    async fn waiters_are_served_in_order() {
        let b = budget(4 * 1024, 4, Duration::from_secs(30));
        let all = b.try_reserve(4 * 1024).unwrap();
        let big = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(4 * 1024, "big").await })
        };
        wait_for("big to queue", || b.stats().queued == 1).await;
        let small = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(1024, "small").await })
        };
        wait_for("small to queue", || b.stats().queued == 2).await;
        drop(all);
        let big = big.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!small.is_finished(), "small overtook big");
        drop(big);
        assert_eq!(small.await.unwrap().unwrap().bytes(), 1024);
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_the_queue() {
        let b = budget(MIB, 1, Duration::from_secs(30));
        let all = b.try_reserve(MIB).unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(MIB, "gives up").await })
        };
        wait_for("queued", || b.stats().queued == 1).await;
        waiter.abort();
        wait_for("dequeued", || b.stats().queued == 0).await;
        drop(all);
        // The cancelled waiter holds nothing.
        drop(b.try_reserve(MIB).unwrap());
        assert_eq!(b.stats().admitted, 2);
    }

    #[test]
    fn retry_after_uses_hold_times() {
        let b = budget(MIB, 4, Duration::from_secs(60));
        // No history: half the queue timeout.
        assert_eq!(b.inner.retry_after(), Duration::from_secs(30));
        b.inner.hold_avg_ms.store(4_000, Ordering::Relaxed);
        // Nothing in flight and nobody queued: one period.
        assert_eq!(b.inner.retry_after(), Duration::from_secs(4));
        b.inner.in_flight.store(2, Ordering::Relaxed);
        b.inner.queued.store(3, Ordering::Relaxed);
        // 4 requests (3 queued + this one) through 2 slots: two periods.
        assert_eq!(b.inner.retry_after(), Duration::from_secs(8));
        b.inner.hold_avg_ms.store(120_000, Ordering::Relaxed);
        assert_eq!(b.inner.retry_after(), Duration::from_secs(60));
        b.inner.hold_avg_ms.store(10, Ordering::Relaxed);
        assert_eq!(b.inner.retry_after(), Duration::from_secs(1));
        b.inner.in_flight.store(0, Ordering::Relaxed);
        b.inner.queued.store(0, Ordering::Relaxed);

        b.inner.hold_avg_ms.store(0, Ordering::Relaxed);
        b.inner.record_hold(Duration::from_millis(800));
        assert_eq!(b.inner.hold_avg_ms.load(Ordering::Relaxed), 800);
        b.inner.record_hold(Duration::from_millis(1600));
        assert_eq!(b.inner.hold_avg_ms.load(Ordering::Relaxed), 900);
    }

    #[test]
    fn plan_splits_the_limit() {
        let http = Edge::Http { sessions: true };
        let p = plan(1024 * MIB, 24 * MIB, 0.5, 100 * MIB, MIB, http, None);
        assert_eq!(
            p,
            Plan {
                limit: 1024 * MIB,
                baseline: 24 * MIB,
                budget: 500 * MIB,
                gemini_windows: 0,
                h2_stream_window: 0,
                bodies: 100 * MIB,
                connections: 75 * MIB,
                sessions: 50 * MIB,
                calls: 100 * MIB,
                images: 175 * MIB,
                per_request: 100 * MIB,
                per_call: MIB,
                max_concurrent: 1,
                max_waiting: 100,
                pooled: false,
            }
        );
        assert!(p.is_viable());
        assert_eq!(
            p.bodies + p.connections + p.sessions + p.calls + p.images,
            p.budget
        );

        // Stateless: no sessions; connections and waiting calls share
        // what they left, in the ratio of their costs.
        let stateless = Edge::Http { sessions: false };
        let p = plan(1024 * MIB, 24 * MIB, 0.5, 100 * MIB, MIB, stateless, None);
        assert_eq!(
            (p.sessions, p.connections, p.calls, p.images),
            (0, 110 * MIB, 140 * MIB, 150 * MIB)
        );

        // Stateless on the direct path: whole responses (1 of 100 MiB in
        // 150), then (connection, call) pairs, bodies drawing on the
        // calls' pool.
        let direct = Edge::StatelessDirect {
            per_connection: MIB,
        };
        let p = plan(1024 * MIB, 24 * MIB, 0.5, 100 * MIB, MIB, direct, None);
        assert!(p.pooled && p.is_viable());
        assert_eq!(
            (p.sessions, p.images, p.connections, p.calls, p.bodies),
            (0, 100 * MIB, 200 * MIB, 200 * MIB, 200 * MIB)
        );
        assert_eq!(p.connections + p.calls + p.images, p.budget);
        assert_eq!((p.max_concurrent, p.max_waiting), (1, 200));
        // Too small for one response: not viable, and nothing divides by 0.
        let p = plan(1024 * MIB, 24 * MIB, 0.5, 200 * MIB, MIB, direct, None);
        assert_eq!((p.images, p.max_concurrent), (0, 0));
        assert!(!p.is_viable());
        let p = plan(
            1024 * MIB,
            24 * MIB,
            0.5,
            0,
            0,
            Edge::StatelessDirect { per_connection: 0 },
            None,
        );
        assert!(!p.is_viable());

        // Stdio: nothing for the edge; the image path keeps its old share.
        let p = plan(1024 * MIB, 24 * MIB, 0.5, 100 * MIB, MIB, Edge::Stdio, None);
        assert_eq!(
            (p.bodies, p.connections, p.sessions, p.calls, p.images),
            (0, 0, 0, 50 * MIB, 275 * MIB)
        );
        assert_eq!((p.max_concurrent, p.max_waiting), (2, 50));

        // Image share smaller than one request: not viable.
        let p = plan(256 * MIB, 56 * MIB, 0.5, 56 * MIB, MIB, Edge::Stdio, None);
        assert_eq!(
            (p.budget, p.images, p.max_concurrent),
            (100 * MIB, 55 * MIB, 0)
        );
        assert!(!p.is_viable());
        // Exactly one fits.
        let p = plan(256 * MIB, 56 * MIB, 0.5, 55 * MIB, MIB, Edge::Stdio, None);
        assert_eq!(p.max_concurrent, 1);
        // No room for one waiting call: not viable either.
        let p = plan(256 * MIB, 56 * MIB, 0.5, MIB, 20 * MIB, Edge::Stdio, None);
        assert!(!p.is_viable());

        // Gemini over HTTP/2: the windows are paid for first, 7 % of the
        // budget as 100 stream windows between 64 and 256 KiB.
        let h2 = Some(H2Windows {
            streams: 100,
            max_stream_window: 256 << 10,
        });
        let p = plan(1024 * MIB, 24 * MIB, 0.5, 100 * MIB, MIB, http, h2);
        assert_eq!(
            (p.h2_stream_window, p.gemini_windows),
            (256 << 10, 25 * MIB)
        );
        assert_eq!(
            p.bodies + p.connections + p.sessions + p.calls + p.images + p.gemini_windows,
            p.budget
        );
        // 7 % of a 128 MiB pod's ~89 MiB is 6.2 MiB: 63 KiB, so the floor.
        let p = plan(128 * MIB, 10 * MIB, 0.75, 9 * MIB, MIB, http, h2);
        assert_eq!(
            (p.h2_stream_window, p.gemini_windows),
            (64 << 10, 6400 << 10)
        );
        // In between, whole KiB: 7 % of 180 MiB over 100 streams.
        let p = plan(256 * MIB, 16 * MIB, 0.75, 9 * MIB, MIB, http, h2);
        assert_eq!(p.h2_stream_window, 129 << 10);
        // Baseline above the limit saturates to nothing.
        let p = plan(100 * MIB, 200 * MIB, 0.7, MIB, MIB, http, None);
        assert_eq!((p.budget, p.max_concurrent), (0, 0));

        // Fractions are clamped; NaN is 0.
        assert_eq!(
            plan(100 * MIB, 0, 1.5, MIB, MIB, http, None).budget,
            100 * MIB
        );
        assert_eq!(plan(100 * MIB, 0, -1.0, MIB, MIB, http, None).budget, 0);
        assert_eq!(plan(100 * MIB, 0, f64::NAN, MIB, MIB, http, None).budget, 0);
        assert_eq!(
            plan(u64::MAX, 0, 1.0, MIB, MIB, http, None).budget,
            u64::MAX
        );
        assert_eq!(
            plan(100 * MIB, 0, 0.5, 0, MIB, http, None).max_concurrent,
            0
        );
        assert_eq!(plan(100 * MIB, 0, 0.5, MIB, 0, http, None).max_waiting, 0);
    }
}
