//! Blocks in, URL out. One interface over two backends: a local folder
//! (temp file, fsync, atomic rename) and Azure Blob Storage (Put Block per
//! block with a bounded number in flight, Put Block List to commit). An
//! upload is invisible until `commit`; `abort` (or dropping it) leaves
//! nothing under the final name. This module never decides *what* to store
//! or whether an image is valid: the pipeline does.

pub mod azure;
pub mod azure_setup;
pub mod connstr;
pub mod local;
pub mod records;
pub mod sas;
pub mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::secret::Secret;

/// Where a stored image can be found.
#[derive(Debug, Clone)]
pub struct Stored {
    /// `https://…` (Azure, with a read SAS unless public URLs are on) or
    /// `file://…` (local).
    pub url: String,
    /// The file, for the local backend.
    pub path: Option<PathBuf>,
    pub blob_name: String,
    pub storage: StorageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Azure,
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Azure rejected the upload: {0}")]
    Azure(String),
    #[error(
        "Azure refused access ({0}); check AZURE_STORAGE_CONNECTION_STRING (account key or SAS) or the workload identity's role"
    )]
    AzureAuth(String),
    #[error(
        "the Azure container {0:?} does not exist; create it or use credentials that may create it"
    )]
    ContainerMissing(String),
    #[error("could not write the image to {path}: {reason}")]
    Local { path: String, reason: String },
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Azure(_) => "azure",
            StoreError::AzureAuth(_) => "azure_auth",
            StoreError::ContainerMissing(_) => "container_missing",
            StoreError::Local { .. } => "local",
            StoreError::Config(_) => "config",
        }
    }
}

/// Names keep the old server's shape: `generated-<timestamp>-<id>.<ext>`.
pub fn blob_name(prefix: &str, ext: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let id: String = (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{millis}-{id}.{ext}")
}

pub enum Store {
    Local(local::LocalStore),
    Azure(azure::AzureStore),
}

impl Store {
    /// Start an upload under its final name; nothing is visible until
    /// `commit`. The upload decides how to send the bytes: an image that
    /// fits in one block is one Put Blob (Azure) at commit; a bigger one
    /// is Put Block per block and one Put Block List.
    pub fn upload(self: &Arc<Self>, name: String, content_type: &'static str) -> Upload {
        Upload {
            store: Arc::clone(self),
            name,
            content_type,
            first: None,
            started: None,
        }
    }

    pub fn kind(&self) -> StorageKind {
        match self {
            Store::Local(_) => StorageKind::Local,
            Store::Azure(_) => StorageKind::Azure,
        }
    }

    /// Where images go, for status reports (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Store::Local(s) => format!("local folder {}", s.dir().display()),
            Store::Azure(s) => s.describe(),
        }
    }
}

/// A backend's upload, begun once a second block shows the image needs
/// more than one request.
enum Started {
    Local(local::LocalUpload),
    Azure(Box<azure::AzureUpload>),
}

/// An upload in progress. The first block is held back until a second
/// arrives (or the upload is committed), so a small image costs one
/// request and a big one has its name and type before its first block
/// leaves.
pub struct Upload {
    store: Arc<Store>,
    name: String,
    content_type: &'static str,
    first: Option<Bytes>,
    started: Option<Started>,
}

impl Upload {
    /// Append one block; waits while the backend's in-flight limit is
    /// reached, which is what bounds memory per request.
    pub async fn write(&mut self, block: Bytes) -> Result<(), StoreError> {
        if self.started.is_none() {
            let Some(first) = self.first.take() else {
                self.first = Some(block);
                return Ok(());
            };
            let mut started = match &*self.store {
                Store::Local(s) => Started::Local(s.begin(self.name.clone()).await?),
                Store::Azure(s) => {
                    Started::Azure(Box::new(s.begin(self.name.clone(), self.content_type)?))
                }
            };
            let r = started.write(first).await;
            self.started = Some(started);
            r?;
        }
        match self.started.as_mut() {
            Some(u) => u.write(block).await,
            None => Ok(()),
        }
    }

    /// Nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.started.is_none()
    }

    /// Make the image visible under its final name.
    pub async fn commit(self) -> Result<Stored, StoreError> {
        match (self.started, self.first) {
            (Some(u), _) => u.commit().await,
            (None, first) => {
                let data = first.unwrap_or_default();
                match &*self.store {
                    Store::Local(s) => {
                        let mut up = s.begin(self.name).await?;
                        up.write(data).await?;
                        up.commit().await
                    }
                    Store::Azure(s) => s.put_small(self.name, self.content_type, data).await,
                }
            }
        }
    }

    /// Drop everything written so far.
    pub async fn abort(self) {
        if let Some(u) = self.started {
            u.abort().await;
        }
    }
}

impl Started {
    async fn write(&mut self, block: Bytes) -> Result<(), StoreError> {
        match self {
            Started::Local(u) => u.write(block).await,
            Started::Azure(u) => u.write(block).await,
        }
    }

    async fn commit(self) -> Result<Stored, StoreError> {
        match self {
            Started::Local(u) => u.commit().await,
            Started::Azure(u) => u.commit().await,
        }
    }

    async fn abort(self) {
        match self {
            Started::Local(u) => u.abort().await,
            Started::Azure(u) => u.abort().await,
        }
    }
}

impl StoreConfig {
    pub fn azure_options(&self) -> azure::AzureOptions {
        azure::AzureOptions {
            container: self.container.clone(),
            public_urls: self.public_urls,
            sas_ttl: self.sas_ttl,
            max_in_flight: self.blocks_in_flight,
        }
    }
}

/// Where images go, as the operator configured it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub azure_connection_string: Option<Secret>,
    /// Account name for workload/managed identity (no connection string).
    pub azure_account: Option<String>,
    pub container: String,
    pub create_container: bool,
    pub public_urls: bool,
    pub sas_ttl: Duration,
    pub blocks_in_flight: usize,
    pub output_dir: PathBuf,
}

/// Open the configured backend: Azure when a connection string or account
/// is set, else the local folder. Creates the container when asked to.
pub async fn open(cfg: &StoreConfig) -> Result<Store, String> {
    if let Some(cs) = &cfg.azure_connection_string {
        let cs = connstr::parse(cs.expose())
            .map_err(|e| format!("AZURE_STORAGE_CONNECTION_STRING: {e}"))?;
        if cfg.create_container && !matches!(cs.credential, connstr::Credential::None) {
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?;
            match azure_setup::ensure_container(&http, &cs, &cfg.container).await {
                Ok(status) => {
                    tracing::info!(container = %cfg.container, ?status, "Azure container ready")
                }
                // A SAS may upload but not create: go on, uploads will tell.
                Err(e) => {
                    tracing::warn!(container = %cfg.container, error = %e, "could not create the Azure container")
                }
            }
        }
        let store = azure::AzureStore::new(cs, &cfg.azure_options()).map_err(|e| e.to_string())?;
        tracing::info!("storing images in {}", store.describe());
        return Ok(Store::Azure(store));
    }
    if let Some(account) = &cfg.azure_account {
        let store = azure::AzureStore::with_identity(account, &cfg.azure_options())
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "storing images in {} (workload/managed identity)",
            store.describe()
        );
        return Ok(Store::Azure(store));
    }
    let store = local::LocalStore::open(&cfg.output_dir).map_err(|e| e.to_string())?;
    tracing::info!(
        "storing images in the local folder {}",
        store.dir().display()
    );
    Ok(Store::Local(store))
}
