//! Container bootstrap for Azure Blob Storage: this module owns creating the
//! configured container when it is missing and checking that it exists, the
//! two container-level operations `object_store` does not offer. It signs its
//! few REST calls itself (SharedKey) or appends the connection string's SAS.
//! It must not touch blobs, must never create a publicly readable container
//! (no `x-ms-blob-public-access` header, ever), and must never put a key, a
//! signature or a SAS-bearing URL into an error, a log line or a panic.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use sha2::Sha256;
use url::Url;

use crate::store::connstr::{ConnectionString, Credential, Secret};

/// Service version sent with every call. The same one object_store 0.14 uses,
/// so both paths see identical service semantics; Azurite accepts it.
pub const STORAGE_API_VERSION: &str = "2023-11-03";

/// Error bodies are small XML documents; anything longer is not worth reading.
const ERROR_BODY_CAP: usize = 16 * 1024;

/// Container calls are tiny; a hung endpoint should fail a `doctor` run or
/// startup quickly instead of waiting on the client's default.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const X_MS_DATE: HeaderName = HeaderName::from_static("x-ms-date");
const X_MS_VERSION: HeaderName = HeaderName::from_static("x-ms-version");
const X_MS_ERROR_CODE: &str = "x-ms-error-code";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Existed,
    Created,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid container name {name:?}: {reason}")]
    InvalidContainerName { name: String, reason: &'static str },
    #[error(
        "access denied while {operation} container {container:?} (HTTP {status}, {}): {hint}",
        code.as_deref().unwrap_or("no error code")
    )]
    Forbidden {
        operation: &'static str,
        container: String,
        status: u16,
        code: Option<String>,
        hint: &'static str,
    },
    #[error(
        "Azure answered HTTP {status} ({}) while {operation} container {container:?}",
        code.as_deref().unwrap_or("no error code")
    )]
    Unexpected {
        operation: &'static str,
        container: String,
        status: u16,
        code: Option<String>,
    },
    #[error(
        "could not reach the blob endpoint while {operation} container {container:?}: {source}"
    )]
    Transport {
        operation: &'static str,
        container: String,
        /// Stripped of its URL, which may carry a SAS.
        #[source]
        source: reqwest::Error,
    },
    #[error("the account key cannot be used for signing (is it the base64 key from the portal?)")]
    InvalidKey,
}

const HINT_KEY: &str = "check AccountName and AccountKey in the connection string (the key may have been rotated, or belong to another account); if the storage account has a firewall, allow this host";
const HINT_SAS_REJECTED: &str = "the SAS itself was rejected: check that it has not expired (se=), is already valid (st=), was copied whole, and that no IP restriction (sip=) or storage firewall excludes this host";
const HINT_SAS: &str = "this SAS cannot create containers (a service SAS never can; an account SAS needs srt to include c and sp to include c or w); create the container yourself or use a connection string with an account key";
const HINT_SAS_READ: &str = "this SAS may not read container properties; check that it has not expired and grants l (list) or, for an account SAS, srt with c and sp with r";
const HINT_ANONYMOUS: &str = "the connection string has no AccountKey or SharedAccessSignature, so the container must already exist and be reachable anonymously";

/// Create `container` unless it already exists. The container is always
/// private.
///
/// With a SAS that may not create containers, a container that already exists
/// still counts as success: the SAS is probed with a one-item listing.
pub async fn ensure_container(
    http: &reqwest::Client,
    cs: &ConnectionString,
    container: &str,
) -> Result<ContainerStatus, SetupError> {
    const OP: &str = "creating";
    validate_container_name(container)?;
    let response = send(http, cs, Method::PUT, container, "restype=container", OP).await?;
    let status = response.status();
    if status == StatusCode::CREATED {
        tracing::info!(container, account = %cs.account, "created blob container");
        return Ok(ContainerStatus::Created);
    }
    let code = error_code(response).await;
    match status {
        StatusCode::CONFLICT if code.as_deref() == Some("ContainerAlreadyExists") => {
            tracing::debug!(container, "blob container already exists");
            Ok(ContainerStatus::Existed)
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            if sas_probe(http, cs, container, OP).await? == Some(true) {
                tracing::debug!(container, "blob container exists; the SAS cannot create it");
                return Ok(ContainerStatus::Existed);
            }
            Err(forbidden(cs, OP, container, status, code, HINT_SAS))
        }
        _ => Err(SetupError::Unexpected {
            operation: OP,
            container: container.to_owned(),
            status: status.as_u16(),
            code,
        }),
    }
}

