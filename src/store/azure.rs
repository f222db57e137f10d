//! The Azure Blob backend over `object_store`. Each block is one Put Block,
//! spawned so it uploads while the next block is still being decoded, with
//! at most `max_in_flight` outstanding per upload; the block list is put
//! only at `commit`, so an aborted upload leaves uncommitted blocks that
//! Azure discards, never a visible blob. Container creation lives in
//! `azure_setup`, connection strings in `connstr`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::azure::MicrosoftAzure;
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{
    Attribute, Attributes, MultipartUpload, ObjectStore, ObjectStoreExt as _, PutMultipartOptions,
    PutOptions, PutPayload,
};
use tokio::task::JoinSet;

use super::connstr::{ConnectionString, Credential};
use super::sas::{BlobSigner, SasRefusal};
use super::{StorageKind, StoreError, Stored};

/// How long one storage request is retried (throttling, 5xx, refused or
/// reset connections) before the call fails. object_store's default is ten
/// retries over up to three minutes, longer than an MCP client waits for a
/// tool result; here an outage surfaces as a clear error in seconds, and
/// the uncommitted blocks are discarded by Azure.
pub fn storage_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(4),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(20),
    }
}

/// How returned URLs grant read access.
#[derive(Debug, Clone)]
pub enum UrlMode {
    /// A read-only SAS signed with the account key (or a user delegation
    /// key under workload identity), valid for this long.
    Signed(Duration),
    /// The plain blob URL: for containers made public on purpose.
    Public,
    /// The connection string's credential is a SAS: the server cannot sign
    /// a narrower one, and its own (account- or container-wide, usually
    /// with write and delete) must never reach a client. The plain blob
    /// URL, which works where the container is readable another way
    /// (public access, a CDN, a network path) and is a name to pass back
    /// otherwise.
    PlainForSas,
}

/// The server's settings on top of a connection's: bounded retries, and at
/// most eight idle keep-alive connections (a burst of uploads would
/// otherwise leave one per concurrent block behind, each with its buffers).
fn tuned(
    b: object_store::azure::MicrosoftAzureBuilder,
) -> object_store::azure::MicrosoftAzureBuilder {
    use object_store::ClientConfigKey;
    use object_store::azure::AzureConfigKey;
    b.with_retry(storage_retry()).with_config(
        AzureConfigKey::Client(ClientConfigKey::PoolMaxIdlePerHost),
        "8",
    )
}

pub struct AzureStore {
    store: Arc<MicrosoftAzure>,
    cs: ConnectionString,
    container: String,
    url_mode: UrlMode,
    /// With an account key: signs returned URLs and checks URLs passed
    /// back (see `store::sas`). Identities sign through object_store.
    signer: Option<Arc<BlobSigner>>,
    max_in_flight: usize,
}

/// How an Azure store names, exposes and uploads its blobs.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    pub container: String,
    /// Plain blob URLs (for containers made public on purpose).
    pub public_urls: bool,
    /// Lifetime of the read-only SAS URLs it returns.
    pub sas_ttl: Duration,
    /// Put Block requests in flight per upload.
    pub max_in_flight: usize,
}

impl AzureStore {
    pub fn new(cs: ConnectionString, opts: &AzureOptions) -> Result<Self, StoreError> {
        let builder = cs.builder(&opts.container);
        Self::assemble(builder, cs, opts)
    }

    /// Workload or managed identity: no connection string, the account
    /// name only. SAS URLs are signed with a user delegation key.
    pub fn with_identity(account: &str, opts: &AzureOptions) -> Result<Self, StoreError> {
        let endpoint = url::Url::parse(&format!("https://{account}.blob.core.windows.net"))
            .map_err(|e| StoreError::Config(format!("account name {account:?}: {e}")))?;
        let cs = ConnectionString {
            account: account.to_string(),
            blob_endpoint: endpoint,
            credential: Credential::None,
            is_emulator_style: false,
        };
        let builder = super::connstr::builder_for_identity(account, &opts.container);
        Self::assemble(builder, cs, opts)
    }

