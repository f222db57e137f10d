//! The local-folder backend. Each upload writes a hidden temp file beside
//! its final name, one block at a time on the blocking pool (the next block
//! decodes while the previous one is written), then fsyncs and renames it:
//! a file under a final name is always whole.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::{StorageKind, StoreError, Stored};

pub struct LocalStore {
    dir: PathBuf,
}

/// Temp files older than this were left by a process that died (no call
/// lives this long); younger ones may belong to another server sharing
/// the directory.
pub const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove the files in `dir` whose names `ours` accepts and that are at
/// least `age` old; returns how many went. Errors skip a file.
pub fn remove_stale(dir: &Path, ours: impl Fn(&str) -> bool, age: std::time::Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !ours(&e.file_name().to_string_lossy()) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a >= age);
        if old && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl LocalStore {
    /// Create the folder if needed and make sure it is writable.
    /// Temp files of uploads a crashed process left (over an hour old)
    /// are removed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| local_err(dir, &e))?;
        let dir = fs::canonicalize(dir).map_err(|e| local_err(dir, &e))?;
        let ours = |n: &str| {
            n.ends_with(".part") && (n.starts_with(".generated-") || n.starts_with(".edited-"))
        };
        let removed = remove_stale(&dir, ours, STALE_AGE);
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed upload temp files left by an earlier run");
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub async fn begin(&self, name: String) -> Result<LocalUpload, StoreError> {
        let final_path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.part"));
        // The file exists before this future gets it back; if the call is
        // cancelled in between, the guard or the creating thread removes it.
        let guard = CreateGuard::new(tmp.clone());
        let (t, dropped) = (tmp.clone(), guard.dropped.clone());
        let file = tokio::task::spawn_blocking(move || {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&t)?;
            if dropped.load(Ordering::SeqCst) {
                let _ = fs::remove_file(&t);
            }
            Ok(file)
        })
        .await
        .map_err(|e| local_err(&tmp, &std::io::Error::other(e)))?;
        // A failed create made no file of ours: nothing to remove.
        guard.disarm();
        let file = file.map_err(|e: std::io::Error| local_err(&tmp, &e))?;
        Ok(LocalUpload {
            name,
            tmp,
            final_path,
            file: Some(file),
            pending: None,
            done: false,
        })
    }
}

/// Owns a temp file while `begin` waits for the blocking pool to create it.
/// Whichever of drop and creation comes second removes the file: drop sets
/// the flag and then removes; creation creates and then reads the flag.
struct CreateGuard {
    tmp: PathBuf,
    dropped: Arc<AtomicBool>,
    armed: bool,
}

impl CreateGuard {
    fn new(tmp: PathBuf) -> Self {
        Self {
            tmp,
            dropped: Arc::new(AtomicBool::new(false)),
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if self.armed {
            self.dropped.store(true, Ordering::SeqCst);
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

pub struct LocalUpload {
    name: String,
    tmp: PathBuf,
    final_path: PathBuf,
    file: Option<File>,
    /// The write in progress; it hands the file back when done.
    pending: Option<JoinHandle<std::io::Result<File>>>,
    done: bool,
}

impl LocalUpload {
    async fn settle(&mut self) -> Result<(), StoreError> {
        if let Some(h) = self.pending.take() {
            let file = h
                .await
                .map_err(|e| local_err(&self.tmp, &std::io::Error::other(e)))?
                .map_err(|e| local_err(&self.tmp, &e))?;
            self.file = Some(file);
        }
        Ok(())
    }

    pub async fn write(&mut self, block: Bytes) -> Result<(), StoreError> {
        self.settle().await?;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| local_err(&self.tmp, &std::io::Error::other("upload already failed")))?;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            file.write_all(&block)?;
            Ok(file)
        }));
        Ok(())
    }

    pub async fn commit(mut self) -> Result<Stored, StoreError> {
        self.settle().await?;
        let file = self
            .file
            .take()
            .ok_or_else(|| local_err(&self.tmp, &std::io::Error::other("upload already failed")))?;
        let (tmp, fin) = (self.tmp.clone(), self.final_path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &fin)?;
            // The rename itself must survive a crash too.
            if let Some(parent) = fin.parent() {
                File::open(parent)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| local_err(&self.tmp, &std::io::Error::other(e)))?
        .map_err(|e| local_err(&self.final_path, &e))?;
        self.done = true;
        Ok(Stored {
            url: file_url(&self.final_path),
            path: Some(self.final_path.clone()),
            blob_name: self.name.clone(),
            storage: StorageKind::Local,
        })
    }

