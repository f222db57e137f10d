//! Gemini failures in words a user can act on. The API's error envelope
//! (`{"error":{"code","message","status","details"}}`) is read with a small
//! cap; `RetryInfo.retryDelay` and per-day quota ids decide retries.

use std::time::Duration;

use serde::Deserialize;

/// Error bodies are small; anything longer is cut before parsing.
const MAX_ERROR_BODY: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum GeminiError {
    #[error(
        "no Gemini API key is configured; set GEMINI_API_KEY (or --gemini-api-key), or call configure_gemini_token"
    )]
    NoKey,
    #[error(
        "Gemini rejected the API key: {message}; check GEMINI_API_KEY (or call configure_gemini_token with a valid key)"
    )]
    BadKey { message: String },
    #[error(
        "model {model} is not available ({message}); {}", successor_hint(.model)
    )]
    ModelNotFound { model: String, message: String },
    #[error("Gemini quota exhausted{}: {message}", if *.per_day { " (daily quota: it will not clear for hours)" } else { "" })]
    Quota {
        message: String,
        per_day: bool,
        retry_after: Option<Duration>,
        attempts: u32,
    },
    #[error("Gemini is unavailable ({code} {status}): {message}{}", attempts_note(*.attempts))]
    Unavailable {
        code: u16,
        status: String,
        message: String,
        retry_after: Option<Duration>,
        attempts: u32,
    },
    #[error("Gemini refused the request ({code} {status}): {message}")]
    Rejected {
        code: u16,
        status: String,
        message: String,
    },
    #[error("could not reach Gemini: {reason}{}", attempts_note(*.attempts))]
    Connect { reason: String, attempts: u32 },
    #[error("Gemini did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("could not set up the HTTP client: {0}")]
    Setup(String),
}

fn successor_hint(model: &str) -> String {
    match super::models::retired(model).or_else(|| super::models::deprecated(model)) {
        Some(new) => format!("it was shut down; use {new} (GEMINI_MODEL, or the call's model)"),
        None => format!(
            "use an available image model such as {} (GEMINI_MODEL, or the call's model)",
            super::models::DEFAULT_MODEL
        ),
    }
}

fn attempts_note(n: u32) -> String {
    if n > 1 {
        format!(" (gave up after {n} attempts)")
    } else {
        String::new()
    }
}

impl GeminiError {
    pub fn is_retryable(&self) -> bool {
        match self {
            GeminiError::Quota { per_day, .. } => !per_day,
            GeminiError::Unavailable { .. } | GeminiError::Connect { .. } => true,
            GeminiError::Timeout(_) => true,
            _ => false,
        }
    }

