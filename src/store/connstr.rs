//! Azure Storage connection strings: this module owns turning every documented
//! form (account key with default or explicit endpoints, SAS with an explicit
//! blob endpoint, `UseDevelopmentStorage=true` for Azurite) into one validated
//! [`ConnectionString`], and turning that into an `object_store` Azure builder.
//! It also owns keeping secrets out of every `Debug`/`Display` it produces:
//! account keys and SAS tokens live only inside [`Secret`]. It must not do any
//! network I/O, must not log or print a secret value, and must not read the
//! process environment itself (only [`builder_for_identity`] lets
//! `object_store` do so, on purpose).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use object_store::azure::MicrosoftAzureBuilder;
use url::{Host, Url};

/// Account name Azurite and the old storage emulator always serve.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// The emulator's published, well-known key. It is public on purpose, which is
/// why it may live in source; it still travels as a [`Secret`] so that code
/// handling it cannot tell it apart from a real key and print it by mistake.
pub const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Blob port of the emulator; `DevelopmentStorageProxyUri` keeps it and only
/// swaps the scheme and host, as the Azure SDKs do.
pub const EMULATOR_BLOB_PORT: u16 = 10000;

/// Public-cloud suffix used when a connection string names no `EndpointSuffix`.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

pub use crate::secret::Secret;

/// How requests to the account are authorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// Base64 shared key (validated to decode).
    AccountKey(Secret),
    /// SAS query string, still percent-encoded as given, without a leading `?`.
    Sas(Secret),
    /// Anonymous access (public containers only).
    None,
}

/// A parsed, validated connection string, reduced to what the blob service needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub account: String,
    /// Scheme, host, optional port and, for path-style endpoints, the account
    /// segment. The path never ends in `/` unless it is the root.
    pub blob_endpoint: Url,
    pub credential: Credential,
    /// True when the account lives in the URL path (Azurite, IP endpoints),
    /// so resource paths look like `/{account}/{container}/{blob}`.
    pub is_emulator_style: bool,
}

impl fmt::Debug for ConnectionString {
    // Written by hand so that a future field holding secret material cannot
    // slip into debug output through a derive.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = match self.credential {
            Credential::AccountKey(_) => "AccountKey(***)",
            Credential::Sas(_) => "Sas(***)",
            Credential::None => "None",
        };
        f.debug_struct("ConnectionString")
            .field("account", &self.account)
            .field("blob_endpoint", &self.blob_endpoint.as_str())
            .field("credential", &format_args!("{credential}"))
            .field("is_emulator_style", &self.is_emulator_style)
            .finish()
    }
}

/// Why a connection string was rejected. No variant carries a value from the
/// string except key names that look like key names, so printing one is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnStrError {
    #[error("the Azure Storage connection string is empty")]
    Empty,
    #[error(
        "segment {index} of the connection string has no '=': expected Key=Value pairs separated by ';'"
    )]
    MalformedSegment { index: usize },
    #[error("unknown connection string key {key}")]
    UnknownKey { key: String },
    #[error("connection string key {key} appears more than once")]
    DuplicateKey { key: &'static str },
    #[error("connection string key {key} has an empty value")]
    EmptyValue { key: &'static str },
    #[error("UseDevelopmentStorage must be 'true' when present")]
    InvalidDevelopmentStorageFlag,
    #[error(
        "UseDevelopmentStorage=true cannot be combined with {key} (only DevelopmentStorageProxyUri may accompany it)"
    )]
    DevelopmentStorageConflict { key: &'static str },
    #[error("DevelopmentStorageProxyUri is only meaningful with UseDevelopmentStorage=true")]
    ProxyWithoutDevelopmentStorage,
    #[error("DefaultEndpointsProtocol must be 'http' or 'https'")]
    InvalidProtocol,
    #[error("EndpointSuffix must be a bare DNS suffix such as core.windows.net")]
    InvalidEndpointSuffix,
    #[error("invalid {key}: {reason}")]
    InvalidEndpoint { key: &'static str, reason: String },
    #[error("AccountName must be 1-63 ASCII letters, digits or '-'")]
    InvalidAccountName,
    #[error(
        "AccountKey is not valid base64 (copy key1 or key2 from the storage account's Access keys)"
    )]
    InvalidAccountKey,
    #[error("SharedAccessSignature is not usable: {reason}")]
    InvalidSas { reason: &'static str },
    #[error("both AccountKey and SharedAccessSignature are given; keep only one")]
    ConflictingCredentials,
    #[error(
        "the connection string names no blob endpoint: give AccountName=... (optionally EndpointSuffix=...) or BlobEndpoint=..."
    )]
    MissingEndpoint,
    #[error(
        "AccountName is missing and cannot be derived from BlobEndpoint (expected {{account}}.blob.{{suffix}} or a path-style http://host:port/{{account}}); add AccountName=..."
    )]
    MissingAccountName,
    #[error(
        "AccountName is given without AccountKey or SharedAccessSignature; add a credential or use BlobEndpoint=... for anonymous access"
    )]
    MissingCredential,
}