/// Whether `container` exists, for diagnostics. Uses Get Container Properties;
/// with a SAS that may not call it, falls back to a one-item listing.
pub async fn container_exists(
    http: &reqwest::Client,
    cs: &ConnectionString,
    container: &str,
) -> Result<bool, SetupError> {
    const OP: &str = "checking";
    validate_container_name(container)?;
    let response = send(http, cs, Method::GET, container, "restype=container", OP).await?;
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(true);
    }
    let code = error_code(response).await;
    match status {
        StatusCode::NOT_FOUND => Ok(false),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            if let Some(exists) = sas_probe(http, cs, container, OP).await? {
                return Ok(exists);
            }
            Err(forbidden(cs, OP, container, status, code, HINT_SAS_READ))
        }
        _ => Err(SetupError::Unexpected {
            operation: OP,
            container: container.to_owned(),
            status: status.as_u16(),
            code,
        }),
    }
}

/// Container SASes may list but neither create nor read container
/// properties, so after a denial a SAS gets one more try with a one-item
/// listing. `None` when that is refused too (or there is no SAS), so the
/// caller reports the original denial.
async fn sas_probe(
    http: &reqwest::Client,
    cs: &ConnectionString,
    container: &str,
    operation: &'static str,
) -> Result<Option<bool>, SetupError> {
    if !matches!(cs.credential, Credential::Sas(_)) {
        return Ok(None);
    }
    let query = "restype=container&comp=list&maxresults=1";
    let response = send(http, cs, Method::GET, container, query, operation).await?;
    Ok(match response.status() {
        StatusCode::OK => Some(true),
        StatusCode::NOT_FOUND => Some(false),
        _ => None,
    })
}

fn forbidden(
    cs: &ConnectionString,
    operation: &'static str,
    container: &str,
    status: StatusCode,
    code: Option<String>,
    sas_hint: &'static str,
) -> SetupError {
    let hint = match cs.credential {
        Credential::AccountKey(_) => HINT_KEY,
        // Only these codes mean "valid SAS, too few rights"; anything else
        // (bad or expired signature, IP rules) needs different advice.
        Credential::Sas(_) => match code.as_deref() {
            Some(
                "AuthorizationPermissionMismatch"
                | "AuthorizationResourceTypeMismatch"
                | "AuthorizationServiceMismatch",
            ) => sas_hint,
            _ => HINT_SAS_REJECTED,
        },
        Credential::None => HINT_ANONYMOUS,
    };
    SetupError::Forbidden {
        operation,
        container: container.to_owned(),
        status: status.as_u16(),
        code,
        hint,
    }
}

/// Send one container-level request. `query` must already be encoded.
async fn send(
    http: &reqwest::Client,
    cs: &ConnectionString,
    method: Method,
    container: &str,
    query: &str,
    operation: &'static str,
) -> Result<reqwest::Response, SetupError> {
    let transport = |e: reqwest::Error| SetupError::Transport {
        operation,
        container: container.to_owned(),
        source: e.without_url(),
    };

    let mut url = cs.container_url(container);
    match &cs.credential {
        // Appended verbatim: re-encoding could alter the signed values.
        Credential::Sas(sas) => url.set_query(Some(&format!("{query}&{}", sas.expose()))),
        Credential::AccountKey(_) | Credential::None => url.set_query(Some(query)),
    }

    let mut builder = http
        .request(method.clone(), url)
        .timeout(REQUEST_TIMEOUT)
        .header(X_MS_DATE, rfc1123(SystemTime::now()))
        .header(X_MS_VERSION, STORAGE_API_VERSION);
    if method == Method::PUT {
        // The service answers 411 to a body-less PUT without a length.
        builder = builder.header(CONTENT_LENGTH, "0");
    }
    let mut request = builder.build().map_err(transport)?;

    if let Credential::AccountKey(key) = &cs.credential {
        let authorization = shared_key_authorization(
            request.method(),
            request.url(),
            request.headers(),
            &cs.account,
            key,
        )?;
        let value = HeaderValue::from_str(&authorization).map_err(|_| SetupError::InvalidKey)?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }

    http.execute(request).await.map_err(transport)
}

/// Azure's error code: the `x-ms-error-code` header, else `<Code>` in the
/// XML body (read up to a small cap; HEAD-like answers have none).
async fn error_code(response: reqwest::Response) -> Option<String> {
    if let Some(code) = response
        .headers()
        .get(X_MS_ERROR_CODE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some(code.to_owned());
    }
    let body = crate::capped::read_body(response, ERROR_BODY_CAP).await;
    let body = String::from_utf8_lossy(&body.bytes);
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    let code = body[start..end].trim();
    (!code.is_empty() && code.len() <= 128).then(|| code.to_owned())
}