    /// The delay the server asked for, when it said.
    pub fn server_delay(&self) -> Option<Duration> {
        match self {
            GeminiError::Quota { retry_after, .. }
            | GeminiError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(super) fn after_attempts(mut self, n: u32) -> Self {
        match &mut self {
            GeminiError::Quota { attempts, .. }
            | GeminiError::Unavailable { attempts, .. }
            | GeminiError::Connect { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }

    pub(super) fn from_transport(e: &reqwest::Error) -> Self {
        // reqwest's Display can include the URL; ours carries no key, but
        // keep messages short and free of query strings anyway.
        let reason = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            "request failed".to_string()
        };
        let detail = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        GeminiError::Connect {
            reason: if detail.is_empty() {
                reason
            } else {
                format!("{reason}: {detail}")
            },
            attempts: 1,
        }
    }

    /// The error for an HTTP status and its (small) body.
    pub fn from_status(code: u16, body: &[u8], model: &str) -> Self {
        classify(code, body, model)
    }

    /// A short machine-readable kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GeminiError::NoKey => "no_key",
            GeminiError::BadKey { .. } => "bad_key",
            GeminiError::ModelNotFound { .. } => "model_not_found",
            GeminiError::Quota { .. } => "quota",
            GeminiError::Unavailable { .. } => "unavailable",
            GeminiError::Rejected { .. } => "rejected",
            GeminiError::Connect { .. } => "connect",
            GeminiError::Timeout(_) => "timeout",
            GeminiError::Setup(_) => "setup",
        }
    }
}

#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

/// Turn a non-success response into an error, reading at most a small
/// body.
pub(super) async fn from_response(resp: reqwest::Response, model: &str) -> GeminiError {
    let code = resp.status().as_u16();
    let body = crate::capped::read_body(resp, MAX_ERROR_BODY).await;
    classify(code, &body.bytes, model)
}

/// Pure: status code and body bytes to an error.
pub fn classify(code: u16, body: &[u8], model: &str) -> GeminiError {
    let env: Envelope = serde_json::from_slice(body).unwrap_or_default();
    let e = env.error;
    let message = if e.message.is_empty() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_string();
        if text.is_empty() {
            format!("HTTP {code}")
        } else {
            text
        }
    } else {
        e.message.clone()
    };
    let reason = |want: &str| {
        e.details
            .iter()
            .any(|d| d.get("reason").and_then(|r| r.as_str()) == Some(want))
    };
    let retry_after = e.details.iter().find_map(|d| {
        d.get("retryDelay")
            .and_then(|v| v.as_str())
            .and_then(parse_duration)
    });
    let per_day = e.details.iter().any(|d| {
        d.get("violations")
            .and_then(|v| v.as_array())
            .is_some_and(|vs| {
                vs.iter().any(|v| {
                    v.get("quotaId")
                        .and_then(|q| q.as_str())
                        .is_some_and(|q| q.contains("PerDay"))
                })
            })
    });
    match code {
        400 if reason("API_KEY_INVALID") || message.contains("API key not valid") => {
            GeminiError::BadKey { message }
        }
        401 | 403 if message.contains("API key") || reason("API_KEY_INVALID") => {
            GeminiError::BadKey { message }
        }
        404 => GeminiError::ModelNotFound {
            model: model.to_string(),
            message,
        },
        429 => GeminiError::Quota {
            message,
            per_day,
            retry_after,
            attempts: 1,
        },
        503 if reason("MODEL_CAPACITY_EXHAUSTED")
            || message.contains("MODEL_CAPACITY_EXHAUSTED") =>
        {
            GeminiError::Unavailable {
                code,
                status: e.status,
                message: format!(
                    "{model} has no capacity free right now ({message}); this is on Google's side and usually clears within minutes: try again later, or pass another model"
                ),
                retry_after,
                attempts: 1,
            }
        }
        408 | 500 | 502 | 503 | 504 => GeminiError::Unavailable {
            code,
            status: e.status,
            message,
            retry_after,
            attempts: 1,
        },
        _ => GeminiError::Rejected {
            code,
            status: e.status,
            message,
        },
    }
}

/// Google's protobuf Duration in JSON: "47s", "45.8s", "0.5s".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_with_retry_info() {
        let body = br#"{"error":{"code":429,"message":"You exceeded your current quota. Please retry in 47.88s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"m","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"45.8s"}]}}"#;
        match classify(429, body, "m") {
            GeminiError::Quota {
                per_day,
                retry_after,
                ..
            } => {
                assert!(!per_day);
                assert_eq!(retry_after, Some(Duration::from_millis(45_800)));
            }
            other => panic!("{other:?}"),
        }
        let daily = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#;
        let e = classify(429, daily, "m");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("daily quota"));
    }

    #[test]
    fn bad_key_model_and_overload() {
        let bad = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        let e = classify(400, bad, "m");
        assert!(matches!(e, GeminiError::BadKey { .. }) && !e.is_retryable());
        assert!(e.to_string().contains("GEMINI_API_KEY"));
        let e = classify(404, b"{}", "gemini-2.5-flash-image-preview");
        assert!(e.to_string().contains("GEMINI_MODEL"));
        assert!(e.to_string().contains("gemini-2.5-flash-image-preview"));
        let e = classify(503, br#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#, "m");
        assert!(e.is_retryable());
        let cap = br#"{"error":{"code":503,"message":"Model capacity exhausted.","status":"UNAVAILABLE","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"MODEL_CAPACITY_EXHAUSTED"}]}}"#;
        let e = classify(503, cap, "gemini-3-pro-image");
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .contains("gemini-3-pro-image has no capacity free"),
            "{e}"
        );
        let e = classify(404, b"{}", "gemini-3.1-flash-image-preview");
        assert!(e.to_string().contains("use gemini-3.1-flash-image"), "{e}");
        let e = classify(502, b"<html>bad gateway</html>", "m");
        assert!(e.to_string().contains("bad gateway"));
        assert!(!classify(400, b"{}", "m").is_retryable());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("47s"), Some(Duration::from_secs(47)));
        assert_eq!(parse_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
