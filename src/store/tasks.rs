//! Task records: one small JSON document per task of the MCP Tasks
//! extension, kept in the same store as the images (`.tasks/<taskId>.json`),
//! so any replica answers `tasks/get` for any task and a restart loses
//! nothing. This module only keeps records; `crate::tasks` decides what
//! goes in them.
//!
//! Unlike an image record, a task record changes (heartbeats, a cancel
//! request, the final state), and several replicas may write it. Every
//! change is a compare-and-swap on the version read: on Azure a Put Blob
//! with `If-Match: <ETag>` (`If-None-Match: *` to create), on the local
//! folder a rewrite under an exclusive lock on `<taskId>.lock` that checks
//! the record's `rev` first, then renames a temp file over the record (so
//! a reader sees the old or the new document, never half of one). Of two
//! writers that read the same version, exactly one wins; the other reads
//! again and decides again.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// The folder (local) or name prefix (Azure) of task records.
pub const TASKS_DIR: &str = ".tasks";
/// The largest task record: the result of a call with four images, each
/// with a preview (48 KiB of JPEG, 64 KiB as base64), and the rest. A
/// bigger document is refused, never read whole.
pub const MAX_TASK_RECORD_BYTES: u64 = 1 << 20;
pub const TASK_RECORD_VERSION: u32 = 1;
const ID_PREFIX: &str = "task_";
const ID_HEX: usize = 32;

/// An unguessable task id: `task_` and 128 random bits in hex. Knowing
/// it is what lets a caller read or cancel the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId(String);

impl TaskId {
    pub fn new() -> Self {
        let bits: u128 = rand::random();
        Self(format!("{ID_PREFIX}{bits:032x}"))
    }

    /// Accept only the shape `new` makes, so an id never names a path.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.strip_prefix(ID_PREFIX).is_some_and(|hex| {
            hex.len() == ID_HEX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        ok.then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn record_name(&self) -> String {
        format!("{TASKS_DIR}/{}.json", self.0)
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a task is. `Working` is the only state that changes; the others
/// are final and never written over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Working,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        self != TaskState::Working
    }
}

/// What the store keeps about one task. Times are Unix milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub version: u32,
    pub task_id: String,
    /// Bumped on every write; the local folder's compare-and-swap
    /// compares it.
    pub rev: u64,
    pub tool: String,
    pub state: TaskState,
    /// The process that runs the task (a random id per start).
    pub owner: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Renewed by the owner while the task works; a working task whose
    /// heartbeat is too old has lost its owner.
    pub heartbeat_ms: u64,
    pub ttl_ms: u64,
    /// Set by `tasks/cancel` on any replica; the owner sees it at its next
    /// heartbeat, stops the call and writes `cancelled`.
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// `completed`: the tool's result, as the synchronous call returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Map<String, serde_json::Value>>,
    /// `failed`: the JSON-RPC error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Map<String, serde_json::Value>>,
    /// Who started the task (`Principal::id`); only they may read or
    /// cancel it unless the operator shares tasks. `None`: started
    /// without identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// The version of a record as read, for the compare-and-swap.
#[derive(Debug, Clone)]
pub struct TaskVersion {
    rev: u64,
    e_tag: Option<String>,
    version: Option<String>,
}

impl Store {
    /// Store a new task record; fails if one with its id exists.
    pub async fn create_task(&self, rec: &TaskRecord) -> Result<(), StoreError> {
        let id = parse_id(&rec.task_id)?;
        let body = encode(rec)?;
        match self {
            Store::Local(s) => {
                let dir = s.dir().join(TASKS_DIR);
                let name = format!("{id}.json");
                blocking(move || super::records::write_new_file(&dir, &name, &body)).await
            }
            Store::Azure(s) => put(s, &id, body, PutMode::Create).await.map_err(|e| {
                e.unwrap_or_else(|| StoreError::Config(format!("a task {id} exists already")))
            }),
        }
    }

