//! Image records: a small JSON document per stored image, kept in the
//! same store as the image, under a name made from the image's opaque id
//! (`.records/<imageId>.json`). Any replica that shares the store finds
//! an image by id, and a restart loses nothing: `continue_editing` and
//! `get_last_image_info` need no protocol session.
//!
//! A record is written after its image is committed, once, and never
//! changed: on Azure with `If-None-Match: *`, on the local folder as a
//! temp file that is fsynced and renamed. A process killed before the
//! record lands leaves an image nobody was told about (as before records
//! existed), never a record without its image.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// The folder (local) or name prefix (Azure) of records.
pub const RECORDS_DIR: &str = ".records";
/// The largest record read back: a whole Gemini 3 thought signature
/// (the extractor keeps up to 256 KiB), the cut prompt and text, and the
/// rest. A bigger document is refused, not read.
pub const MAX_RECORD_BYTES: u64 = 512 << 10;
const ID_PREFIX: &str = "img_";
const ID_HEX: usize = 32;

/// An opaque, unguessable image id: `img_` and 128 random bits in hex.
/// Knowing it is what lets a caller continue from or read the image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageId(String);

impl ImageId {
    pub fn new() -> Self {
        let bits: u128 = rand::random();
        Self(format!("{ID_PREFIX}{bits:032x}"))
    }

    /// Accept only the shape `new` makes, so an id can never name a path
    /// or blob outside the records.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let ok = s.strip_prefix(ID_PREFIX).is_some_and(|hex| {
            hex.len() == ID_HEX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            let shown: String = s.chars().take(40).collect();
            let more = if shown.len() < s.len() { "…" } else { "" };
            Err(format!(
                "{shown:?}{more} is not an imageId (they look like img_ and 32 hex digits, as an earlier result returned them)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn record_name(&self) -> String {
        format!("{RECORDS_DIR}/{}.json", self.0)
    }
}

impl Default for ImageId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the store keeps about one image. Field names are the JSON ones;
/// `version` lets a later release read what an earlier one wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub version: u32,
    pub image_id: String,
    pub blob_name: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub model: String,
    /// Cut to a few KiB (the previous turn continue_editing sends back).
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The image this one was edited from, when it was made from a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub created_at: String,
    /// Gemini 3's signature, whole: a follow-up edit on any replica sends
    /// it back with the previous turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    /// Who made the image (`Principal::id`: the token's subject, or the
    /// static token's label); only they may continue from it or read it,
    /// unless the operator shares images. `None`: made without identity
    /// (stdio, auth off, or before identities existed), readable by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

pub const RECORD_VERSION: u32 = 1;

impl ImageRecord {
    /// A blob name a record may point at: a plain name in the container
    /// (local: in the folder itself), never a path that climbs out.
    fn blob_name_is_plain(&self) -> bool {
        let n = &self.blob_name;
        !n.is_empty()
            && !n.contains('/')
            && !n.contains('\\')
            && !n.starts_with('.')
            && !n.contains('\0')
    }
}

impl Store {
    /// Store the record of an image already committed. Never replaces an
    /// existing record.
    pub async fn put_record(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let id = ImageId::parse(&rec.image_id).map_err(StoreError::Config)?;
        let body = serde_json::to_vec(rec).map_err(|e| StoreError::Config(e.to_string()))?;
        if body.len() as u64 > MAX_RECORD_BYTES {
            return Err(StoreError::Config(format!(
                "the image record would be {} bytes, over the {MAX_RECORD_BYTES}-byte cap",
                body.len()
            )));
        }
        match self {
            Store::Local(s) => {
                let dir = s.dir().join(RECORDS_DIR);
                let name = format!("{id}.json");
                tokio::task::spawn_blocking(move || write_new_file(&dir, &name, &body))
                    .await
                    .map_err(|e| StoreError::Local {
                        path: RECORDS_DIR.into(),
                        reason: e.to_string(),
                    })?
            }
            Store::Azure(s) => {
                let mut attributes = object_store::Attributes::new();
                attributes.insert(
                    object_store::Attribute::ContentType,
                    "application/json".into(),
                );
                let opts = PutOptions {
                    mode: PutMode::Create,
                    attributes,
                    ..PutOptions::default()
                };
                s.object_store()
                    .put_opts(
                        &ObjectPath::from(id.record_name()),
                        PutPayload::from(Bytes::from(body)),
                        opts,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| super::azure::map_err(e, s.container()))
            }
        }
    }

    /// The record of `id`, or `None` when the store has none.
    pub async fn get_record(&self, id: &ImageId) -> Result<Option<ImageRecord>, StoreError> {
        let body = match self {
            Store::Local(s) => {
                let path = s.dir().join(RECORDS_DIR).join(format!("{id}.json"));
                let p = path.clone();
                tokio::task::spawn_blocking(move || read_capped(&p))
                    .await
                    .map_err(|e| StoreError::Local {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })??
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
                if r.meta.size > MAX_RECORD_BYTES {
                    return Err(too_big(r.meta.size));
                }
                let mut stream = r.into_stream();
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| super::azure::map_err(e, s.container()))?;
                    if (buf.len() + chunk.len()) as u64 > MAX_RECORD_BYTES {
                        return Err(too_big((buf.len() + chunk.len()) as u64));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Some(buf)
            }
        };
        let Some(body) = body else { return Ok(None) };
        let rec: ImageRecord = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Config(format!("the record of {id} cannot be read: {e}")))?;
        if rec.image_id != id.as_str() || !rec.blob_name_is_plain() {
            return Err(StoreError::Config(format!(
                "the record of {id} does not describe that image"
            )));
        }
        Ok(Some(rec))
    }

