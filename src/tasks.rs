//! Durable tasks (the MCP Tasks extension): a tool call that answers at
//! once with a task id and runs on in the background, with its state in a
//! record in the store (`store::tasks`) that any replica can read.
//!
//! Who writes what:
//! - the replica that accepts the call creates the record (`working`, it
//!   is the owner), runs the call, renews the record's heartbeat every
//!   `heartbeat` while it runs, and writes the final state (`completed`
//!   with the tool's result, `failed`, or `cancelled`);
//! - `tasks/cancel` on any replica sets `cancelRequested`; the owner sees
//!   it at its next heartbeat (at once when it is the same process), stops
//!   the call (the pipeline aborts the upload: nothing is stored) and
//!   writes `cancelled`;
//! - `tasks/get` on any replica that finds a `working` record whose
//!   heartbeat is older than `stale_after` writes `failed` (the owner
//!   died: SIGKILL, OOM, node loss). An owner that was only cut off finds
//!   its next heartbeat refused (the record is final), stops, and writes
//!   nothing.
//!
//! Every write is a compare-and-swap, so of two replicas deciding on one
//! record exactly one decision lands, and a final state is never written
//! over. Records live `ttl` from creation, then read as unknown and are
//! swept.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::store::tasks::{TASK_RECORD_VERSION, TaskId, TaskRecord, TaskState};
use crate::store::{Store, StoreError};

/// When a tool call becomes a task (only ever for a client that declared
/// the extension on the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskMode {
    /// Never: the extension is not advertised.
    Off,
    /// Calls that are likely to be slow (see `mcp`): 2K/4K, Pro, n > 1.
    Auto,
    /// Every image tool call.
    Always,
}

#[derive(Debug, Clone)]
pub struct TaskSettings {
    pub mode: TaskMode,
    /// How long a record is kept after the task was created.
    pub ttl: Duration,
    /// How often the owner renews a running task's record.
    pub heartbeat: Duration,
    /// A working record whose heartbeat is older than this lost its owner.
    pub stale_after: Duration,
    /// Tasks one replica runs (or waits to run) at once; more are refused.
    /// 0: 1.5 × the plan's waiting calls, at most 1000 (`app` fills it in).
    pub max_running: usize,
    /// Tasks that may be past admission at once (asking Gemini, streaming);
    /// the others wait, holding only their arguments. 0: a sixth of the
    /// waiting calls the memory plan admits (`app` fills it in), so tasks
    /// never take the plan from synchronous callers, and the moments when
    /// their responses start together stay inside the limit.
    pub max_admitted: usize,
    /// What clients are told to wait between polls.
    pub poll_interval: Duration,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            mode: TaskMode::Auto,
            ttl: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(5),
            stale_after: Duration::from_secs(20),
            max_running: 1000,
            max_admitted: 0,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// What a task's run ended with.
pub enum Finished {
    /// The tool's result (tool errors included: they are results).
    Result(Map<String, Value>),
    /// The call could not be answered at all (a JSON-RPC error).
    Error(Map<String, Value>),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "this server is running {0} tasks, its limit; try again in a minute or call without tasks"
    )]
    Full(usize),
    #[error("the task could not be recorded: {0}")]
    Store(#[from] StoreError),
}

/// Why a local task's token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Cancelled,
    Shutdown,
    /// Another replica made the record final (it judged this one dead).
    Lost,
}

struct Running {
    ct: CancellationToken,
    why: Option<Why>,
}