    /// The record of `id` and its version, or `None` when there is none.
    pub async fn read_task(
        &self,
        id: &TaskId,
    ) -> Result<Option<(TaskRecord, TaskVersion)>, StoreError> {
        let (body, e_tag, version) = match self {
            Store::Local(s) => {
                let path = s.dir().join(TASKS_DIR).join(format!("{id}.json"));
                let body =
                    blocking(move || super::records::read_capped_at(&path, MAX_TASK_RECORD_BYTES))
                        .await?;
                (body, None, None)
            }
            Store::Azure(s) => {
                let got = s
                    .object_store()
                    .get(&ObjectPath::from(id.record_name()))
                    .await;
                let r = match got {
                    Ok(r) => r,
                    Err(object_store::Error::NotFound { source, .. })
                        if !source.to_string().contains("ContainerNotFound") =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(super::azure::map_err(e, s.container())),
                };
                if r.meta.size > MAX_TASK_RECORD_BYTES {
                    return Err(too_big(r.meta.size));
                }
                let (e_tag, version) = (r.meta.e_tag.clone(), r.meta.version.clone());
                let mut stream = r.into_stream();
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| super::azure::map_err(e, s.container()))?;
                    if (buf.len() + chunk.len()) as u64 > MAX_TASK_RECORD_BYTES {
                        return Err(too_big((buf.len() + chunk.len()) as u64));
                    }
                    buf.extend_from_slice(&chunk);
                }
                (Some(buf), e_tag, version)
            }
        };
        let Some(body) = body else { return Ok(None) };
        let rec: TaskRecord = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Config(format!("the record of {id} cannot be read: {e}")))?;
        if rec.task_id != id.as_str() {
            return Err(StoreError::Config(format!(
                "the record of {id} does not describe that task"
            )));
        }
        let v = TaskVersion {
            rev: rec.rev,
            e_tag,
            version,
        };
        Ok(Some((rec, v)))
    }

    /// Replace the record read at `read` with `rec` (whose `rev` the
    /// caller has bumped). `Ok(false)`: someone else wrote first.
    pub async fn replace_task(
        &self,
        rec: &TaskRecord,
        read: &TaskVersion,
        durable: bool,
    ) -> Result<bool, StoreError> {
        let id = parse_id(&rec.task_id)?;
        let body = encode(rec)?;
        match self {
            Store::Local(s) => {
                let dir = s.dir().join(TASKS_DIR);
                let expected = read.rev;
                blocking(move || swap_file(&dir, &id, expected, &body, durable)).await
            }
            Store::Azure(s) => {
                let mode = PutMode::Update(UpdateVersion {
                    e_tag: read.e_tag.clone(),
                    version: read.version.clone(),
                });
                match put(s, &id, body, mode).await {
                    Ok(()) => Ok(true),
                    Err(None) => Ok(false),
                    Err(Some(e)) => Err(e),
                }
            }
        }
    }

    /// Change a record with `change` until the write wins: read, apply,
    /// compare-and-swap, again on a lost race (a few times). `change`
    /// returns false to leave the record as it is. Returns the record as
    /// it stands afterwards, or `None` when there is none.
    pub async fn update_task(
        &self,
        id: &TaskId,
        durable: bool,
        mut change: impl FnMut(&mut TaskRecord) -> bool,
    ) -> Result<Option<TaskRecord>, StoreError> {
        for _ in 0..8 {
            let Some((rec, read)) = self.read_task(id).await? else {
                return Ok(None);
            };
            let mut next = rec.clone();
            if !change(&mut next) {
                return Ok(Some(rec));
            }
            next.rev = rec.rev + 1;
            if self.replace_task(&next, &read, durable).await? {
                return Ok(Some(next));
            }
        }
        Err(StoreError::Config(format!(
            "the record of {id} kept changing under eight writes in a row"
        )))
    }

    /// Delete task records last written more than `age` ago. Returns how
    /// many went.
    pub async fn sweep_tasks(&self, age: Duration) -> Result<usize, StoreError> {
        match self {
            Store::Local(s) => {
                let dir = s.dir().join(TASKS_DIR);
                blocking(move || {
                    let ours = |n: &str| {
                        n.starts_with(ID_PREFIX) && (n.ends_with(".json") || n.ends_with(".lock"))
                            || n.starts_with(&format!(".{ID_PREFIX}")) && n.ends_with(".part")
                    };
                    Ok(super::local::remove_stale(&dir, ours, age))
                })
                .await
            }
            Store::Azure(s) => {
                let store = s.object_store();
                let prefix = ObjectPath::from(TASKS_DIR);
                let mut list = store.list(Some(&prefix));
                let now = chrono::Utc::now();
                let mut old = Vec::new();
                while let Some(meta) = list.next().await {
                    let meta = meta.map_err(|e| super::azure::map_err(e, s.container()))?;
                    let age_of = now.signed_duration_since(meta.last_modified);
                    if age_of.to_std().is_ok_and(|a| a >= age) {
                        old.push(meta.location);
                    }
                }
                let mut removed = 0;
                for path in old {
                    match store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                        Err(e) => return Err(super::azure::map_err(e, s.container())),
                    }
                }
                Ok(removed)
            }
        }
    }
}