    /// The file or URL of a recorded image, as an upload would have
    /// returned it (a fresh read SAS on Azure, where the server signs).
    pub async fn locate(&self, rec: &ImageRecord) -> Result<super::Stored, StoreError> {
        match self {
            Store::Local(s) => {
                let path = s.dir().join(&rec.blob_name);
                Ok(super::Stored {
                    url: super::local::file_url(&path),
                    path: Some(path),
                    blob_name: rec.blob_name.clone(),
                    storage: super::StorageKind::Local,
                })
            }
            Store::Azure(s) => s.stored_url(rec.blob_name.clone()).await,
        }
    }
}

fn too_big(size: u64) -> StoreError {
    StoreError::Config(format!(
        "an image record of {size} bytes is over the {MAX_RECORD_BYTES}-byte cap"
    ))
}

/// Read a small file whole, refusing one over the cap; `None` when it
/// does not exist.
fn read_capped(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    read_capped_at(path, MAX_RECORD_BYTES)
}

/// [`read_capped`] with a cap of the caller's.
pub(super) fn read_capped_at(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let err = |e: &std::io::Error| StoreError::Local {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let too_big = |n: u64| {
        StoreError::Config(format!(
            "{} is {n} bytes, over the {cap}-byte cap",
            path.display()
        ))
    };
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&e)),
    };
    let len = file.metadata().map_err(|e| err(&e))?.len();
    if len > cap {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    use std::io::Read as _;
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(&e))?;
    if buf.len() as u64 > cap {
        return Err(too_big(buf.len() as u64));
    }
    Ok(Some(buf))
}

/// Write `name` in `dir` whole or not at all: a private temp file, fsync,
/// then a link to the final name that fails if it exists (so a record is
/// never replaced), and the folder fsynced so the name survives a crash.
pub(super) fn write_new_file(dir: &Path, name: &str, body: &[u8]) -> Result<(), StoreError> {
    let fin = dir.join(name);
    let err = |p: &Path, e: &std::io::Error| StoreError::Local {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
    let tmp: PathBuf = dir.join(format!(".{name}.part"));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        drop(f);
        fs::hard_link(&tmp, &fin)?;
        fs::File::open(dir)?.sync_all()
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(|e| err(&fin, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &ImageId) -> ImageRecord {
        ImageRecord {
            version: RECORD_VERSION,
            image_id: id.to_string(),
            blob_name: "generated-1-abc.png".into(),
            content_type: "image/png".into(),
            bytes: 3,
            sha256: "00".into(),
            width: Some(1),
            height: Some(1),
            model: "m".into(),
            prompt: "p".into(),
            text: None,
            parent: None,
            created_at: "2026-12-02T00:00:00Z".into(),
            thought_signature: Some("sig".into()),
            principal: None,
        }
    }

    #[test]
    fn ids_are_random_and_only_their_own_shape_parses() {
        let a = ImageId::new();
        assert_ne!(a, ImageId::new());
        assert_eq!(ImageId::parse(a.as_str()).expect("own"), a);
        for bad in [
            "",
            "img_",
            "img_../../etc/passwd",
            "img_0123456789abcdef0123456789ABCDEF",
            "img_0123456789abcdef0123456789abcde",
            "img_0123456789abcdef0123456789abcdef0",
            "generated-1-abc.png",
        ] {
            assert!(ImageId::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_local_record_round_trips_and_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::Local(super::super::local::LocalStore::open(dir.path()).expect("open"));
        let id = ImageId::new();
        assert_eq!(store.get_record(&id).await.expect("read"), None);
        let rec = record(&id);
        store.put_record(&rec).await.expect("put");
        assert_eq!(
            store.get_record(&id).await.expect("read"),
            Some(rec.clone())
        );
        let mut other = rec.clone();
        other.prompt = "changed".into();
        store.put_record(&other).await.expect_err("exists");
        assert_eq!(store.get_record(&id).await.expect("read"), Some(rec));
        let left: Vec<_> = fs::read_dir(dir.path().join(RECORDS_DIR))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![format!("{id}.json")], "no temp file left");
    }

    #[tokio::test]
    async fn records_that_point_elsewhere_or_are_too_big_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::Local(super::super::local::LocalStore::open(dir.path()).expect("open"));
        let id = ImageId::new();
        let mut rec = record(&id);
        rec.blob_name = "../secret.png".into();
        let records = dir.path().join(RECORDS_DIR);
        fs::create_dir_all(&records).expect("mkdir");
        fs::write(
            records.join(format!("{id}.json")),
            serde_json::to_vec(&rec).expect("json"),
        )
        .expect("write");
        let e = store.get_record(&id).await.expect_err("climbs out");
        assert!(e.to_string().contains("does not describe"), "{e}");

        let big = ImageId::new();
        fs::write(
            records.join(format!("{big}.json")),
            vec![b' '; MAX_RECORD_BYTES as usize + 1],
        )
        .expect("write");
        let e = store.get_record(&big).await.expect_err("too big");
        assert!(e.to_string().contains("cap"), "{e}");

        let mut huge = record(&ImageId::new());
        huge.thought_signature = Some("x".repeat(MAX_RECORD_BYTES as usize));
        store.put_record(&huge).await.expect_err("too big to write");
    }
}