/// Keys the parser understands, so lookups are by enum rather than by
/// re-lowercasing strings everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    DefaultEndpointsProtocol,
    AccountName,
    AccountKey,
    EndpointSuffix,
    BlobEndpoint,
    SharedAccessSignature,
    UseDevelopmentStorage,
    DevelopmentStorageProxyUri,
    /// Endpoints of the other storage services: portal- and Azurite-generated
    /// strings carry them, so they are accepted and ignored.
    OtherServiceEndpoint(&'static str),
}

impl Field {
    fn from_lowercase(name: &str) -> Option<Self> {
        Some(match name {
            "defaultendpointsprotocol" => Self::DefaultEndpointsProtocol,
            "accountname" => Self::AccountName,
            "accountkey" => Self::AccountKey,
            "endpointsuffix" => Self::EndpointSuffix,
            "blobendpoint" => Self::BlobEndpoint,
            "sharedaccesssignature" => Self::SharedAccessSignature,
            "usedevelopmentstorage" => Self::UseDevelopmentStorage,
            "developmentstorageproxyuri" => Self::DevelopmentStorageProxyUri,
            "queueendpoint" => Self::OtherServiceEndpoint("QueueEndpoint"),
            "tableendpoint" => Self::OtherServiceEndpoint("TableEndpoint"),
            "fileendpoint" => Self::OtherServiceEndpoint("FileEndpoint"),
            "blobsecondaryendpoint" => Self::OtherServiceEndpoint("BlobSecondaryEndpoint"),
            "queuesecondaryendpoint" => Self::OtherServiceEndpoint("QueueSecondaryEndpoint"),
            "tablesecondaryendpoint" => Self::OtherServiceEndpoint("TableSecondaryEndpoint"),
            "filesecondaryendpoint" => Self::OtherServiceEndpoint("FileSecondaryEndpoint"),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::DefaultEndpointsProtocol => "DefaultEndpointsProtocol",
            Self::AccountName => "AccountName",
            Self::AccountKey => "AccountKey",
            Self::EndpointSuffix => "EndpointSuffix",
            Self::BlobEndpoint => "BlobEndpoint",
            Self::SharedAccessSignature => "SharedAccessSignature",
            Self::UseDevelopmentStorage => "UseDevelopmentStorage",
            Self::DevelopmentStorageProxyUri => "DevelopmentStorageProxyUri",
            Self::OtherServiceEndpoint(name) => name,
        }
    }
}

/// Parse an Azure Storage connection string.
///
/// Keys are case-insensitive, values are split at the first `=` only (base64
/// padding and SAS queries keep theirs), whitespace around keys and values and
/// empty segments (e.g. a trailing `;`) are ignored.
pub fn parse(s: &str) -> Result<ConnectionString, ConnStrError> {
    let pairs = split_pairs(s)?;
    let get = |key: Field| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };

    if let Some(flag) = get(Field::UseDevelopmentStorage) {
        if !flag.eq_ignore_ascii_case("true") {
            return Err(ConnStrError::InvalidDevelopmentStorageFlag);
        }
        if let Some((other, _)) = pairs.iter().find(|(k, _)| {
            !matches!(
                k,
                Field::UseDevelopmentStorage | Field::DevelopmentStorageProxyUri
            )
        }) {
            return Err(ConnStrError::DevelopmentStorageConflict { key: other.name() });
        }
        return development_storage(get(Field::DevelopmentStorageProxyUri));
    }
    if get(Field::DevelopmentStorageProxyUri).is_some() {
        return Err(ConnStrError::ProxyWithoutDevelopmentStorage);
    }

