//! Read-only service SAS for one blob, signed with the account key, and
//! the check that a URL carries one this server signed.
//!
//! object_store's signer sets `st` to the instant of signing, so a pod
//! whose clock runs ahead of Azure's hands out URLs Azure refuses for
//! their first seconds. This one sets the start `CLOCK_SKEW` back. The
//! same key verifies URLs callers pass back: a URL into the server's
//! container is an input only with a valid, unexpired, read-only SAS for
//! exactly that blob, compared in constant time (`Mac::verify_slice`).
//!
//! Never put the key or a signature into an error or a log line.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use super::azure_setup::STORAGE_API_VERSION;
use crate::secret::Secret;

/// How far back `st` is set: clocks of pods and of Azure may differ.
pub const CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The query parameters of a SAS this server signs, and only those.
const PARAMS: [&str; 6] = ["sv", "sp", "st", "se", "sr", "sig"];

/// Why a URL's SAS is not one of ours (for the log; callers get one
/// answer for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SasRefusal {
    #[error("no SAS, or one with other parameters than this server signs")]
    NotOurs,
    #[error("the SAS grants other than read on one blob")]
    Scope,
    #[error("the SAS has expired or is not valid yet")]
    Time,
    #[error("the signature does not match")]
    Signature,
}

/// Signs and checks read-only SAS URLs for blobs of one account.
#[derive(Clone)]
pub struct BlobSigner {
    account: String,
    key: Secret,
}

