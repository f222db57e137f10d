//! Integration tests against a real Azurite blob service: container bootstrap
//! (SharedKey and SAS), object_store multipart upload through the builder from
//! a connection string, signed GET URLs, and what an unfinished upload leaves
//! behind. They run only when `AZURITE_BLOB_ENDPOINT` names a path-style
//! endpoint such as `http://127.0.0.1:10123/devstoreaccount1`; otherwise each
//! test prints a note and passes. They must not talk to anything but that
//! endpoint, and must not depend on each other's containers.

#![allow(clippy::disallowed_methods)] // test bodies are small

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{account_sas, account_sas_until, container_sas};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::TryStreamExt as _;
use http::Method;
use nano_banana_mcp::store::azure_setup::{
    ContainerStatus, SetupError, container_exists, ensure_container,
};
use nano_banana_mcp::store::connstr::{self, ConnectionString, EMULATOR_ACCOUNT_KEY};
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutMultipartOptions, PutPayload,
};

const ENV: &str = "AZURITE_BLOB_ENDPOINT";
const MIB: usize = 1024 * 1024;

fn endpoint() -> Option<String> {
    match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            println!("note: {ENV} is not set; skipping Azurite integration test");
            None
        }
    }
}

fn key_cs(endpoint: &str, key: &str) -> ConnectionString {
    connstr::parse(&format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint};"
    ))
    .expect("connection string")
}

/// Container names unique per run and per test, within Azure's rules.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("it-{tag}-{}-{nanos}", std::process::id())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

fn sas_cs(endpoint: &str, sas: &str) -> ConnectionString {
    connstr::parse(&format!(
        "BlobEndpoint={endpoint};SharedAccessSignature={sas}"
    ))
    .expect("connection string")
}

#[tokio::test]
async fn container_bootstrap_multipart_and_signed_url() {
    let Some(endpoint) = endpoint() else { return };
    let http = reqwest::Client::new();
    let cs = key_cs(&endpoint, EMULATOR_ACCOUNT_KEY);
    assert!(cs.is_emulator_style);
    let container = unique("mp");

    assert!(
        !container_exists(&http, &cs, &container)
            .await
            .expect("exists?")
    );
    assert_eq!(
        ensure_container(&http, &cs, &container)
            .await
            .expect("create"),
        ContainerStatus::Created
    );
    assert_eq!(
        ensure_container(&http, &cs, &container)
            .await
            .expect("again"),
        ContainerStatus::Existed
    );
    assert!(
        container_exists(&http, &cs, &container)
            .await
            .expect("exists?")
    );

    let store = cs.builder(&container).build().expect("object store");

    // Completed multipart upload with a content type.
    let location = Path::from("images/2024/photo-1.png");
    let first = pattern(5 * MIB, 1);
    let second = pattern(MIB, 2);
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "image/png".into());
    let options = PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let mut upload = store
        .put_multipart_opts(&location, options)
        .await
        .expect("start upload");
    upload
        .put_part(PutPayload::from(Bytes::from(first.clone())))
        .await
        .expect("part 1");
    upload
        .put_part(PutPayload::from(Bytes::from(second.clone())))
        .await
        .expect("part 2");
    upload.complete().await.expect("complete");
    let expected: Vec<u8> = [first, second].concat();

    let meta = store.head(&location).await.expect("head");
    assert_eq!(meta.size, expected.len() as u64);

    // The container is private: an unsigned GET must not succeed.
    let anonymous = reqwest::get(cs.blob_url(&container, "images/2024/photo-1.png"))
        .await
        .expect("anonymous get")
        .status();
    assert!(
        !anonymous.is_success(),
        "anonymous read allowed: {anonymous}"
    );
    println!("anonymous GET of a blob in the new container: {anonymous}");

    // Signed GET URL, fetched by a client that knows nothing about Azure.
    let signed = store
        .signed_url(Method::GET, &location, Duration::from_secs(3600))
        .await
        .expect("signed url");
    let names: Vec<String> = signed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    println!(
        "signed URL form: {}?{}",
        signed.as_str().split('?').next().unwrap_or_default(),
        names.join("=…&")
    );
    assert_eq!(
        signed.path(),
        cs.blob_url(&container, "images/2024/photo-1.png").path(),
        "blob_url must address the same blob object_store wrote"
    );
    let response = reqwest::get(signed).await.expect("download");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    let body = response.bytes().await.expect("body");
    assert!(
        body.as_ref() == expected.as_slice(),
        "downloaded bytes differ"
    );

    // object_store 0.14.2 signs the percent-encoded path, while the service
    // (Azure and Azurite alike) signs the decoded blob name, so signed URLs
    // only work for names made of unreserved characters. If this starts
    // passing with 200, the upstream bug is fixed.
    let spaced = Path::from("images/with space.png");
    store
        .put(&spaced, PutPayload::from(Bytes::from_static(b"x")))
        .await
        .expect("put with SharedKey works for any name");
    let signed = store
        .signed_url(Method::GET, &spaced, Duration::from_secs(3600))
        .await
        .expect("signed url");
    let status = reqwest::get(signed).await.expect("download").status();
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "signed URL for a name with a space"
    );
    store.delete(&spaced).await.expect("delete");

    // An upload that never completes leaves nothing visible.
    let abandoned = Path::from("images/abandoned.png");
    let mut upload = store.put_multipart(&abandoned).await.expect("start");
    upload
        .put_part(PutPayload::from(Bytes::from(pattern(MIB, 3))))
        .await
        .expect("part");
    drop(upload);
    match store.head(&abandoned).await {
        Err(object_store::Error::NotFound { .. }) => {}
        other => panic!("uncommitted blob is visible: {other:?}"),
    }
    let listed: Vec<Path> = store
        .list(Some(&Path::from("images")))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed, vec![location]);
}