    let protocol = match get(Field::DefaultEndpointsProtocol) {
        None => "https",
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        Some(_) => return Err(ConnStrError::InvalidProtocol),
    };
    let suffix = match get(Field::EndpointSuffix) {
        None => DEFAULT_ENDPOINT_SUFFIX,
        Some(s) => {
            let s = s.trim_matches('.');
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(ConnStrError::InvalidEndpointSuffix);
            }
            s
        }
    };

    let credential = match (get(Field::AccountKey), get(Field::SharedAccessSignature)) {
        (Some(_), Some(_)) => return Err(ConnStrError::ConflictingCredentials),
        (Some(key), None) => {
            match BASE64.decode(key) {
                Ok(bytes) if !bytes.is_empty() => {}
                _ => return Err(ConnStrError::InvalidAccountKey),
            }
            Credential::AccountKey(Secret::new(key))
        }
        (None, Some(sas)) => Credential::Sas(Secret::new(validate_sas(sas)?)),
        (None, None) => Credential::None,
    };

    let account_name = get(Field::AccountName);
    if let Some(name) = account_name {
        validate_account_name(name)?;
    }

    let blob_endpoint = match (get(Field::BlobEndpoint), account_name) {
        (Some(endpoint), _) => parse_endpoint(Field::BlobEndpoint, endpoint)?,
        (None, Some(name)) => {
            let default = format!("{protocol}://{name}.blob.{suffix}");
            parse_endpoint(Field::BlobEndpoint, &default)?
        }
        (None, None) if matches!(credential, Credential::None) => {
            return Err(ConnStrError::MissingEndpoint);
        }
        (None, None) => return Err(ConnStrError::MissingAccountName),
    };

    if get(Field::BlobEndpoint).is_none() && matches!(credential, Credential::None) {
        // Account name plus default endpoints but no credential is almost
        // always a truncated copy-paste; anonymous access is spelled with an
        // explicit BlobEndpoint instead.
        return Err(ConnStrError::MissingCredential);
    }

    let path_account = first_path_segment(&blob_endpoint);
    let account = match account_name {
        Some(name) => name.to_owned(),
        None => match path_account
            .clone()
            .or_else(|| host_account(&blob_endpoint))
        {
            Some(derived) => {
                validate_account_name(&derived).map_err(|_| ConnStrError::MissingAccountName)?;
                derived
            }
            None => return Err(ConnStrError::MissingAccountName),
        },
    };

    Ok(ConnectionString {
        account,
        is_emulator_style: path_account.is_some(),
        blob_endpoint,
        credential,
    })
}

fn split_pairs(s: &str) -> Result<Vec<(Field, String)>, ConnStrError> {
    let mut pairs: Vec<(Field, String)> = Vec::new();
    for (index, segment) in s.split(';').enumerate() {
        let segment = segment.trim();
        if segment.is_empty() {
            continue;
        }
        let Some((raw_key, value)) = segment.split_once('=') else {
            return Err(ConnStrError::MalformedSegment { index });
        };
        let raw_key = raw_key.trim();
        let Some(key) = Field::from_lowercase(&raw_key.to_ascii_lowercase()) else {
            return Err(ConnStrError::UnknownKey {
                key: printable_key(raw_key),
            });
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(ConnStrError::EmptyValue { key: key.name() });
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(ConnStrError::DuplicateKey { key: key.name() });
        }
        pairs.push((key, value.to_owned()));
    }
    if pairs.is_empty() {
        return Err(ConnStrError::Empty);
    }
    Ok(pairs)
}

/// An unknown "key" is whatever precedes the first `=` of a segment, which for
/// a pasted bare account key or SAS is most of the secret. Echo it only when
/// it looks like a real key name.
fn printable_key(raw: &str) -> String {
    let looks_like_name =
        !raw.is_empty() && raw.len() <= 32 && raw.bytes().all(|b| b.is_ascii_alphabetic());
    if looks_like_name {
        format!("'{raw}'")
    } else {
        format!(
            "(not shown: {} characters, does not look like a key name)",
            raw.len()
        )
    }
}

fn development_storage(proxy: Option<&str>) -> Result<ConnectionString, ConnStrError> {
    let (scheme, host) = match proxy {
        None => ("http".to_owned(), "127.0.0.1".to_owned()),
        Some(proxy) => {
            let url = Url::parse(proxy).map_err(|e| ConnStrError::InvalidEndpoint {
                key: Field::DevelopmentStorageProxyUri.name(),
                reason: e.to_string(),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConnStrError::InvalidEndpoint {
                    key: Field::DevelopmentStorageProxyUri.name(),
                    reason: "scheme must be http or https".to_owned(),
                });
            }
            let host = match url.host() {
                Some(Host::Ipv6(ip)) => format!("[{ip}]"),
                Some(host) => host.to_string(),
                None => {
                    return Err(ConnStrError::InvalidEndpoint {
                        key: Field::DevelopmentStorageProxyUri.name(),
                        reason: "no host".to_owned(),
                    });
                }
            };
            (url.scheme().to_owned(), host)
        }
    };
    let endpoint = format!("{scheme}://{host}:{EMULATOR_BLOB_PORT}/{EMULATOR_ACCOUNT}");
    Ok(ConnectionString {
        account: EMULATOR_ACCOUNT.to_owned(),
        blob_endpoint: parse_endpoint(Field::DevelopmentStorageProxyUri, &endpoint)?,
        credential: Credential::AccountKey(Secret::new(EMULATOR_ACCOUNT_KEY)),
        is_emulator_style: true,
    })
}

