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

impl LocalStore {
    /// Create the folder if needed and make sure it is writable.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| local_err(dir, &e))?;
        let dir = fs::canonicalize(dir).map_err(|e| local_err(dir, &e))?;
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
