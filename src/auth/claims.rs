//! The claims of an access token whose signature checked out: issuer,
//! audience, expiry, not-before, issued-at, the subject, and the scopes
//! (`scope`, Entra's `scp`, or app `roles`). Pure: the time is passed in.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::{Principal, ScopeNames, Scopes};

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 60;

/// Why a token was refused, in words a client may see (they never quote
/// the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooLong,
    Malformed,
    /// The header names an algorithm this server does not accept.
    Algorithm(String),
    /// The header has `crit` extensions this server does not know.
    Critical,
    /// No key of the issuer has the token's `kid` (or it names none and
    /// the issuer has several).
    UnknownKey,
    /// The key the `kid` names is for another algorithm.
    KeyMismatch,
    Signature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    NoExpiry,
    Issuer,
    Audience,
    NoSubject,
    /// The issuer's keys could not be fetched: not the token's fault.
    Unavailable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLong => f.write_str("the token is longer than 8 KiB"),
            Refusal::Malformed => f.write_str("the token is not a well-formed signed JWT"),
            Refusal::Algorithm(a) => write!(
                f,
                "the token is signed with {a}; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384"
            ),
            Refusal::Critical => {
                f.write_str("the token has critical header extensions this server does not know")
            }
            Refusal::UnknownKey => {
                f.write_str("the token is signed with a key the issuer does not publish")
            }
            Refusal::KeyMismatch => f.write_str("the token's algorithm does not match its key's"),
            Refusal::Signature => f.write_str("the token's signature does not verify"),
            Refusal::Expired => f.write_str("the token has expired"),
            Refusal::NotYetValid => f.write_str("the token is not valid yet (nbf)"),
            Refusal::IssuedInFuture => f.write_str("the token is issued in the future (iat)"),
            Refusal::NoExpiry => f.write_str("the token has no expiry (exp)"),
            Refusal::Issuer => f.write_str("the token is from another issuer"),
            Refusal::Audience => {
                f.write_str("the token is for another audience (aud), not this server")
            }
            Refusal::NoSubject => f.write_str("the token names no subject (sub)"),
            Refusal::Unavailable => {
                f.write_str("the authorization server's keys cannot be fetched now; retry shortly")
            }
        }
    }
}

impl Refusal {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::TooLong | Refusal::Malformed | Refusal::Critical => "malformed",
            Refusal::Algorithm(_) | Refusal::KeyMismatch => "algorithm",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Signature => "signature",
            Refusal::Expired
            | Refusal::NotYetValid
            | Refusal::IssuedInFuture
            | Refusal::NoExpiry => "time",
            Refusal::Issuer => "issuer",
            Refusal::Audience => "audience",
            Refusal::NoSubject => "subject",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// The claims this server reads; the rest are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<Value>,
    #[serde(default)]
    pub exp: Option<Value>,
    #[serde(default)]
    pub nbf: Option<Value>,
    #[serde(default)]
    pub iat: Option<Value>,
    #[serde(default)]
    pub scope: Option<Value>,
    #[serde(default)]
    pub scp: Option<Value>,
    #[serde(default)]
    pub roles: Option<Value>,
}

/// What a token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub scopes: &'a ScopeNames,
}

/// A NumericDate (seconds, possibly fractional) as whole seconds.
fn seconds(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })
}

/// A time claim: absent is `None`, present but not a number is malformed.
fn time(v: &Option<Value>) -> Result<Option<i64>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => seconds(v).map(Some).ok_or(Refusal::Malformed),
    }
}

/// Whether `aud` (a string or an array of strings) holds any accepted
/// value.
pub fn audience_matches(aud: Option<&Value>, accepted: &[String]) -> bool {
    match aud {
        Some(Value::String(s)) => accepted.iter().any(|a| a == s),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|s| accepted.iter().any(|a| a == s)),
        _ => false,
    }
}

/// The scopes a token grants: `scope` and `scp` (space-separated strings,
/// or arrays) and `roles` (Entra app roles: an array), by the configured
/// names; names this server does not use are ignored.
pub fn granted(c: &Claims, names: &ScopeNames) -> Scopes {
    let mut out = Scopes::NONE;
    for v in [&c.scope, &c.scp, &c.roles].into_iter().flatten() {
        let mut add = |name: &str| {
            if let Some(s) = names.scope_of(name) {
                out = out.with(s);
            }
        };
        match v {
            Value::String(s) => s.split_ascii_whitespace().for_each(&mut add),
            Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(add),
            _ => {}
        }
    }
    out
}