fn parse_endpoint(key: Field, raw: &str) -> Result<Url, ConnStrError> {
    let invalid = |reason: &str| ConnStrError::InvalidEndpoint {
        key: key.name(),
        reason: reason.to_owned(),
    };
    // url::ParseError's Display never quotes the input, so it is safe to show.
    let mut url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    if url.query().is_some() {
        return Err(invalid(
            "it contains a query string; put a SAS token in SharedAccessSignature=... instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("it contains a '#' fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it contains user info (user:password@)"));
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn validate_account_name(name: &str) -> Result<(), ConnStrError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConnStrError::InvalidAccountName)
    }
}

/// Strip a leading `?` and check the SAS has the shape the service needs.
/// Returns the still-encoded query string.
fn validate_sas(raw: &str) -> Result<String, ConnStrError> {
    let sas = raw.trim_start_matches('?');
    let mut has_sig = false;
    for pair in sas.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(ConnStrError::InvalidSas {
                reason: "a query parameter has no '='",
            });
        };
        let Some(name) = percent_decode(name) else {
            return Err(ConnStrError::InvalidSas {
                reason: "a parameter name is not valid percent-encoded UTF-8",
            });
        };
        if percent_decode(value).is_none() {
            return Err(ConnStrError::InvalidSas {
                reason: "a parameter value is not valid percent-encoded UTF-8",
            });
        }
        if name == "sig" && !value.is_empty() {
            has_sig = true;
        }
    }
    if !has_sig {
        return Err(ConnStrError::InvalidSas {
            reason: "it has no sig= parameter",
        });
    }
    Ok(sas.to_owned())
}

/// Percent-decode without treating `+` as a space: SAS signatures are base64
/// and a raw `+` in one is a literal plus.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encode everything but RFC 3986 unreserved characters, so a blob
/// name survives any proxy or HTTP stack unchanged.
fn percent_encode_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
}

fn first_path_segment(url: &Url) -> Option<String> {
    url.path_segments()?
        .next()
        .filter(|s| !s.is_empty())
        .and_then(percent_decode)
}

/// `{account}.blob.{suffix}` (also `{account}.privatelink.blob...`): only
/// trust the first label when the host is recognisably a blob host, since a
/// custom domain's first label says nothing about the account.
fn host_account(url: &Url) -> Option<String> {
    let Some(Host::Domain(host)) = url.host() else {
        return None;
    };
    let mut labels = host.split('.');
    let first = labels.next()?;
    if labels.any(|l| l == "blob") {
        Some(first.to_owned())
    } else {
        None
    }
}

/// SAS query string as decoded name/value pairs, the form
/// `with_sas_authorization` wants (it re-encodes them on every request).
pub fn sas_query_pairs(sas: &str) -> Vec<(String, String)> {
    sas.trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_owned());
            (decode(name), decode(value))
        })
        .collect()
}

impl ConnectionString {
    /// Endpoint `object_store` would pick by itself for this account.
    fn default_public_endpoint(&self) -> String {
        format!("https://{}.blob.{DEFAULT_ENDPOINT_SUFFIX}/", self.account)
    }

    /// `{endpoint}/{container}`, the resource container-level REST calls use.
    pub fn container_url(&self, container: &str) -> Url {
        self.resource_url(container, None)
    }

    /// `{endpoint}/{container}/{blob}` with every byte outside the unreserved
    /// set percent-encoded; `/` in `blob` stays a separator. Path-style
    /// endpoints keep their account segment, so this works for Azurite too.
    /// `.` and `..` segments cannot be represented in a URL (they are
    /// collapsed, even encoded), so blob names must not contain them.
    pub fn blob_url(&self, container: &str, blob: &str) -> Url {
        self.resource_url(container, Some(blob))
    }

    fn resource_url(&self, container: &str, blob: Option<&str>) -> Url {
        let mut path = self.blob_endpoint.path().trim_end_matches('/').to_owned();
        path.push('/');
        percent_encode_segment(container, &mut path);
        if let Some(blob) = blob {
            for segment in blob.split('/') {
                path.push('/');
                percent_encode_segment(segment, &mut path);
            }
        }
        let mut url = self.blob_endpoint.clone();
        url.set_path(&path);
        url
    }