fn parse_id(s: &str) -> Result<TaskId, StoreError> {
    TaskId::parse(s).ok_or_else(|| StoreError::Config(format!("{s:?} is not a task id")))
}

fn encode(rec: &TaskRecord) -> Result<Vec<u8>, StoreError> {
    let body = serde_json::to_vec(rec).map_err(|e| StoreError::Config(e.to_string()))?;
    if body.len() as u64 > MAX_TASK_RECORD_BYTES {
        return Err(too_big(body.len() as u64));
    }
    Ok(body)
}

fn too_big(size: u64) -> StoreError {
    StoreError::Config(format!(
        "a task record of {size} bytes is over the {MAX_TASK_RECORD_BYTES}-byte cap"
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Local {
            path: TASKS_DIR.into(),
            reason: e.to_string(),
        })?
}

/// One conditional Put Blob. `Err(None)`: the condition failed.
async fn put(
    s: &super::azure::AzureStore,
    id: &TaskId,
    body: Vec<u8>,
    mode: PutMode,
) -> Result<(), Option<StoreError>> {
    let create = matches!(mode, PutMode::Create);
    let mut attributes = object_store::Attributes::new();
    attributes.insert(
        object_store::Attribute::ContentType,
        "application/json".into(),
    );
    let opts = PutOptions {
        mode,
        attributes,
        ..PutOptions::default()
    };
    let got = s
        .object_store()
        .put_opts(
            &ObjectPath::from(id.record_name()),
            PutPayload::from(Bytes::from(body)),
            opts,
        )
        .await;
    match got {
        Ok(_) => Ok(()),
        Err(object_store::Error::Precondition { .. }) if !create => Err(None),
        Err(object_store::Error::AlreadyExists { .. }) if create => Err(Some(StoreError::Config(
            format!("a task {id} exists already"),
        ))),
        Err(e) => Err(Some(super::azure::map_err(e, s.container()))),
    }
}

/// The local compare-and-swap: under an exclusive lock on the task's lock
/// file (every process sharing the folder takes the same one), check that
/// the record is still at `expected`, then write a temp file and rename it
/// over the record. `durable` fsyncs the file and the folder (final
/// states); a heartbeat is not worth two fsyncs.
fn swap_file(
    dir: &Path,
    id: &TaskId,
    expected: u64,
    body: &[u8],
    durable: bool,
) -> Result<bool, StoreError> {
    let fin = dir.join(format!("{id}.json"));
    let err = |p: &Path, e: &std::io::Error| StoreError::Local {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    let lock_path = dir.join(format!("{id}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err(&lock_path, &e))?;
    lock.lock().map_err(|e| err(&lock_path, &e))?;
    let current = super::records::read_capped_at(&fin, MAX_TASK_RECORD_BYTES)?;
    let Some(current) = current else {
        return Ok(false);
    };
    let rev = serde_json::from_slice::<TaskRecord>(&current)
        .map(|r| r.rev)
        .map_err(|e| StoreError::Config(format!("the record of {id} cannot be read: {e}")))?;
    if rev != expected {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{id}.{:016x}.part", rand::random::<u64>()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(body)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, &fin)?;
        if durable {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e: std::io::Error| err(&fin, &e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &TaskId) -> TaskRecord {
        TaskRecord {
            version: TASK_RECORD_VERSION,
            task_id: id.to_string(),
            rev: 0,
            tool: "generate_image".into(),
            state: TaskState::Working,
            owner: "a".into(),
            created_ms: 1,
            updated_ms: 1,
            heartbeat_ms: 1,
            ttl_ms: 60_000,
            cancel_requested: false,
            status_message: None,
            result: None,
            error: None,
            principal: None,
        }
    }

    #[test]
    fn ids_are_random_and_only_their_own_shape_parses() {
        let a = TaskId::new();
        assert_ne!(a, TaskId::new());
        assert_eq!(TaskId::parse(a.as_str()), Some(a));
        for bad in [
            "",
            "task_",
            "task_../../x",
            "task_0123456789ABCDEF0123456789abcdef",
            "img_0123456789abcdef0123456789abcdef",
            "task_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(TaskId::parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn of_two_writers_that_read_one_version_only_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(super::super::local::LocalStore::open(dir.path()).unwrap());
        let id = TaskId::new();
        store.create_task(&record(&id)).await.unwrap();
        assert!(
            store.create_task(&record(&id)).await.is_err(),
            "created twice"
        );
        let (a, va) = store.read_task(&id).await.unwrap().unwrap();
        let (_, vb) = store.read_task(&id).await.unwrap().unwrap();
        let mut first = a.clone();
        first.rev += 1;
        first.cancel_requested = true;
        assert!(store.replace_task(&first, &va, true).await.unwrap());
        let mut second = a.clone();
        second.rev += 1;
        second.heartbeat_ms = 9;
        assert!(!store.replace_task(&second, &vb, false).await.unwrap());
        // update_task reads again and applies its change on top.
        let after = store
            .update_task(&id, false, |r| {
                r.heartbeat_ms = 9;
                true
            })
            .await
            .unwrap()
            .unwrap();
        assert!(after.cancel_requested && after.heartbeat_ms == 9 && after.rev == 2);
        let (read, _) = store.read_task(&id).await.unwrap().unwrap();
        assert_eq!(read, after);
        assert!(store.read_task(&TaskId::new()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_updates_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::Local(
            super::super::local::LocalStore::open(dir.path()).unwrap(),
        ));
        let id = TaskId::new();
        store.create_task(&record(&id)).await.unwrap();
        let writers = (0..3).map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                for _ in 0..5 {
                    store
                        .update_task(&id, false, |r| {
                            r.heartbeat_ms += 1;
                            true
                        })
                        .await
                        .unwrap();
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.unwrap();
        }
        let (rec, _) = store.read_task(&id).await.unwrap().unwrap();
        assert_eq!(rec.heartbeat_ms, 16);
        assert_eq!(rec.rev, 15);
    }

    #[tokio::test]
    async fn a_record_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(super::super::local::LocalStore::open(dir.path()).unwrap());
        let id = TaskId::new();
        let mut rec = record(&id);
        rec.status_message = Some("x".repeat(MAX_TASK_RECORD_BYTES as usize));
        assert!(store.create_task(&rec).await.is_err());
        assert!(store.read_task(&id).await.unwrap().is_none());
    }
}