    fn assemble(
        builder: object_store::azure::MicrosoftAzureBuilder,
        cs: ConnectionString,
        opts: &AzureOptions,
    ) -> Result<Self, StoreError> {
        let store = tuned(builder)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        // Account keys and identities sign a read-only SAS per blob; a
        // connection string's own SAS is never handed out.
        let url_mode = if opts.public_urls {
            UrlMode::Public
        } else if matches!(cs.credential, Credential::Sas(_)) {
            UrlMode::PlainForSas
        } else {
            UrlMode::Signed(opts.sas_ttl)
        };
        let signer = match &cs.credential {
            Credential::AccountKey(k) => BlobSigner::new(&cs.account, k).map(Arc::new),
            _ => None,
        };
        Ok(Self {
            store: Arc::new(store),
            signer,
            cs,
            container: opts.container.clone(),
            url_mode,
            max_in_flight: opts.max_in_flight.max(1),
        })
    }

    /// The blob name, if `url` points into this server's container
    /// (whatever its query string).
    pub fn blob_name_from_url(&self, url: &url::Url) -> Option<String> {
        let base = self.cs.container_url(&self.container);
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return None;
        }
        let prefix = format!("{}/", base.path().trim_end_matches('/'));
        let rest = url.path().strip_prefix(&prefix)?;
        let name = super::connstr::percent_decode(rest)?;
        (!name.is_empty() && !name.contains("..")).then_some(name)
    }

    /// Read a blob of this container as a stream of chunks.
    pub async fn get_stream(
        &self,
        name: &str,
    ) -> Result<futures::stream::BoxStream<'static, object_store::Result<Bytes>>, StoreError> {
        let r = self
            .store
            .get(&Path::from(name))
            .await
            .map_err(|e| map_err(e, &self.container))?;
        Ok(r.into_stream())
    }

    pub fn describe(&self) -> String {
        let urls = match &self.url_mode {
            UrlMode::Signed(ttl) => format!(
                "URLs are read-only SAS URLs for one blob, valid {} h",
                ttl.as_secs().div_ceil(3600)
            ),
            UrlMode::Public => "URLs are plain (AZURE_PUBLIC_URLS: the container is public)".into(),
            UrlMode::PlainForSas => "URLs are plain: the credential is a SAS, which is never handed out, and the server cannot sign a narrower one (use an account key or workload identity for signed URLs)".into(),
        };
        format!(
            "Azure Blob container {} at {}; {urls}",
            self.container, self.cs.blob_endpoint
        )
    }

    pub fn connection(&self) -> &ConnectionString {
        &self.cs
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    pub fn object_store(&self) -> &MicrosoftAzure {
        &self.store
    }

    fn attributes(content_type: &'static str) -> Attributes {
        let mut a = Attributes::new();
        a.insert(Attribute::ContentType, content_type.into());
        a
    }

    pub fn begin(
        &self,
        name: String,
        content_type: &'static str,
    ) -> Result<AzureUpload, StoreError> {
        let path = Path::from(name.as_str());
        Ok(AzureUpload {
            store: Arc::clone(&self.store),
            path,
            name,
            content_type,
            upload: None,
            tasks: JoinSet::new(),
            max_in_flight: self.max_in_flight,
            url: self.url_source(),
        })
    }

    pub async fn put_small(
        &self,
        name: String,
        content_type: &'static str,
        data: Bytes,
    ) -> Result<Stored, StoreError> {
        let path = Path::from(name.as_str());
        let opts = PutOptions {
            attributes: Self::attributes(content_type),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path, PutPayload::from(data), opts)
            .await
            .map_err(|e| map_err(e, &self.container))?;
        self.url_source().stored(&self.store, &path, name).await
    }

    /// The URL of a blob of this container, as an upload of it returns.
    pub async fn stored_url(&self, name: String) -> Result<Stored, StoreError> {
        let path = Path::from(name.as_str());
        self.url_source().stored(&self.store, &path, name).await
    }

    fn url_source(&self) -> UrlSource {
        UrlSource {
            mode: self.url_mode.clone(),
            signer: self.signer.clone(),
            cs: self.cs.clone(),
            container: self.container.clone(),
        }
    }

    /// Whether a URL into this container (naming `blob`) may be read as
    /// an input. With the account key: only with a read SAS this server
    /// signed for that blob, still valid. Otherwise the server cannot
    /// tell, and the URL is fetched as given (Azure judges its SAS).
    pub fn check_own_url(&self, url: &url::Url, blob: &str) -> Result<(), SasRefusal> {
        match &self.signer {
            Some(s) => s.verify(url, &self.container, blob, chrono::Utc::now()),
            None => Ok(()),
        }
    }
}

/// What an upload needs to produce its URL after commit.
struct UrlSource {
    mode: UrlMode,
    signer: Option<Arc<BlobSigner>>,
    cs: ConnectionString,
    container: String,
}