    /// An `object_store` Azure builder for `container` on this account.
    ///
    /// Path-style (Azurite) endpoints are passed through `with_endpoint`
    /// rather than `with_use_emulator`: in object_store 0.14 the emulator
    /// switch ignores the configured endpoint and reads
    /// `AZURITE_BLOB_STORAGE_URL` from the environment instead (default
    /// `http://127.0.0.1:10000`). An endpoint whose path already holds the
    /// account yields the same request URLs and the same SharedKey and SAS
    /// canonical resources. The one behaviour lost is object_store's
    /// client-side fallback for `list_with_offset` on Azurite.
    pub fn builder(&self, container: &str) -> MicrosoftAzureBuilder {
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(self.account.clone())
            .with_container_name(container);
        builder = match &self.credential {
            Credential::AccountKey(key) => builder.with_access_key(key.expose()),
            Credential::Sas(sas) => builder.with_sas_authorization(sas_query_pairs(sas.expose())),
            // Without this object_store would fall back to managed identity
            // and try to reach the instance metadata service.
            Credential::None => builder.with_skip_signature(true),
        };
        if self.blob_endpoint.as_str() != self.default_public_endpoint() {
            let endpoint = self.blob_endpoint.as_str().trim_end_matches('/').to_owned();
            builder = builder.with_endpoint(endpoint);
        }
        if self.blob_endpoint.scheme() == "http" {
            builder = builder.with_allow_http(true);
        }
        builder
    }
}

