//! The issuer's signing keys and the token check. Discovery
//! (`/.well-known/openid-configuration`, then RFC 8414's
//! `/.well-known/oauth-authorization-server`) finds `jwks_uri`; the JWKS
//! is fetched with a 5 s timeout and a 64 KiB cap, at most 32 keys kept.
//! The keys are refreshed when a token names a `kid` they lack (at most
//! once per 10 s, so a flood of made-up `kid`s cannot hammer the
//! provider), when they are an hour old, and in the background. An issuer
//! unreachable at start is retried, not fatal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::claims::{self, Claims, Expected, Refusal};
use super::{OAuthSettings, Principal};

/// Longest token read at all.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// Largest discovery document or JWKS read.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 10;
/// Keys kept from one JWKS.
pub const MAX_KEYS: usize = 32;
/// Time for one request to the issuer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two fetches of the keys.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Keys older than this are fetched again.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// How often the background task retries while no keys could be fetched.
const RETRY_UNLOADED: Duration = Duration::from_secs(30);

const ACCEPTED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
}

impl KeyType {
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyType::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyType::P256 => alg == Algorithm::ES256,
            KeyType::P384 => alg == Algorithm::ES384,
        }
    }
}

struct Key {
    kid: Option<String>,
    /// The `alg` the JWKS declares for it, if any.
    alg: Option<Algorithm>,
    kind: KeyType,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    fetched: Option<Instant>,
    /// Counts successful fetches.
    generation: u64,
}

struct RefreshState {
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
}

/// Counters for /metrics.
#[derive(Default)]
pub struct AuthStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub key_fetches: AtomicU64,
    pub key_fetch_failures: AtomicU64,
}

/// Checks access tokens against the issuer's keys.
pub struct Verifier {
    settings: OAuthSettings,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    pub stats: AuthStats,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One key of a JWKS, if this server can use it for signatures.
fn parse_key(v: &Value) -> Option<Key> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = v.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|o| o == "verify")
    {
        return None;
    }
    let alg = match s("alg") {
        None => None,
        Some(a) => Some(*ACCEPTED.iter().find(|x| format!("{x:?}") == a)?),
    };
    let (kind, key) = match s("kty")? {
        "RSA" => (
            KeyType::Rsa,
            DecodingKey::from_rsa_components(s("n")?, s("e")?).ok()?,
        ),
        "EC" => {
            let kind = match s("crv")? {
                "P-256" => KeyType::P256,
                "P-384" => KeyType::P384,
                _ => return None,
            };
            (
                kind,
                DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?,
            )
        }
        _ => return None,
    };
    if let Some(a) = alg
        && !kind.fits(a)
    {
        return None;
    }
    Some(Key {
        kid: s("kid").map(str::to_owned),
        alg,
        kind,
        key,
    })
}

/// The usable keys of a JWKS document, at most `MAX_KEYS`.
fn parse_jwks(body: &[u8]) -> Result<Vec<Arc<Key>>, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no \"keys\" array")?;
    Ok(keys
        .iter()
        .filter_map(parse_key)
        .take(MAX_KEYS)
        .map(Arc::new)
        .collect())
}

/// The key a token's header selects: by `kid`, or the only key that fits
/// when it names none.
fn select(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, Refusal> {
    let found = match kid {
        Some(kid) => set.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut fitting = set.keys.iter().filter(|k| k.kind.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Some(k),
                _ => None,
            }
        }
    };
    let key = found.ok_or(Refusal::UnknownKey)?;
    let declared_ok = key.alg.is_none_or(|a| a == alg);
    if !declared_ok || !key.kind.fits(alg) {
        return Err(Refusal::KeyMismatch);
    }
    Ok(Arc::clone(key))
}

impl Verifier {
    pub fn new(settings: OAuthSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client for the OAuth issuer: {e}"))?;
        Ok(Self {
            settings,
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState {
                last_attempt: None,
                jwks_uri: None,
            }),
            stats: AuthStats::default(),
        })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Whether keys have been fetched at least once.
    pub fn loaded(&self) -> bool {
        self.current().fetched.is_some()
    }

    /// Keys held now.
    pub fn key_count(&self) -> usize {
        self.current().keys.len()
    }

    /// Discovery and the first fetch of the keys, at start: failure is
    /// logged, and retried later.
    pub async fn start(&self) {
        if self.refresh_after(0).await {
            tracing::info!(
                issuer = %self.settings.issuer,
                keys = self.key_count(),
                "OAuth: the issuer's signing keys are loaded"
            );
        } else {
            tracing::warn!(
                issuer = %self.settings.issuer,
                "OAuth: the issuer's keys could not be fetched at start; retrying on the first request and every 30 s"
            );
        }
    }