/// Check the claims at `now` (seconds since the epoch) and name the
/// caller.
pub fn check(c: &Claims, want: &Expected<'_>, now: i64) -> Result<Principal, Refusal> {
    let exp = time(&c.exp)?.ok_or(Refusal::NoExpiry)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(Refusal::Expired);
    }
    if let Some(nbf) = time(&c.nbf)?
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(Refusal::NotYetValid);
    }
    if let Some(iat) = time(&c.iat)?
        && iat > now.saturating_add(LEEWAY_SECS)
    {
        return Err(Refusal::IssuedInFuture);
    }
    if c.iss.as_deref() != Some(want.issuer) {
        return Err(Refusal::Issuer);
    }
    if !audience_matches(c.aud.as_ref(), want.audiences) {
        return Err(Refusal::Audience);
    }
    let sub = c
        .sub
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::NoSubject)?;
    Ok(Principal::oauth(sub, granted(c, want.scopes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const ISS: &str = "https://login.example.com/t/v2.0";

    fn claims(v: Value) -> Claims {
        serde_json::from_value(v).expect("claims")
    }

    fn good() -> Value {
        json!({
            "iss": ISS, "sub": "user-1", "aud": "https://images.example.com/mcp",
            "exp": NOW + 300, "nbf": NOW - 10, "iat": NOW - 10,
            "scope": "openid images:generate images:read",
        })
    }

    fn with(changes: Value) -> Claims {
        let mut v = good();
        for (k, x) in changes.as_object().expect("object") {
            if x.is_null() {
                v.as_object_mut().expect("o").remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        claims(v)
    }

    fn check_at(c: &Claims, now: i64) -> Result<Principal, Refusal> {
        let names = ScopeNames::default();
        let aud = vec![
            "https://images.example.com/mcp".to_string(),
            "api://images".to_string(),
        ];
        check(
            c,
            &Expected {
                issuer: ISS,
                audiences: &aud,
                scopes: &names,
            },
            now,
        )
    }

    #[test]
    fn a_good_token_names_its_subject_and_scopes() {
        let p = check_at(&claims(good()), NOW).expect("accepted");
        assert_eq!(p.id.as_ref(), "user-1");
        assert!(p.may(Scope::Generate) && p.may(Scope::Read) && !p.may(Scope::Edit));
    }

    #[test]
    fn times_are_checked_with_a_minute_of_leeway() {
        let c = with(json!({"exp": NOW - 30}));
        assert!(check_at(&c, NOW).is_ok(), "inside the leeway");
        let c = with(json!({"exp": NOW - 61}));
        assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::Expired);
        let c = with(json!({"exp": null}));
        assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::NoExpiry);
        let c = with(json!({"exp": "tomorrow"}));
        assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::Malformed);
        let c = with(json!({"exp": (NOW + 300) as f64 + 0.5}));
        assert!(check_at(&c, NOW).is_ok(), "fractional seconds");
        let c = with(json!({"nbf": NOW + 59}));
        assert!(check_at(&c, NOW).is_ok());
        let c = with(json!({"nbf": NOW + 120}));
        assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::NotYetValid);
        let c = with(json!({"iat": NOW + 120}));
        assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::IssuedInFuture);
        let c = with(json!({"nbf": null, "iat": null}));
        assert!(check_at(&c, NOW).is_ok(), "nbf and iat are optional");
    }

    #[test]
    fn issuer_must_match_exactly() {
        for iss in [
            json!("https://login.example.com/t/v2.0/"),
            json!(null),
            json!("x"),
        ] {
            let c = with(json!({ "iss": iss }));
            assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::Issuer, "{iss}");
        }
    }

    #[test]
    fn audience_is_a_string_or_an_array() {
        let c = with(json!({"aud": ["other", "api://images"]}));
        assert!(check_at(&c, NOW).is_ok());
        for aud in [json!("other"), json!(["a", "b"]), json!([]), json!(7)] {
            let c = with(json!({ "aud": aud }));
            assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::Audience, "{aud}");
        }
        let c = with(json!({"aud": null}));
        assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::Audience);
    }

    #[test]
    fn a_subject_is_required() {
        for sub in [json!(null), json!("")] {
            let c = with(json!({ "sub": sub }));
            assert_eq!(check_at(&c, NOW).unwrap_err(), Refusal::NoSubject);
        }
    }

    #[test]
    fn scopes_come_from_scope_scp_or_roles() {
        let names = ScopeNames::parse(&[
            "generate=Images.Generate".into(),
            "edit=Images.Edit".into(),
            "read=Images.Read".into(),
        ])
        .expect("names");
        let c = claims(json!({"scp": "User.Read Images.Edit"}));
        assert_eq!(granted(&c, &names), Scopes::NONE.with(Scope::Edit));
        let c = claims(json!({"roles": ["Images.Generate", "Other"]}));
        assert_eq!(granted(&c, &names), Scopes::NONE.with(Scope::Generate));
        let c = claims(json!({"scope": ["Images.Read"], "roles": "Images.Edit"}));
        assert_eq!(
            granted(&c, &names),
            Scopes::NONE.with(Scope::Read).with(Scope::Edit)
        );
        // Default names do not match Entra-style ones, and case matters.
        let c = claims(json!({"scope": "Images.Read images:READ"}));
        assert_eq!(granted(&c, &ScopeNames::default()), Scopes::NONE);
        let c = claims(json!({"scope": 7}));
        assert_eq!(granted(&c, &names), Scopes::NONE);
    }

    #[test]
    fn refusals_say_why_without_quotes() {
        for r in [
            Refusal::TooLong,
            Refusal::Malformed,
            Refusal::Algorithm("HS256".into()),
            Refusal::UnknownKey,
            Refusal::Expired,
            Refusal::Audience,
            Refusal::Unavailable,
        ] {
            let s = r.to_string();
            assert!(!s.is_empty() && !s.contains('"'), "{s}");
            assert!(!r.kind().is_empty());
        }
    }
}