/// `builder()` reaches Azurite through `with_endpoint`, which skips
/// object_store's emulator-only client-side fallback for `list_with_offset`;
/// the listing must still start after the offset.
#[tokio::test]
async fn list_with_offset_works_without_emulator_mode() {
    let Some(endpoint) = endpoint() else { return };
    let http = reqwest::Client::new();
    let cs = key_cs(&endpoint, EMULATOR_ACCOUNT_KEY);
    let container = unique("offset");
    ensure_container(&http, &cs, &container)
        .await
        .expect("create");
    let store = cs.builder(&container).build().expect("store");
    for name in ["a", "b", "c"] {
        store
            .put(
                &Path::from(name),
                PutPayload::from(Bytes::from_static(b"x")),
            )
            .await
            .expect("put");
    }
    let listed: Vec<Path> = store
        .list_with_offset(None, &Path::from("a"))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed, vec![Path::from("b"), Path::from("c")]);
}

#[tokio::test]
async fn wrong_account_key_is_forbidden() {
    let Some(endpoint) = endpoint() else { return };
    let http = reqwest::Client::new();
    let wrong = BASE64.encode([7u8; 64]);
    let cs = key_cs(&endpoint, &wrong);
    let container = unique("badkey");

    let err = ensure_container(&http, &cs, &container)
        .await
        .expect_err("must be refused");
    let shown = format!("{err} | {err:?}");
    println!("wrong key: {err}");
    assert!(
        matches!(err, SetupError::Forbidden { status: 403, .. }),
        "{shown}"
    );
    assert!(shown.contains("AccountKey"), "{shown}");
    assert!(!shown.contains(&wrong[..16]), "{shown}");

    let err = container_exists(&http, &cs, &container)
        .await
        .expect_err("must be refused");
    assert!(matches!(err, SetupError::Forbidden { .. }), "{err}");
}

#[tokio::test]
async fn account_sas_with_container_scope_creates_and_uploads() {
    let Some(endpoint) = endpoint() else { return };
    let http = reqwest::Client::new();
    let cs = sas_cs(&endpoint, &account_sas("rwdlac", "sco"));
    let container = unique("sas");

    assert_eq!(
        ensure_container(&http, &cs, &container)
            .await
            .expect("create"),
        ContainerStatus::Created
    );
    assert_eq!(
        ensure_container(&http, &cs, &container)
            .await
            .expect("again"),
        ContainerStatus::Existed
    );
    assert!(
        container_exists(&http, &cs, &container)
            .await
            .expect("exists?")
    );

    let store = cs.builder(&container).build().expect("object store");
    let location = Path::from("a.bin");
    store
        .put(&location, PutPayload::from(Bytes::from_static(b"via sas")))
        .await
        .expect("put");
    let got = store
        .get(&location)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(got.as_ref(), b"via sas");
}

#[tokio::test]
async fn sas_that_cannot_create_is_explained() {
    let Some(endpoint) = endpoint() else { return };
    let http = reqwest::Client::new();
    // Object-only account SAS: may write blobs, not containers.
    let cs = sas_cs(&endpoint, &account_sas("rwdlac", "o"));
    let container = unique("nocreate");
    let err = ensure_container(&http, &cs, &container)
        .await
        .expect_err("must be refused");
    println!("object-only SAS: {err}");
    assert!(matches!(err, SetupError::Forbidden { .. }), "{err}");
    assert!(
        err.to_string().contains("cannot create containers"),
        "{err}"
    );
    assert!(!err.to_string().contains("sig="), "{err}");

    let expired = sas_cs(
        &endpoint,
        &account_sas_until("rwdlac", "sco", "2001-01-01T00:00:00Z"),
    );
    let err = ensure_container(&http, &expired, &container)
        .await
        .expect_err("expired SAS must be refused");
    println!("expired SAS: {err}");
    assert!(matches!(err, SetupError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn container_sas_accepts_an_existing_container() {
    let Some(endpoint) = endpoint() else { return };
    let http = reqwest::Client::new();
    let container = unique("svcsas");
    let admin = key_cs(&endpoint, EMULATOR_ACCOUNT_KEY);
    ensure_container(&http, &admin, &container)
        .await
        .expect("create with key");

    let cs = sas_cs(&endpoint, &container_sas(&container, "rwl"));
    assert_eq!(
        ensure_container(&http, &cs, &container)
            .await
            .expect("existing"),
        ContainerStatus::Existed
    );
    assert!(
        container_exists(&http, &cs, &container)
            .await
            .expect("exists?")
    );

    let missing = unique("svcsas-missing");
    let cs = sas_cs(&endpoint, &container_sas(&missing, "rwl"));
    let err = ensure_container(&http, &cs, &missing)
        .await
        .expect_err("cannot create");
    println!("service SAS on a missing container: {err}");
    assert!(
        err.to_string().contains("cannot create containers"),
        "{err}"
    );
}