/// Container name rules from the Blob service docs, checked locally so that a
/// typo gives a clear message instead of a 400 from the service.
pub fn validate_container_name(name: &str) -> Result<(), SetupError> {
    let fail = |reason| {
        Err(SetupError::InvalidContainerName {
            name: name.to_owned(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return fail("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return fail("must start and end with a letter or digit");
    }
    if name.contains("--") {
        return fail("must not contain consecutive '-'");
    }
    Ok(())
}

/// `Authorization: SharedKey {account}:{signature}` for a request, from the
/// documented string-to-sign (Blob service, version 2009-09-19 and later).
fn shared_key_authorization(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    account: &str,
    key: &Secret,
) -> Result<String, SetupError> {
    let key = BASE64
        .decode(key.expose())
        .map_err(|_| SetupError::InvalidKey)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SetupError::InvalidKey)?;
    mac.update(string_to_sign(method, url, headers, account).as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    Ok(format!("SharedKey {account}:{signature}"))
}

fn string_to_sign(method: &Method, url: &Url, headers: &HeaderMap, account: &str) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    // Since version 2015-02-21 a zero length is signed as empty, so that
    // clients that omit the header and those that send 0 agree.
    let content_length = Some(header("content-length")).filter(|v| v != "0");
    let mut out = String::new();
    out.push_str(method.as_str());
    out.push('\n');
    for slot in [
        header("content-encoding"),
        header("content-language"),
        content_length.unwrap_or_default(),
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        out.push_str(&slot);
        out.push('\n');
    }
    out.push_str(&canonicalized_headers(headers));
    out.push_str(&canonicalized_resource(url, account));
    out
}

fn canonicalized_headers(headers: &HeaderMap) -> String {
    // HeaderMap names are already lowercase.
    let mut names: Vec<&str> = headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| n.starts_with("x-ms-"))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::new();
    for name in names {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| unfold_whitespace(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

fn unfold_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `/{account}{path}` then `\nname:v1,v2` per query parameter, names
/// lowercased and sorted, values decoded and sorted. The path is the URL's,
/// so a path-style (emulator) URL yields `/{account}/{account}/{container}`,
/// which is what Azurite computes too.
fn canonicalized_resource(url: &Url, account: &str) -> String {
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let name = name.to_lowercase();
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into_owned()),
            None => params.push((name, vec![value.into_owned()])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("/{account}{}", url.path());
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// RFC 1123 date in GMT, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn rfc1123(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::connstr::{self, EMULATOR_ACCOUNT_KEY};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn rfc1123_known_dates() {
        let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(rfc1123(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(rfc1123(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc1123(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(rfc1123(at(1_709_164_800)), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(rfc1123(at(4_102_444_799)), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn container_names() {
        for good in ["abc", "images-2024", "a1b", &"a".repeat(63)] {
            assert!(validate_container_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Images",
            "-abc",
            "abc-",
            "a--b",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(validate_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn string_to_sign_layout() {
        let url = Url::parse("http://127.0.0.1:10000/devstoreaccount1/images?restype=container")
            .expect("url");
        let mut headers = HeaderMap::new();
        headers.insert(X_MS_VERSION, HeaderValue::from_static("2023-11-03"));
        headers.insert(
            X_MS_DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        headers.insert("x-ms-meta-b", HeaderValue::from_static("  two   words "));
        let s = string_to_sign(&Method::PUT, &url, &headers, "devstoreaccount1");
        assert_eq!(
            s,
            "PUT\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:Sun, 06 Nov 1994 08:49:37 GMT\n\
             x-ms-meta-b:two words\n\
             x-ms-version:2023-11-03\n\
             /devstoreaccount1/devstoreaccount1/images\nrestype:container"
        );
    }

    #[test]
    fn canonicalized_resource_sorts_and_decodes_query() {
        let url = Url::parse("https://acct.blob.core.windows.net/c?restype=container&comp=list&Prefix=a%2Fb&include=z&include=a")
            .expect("url");
        assert_eq!(
            canonicalized_resource(&url, "acct"),
            "/acct/c\ncomp:list\ninclude:a,z\nprefix:a/b\nrestype:container"
        );
    }

    /// object_store signs the same way for its own requests; agreeing with
    /// it on a request with a body, a date slot and a query catches slot
    /// ordering and canonicalisation mistakes.
    #[test]
    fn signature_matches_object_store() {
        use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
        use object_store::client::HttpRequest;

        let key = AzureAccessKey::try_new(EMULATOR_ACCOUNT_KEY).expect("key");
        let credential = AzureCredential::AccessKey(key);
        let mut request: HttpRequest = http::Request::builder()
            .method(Method::PUT)
            .uri("http://127.0.0.1:10000/devstoreaccount1/images/a%20b.png?comp=block&blockid=QUJD")
            .header("content-type", "image/png")
            .header("content-length", "5")
            .header("x-ms-blob-type", "BlockBlob")
            .body(bytes::Bytes::from_static(b"hello").into())
            .expect("request");
        AzureAuthorizer::new(&credential, "devstoreaccount1")
            .try_authorize(&mut request)
            .expect("authorize");
        let expected = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .expect("authorization")
            .to_owned();
        let url = Url::parse(&request.uri().to_string()).expect("url");
        let ours = shared_key_authorization(
            request.method(),
            &url,
            request.headers(),
            "devstoreaccount1",
            &Secret::new(EMULATOR_ACCOUNT_KEY),
        )
        .expect("sign");
        assert_eq!(ours, expected);
    }

    /// Serve one canned answer on loopback and return the raw request text.
    async fn one_shot(answer: impl Into<String>) -> (String, tokio::task::JoinHandle<String>) {
        let answer = answer.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return String::new();
            };
            let mut buf = vec![0u8; 8192];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.shutdown().await;
            String::from_utf8_lossy(&seen).into_owned()
        });
        (format!("http://{addr}/devstoreaccount1"), handle)
    }

    fn key_cs(endpoint: &str) -> ConnectionString {
        connstr::parse(&format!(
            "AccountKey={EMULATOR_ACCOUNT_KEY};BlobEndpoint={endpoint}"
        ))
        .expect("connection string")
    }

    #[tokio::test]
    async fn create_request_on_the_wire() {
        let (endpoint, server) =
            one_shot("HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await;
        let status = ensure_container(&reqwest::Client::new(), &key_cs(&endpoint), "images")
            .await
            .expect("created");
        assert_eq!(status, ContainerStatus::Created);
        let request = server.await.expect("server").to_ascii_lowercase();
        assert!(
            request.starts_with("put /devstoreaccount1/images?restype=container http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nx-ms-version: 2023-11-03\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nx-ms-date: "), "{request}");
        assert!(request.contains("\r\nauthorization: sharedkey devstoreaccount1:"));
        assert_eq!(request.matches("content-length: 0").count(), 1, "{request}");
        assert!(!request.contains("x-ms-blob-public-access"), "{request}");
    }

    #[tokio::test]
    async fn sas_is_appended_verbatim_and_not_signed() {
        let (endpoint, server) =
            one_shot("HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await;
        let cs = connstr::parse(&format!(
            "BlobEndpoint={endpoint};SharedAccessSignature=?sv=2022-11-02&sig=a%2Bb%3D"
        ))
        .expect("connection string");
        ensure_container(&reqwest::Client::new(), &cs, "images")
            .await
            .expect("created");
        let request = server.await.expect("server");
        assert!(
            request.starts_with(
                "PUT /devstoreaccount1/images?restype=container&sv=2022-11-02&sig=a%2Bb%3D HTTP/1.1"
            ),
            "{request}"
        );
        assert!(!request.to_ascii_lowercase().contains("authorization:"));
    }

    #[tokio::test]
    async fn conflict_and_error_codes_are_mapped() {
        let (endpoint, _server) = one_shot(
            "HTTP/1.1 409 Conflict\r\nx-ms-error-code: ContainerAlreadyExists\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let status = ensure_container(&reqwest::Client::new(), &key_cs(&endpoint), "images")
            .await
            .expect("existed");
        assert_eq!(status, ContainerStatus::Existed);

        let body = "<?xml version=\"1.0\"?><Error><Code>ContainerBeingDeleted</Code><Message>x</Message></Error>";
        let answer = format!(
            "HTTP/1.1 409 Conflict\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (endpoint, _server) = one_shot(answer).await;
        let err = ensure_container(&reqwest::Client::new(), &key_cs(&endpoint), "images")
            .await
            .expect_err("being deleted");
        assert!(
            matches!(&err, SetupError::Unexpected { status: 409, code: Some(c), .. } if c == "ContainerBeingDeleted"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn forbidden_with_key_names_the_key_but_never_shows_it() {
        let (endpoint, _server) = one_shot(
            "HTTP/1.1 403 Forbidden\r\nx-ms-error-code: AuthenticationFailed\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let err = ensure_container(&reqwest::Client::new(), &key_cs(&endpoint), "images")
            .await
            .expect_err("forbidden");
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(err, SetupError::Forbidden { hint: HINT_KEY, .. }),
            "{shown}"
        );
        assert!(shown.contains("AccountKey"));
        assert!(!shown.contains(&EMULATOR_ACCOUNT_KEY[..16]));
    }

    #[tokio::test]
    async fn transport_errors_do_not_show_the_sas() {
        // Bind then drop, so the port is very likely closed.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let cs = connstr::parse(&format!(
            "BlobEndpoint=http://{addr}/devstoreaccount1;SharedAccessSignature=sv=1&sig=TOPSECRETSIG"
        ))
        .expect("connection string");
        let err = container_exists(&reqwest::Client::new(), &cs, "images")
            .await
            .expect_err("refused");
        let mut shown = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            shown.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        assert!(matches!(err, SetupError::Transport { .. }), "{shown}");
        assert!(!shown.contains("TOPSECRETSIG"), "{shown}");
    }
}