impl std::fmt::Debug for BlobSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobSigner")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl BlobSigner {
    /// `None` when the key is not base64 (the connection string parser
    /// already refuses that).
    pub fn new(account: &str, key_base64: &Secret) -> Option<Self> {
        BASE64.decode(key_base64.expose().trim()).ok()?;
        Some(Self {
            account: account.to_string(),
            key: key_base64.clone(),
        })
    }

    fn mac(&self, to_sign: &str) -> Hmac<Sha256> {
        // The key decoded in `new`; HMAC takes keys of any length.
        let key = BASE64.decode(self.key.expose().trim()).unwrap_or_default();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(to_sign.as_bytes());
        mac
    }

    /// The string a service SAS (version 2020-12-06 and later) signs, with
    /// no identifier, IP, protocol, snapshot, scope or response headers.
    fn to_sign(
        &self,
        perms: &str,
        start: &str,
        expiry: &str,
        resource: &str,
        version: &str,
    ) -> String {
        format!("{perms}\n{start}\n{expiry}\n{resource}\n\n\n\n{version}\nb\n\n\n\n\n\n\n")
    }

    fn resource(&self, container: &str, blob: &str) -> String {
        format!("/blob/{}/{container}/{blob}", self.account)
    }

    /// `url` (the blob's plain URL) with a read-only SAS valid from
    /// `CLOCK_SKEW` before `now` until `now + ttl`.
    pub fn sign(
        &self,
        mut url: Url,
        container: &str,
        blob: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Url {
        let start = stamp(now - CLOCK_SKEW);
        let expiry = stamp(now + ttl);
        let to_sign = self.to_sign(
            "r",
            &start,
            &expiry,
            &self.resource(container, blob),
            STORAGE_API_VERSION,
        );
        let sig = BASE64.encode(self.mac(&to_sign).finalize().into_bytes());
        url.set_query(None);
        url.query_pairs_mut()
            .append_pair("sv", STORAGE_API_VERSION)
            .append_pair("sp", "r")
            .append_pair("st", &start)
            .append_pair("se", &expiry)
            .append_pair("sr", "b")
            .append_pair("sig", &sig);
        url
    }

    /// Whether `url` (already known to name `blob` of `container`) carries
    /// a SAS this signer made that still grants reading it at `now`.
    pub fn verify(
        &self,
        url: &Url,
        container: &str,
        blob: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SasRefusal> {
        let mut got: [Option<String>; 6] = Default::default();
        for (k, v) in url.query_pairs() {
            let i = PARAMS
                .iter()
                .position(|p| *p == k)
                .ok_or(SasRefusal::NotOurs)?;
            if got[i].replace(v.into_owned()).is_some() {
                return Err(SasRefusal::NotOurs);
            }
        }
        let [Some(sv), Some(sp), Some(st), Some(se), Some(sr), Some(sig)] = got else {
            return Err(SasRefusal::NotOurs);
        };
        if sp != "r" || sr != "b" || sv != STORAGE_API_VERSION {
            return Err(SasRefusal::Scope);
        }
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        let (Ok(start), Ok(expiry)) = (parse(&st), parse(&se)) else {
            return Err(SasRefusal::Time);
        };
        if now < start || now >= expiry {
            return Err(SasRefusal::Time);
        }
        let Ok(sig) = BASE64.decode(sig.as_bytes()) else {
            return Err(SasRefusal::Signature);
        };
        let to_sign = self.to_sign(&sp, &st, &se, &self.resource(container, blob), &sv);
        self.mac(&to_sign)
            .verify_slice(&sig)
            .map_err(|_| SasRefusal::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn signer() -> BlobSigner {
        BlobSigner::new("devstoreaccount1", &Secret::new(KEY.to_string())).expect("key")
    }

    /// What a test does to each query pair (`None` drops it).
    type Rewrite<'a> = dyn Fn(&str, &str) -> Option<(String, String)> + 'a;

    fn blob_url() -> Url {
        Url::parse("http://127.0.0.1:10000/devstoreaccount1/c/images/a.png").unwrap()
    }

    #[test]
    fn a_signed_url_starts_before_now_and_verifies_until_it_expires() {
        let s = signer();
        let now = Utc::now();
        let url = s.sign(
            blob_url(),
            "c",
            "images/a.png",
            Duration::from_secs(3600),
            now,
        );
        let st = url
            .query_pairs()
            .find(|(k, _)| k == "st")
            .unwrap()
            .1
            .into_owned();
        let start = DateTime::parse_from_rfc3339(&st)
            .unwrap()
            .with_timezone(&Utc);
        assert!(
            now - start >= chrono::Duration::minutes(14),
            "st is set back: {st}"
        );
        assert_eq!(s.verify(&url, "c", "images/a.png", now), Ok(()));
        assert_eq!(
            s.verify(&url, "c", "images/a.png", now + chrono::Duration::hours(2)),
            Err(SasRefusal::Time)
        );
        // Another blob, another container: the canonical resource differs.
        assert_eq!(
            s.verify(&url, "c", "images/b.png", now),
            Err(SasRefusal::Signature)
        );
        assert_eq!(
            s.verify(&url, "d", "images/a.png", now),
            Err(SasRefusal::Signature)
        );
    }

    #[test]
    fn tampered_or_foreign_sas_is_refused() {
        let s = signer();
        let now = Utc::now();
        let url = s.sign(
            blob_url(),
            "c",
            "images/a.png",
            Duration::from_secs(3600),
            now,
        );
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let with = |f: &Rewrite<'_>| {
            let mut u = blob_url();
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in &pairs {
                    if let Some((k, v)) = f(k, v) {
                        q.append_pair(&k, &v);
                    }
                }
            }
            s.verify(&u, "c", "images/a.png", now)
        };
        // A later expiry with the old signature.
        let later = stamp(now + chrono::Duration::days(30));
        assert_eq!(
            with(&|k, v| Some((k.into(), if k == "se" { later.clone() } else { v.into() }))),
            Err(SasRefusal::Signature)
        );
        // Write permission asked for.
        assert_eq!(
            with(&|k, v| Some((k.into(), if k == "sp" { "rw".into() } else { v.into() }))),
            Err(SasRefusal::Scope)
        );
        // No signature, and an extra parameter.
        assert_eq!(
            with(&|k, v| (k != "sig").then(|| (k.into(), v.into()))),
            Err(SasRefusal::NotOurs)
        );
        let mut extra = url.clone();
        extra.query_pairs_mut().append_pair("sip", "1.2.3.4");
        assert_eq!(
            s.verify(&extra, "c", "images/a.png", now),
            Err(SasRefusal::NotOurs)
        );
        // Signed with another key.
        let other =
            BlobSigner::new("devstoreaccount1", &Secret::new(BASE64.encode([7u8; 64]))).unwrap();
        assert_eq!(
            other.verify(&url, "c", "images/a.png", now),
            Err(SasRefusal::Signature)
        );
        assert_eq!(
            s.verify(&blob_url(), "c", "images/a.png", now),
            Err(SasRefusal::NotOurs)
        );
    }
}