/// Builder for running without a connection string, authenticating as the
/// workload or managed identity. `from_env` reads, among others,
/// `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and
/// `AZURE_AUTHORITY_HOST` (what the AKS workload-identity webhook injects) and
/// `IDENTITY_ENDPOINT`; with a token file present object_store uses workload
/// identity, otherwise it falls back to the instance metadata service. Any
/// `AZURE_STORAGE_*` key or SAS in the environment takes precedence, per
/// object_store's own resolution order.
pub fn builder_for_identity(account: &str, container: &str) -> MicrosoftAzureBuilder {
    MicrosoftAzureBuilder::from_env()
        .with_account(account)
        .with_container_name(container)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ClientConfigKey;
    use object_store::azure::AzureConfigKey;
    use proptest::prelude::*;

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcy1mb3ItdGVzdHMtb25seS0xMjM0NTY3ODkwYWJjZGVm";
    const SIG: &str = "sig=AbCdEfGh%2BIjKlMnOpQrStUvWxYz0123456789%2Fab%3D";

    fn sas() -> String {
        format!("sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&{SIG}")
    }

    fn ok(s: &str) -> ConnectionString {
        match parse(s) {
            Ok(cs) => cs,
            Err(e) => panic!("expected {s:?} to parse, got {e}"),
        }
    }

    fn err(s: &str) -> ConnStrError {
        match parse(s) {
            Ok(cs) => panic!("expected {s:?} to fail, got {cs:?}"),
            Err(e) => e,
        }
    }

    fn config(b: &MicrosoftAzureBuilder, key: AzureConfigKey) -> Option<String> {
        b.get_config_value(&key)
    }

    #[test]
    fn account_key_with_default_endpoints() {
        let cs = ok(&format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"
        ));
        assert_eq!(cs.account, "acct");
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert_eq!(cs.credential, Credential::AccountKey(Secret::new(KEY)));
        assert!(!cs.is_emulator_style);
    }

    #[test]
    fn protocol_and_suffix_default_and_apply() {
        let cs = ok(&format!("AccountName=acct;AccountKey={KEY}"));
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        let cs = ok(&format!(
            "DefaultEndpointsProtocol=HTTP;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
        ));
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "http://acct.blob.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_whitespace_is_tolerated() {
        let cs = ok(&format!(
            "  accountname = acct ;\n ACCOUNTKEY={KEY} ; endpointSUFFIX=core.windows.net ;;  "
        ));
        assert_eq!(cs.account, "acct");
        assert_eq!(cs.credential, Credential::AccountKey(Secret::new(KEY)));
    }

    #[test]
    fn key_padding_is_preserved() {
        let cs = ok(&format!(
            "AccountName=acct;AccountKey={EMULATOR_ACCOUNT_KEY};"
        ));
        assert_eq!(
            cs.credential,
            Credential::AccountKey(Secret::new(EMULATOR_ACCOUNT_KEY))
        );
    }

    #[test]
    fn explicit_blob_endpoint_with_key() {
        let cs = ok(&format!(
            "AccountName=acct;AccountKey={KEY};BlobEndpoint=https://acct.blob.core.windows.net/"
        ));
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert!(!cs.is_emulator_style);
    }

    #[test]
    fn explicit_blob_endpoint_derives_account_from_host() {
        let cs = ok(&format!(
            "BlobEndpoint=https://myacct.blob.core.windows.net;AccountKey={KEY}"
        ));
        assert_eq!(cs.account, "myacct");
        let cs = ok("BlobEndpoint=https://myacct.privatelink.blob.core.windows.net/");
        assert_eq!(cs.account, "myacct");
        assert_eq!(cs.credential, Credential::None);
    }

    #[test]
    fn explicit_blob_endpoint_path_style_derives_account_from_path() {
        let cs = ok(&format!(
            "AccountKey={EMULATOR_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/"
        ));
        assert_eq!(cs.account, "devstoreaccount1");
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert!(cs.is_emulator_style);
    }

    #[test]
    fn azurite_documented_string_parses() {
        let cs = ok(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={EMULATOR_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
        ));
        assert_eq!(cs.account, "devstoreaccount1");
        assert!(cs.is_emulator_style);
    }

    #[test]
    fn custom_domain_needs_account_name_for_key_auth() {
        assert_eq!(
            err(&format!(
                "BlobEndpoint=https://images.example.com;AccountKey={KEY}"
            )),
            ConnStrError::MissingAccountName
        );
        let cs = ok(&format!(
            "BlobEndpoint=https://images.example.com/;AccountName=acct;AccountKey={KEY}"
        ));
        assert_eq!(cs.account, "acct");
        assert_eq!(cs.blob_endpoint.as_str(), "https://images.example.com/");
    }

    #[test]
    fn sas_with_blob_endpoint() {
        let cs = ok(&format!(
            "BlobEndpoint=https://acct.blob.core.windows.net/;QueueEndpoint=https://acct.queue.core.windows.net/;SharedAccessSignature=?{}",
            sas()
        ));
        assert_eq!(cs.account, "acct");
        assert_eq!(cs.credential, Credential::Sas(Secret::new(sas())));
        let Credential::Sas(secret) = &cs.credential else {
            panic!("expected SAS");
        };
        assert!(!secret.expose().starts_with('?'));
    }

    #[test]
    fn sas_with_account_name_uses_default_endpoint() {
        let cs = ok(&format!("AccountName=acct;SharedAccessSignature={}", sas()));
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
    }

    #[test]
    fn sas_query_pairs_are_decoded_without_plus_to_space() {
        let pairs = sas_query_pairs("sv=2022-11-02&se=2030-01-01T00%3A00%3A00Z&sig=a+b%2Bc%3D");
        assert_eq!(
            pairs,
            vec![
                ("sv".to_owned(), "2022-11-02".to_owned()),
                ("se".to_owned(), "2030-01-01T00:00:00Z".to_owned()),
                ("sig".to_owned(), "a+b+c=".to_owned()),
            ]
        );
    }

    #[test]
    fn development_storage() {
        let cs = ok("UseDevelopmentStorage=true");
        assert_eq!(cs.account, EMULATOR_ACCOUNT);
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            cs.credential,
            Credential::AccountKey(Secret::new(EMULATOR_ACCOUNT_KEY))
        );
        assert!(cs.is_emulator_style);
        let cs = ok("usedevelopmentstorage=TRUE;");
        assert_eq!(cs.account, EMULATOR_ACCOUNT);
    }

    #[test]
    fn development_storage_proxy() {
        let cs =
            ok("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://azurite.internal");
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "http://azurite.internal:10000/devstoreaccount1"
        );
        let cs = ok("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=https://[::1]:8080/x");
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "https://[::1]:10000/devstoreaccount1"
        );
    }

    #[test]
    fn errors_for_malformed_input() {
        assert_eq!(err(""), ConnStrError::Empty);
        assert_eq!(err(" ; ;"), ConnStrError::Empty);
        assert_eq!(
            err("AccountName=acct;garbage"),
            ConnStrError::MalformedSegment { index: 1 }
        );
        assert_eq!(
            err("AccountName=acct;Foo=bar"),
            ConnStrError::UnknownKey {
                key: "'Foo'".to_owned()
            }
        );
        assert_eq!(
            err("AccountName=a;accountNAME=b"),
            ConnStrError::DuplicateKey { key: "AccountName" }
        );
        assert_eq!(
            err("AccountName=acct;AccountKey= "),
            ConnStrError::EmptyValue { key: "AccountKey" }
        );
    }

    #[test]
    fn errors_for_development_storage_combinations() {
        assert_eq!(
            err("UseDevelopmentStorage=false"),
            ConnStrError::InvalidDevelopmentStorageFlag
        );
        assert_eq!(
            err("UseDevelopmentStorage=true;AccountName=acct"),
            ConnStrError::DevelopmentStorageConflict { key: "AccountName" }
        );
        assert_eq!(
            err("DevelopmentStorageProxyUri=http://x"),
            ConnStrError::ProxyWithoutDevelopmentStorage
        );
        assert!(matches!(
            err("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=ftp://x"),
            ConnStrError::InvalidEndpoint { .. }
        ));
        assert!(matches!(
            err("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=not a url"),
            ConnStrError::InvalidEndpoint { .. }
        ));
    }

    #[test]
    fn errors_for_bad_values() {
        assert_eq!(
            err(&format!(
                "DefaultEndpointsProtocol=ftp;AccountName=a;AccountKey={KEY}"
            )),
            ConnStrError::InvalidProtocol
        );
        assert_eq!(
            err(&format!(
                "AccountName=a;AccountKey={KEY};EndpointSuffix=https://x/"
            )),
            ConnStrError::InvalidEndpointSuffix
        );
        assert_eq!(
            err("AccountName=acct;AccountKey=not*base64!"),
            ConnStrError::InvalidAccountKey
        );
        assert_eq!(
            err(&format!("AccountName=bad/name;AccountKey={KEY}")),
            ConnStrError::InvalidAccountName
        );
        for endpoint in [
            "ftp://acct.blob.core.windows.net",
            "acct.blob.core.windows.net",
            "https://acct.blob.core.windows.net/?sv=1&sig=x",
            "https://acct.blob.core.windows.net/#frag",
            "https://user:pw@acct.blob.core.windows.net/",
        ] {
            assert!(
                matches!(
                    err(&format!("BlobEndpoint={endpoint};AccountKey={KEY}")),
                    ConnStrError::InvalidEndpoint {
                        key: "BlobEndpoint",
                        ..
                    }
                ),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn errors_for_sas() {
        assert_eq!(
            err("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=1&sp=r"),
            ConnStrError::InvalidSas {
                reason: "it has no sig= parameter"
            }
        );
        assert_eq!(
            err("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv&sig=x"),
            ConnStrError::InvalidSas {
                reason: "a query parameter has no '='"
            }
        );
        assert!(matches!(
            err("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=%zz&sig=x"),
            ConnStrError::InvalidSas { .. }
        ));
    }

    #[test]
    fn errors_for_missing_combinations() {
        assert_eq!(
            err(&format!(
                "AccountName=a;AccountKey={KEY};SharedAccessSignature={}",
                sas()
            )),
            ConnStrError::ConflictingCredentials
        );
        assert_eq!(
            err("EndpointSuffix=core.windows.net"),
            ConnStrError::MissingEndpoint
        );
        assert_eq!(
            err(&format!("AccountKey={KEY}")),
            ConnStrError::MissingAccountName
        );
        assert_eq!(
            err(&format!("SharedAccessSignature={}", sas())),
            ConnStrError::MissingAccountName
        );
        assert_eq!(err("AccountName=acct"), ConnStrError::MissingCredential);
        assert_eq!(
            err(&format!(
                "BlobEndpoint=http://127.0.0.1:10000;AccountKey={KEY}"
            )),
            ConnStrError::MissingAccountName
        );
    }

    #[test]
    fn unknown_key_that_looks_like_a_secret_is_not_echoed() {
        let e = err(&format!("AccountName=acct;{KEY}"));
        let shown = e.to_string();
        assert!(!shown.contains(&KEY[..20]), "{shown}");
        let e = err(&format!("AccountName=acct;{EMULATOR_ACCOUNT_KEY}"));
        assert!(!format!("{e} {e:?}").contains(&EMULATOR_ACCOUNT_KEY[..20]));
    }

    #[test]
    fn blob_url_encodes_and_keeps_path_style() {
        let cs = ok(&format!("AccountName=acct;AccountKey={KEY}"));
        assert_eq!(
            cs.blob_url("images", "a b/ü?#%.png").as_str(),
            "https://acct.blob.core.windows.net/images/a%20b/%C3%BC%3F%23%25.png"
        );
        let cs = ok("UseDevelopmentStorage=true");
        assert_eq!(
            cs.blob_url("images", "2024/x.png").as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/images/2024/x.png"
        );
        assert_eq!(
            cs.container_url("images").as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/images"
        );
    }

    #[test]
    fn builder_for_public_account_uses_default_endpoint() {
        let cs = ok(&format!("AccountName=acct;AccountKey={KEY}"));
        let b = cs.builder("images");
        assert_eq!(
            config(&b, AzureConfigKey::AccountName).as_deref(),
            Some("acct")
        );
        assert_eq!(
            config(&b, AzureConfigKey::ContainerName).as_deref(),
            Some("images")
        );
        assert_eq!(config(&b, AzureConfigKey::AccessKey).as_deref(), Some(KEY));
        assert_eq!(config(&b, AzureConfigKey::Endpoint), None);
        assert_eq!(
            config(&b, AzureConfigKey::UseEmulator).as_deref(),
            Some("false")
        );
        assert_eq!(
            config(&b, AzureConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("false")
        );
        assert!(b.build().is_ok());
    }

    #[test]
    fn builder_for_emulator_sets_endpoint_and_http() {
        let cs = ok("UseDevelopmentStorage=true");
        let b = cs.builder("images");
        assert_eq!(
            config(&b, AzureConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(
            config(&b, AzureConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );
        assert!(b.build().is_ok());
    }

    #[test]
    fn builder_for_custom_endpoint_sas_and_anonymous() {
        let cs = ok(&format!(
            "BlobEndpoint=https://images.example.com;AccountName=acct;SharedAccessSignature={}",
            sas()
        ));
        let b = cs.builder("c");
        assert_eq!(
            config(&b, AzureConfigKey::Endpoint).as_deref(),
            Some("https://images.example.com")
        );
        assert_eq!(config(&b, AzureConfigKey::AccessKey), None);
        assert!(b.build().is_ok());

        let cs = ok("BlobEndpoint=https://acct.blob.core.windows.net");
        let b = cs.builder("c");
        assert_eq!(
            config(&b, AzureConfigKey::SkipSignature).as_deref(),
            Some("true")
        );
        assert!(b.build().is_ok());
    }

    #[test]
    fn identity_builder_sets_account_and_container() {
        let b = builder_for_identity("acct", "images");
        assert_eq!(
            config(&b, AzureConfigKey::AccountName).as_deref(),
            Some("acct")
        );
        assert_eq!(
            config(&b, AzureConfigKey::ContainerName).as_deref(),
            Some("images")
        );
    }

    #[test]
    fn debug_and_display_redact() {
        let cs = ok(&format!("AccountName=acct;AccountKey={KEY}"));
        let shown = format!("{cs:?} {:?} {}", cs.credential, Secret::new(KEY));
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("AccountKey(***)"));
        assert!(shown.contains("acct"));
    }

    /// Strings in which a secret appears, valid and broken.
    fn shapes(key: &str, sig: &str) -> Vec<String> {
        let sas = format!("sv=2022-11-02&sp=rwc&sig={sig}");
        vec![
            format!("AccountName=acct;AccountKey={key}"),
            format!("BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature={sas}"),
            format!("AccountName=acct;AccountKey={key};SharedAccessSignature={sas}"),
            format!("AccountName=acct;AccountKey={key};AccountKey={key}"),
            format!("AccountName=acct;{key}"),
            format!("AccountName=acct;{sas}"),
            format!("AccountName=acct;AccountKey=*{key}"),
            format!("AccountName=acct;Bogus={key}"),
            format!("BlobEndpoint=https://acct.blob.core.windows.net/?{sas};AccountKey={key}"),
            format!("AccountName=acct;SharedAccessSignature=sv=1&sig"),
            format!("BlobEndpoint=https://{sig}@acct.blob.core.windows.net;AccountKey={key}"),
            format!("UseDevelopmentStorage=true;AccountKey={key}"),
            format!("BlobEndpoint=https://images.example.com;AccountKey={key}"),
        ]
    }

    proptest! {
        #[test]
        fn secrets_never_leak(
            key_bytes in proptest::collection::vec(any::<u8>(), 32..64),
            sig_bytes in proptest::collection::vec(any::<u8>(), 32),
        ) {
            let key = BASE64.encode(&key_bytes);
            let sig = BASE64.encode(&sig_bytes).replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
            for s in shapes(&key, &sig) {
                let shown = match parse(&s) {
                    Ok(cs) => format!("{cs:?} {:?}", cs.credential),
                    Err(e) => format!("{e} {e:?}"),
                };
                // Any 12-character window would be a partial leak; random
                // base64 matching by chance at that length is negligible.
                for secret in [key.as_str(), sig.as_str()] {
                    for window in secret.as_bytes().windows(12) {
                        let window = String::from_utf8_lossy(window);
                        prop_assert!(!shown.contains(window.as_ref()), "{s:?} leaked in {shown}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod fuzz_like {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testkit::fuzz_cases(3000)))]
        /// Arbitrary input never panics the parser.
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let _ = super::parse(&s);
        }

        /// Structured noise around real keys never panics either.
        #[test]
        fn key_value_noise_never_panics(
            parts in proptest::collection::vec(
                ("(?i)(AccountName|AccountKey|BlobEndpoint|SharedAccessSignature|UseDevelopmentStorage|EndpointSuffix|DefaultEndpointsProtocol|[a-z]{1,8})",
                 "[ -~]{0,40}"),
                0..8),
        ) {
            let s: String = parts.iter().map(|(k, v)| format!("{k}={v};")).collect();
            let _ = super::parse(&s);
        }
    }
}