    /// Refresh the keys every hour, and every 30 s while none could be
    /// fetched.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let v = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let set = v.current();
                let wait = match set.fetched {
                    Some(at) => MAX_KEY_AGE.saturating_sub(at.elapsed()),
                    None => RETRY_UNLOADED,
                };
                tokio::time::sleep(wait.max(MIN_REFRESH)).await;
                let set = v.current();
                if set.fetched.is_none_or(|at| at.elapsed() >= MAX_KEY_AGE) {
                    v.refresh_after(set.generation).await;
                }
            }
        })
    }

    /// Fetch the keys unless that was tried less than `MIN_REFRESH` ago;
    /// true when keys newer than generation `seen` are there afterwards
    /// (fetched here, or by a caller that held the lock first).
    async fn refresh_after(&self, seen: u64) -> bool {
        let mut state = self.refresh.lock().await;
        if self.current().generation > seen {
            return true;
        }
        if state
            .last_attempt
            .is_some_and(|at| at.elapsed() < MIN_REFRESH)
        {
            return false;
        }
        state.last_attempt = Some(Instant::now());
        self.stats.key_fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch(&mut state).await {
            Ok(keys) => {
                let generation = self.current().generation + 1;
                tracing::debug!(keys = keys.len(), generation, "OAuth: keys fetched");
                if keys.is_empty() {
                    tracing::warn!("OAuth: the issuer's JWKS holds no key this server can use");
                }
                let set = Arc::new(KeySet {
                    keys,
                    fetched: Some(Instant::now()),
                    generation,
                });
                match self.keys.write() {
                    Ok(mut k) => *k = set,
                    Err(p) => *p.into_inner() = set,
                }
                true
            }
            Err(e) => {
                self.stats
                    .key_fetch_failures
                    .fetch_add(1, Ordering::Relaxed);
                // A stale jwks_uri is found again next time.
                state.jwks_uri = None;
                tracing::warn!(issuer = %self.settings.issuer, error = %e, "OAuth: cannot fetch the issuer's keys");
                false
            }
        }
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<Vec<Arc<Key>>, String> {
        let uri = match &state.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let u = self.discover().await?;
                state.jwks_uri = Some(u.clone());
                u
            }
        };
        let body = self.get(&uri).await?;
        parse_jwks(&body)
    }

    /// GET a small JSON document, capped.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let body = crate::capped::read_body(resp, MAX_DOCUMENT_BYTES).await;
        if body.truncated {
            return Err(format!(
                "GET {url}: the body broke off or is larger than {} KiB",
                MAX_DOCUMENT_BYTES >> 10
            ));
        }
        Ok(body.bytes)
    }

    /// The issuer's `jwks_uri`, from OpenID discovery or RFC 8414.
    async fn discover(&self) -> Result<String, String> {
        let issuer = &self.settings.issuer;
        let base = issuer.trim_end_matches('/');
        let mut tried = Vec::new();
        let mut urls = vec![format!("{base}/.well-known/openid-configuration")];
        // RFC 8414: the well-known segment goes before the issuer's path.
        if let Ok(u) = url::Url::parse(base) {
            let path = u.path().trim_end_matches('/');
            urls.push(format!(
                "{}/.well-known/oauth-authorization-server{path}",
                u.origin().ascii_serialization()
            ));
        }
        for url in urls {
            let body = match self.get(&url).await {
                Ok(b) => b,
                Err(e) => {
                    tried.push(e);
                    continue;
                }
            };
            let doc: Value =
                serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON: {e}"))?;
            let named = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
            if named != issuer {
                return Err(format!(
                    "{url} names the issuer {named:?}, not {issuer:?}; set --oauth-issuer to exactly the issuer the provider names"
                ));
            }
            let jwks = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{url} has no jwks_uri"))?;
            super::secure_url(jwks, "the jwks_uri")?;
            return Ok(jwks.to_string());
        }
        Err(format!("discovery failed: {}", tried.join("; ")))
    }

    /// The principal a bearer token stands for, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let r = self.verify_inner(token).await;
        let counter = if r.is_ok() {
            &self.stats.accepted
        } else {
            &self.stats.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r
    }

    async fn verify_inner(&self, token: &str) -> Result<Principal, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        }
        if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(Refusal::Critical);
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        // The claims are checked by `claims::check`, with reasons.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                    Refusal::Signature
                }
                K::InvalidAlgorithm | K::UnsupportedAlgorithm => Refusal::KeyMismatch,
                _ => Refusal::Malformed,
            }
        })?;
        claims::check(
            &data.claims,
            &Expected {
                issuer: &self.settings.issuer,
                audiences: &self.settings.audiences,
                scopes: &self.settings.scopes,
            },
            now_secs(),
        )
    }

    /// The key for a token's header; fetches the keys when none are held,
    /// when they are stale, and (rate-limited) when the `kid` is unknown.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, Refusal> {
        let set = self.current();
        if set.fetched.is_none_or(|at| at.elapsed() >= MAX_KEY_AGE) {
            self.refresh_after(set.generation).await;
        }
        let set = self.current();
        if set.fetched.is_none() {
            return Err(Refusal::Unavailable);
        }
        match select(&set, kid, alg) {
            Err(Refusal::UnknownKey) => {
                // A rotation at the provider: the new key may be there now.
                if self.refresh_after(set.generation).await {
                    select(&self.current(), kid, alg)
                } else {
                    Err(Refusal::UnknownKey)
                }
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A P-256 public key (x, y) and an RSA modulus/exponent, as JWKS carry
    // them; the values only need to parse.
    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    fn set(keys: Value) -> KeySet {
        KeySet {
            keys: parse_jwks(serde_json::json!({ "keys": keys }).to_string().as_bytes())
                .expect("jwks"),
            fetched: Some(Instant::now()),
            generation: 1,
        }
    }

    #[test]
    fn jwks_keeps_signing_keys_it_can_use() {
        let s = set(serde_json::json!([
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "ec", "use": "sig"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "rsa", "alg": "RS256"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-521", "x": X, "y": Y, "kid": "p521"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "mislabelled", "alg": "ES256"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "ed"},
            "not a key",
        ]));
        let kids: Vec<_> = s.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["ec", "rsa"]);
    }

    #[test]
    fn at_most_32_keys_are_kept() {
        let many: Vec<Value> = (0..100)
            .map(|i| serde_json::json!({"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": format!("k{i}")}))
            .collect();
        assert_eq!(set(Value::Array(many)).keys.len(), MAX_KEYS);
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"nope").is_err());
    }

    #[test]
    fn the_kid_selects_and_the_algorithm_must_fit() {
        let s = set(serde_json::json!([
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "ec"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "rsa", "alg": "RS256"},
        ]));
        assert!(select(&s, Some("ec"), Algorithm::ES256).is_ok());
        assert!(select(&s, Some("rsa"), Algorithm::RS256).is_ok());
        assert_eq!(
            select(&s, Some("rsa"), Algorithm::PS256).err(),
            Some(Refusal::KeyMismatch),
            "the key declares RS256"
        );
        assert_eq!(
            select(&s, Some("ec"), Algorithm::RS256).err(),
            Some(Refusal::KeyMismatch)
        );
        assert_eq!(
            select(&s, Some("nope"), Algorithm::ES256).err(),
            Some(Refusal::UnknownKey)
        );
        // No kid: the one key that fits, if there is exactly one.
        assert!(select(&s, None, Algorithm::ES256).is_ok());
        assert!(select(&s, None, Algorithm::ES384).is_err());
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_before_any_key_is_fetched() {
        let settings =
            OAuthSettings::new("http://127.0.0.1:9", "http://127.0.0.1:8080/mcp", &[], &[])
                .expect("settings");
        let v = Verifier::new(settings).expect("verifier");
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(v.verify(&long).await.unwrap_err(), Refusal::TooLong);
        assert_eq!(v.verify("abc").await.unwrap_err(), Refusal::Malformed);
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#));
        assert_eq!(v.verify(&none).await.unwrap_err(), Refusal::Malformed);
        let hs = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert_eq!(
            v.verify(&hs).await.unwrap_err(),
            Refusal::Algorithm("HS256".into())
        );
        let crit = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert_eq!(v.verify(&crit).await.unwrap_err(), Refusal::Critical);
        // Nothing listens on port 9: the keys cannot be had.
        let es = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256","kid":"k"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert_eq!(v.verify(&es).await.unwrap_err(), Refusal::Unavailable);
        assert!(!v.loaded());
        assert_eq!(v.stats.refused.load(Ordering::Relaxed), 6);
    }
}
