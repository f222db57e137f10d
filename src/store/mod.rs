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

use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;

/// Where a stored image can be found.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    /// `https://…` (Azure, with a read SAS unless public URLs are on) or
    /// `file://…` (local).
    pub url: String,
    /// The file, for the local backend.
    pub path: Option<PathBuf>,
    pub blob_name: String,
    pub storage: StorageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
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
    /// Start an upload under its final name; nothing is visible yet.
    pub async fn begin(
        &self,
        name: String,
        content_type: &'static str,
    ) -> Result<Upload, StoreError> {
        Ok(match self {
            Store::Local(s) => Upload::Local(s.begin(name).await?),
            Store::Azure(s) => Upload::Azure(Box::new(s.begin(name, content_type)?)),
        })
    }

    /// Store a small image in one request (one block: no block list needed).
    pub async fn put_small(
        &self,
        name: String,
        content_type: &'static str,
        data: Bytes,
    ) -> Result<Stored, StoreError> {
        match self {
            Store::Local(s) => {
                let mut up = s.begin(name).await?;
                up.write(data).await?;
                up.commit().await
            }
            Store::Azure(s) => s.put_small(name, content_type, data).await,
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

/// An upload in progress.
pub enum Upload {
    Local(local::LocalUpload),
    Azure(Box<azure::AzureUpload>),
}

impl Upload {
    /// Append one block; waits while the backend's in-flight limit is
    /// reached, which is what bounds memory per request.
    pub async fn write(&mut self, block: Bytes) -> Result<(), StoreError> {
        match self {
            Upload::Local(u) => u.write(block).await,
            Upload::Azure(u) => u.write(block).await,
        }
    }

    /// Make the image visible under its final name.
    pub async fn commit(self) -> Result<Stored, StoreError> {
        match self {
            Upload::Local(u) => u.commit().await,
            Upload::Azure(u) => u.commit().await,
        }
    }

    /// Drop everything written so far.
    pub async fn abort(self) {
        match self {
            Upload::Local(u) => u.abort().await,
            Upload::Azure(u) => u.abort().await,
        }
    }
}

/// Open the configured backend: Azure when a connection string or account
/// is set, else the local folder. Creates the container when asked to.
pub async fn open(cfg: &crate::config::Config) -> Result<Store, String> {
    let ttl = std::time::Duration::from_secs(cfg.azure_sas_ttl_hours * 3600);
    if let Some(cs) = &cfg.azure_connection_string {
        let cs = connstr::parse(cs.expose())
            .map_err(|e| format!("AZURE_STORAGE_CONNECTION_STRING: {e}"))?;
        if cfg.azure_create_container && !matches!(cs.credential, connstr::Credential::None) {
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?;
            match azure_setup::ensure_container(&http, &cs, &cfg.azure_container).await {
                Ok(status) => {
                    tracing::info!(container = %cfg.azure_container, ?status, "Azure container ready")
                }
                // A SAS may upload but not create: go on, uploads will tell.
                Err(e) => {
                    tracing::warn!(container = %cfg.azure_container, error = %e, "could not create the Azure container")
                }
            }
        }
        let store = azure::AzureStore::new(
            cs,
            cfg.azure_container.clone(),
            cfg.azure_public_urls,
            ttl,
            cfg.blocks_in_flight,
        )
        .map_err(|e| e.to_string())?;
        tracing::info!("storing images in {}", store.describe());
        return Ok(Store::Azure(store));
    }
    if let Some(account) = &cfg.azure_account {
        let store = azure::AzureStore::with_identity(
            account,
            cfg.azure_container.clone(),
            cfg.azure_public_urls,
            ttl,
            cfg.blocks_in_flight,
        )
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