    pub async fn abort(mut self) {
        let _ = self.settle().await;
        self.file = None;
        let tmp = self.tmp.clone();
        // While the runtime shuts down (SIGTERM) the blocking pool refuses
        // new work; then `done` stays false and `drop` removes the file.
        if tokio::task::spawn_blocking(move || fs::remove_file(tmp))
            .await
            .is_ok()
        {
            self.done = true;
        }
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // A cancelled call drops its upload without awaiting abort.
        if !self.done {
            if let Some(h) = self.pending.take() {
                h.abort();
            }
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn local_err(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Local {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// `file://` URL of a path, percent-encoding what a URL cannot carry.
pub fn file_url(path: &Path) -> String {
    url::Url::from_file_path(path)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("file://{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sweeps_only_old_upload_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |n: &str| dir.path().join(n);
        let old = [".generated-1-a.png.part", ".edited-2-b.jpg.part"];
        let kept = [
            ".generated-3-c.png.part", // young: maybe another server's live upload
            "generated-4-d.png",       // a stored image
            ".notes.part",             // not ours
        ];
        for n in old.iter().chain(&kept) {
            fs::write(path(n), b"x").expect("write");
        }
        let long_ago =
            std::time::SystemTime::now() - STALE_AGE - std::time::Duration::from_secs(60);
        for n in old.iter().chain(&kept[1..]) {
            fs::File::options()
                .write(true)
                .open(path(n))
                .and_then(|f| f.set_modified(long_ago))
                .expect("mtime");
        }
        LocalStore::open(dir.path()).expect("open");
        for n in old {
            assert!(!path(n).exists(), "{n} should be gone");
        }
        for n in kept {
            assert!(path(n).exists(), "{n} should stay");
        }
    }

    #[tokio::test]
    async fn commit_renames_and_abort_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        let mut up = store.begin("a.png".into()).await.expect("begin");
        up.write(Bytes::from_static(b"abc")).await.expect("write");
        up.write(Bytes::from_static(b"def")).await.expect("write");
        assert!(!dir.path().join("a.png").exists());
        let stored = up.commit().await.expect("commit");
        assert_eq!(fs::read(dir.path().join("a.png")).expect("read"), b"abcdef");
        assert!(stored.url.starts_with("file://"));

        let mut up = store.begin("b.png".into()).await.expect("begin");
        up.write(Bytes::from_static(b"x")).await.expect("write");
        up.abort().await;
        let mut up = store.begin("c.png".into()).await.expect("begin");
        up.write(Bytes::from_static(b"x")).await.expect("write");
        drop(up);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.png")]);
    }

    /// SIGTERM: the runtime is shutting down while a call aborts its
    /// upload, so the blocking pool refuses the removal; the file must
    /// still go.
    #[test]
    fn abort_while_the_runtime_shuts_down_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut up = rt.block_on(store.begin("a.png".into())).expect("begin");
        rt.block_on(up.write(Bytes::from_static(b"abc")))
            .expect("write");
        let handle = rt.handle().clone();
        drop(rt);
        let _entered = handle.enter();
        futures::executor::block_on(up.abort());
        let left: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// A call cancelled while `begin` waits for the blocking pool: the temp
    /// file is created after the future is gone, and must not stay behind.
    #[tokio::test]
    async fn begin_cancelled_before_the_file_comes_back_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        let mut cancelled_mid_create = 0;
        for i in 0..50 {
            let mut begin = Box::pin(store.begin(format!("{i}.png")));
            // One poll hands the create to the blocking pool; then cancel.
            // (If the pool was already done, the upload itself is dropped.)
            if futures::poll!(begin.as_mut()).is_pending() {
                cancelled_mid_create += 1;
            }
            drop(begin);
        }
        assert!(cancelled_mid_create > 0, "never cancelled mid-create");
        // Let the blocking pool finish the creates it had started.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let left: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