pub struct Tasks {
    store: Arc<Store>,
    owner: String,
    cfg: TaskSettings,
    running: Mutex<HashMap<TaskId, Running>>,
    slots: Arc<Semaphore>,
    /// `max_admitted` permits: a task's run starts only with one.
    turns: Arc<Semaphore>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A JSON-RPC error object, as a task's `error`.
pub fn rpc_error(code: i64, message: impl Into<String>) -> Map<String, Value> {
    let Value::Object(m) = json!({ "code": code, "message": message.into() }) else {
        unreachable!("an object literal")
    };
    m
}

impl Tasks {
    pub fn new(store: Arc<Store>, cfg: TaskSettings) -> Arc<Self> {
        let owner = format!("{:016x}", rand::random::<u64>());
        Arc::new(Self {
            store,
            owner,
            slots: Arc::new(Semaphore::new(cfg.max_running)),
            turns: Arc::new(Semaphore::new(cfg.max_admitted.max(1))),
            cfg,
            running: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &TaskSettings {
        &self.cfg
    }

    /// Tasks this process runs now.
    pub fn running(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Record a new task and start `run` in the background. `run` gets
    /// the token that stops it (a cancel, the shutdown, a lost record).
    pub async fn start<F, Fut>(
        self: &Arc<Self>,
        tool: &str,
        principal: Option<String>,
        run: F,
    ) -> Result<TaskRecord, StartError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Finished> + Send + 'static,
    {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| StartError::Full(self.cfg.max_running))?;
        let now = now_ms();
        let id = TaskId::new();
        let rec = TaskRecord {
            version: TASK_RECORD_VERSION,
            task_id: id.to_string(),
            rev: 0,
            tool: tool.to_string(),
            state: TaskState::Working,
            owner: self.owner.clone(),
            created_ms: now,
            updated_ms: now,
            heartbeat_ms: now,
            ttl_ms: self.cfg.ttl.as_millis() as u64,
            cancel_requested: false,
            status_message: Some("generating".into()),
            result: None,
            error: None,
            principal,
        };
        self.store.create_task(&rec).await?;
        let ct = CancellationToken::new();
        if let Ok(mut r) = self.running.lock() {
            r.insert(
                id.clone(),
                Running {
                    ct: ct.clone(),
                    why: None,
                },
            );
        }
        let fut = run(ct.clone());
        let me = Arc::clone(self);
        let turns = Arc::clone(&self.turns);
        tokio::spawn(async move {
            let _slot = slot;
            // Until its turn, a task holds its arguments and nothing else.
            let turn = tokio::select! {
                t = turns.acquire_owned() => t.ok(),
                () = ct.cancelled() => None,
            };
            let finished = match turn {
                Some(_turn) => fut.await,
                None => {
                    drop(fut);
                    Finished::Error(rpc_error(-32603, "stopped before it started"))
                }
            };
            me.finish(&id, finished).await;
        });
        Ok(rec)
    }

    /// Write a run's final state, unless the record is final already.
    async fn finish(&self, id: &TaskId, finished: Finished) {
        // The task stays in `running` until its record says how it ended,
        // so the drain (which waits for `running() == 0`) never exits
        // between the two.
        let why = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(id).and_then(|r| r.why));
        if why != Some(Why::Lost) {
            self.write_final(id, why, finished).await;
        }
        if let Ok(mut r) = self.running.lock() {
            r.remove(id);
        }
    }

    async fn write_final(&self, id: &TaskId, why: Option<Why>, finished: Finished) {
        let now = now_ms();
        let (state, result, error, message) = match (why, finished) {
            (Some(Why::Cancelled), _) => (TaskState::Cancelled, None, None, "cancelled"),
            (Some(Why::Shutdown), _) => (
                TaskState::Failed,
                None,
                Some(rpc_error(
                    -32603,
                    "the server shut down before the task finished; nothing was stored; call the tool again",
                )),
                "failed",
            ),
            (_, Finished::Result(r)) => (TaskState::Completed, Some(r), None, "completed"),
            (_, Finished::Error(e)) => (TaskState::Failed, None, Some(e), "failed"),
        };
        // A result that does not fit a record is the server's failure.
        let (state, result, error) = match &result {
            Some(r)
                if serde_json::to_vec(r).map_or(usize::MAX, |b| b.len())
                    > (crate::store::tasks::MAX_TASK_RECORD_BYTES as usize) - (16 << 10) =>
            {
                (
                    TaskState::Failed,
                    None,
                    Some(rpc_error(-32603, "the task's result is too large to keep")),
                )
            }
            _ => (state, result, error),
        };
        let written = self
            .store
            .update_task(id, true, |r| {
                if r.state.is_final() {
                    return false;
                }
                r.state = state;
                r.result = result.clone();
                r.error = error.clone();
                r.status_message = Some(message.into());
                r.updated_ms = now;
                true
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(task = %id, error = %e, "could not write the task's final state");
        }
    }

    /// The record as a reader should see it: `None` when unknown or past
    /// its TTL; a working record whose owner stopped renewing it is made
    /// `failed` first.
    pub async fn get(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let Some((rec, _)) = self.store.read_task(id).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if now > rec.created_ms.saturating_add(rec.ttl_ms) {
            return Ok(None);
        }
        if rec.state.is_final() || !self.is_stale(&rec, now) {
            return Ok(Some(rec));
        }
        let stale_s = self.cfg.stale_after.as_secs();
        self.store
            .update_task(id, true, |r| {
                if r.state.is_final() || !self.is_stale(r, now) {
                    return false;
                }
                r.state = TaskState::Failed;
                r.error = Some(rpc_error(
                    -32603,
                    format!(
                        "the server running this task stopped (no heartbeat for {stale_s} s); nothing was stored; call the tool again"
                    ),
                ));
                r.status_message = Some("failed: its server stopped".into());
                r.updated_ms = now;
                true
            })
            .await
    }

    fn is_stale(&self, rec: &TaskRecord, now: u64) -> bool {
        now.saturating_sub(rec.heartbeat_ms) > self.cfg.stale_after.as_millis() as u64
    }

    /// Ask a task to stop. Returns the record (unchanged when final), or
    /// `None` when unknown.
    pub async fn cancel(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let Some(rec) = self.get(id).await? else {
            return Ok(None);
        };
        if rec.state.is_final() {
            return Ok(Some(rec));
        }
        // Our own task: stop it now.
        if let Ok(mut r) = self.running.lock()
            && let Some(run) = r.get_mut(id)
        {
            run.why.get_or_insert(Why::Cancelled);
            run.ct.cancel();
        }
        self.store
            .update_task(id, false, |r| {
                if r.state.is_final() || r.cancel_requested {
                    return false;
                }
                r.cancel_requested = true;
                r.updated_ms = now_ms();
                true
            })
            .await
    }

    /// Renew the heartbeat of every task this process runs, and act on
    /// what the records say: a cancel request stops the task; a record
    /// made final elsewhere means this process lost it.
    async fn beat(&self) {
        let ids: Vec<TaskId> = match self.running.lock() {
            Ok(r) => r.keys().cloned().collect(),
            Err(_) => return,
        };
        use futures::StreamExt as _;
        futures::stream::iter(ids)
            .for_each_concurrent(16, |id| async move {
                let mut seen: Option<Why> = None;
                let now = now_ms();
                let got = self
                    .store
                    .update_task(&id, false, |r| {
                        if r.state.is_final() || r.owner != self.owner {
                            seen = Some(Why::Lost);
                            return false;
                        }
                        if r.cancel_requested {
                            seen = Some(Why::Cancelled);
                        }
                        r.heartbeat_ms = now;
                        true
                    })
                    .await;
                match got {
                    Ok(None) => seen = Some(Why::Lost),
                    Ok(Some(_)) => {}
                    Err(e) => {
                        tracing::warn!(task = %id, error = %e, "could not renew the task's heartbeat")
                    }
                }
                if let Some(why) = seen
                    && let Ok(mut r) = self.running.lock()
                    && let Some(run) = r.get_mut(&id)
                {
                    run.why.get_or_insert(why);
                    run.ct.cancel();
                }
            })
            .await;
    }

    /// The heartbeat and the sweeper, until the process ends.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(me.cfg.heartbeat);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let sweep_every = Duration::from_secs(600);
            let mut last_sweep: Option<std::time::Instant> = None;
            loop {
                beat.tick().await;
                me.beat().await;
                if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                    last_sweep = Some(std::time::Instant::now());
                    // Past the TTL plus a margin, so a reader never sees a
                    // record vanish before its TTL.
                    match me.store.sweep_tasks(me.cfg.ttl + sweep_every).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "removed expired task records"),
                        Err(e) => tracing::warn!(error = %e, "could not sweep task records"),
                    }
                }
            }
        })
    }

    /// Stop every task this process still runs (the grace period is
    /// over) and wait, at most `wait`, for their records to say so.
    pub async fn shutdown(&self, wait: Duration) {
        if let Ok(mut r) = self.running.lock() {
            for run in r.values_mut() {
                run.why.get_or_insert(Why::Shutdown);
                run.ct.cancel();
            }
        }
        let started = std::time::Instant::now();
        while self.running() > 0 && started.elapsed() < wait {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        Arc::new(Store::Local(
            crate::store::local::LocalStore::open(dir).unwrap(),
        ))
    }

    fn fast() -> TaskSettings {
        TaskSettings {
            heartbeat: Duration::from_millis(50),
            stale_after: Duration::from_millis(300),
            max_running: 2,
            ..TaskSettings::default()
        }
    }

    async fn until(tasks: &Tasks, id: &TaskId, state: TaskState) -> TaskRecord {
        for _ in 0..200 {
            if let Some(r) = tasks.get(id).await.unwrap()
                && r.state == state
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task never reached {state:?}");
    }

    #[tokio::test]
    async fn a_task_completes_and_another_process_reads_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tasks::new(store(dir.path()), fast());
        let b = Tasks::new(store(dir.path()), fast());
        let rec = a
            .start("generate_image", None, |_ct| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Finished::Result(rpc_error(1, "the result"))
            })
            .await
            .unwrap();
        let id = TaskId::parse(&rec.task_id).unwrap();
        assert_eq!(b.get(&id).await.unwrap().unwrap().state, TaskState::Working);
        let done = until(&b, &id, TaskState::Completed).await;
        assert_eq!(done.result.unwrap()["message"], "the result");
        assert_eq!(a.running(), 0);
    }

    #[tokio::test]
    async fn a_cancel_from_elsewhere_stops_the_run_at_the_next_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tasks::new(store(dir.path()), fast());
        let _bg = a.spawn_background();
        let b = Tasks::new(store(dir.path()), fast());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let rec = a
            .start("generate_image", None, |ct| async move {
                ct.cancelled().await;
                let _ = tx.send(());
                Finished::Error(rpc_error(-1, "stopped"))
            })
            .await
            .unwrap();
        let id = TaskId::parse(&rec.task_id).unwrap();
        assert!(b.cancel(&id).await.unwrap().unwrap().cancel_requested);
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the run was stopped")
            .unwrap();
        until(&b, &id, TaskState::Cancelled).await;
        // Cancelling a final task changes nothing.
        assert_eq!(
            b.cancel(&id).await.unwrap().unwrap().state,
            TaskState::Cancelled
        );
    }

    #[tokio::test]
    async fn a_task_whose_owner_stopped_is_failed_and_the_owner_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        // No background heartbeat: the owner looks dead.
        let a = Tasks::new(store(dir.path()), fast());
        let b = Tasks::new(store(dir.path()), fast());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let rec = a
            .start("generate_image", None, |ct| async move {
                ct.cancelled().await;
                let _ = tx.send(());
                Finished::Result(rpc_error(1, "too late"))
            })
            .await
            .unwrap();
        let id = TaskId::parse(&rec.task_id).unwrap();
        let failed = until(&b, &id, TaskState::Failed).await;
        assert!(
            failed.error.unwrap()["message"]
                .as_str()
                .unwrap()
                .contains("stopped")
        );
        // The owner's next heartbeat finds the record final and stops.
        a.beat().await;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(b.get(&id).await.unwrap().unwrap().state, TaskState::Failed);
    }

    #[tokio::test]
    async fn tasks_past_the_admitted_count_wait_their_turn_and_can_be_cancelled_there() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TaskSettings {
            max_admitted: 1,
            max_running: 3,
            ..fast()
        };
        let a = Tasks::new(store(dir.path()), cfg);
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (started, mut released) = (started.clone(), released.clone());
            let rec = a
                .start("generate_image", None, move |_ct| async move {
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = released.wait_for(|r| *r).await;
                    Finished::Result(Map::new())
                })
                .await
                .unwrap();
            ids.push(TaskId::parse(&rec.task_id).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The third, still waiting, is cancelled without ever running.
        a.cancel(&ids[2]).await.unwrap();
        until(&a, &ids[2], TaskState::Cancelled).await;
        release.send(true).unwrap();
        until(&a, &ids[0], TaskState::Completed).await;
        until(&a, &ids[1], TaskState::Completed).await;
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn past_the_cap_a_task_is_refused_and_shutdown_fails_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tasks::new(store(dir.path()), fast());
        let mut ids = Vec::new();
        for _ in 0..2 {
            let rec = a
                .start("generate_image", None, |ct| async move {
                    ct.cancelled().await;
                    Finished::Result(rpc_error(1, "no"))
                })
                .await
                .unwrap();
            ids.push(TaskId::parse(&rec.task_id).unwrap());
        }
        let third = a
            .start("generate_image", None, |_| async {
                Finished::Result(Map::new())
            })
            .await;
        assert!(matches!(third, Err(StartError::Full(2))));
        a.shutdown(Duration::from_secs(5)).await;
        assert_eq!(a.running(), 0);
        for id in &ids {
            let r = a.get(id).await.unwrap().unwrap();
            assert_eq!(r.state, TaskState::Failed);
            assert!(
                r.error.unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .contains("shut down")
            );
        }
    }
}