impl UrlSource {
    async fn stored(
        &self,
        store: &MicrosoftAzure,
        path: &Path,
        name: String,
    ) -> Result<Stored, StoreError> {
        let url = match &self.mode {
            UrlMode::Public | UrlMode::PlainForSas => {
                self.cs.blob_url(&self.container, &name).to_string()
            }
            UrlMode::Signed(ttl) if let Some(signer) = &self.signer => signer
                .sign(
                    self.cs.blob_url(&self.container, &name),
                    &self.container,
                    &name,
                    *ttl,
                    chrono::Utc::now(),
                )
                .to_string(),
            UrlMode::Signed(ttl) => store
                .signed_url(http::Method::GET, path, *ttl)
                .await
                .map_err(|e| map_err(e, &self.container))?
                .to_string(),
        };
        Ok(Stored {
            url,
            path: None,
            blob_name: name,
            storage: StorageKind::Azure,
        })
    }
}

pub struct AzureUpload {
    store: Arc<MicrosoftAzure>,
    path: Path,
    name: String,
    content_type: &'static str,
    upload: Option<Box<dyn MultipartUpload>>,
    /// Put Block requests in flight; dropping the set aborts them.
    tasks: JoinSet<object_store::Result<()>>,
    max_in_flight: usize,
    url: UrlSource,
}

impl AzureUpload {
    pub async fn write(&mut self, block: Bytes) -> Result<(), StoreError> {
        while self.tasks.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        if self.upload.is_none() {
            // No request is made here: object_store sends the attributes
            // with the block list at completion.
            let opts = PutMultipartOptions {
                attributes: AzureStore::attributes(self.content_type),
                ..PutMultipartOptions::default()
            };
            let up = self
                .store
                .put_multipart_opts(&self.path, opts)
                .await
                .map_err(|e| map_err(e, &self.url.container))?;
            self.upload = Some(up);
        }
        if let Some(up) = self.upload.as_mut() {
            // The block id is fixed now, in order; the request runs on its own.
            let part = up.put_part(PutPayload::from(block));
            self.tasks.spawn(part);
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.tasks.join_next().await {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(map_err(e, &self.url.container)),
            Some(Err(e)) => Err(StoreError::Azure(format!("upload task failed: {e}"))),
        }
    }

    pub async fn commit(mut self) -> Result<Stored, StoreError> {
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        let mut up = self
            .upload
            .take()
            .ok_or_else(|| StoreError::Azure("nothing was uploaded".into()))?;
        up.complete()
            .await
            .map_err(|e| map_err(e, &self.url.container))?;
        self.url
            .stored(&self.store, &self.path, self.name.clone())
            .await
    }

    pub async fn abort(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Some(mut up) = self.upload.take() {
            let _ = up.abort().await;
        }
    }
}

/// A readable, secret-free message for an object_store error.
pub fn describe_error(e: object_store::Error) -> String {
    short(&e.to_string())
}

/// object_store errors to messages that say what to fix. Its Display can
/// carry a URL; signed URLs are never put into requests it reports, and the
/// account key never appears in a URL.
pub(super) fn map_err(e: object_store::Error, container: &str) -> StoreError {
    let text = e.to_string();
    match e {
        object_store::Error::NotFound { .. } if text.contains("ContainerNotFound") => {
            StoreError::ContainerMissing(container.to_string())
        }
        object_store::Error::NotFound { .. } => StoreError::ContainerMissing(container.to_string()),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StoreError::AzureAuth(short(&text)),
        _ if text.contains("403") || text.contains("AuthorizationFailure") => {
            StoreError::AzureAuth(short(&text))
        }
        _ => StoreError::Azure(short(&text)),
    }
}

/// Keep messages readable and free of query strings (SAS signatures).
fn short(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(400));
    for word in text.split_inclusive(char::is_whitespace) {
        if let Some(q) = word.find('?')
            && word[..q].contains("://")
        {
            out.push_str(&word[..q]);
            out.push_str("?…");
            if word.ends_with(char::is_whitespace) {
                out.push(' ');
            }
            continue;
        }
        out.push_str(word);
    }
    out.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn query_strings_are_cut_from_messages() {
        let m = short("error sending request for url (http://h/acct/c/b?sv=1&sig=SECRET) failed");
        assert!(!m.contains("SECRET"), "{m}");
        assert!(m.contains("http://h/acct/c/b?…"));
    }
}
