//! The Host allow-list (DNS-rebinding protection), applied to every route
//! of the MCP listener before anything else, including auth. rmcp checks
//! Host on /mcp too; this check is the stricter one and runs first, so
//! the two cannot disagree on a request that reaches rmcp.
//!
//! Refused outright, whatever the list: more than one Host header, a Host
//! with userinfo or a port that is not a number up to 65535, no Host and
//! no `:authority` at all, and an absolute-form request target (or an
//! HTTP/2 `:authority`) naming another authority than the Host header.

use axum::http::{HeaderMap, Uri, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    #[error("more than one Host header")]
    Repeated,
    #[error("no Host header")]
    Missing,
    #[error("the Host header is not a host and an optional port")]
    Malformed,
    #[error("the request target names another host than the Host header")]
    Mismatch,
    #[error("this Host is not served here (--allowed-hosts)")]
    NotAllowed,
}

impl HostRefusal {
    /// 403 for a well-formed Host that is not on the list (as rmcp
    /// answers), 400 for a request that is malformed.
    pub fn status(self) -> axum::http::StatusCode {
        match self {
            Self::NotAllowed => axum::http::StatusCode::FORBIDDEN,
            _ => axum::http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Host (lowercased, without brackets) and port of a Host value, if it is
/// exactly `host[:port]`.
fn parse(value: &str) -> Option<(String, Option<u16>)> {
    if value.is_empty() || value.contains(['@', '/', '?', '#', ' ', '\t']) {
        return None;
    }
    let a = axum::http::uri::Authority::try_from(value).ok()?;
    // After the host, nothing, or `:` and digits that fit a u16
    // (`Authority` takes any text there and then reports no port).
    let rest = value.get(a.host().len()..)?;
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    let host = a.host().trim_matches(['[', ']']).to_ascii_lowercase();
    (!host.is_empty()).then_some((host, port))
}

/// Whether the request's authority is well formed and on `allowed` (an
/// entry without a port allows any port; `*` allows any host).
pub fn check(uri: &Uri, headers: &HeaderMap, allowed: &[String]) -> Result<(), HostRefusal> {
    let mut values = headers.get_all(header::HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(HostRefusal::Repeated);
    }
    let host_header = match first {
        Some(v) => Some(v.to_str().map_err(|_| HostRefusal::Malformed)?),
        None => None,
    };
    let target = uri.authority().map(|a| a.as_str());
    let (host, port) = match (host_header, target) {
        (Some(h), Some(t)) => {
            let (h, t) = (
                parse(h).ok_or(HostRefusal::Malformed)?,
                parse(t).ok_or(HostRefusal::Malformed)?,
            );
            if h != t {
                return Err(HostRefusal::Mismatch);
            }
            h
        }
        (Some(v), None) | (None, Some(v)) => parse(v).ok_or(HostRefusal::Malformed)?,
        (None, None) => return Err(HostRefusal::Missing),
    };
    if allowed.iter().any(|a| a == "*") {
        return Ok(());
    }
    // An entry that is no authority (a bare IPv6 address like `::1`) is a
    // host without a port, as rmcp reads it.
    let entry = |a: &String| {
        let a = a.trim();
        parse(a).unwrap_or_else(|| (a.trim_matches(['[', ']']).to_ascii_lowercase(), None))
    };
    let on_list = allowed.iter().map(entry).any(|(h, p)| {
        h == host
            && match p {
                Some(p) => port == Some(p),
                None => true,
            }
    });
    if on_list {
        Ok(())
    } else {
        Err(HostRefusal::NotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn allowed() -> Vec<String> {
        vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "images.example:8443".into(),
        ]
    }

    fn run(target: &str, hosts: &[&str]) -> Result<(), HostRefusal> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        check(&target.parse::<Uri>().unwrap(), &h, &allowed())
    }

    #[test]
    fn allowed_hosts_pass_with_any_port_unless_the_entry_names_one() {
        assert_eq!(run("/mcp", &["127.0.0.1:8080"]), Ok(()));
        assert_eq!(run("/mcp", &["LOCALHOST"]), Ok(()));
        assert_eq!(run("/mcp", &["[::1]:9"]), Ok(()));
        assert_eq!(run("/mcp", &["images.example:8443"]), Ok(()));
        assert_eq!(
            run("/mcp", &["images.example:443"]),
            Err(HostRefusal::NotAllowed)
        );
        assert_eq!(run("/mcp", &["evil.example"]), Err(HostRefusal::NotAllowed));
        // HTTP/2: no Host, the authority in the target.
        assert_eq!(run("http://127.0.0.1:8080/mcp", &[]), Ok(()));
        assert_eq!(
            run("http://evil.example/mcp", &[]),
            Err(HostRefusal::NotAllowed)
        );
    }

    #[test]
    fn host_oddities_are_refused() {
        assert_eq!(
            run("/mcp", &["127.0.0.1", "127.0.0.1"]),
            Err(HostRefusal::Repeated)
        );
        assert_eq!(
            run("/mcp", &["user@127.0.0.1"]),
            Err(HostRefusal::Malformed)
        );
        assert_eq!(
            run("/mcp", &["127.0.0.1:99999"]),
            Err(HostRefusal::Malformed)
        );
        assert_eq!(run("/mcp", &["127.0.0.1:80a"]), Err(HostRefusal::Malformed));
        assert_eq!(run("/mcp", &["127.0.0.1:"]), Err(HostRefusal::Malformed));
        assert_eq!(run("/mcp", &[""]), Err(HostRefusal::Malformed));
        assert_eq!(run("/mcp", &[]), Err(HostRefusal::Missing));
        assert_eq!(
            run("http://evil.example/mcp", &["127.0.0.1"]),
            Err(HostRefusal::Mismatch)
        );
        assert_eq!(
            run("http://127.0.0.1:8080/mcp", &["127.0.0.1:8080"]),
            Ok(())
        );
    }
}
