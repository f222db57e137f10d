//! Who is calling. Over HTTP a request carries a bearer token: the static
//! client token (`--auth-token`), the operators' admin token, or, with
//! `--oauth-issuer`, a JWT access token from an OAuth 2.1 authorization
//! server (an OpenID provider, Entra ID). Each becomes a [`Principal`]: an
//! id and the scopes it holds. The transport puts it on the request, tool
//! handlers read it there.
//!
//! This module owns the resource server's side of OAuth: the settings
//! (`OAuthSettings`), the scopes a request needs ([`needed`]), the
//! Protected Resource Metadata document (RFC 9728) and the
//! `WWW-Authenticate` challenges, and the token check itself
//! ([`Verifier`]: the issuer's keys, fetched, cached and refreshed, and
//! the claims, `claims.rs`). It knows nothing of MCP sessions or tools
//! beyond their names.

pub mod claims;
mod keys;

use std::fmt;
use std::sync::Arc;

pub use claims::Refusal;
pub use keys::{AuthStats, Verifier};

/// One of the permissions a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// generate_image.
    Generate,
    /// edit_image, continue_editing.
    Edit,
    /// Reading what exists: images, tasks, status.
    Read,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Generate, Scope::Edit, Scope::Read];

    fn bit(self) -> u8 {
        match self {
            Scope::Generate => 1,
            Scope::Edit => 2,
            Scope::Read => 4,
        }
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    pub const ALL: Scopes = Scopes(7);

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn with(self, s: Scope) -> Self {
        Scopes(self.0 | s.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The names the authorization server gives the three scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeNames {
    pub generate: String,
    pub edit: String,
    pub read: String,
}

impl Default for ScopeNames {
    fn default() -> Self {
        Self {
            generate: "images:generate".into(),
            edit: "images:edit".into(),
            read: "images:read".into(),
        }
    }
}

impl ScopeNames {
    pub fn name(&self, s: Scope) -> &str {
        match s {
            Scope::Generate => &self.generate,
            Scope::Edit => &self.edit,
            Scope::Read => &self.read,
        }
    }

    /// The scope a name stands for, if any.
    pub fn scope_of(&self, name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| self.name(*s) == name)
    }

    /// The three names, space-separated (a `scope` parameter's form).
    pub fn joined(&self) -> String {
        Scope::ALL.map(|s| self.name(s)).join(" ")
    }

    /// `generate=NAME`, `edit=NAME`, `read=NAME` items (any subset) over
    /// the defaults.
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut names = Self::default();
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!(
                    "--oauth-scopes item {item:?} is not KEY=NAME (keys: generate, edit, read)"
                ));
            };
            let value = value.trim();
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
            {
                return Err(format!(
                    "--oauth-scopes: {value:?} is not a scope name (no spaces, quotes or backslashes)"
                ));
            }
            match key.trim() {
                "generate" => names.generate = value.into(),
                "edit" => names.edit = value.into(),
                "read" => names.read = value.into(),
                other => {
                    return Err(format!(
                        "--oauth-scopes: unknown key {other:?} (keys: generate, edit, read)"
                    ));
                }
            }
        }
        if names.generate == names.edit || names.generate == names.read || names.edit == names.read
        {
            return Err("--oauth-scopes: the three scope names must differ".into());
        }
        Ok(names)
    }
}

/// How a principal was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A JWT access token from the configured issuer.
    OAuth,
    /// The static client token (`--auth-token`).
    StaticToken,
    /// The operators' token (`--admin-token`).
    AdminToken,
    /// HTTP without auth (`--no-auth`, loopback only).
    NoAuth,
    /// The one local client over stdio.
    Stdio,
}

/// Who is calling: the id logs, records and limits name, and what it may
/// do.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's `sub` for OAuth; `static`, `admin`, `anonymous` or
    /// `stdio` otherwise.
    pub id: Arc<str>,
    pub via: Via,
    pub scopes: Scopes,
}

impl Principal {
    fn fixed(id: &str, via: Via) -> Self {
        Self {
            id: Arc::from(id),
            via,
            scopes: Scopes::ALL,
        }
    }

    pub fn static_token() -> Self {
        Self::fixed("static", Via::StaticToken)
    }

    pub fn admin() -> Self {
        Self::fixed("admin", Via::AdminToken)
    }

    pub fn anonymous() -> Self {
        Self::fixed("anonymous", Via::NoAuth)
    }

    pub fn stdio() -> Self {
        Self::fixed("stdio", Via::Stdio)
    }

    pub fn oauth(subject: &str, scopes: Scopes) -> Self {
        Self {
            id: Arc::from(subject),
            via: Via::OAuth,
            scopes,
        }
    }

    pub fn may(&self, s: Scope) -> bool {
        self.scopes.contains(s)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// What a tool call needs, by tool name; `None` for a name this server
/// does not have (rmcp answers those).
pub fn tool_scope(tool: &str) -> Option<Option<Scope>> {
    Some(match tool {
        "generate_image" => Some(Scope::Generate),
        "edit_image" | "continue_editing" => Some(Scope::Edit),
        "get_last_image_info" | "get_configuration_status" => Some(Scope::Read),
        // Only the admin token may call it; the tool checks that.
        "configure_gemini_token" => None,
        _ => return None,
    })
}

/// The scope a JSON-RPC request needs: `None` when any valid token will do
/// (initialize, tools/list, ping, notifications, responses).
pub fn needed(method: &str, tool: Option<&str>) -> Option<Scope> {
    match method {
        "tools/call" => tool.and_then(tool_scope).flatten(),
        "resources/read" | "resources/list" => Some(Scope::Read),
        m if m.starts_with("tasks/") => Some(Scope::Read),
        _ => None,
    }
}

/// The resource server's settings (`--oauth-issuer` and friends).
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// The issuer, exactly as tokens name it in `iss`.
    pub issuer: String,
    /// Accepted `aud` values (any one suffices).
    pub audiences: Vec<String>,
    /// The canonical URI of the MCP endpoint (`--resource-url`), as
    /// given: what the metadata names and the default audience.
    pub resource_uri: String,
    /// The same, parsed (its origin and path place the metadata).
    pub resource: url::Url,
    pub scopes: ScopeNames,
}

/// Whether `u` names this machine (http allowed there, for tests).
pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// An https URL, or http to a loopback host; `what` names it in the error.
pub fn secure_url(raw: &str, what: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(raw.trim()).map_err(|e| format!("{what} {raw:?} is not a URL: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" if is_loopback(&u) => {}
        _ => {
            return Err(format!(
                "{what} {raw:?} must be an https URL (http only to localhost or 127.0.0.1)"
            ));
        }
    }
    if u.fragment().is_some() || u.query().is_some() || u.host().is_none() {
        return Err(format!(
            "{what} {raw:?} must have a host and no query or fragment"
        ));
    }
    Ok(u)
}

impl OAuthSettings {
    /// Checked settings from the flags' values.
    pub fn new(
        issuer: &str,
        resource: &str,
        audiences: &[String],
        scopes: &[String],
    ) -> Result<Self, String> {
        secure_url(issuer, "--oauth-issuer")?;
        let resource_uri = resource.trim().to_string();
        let resource = url::Url::parse(&resource_uri).map_err(|e| {
            format!("--resource-url {resource:?} is not a URL: {e} (e.g. https://images.example.com/mcp)")
        })?;
        if !matches!(resource.scheme(), "https" | "http")
            || resource.host().is_none()
            || resource.fragment().is_some()
        {
            return Err(format!(
                "--resource-url {resource} must be an http(s) URL with a host and no fragment"
            ));
        }
        let audiences: Vec<String> = audiences
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        let audiences = if audiences.is_empty() {
            vec![resource_uri.clone()]
        } else {
            audiences
        };
        Ok(Self {
            issuer: issuer.trim().to_string(),
            audiences,
            resource_uri,
            resource,
            scopes: ScopeNames::parse(scopes)?,
        })
    }

    /// The path of the metadata document clients find from a 401: the
    /// well-known prefix, then the resource's path (RFC 9728, 3.1).
    pub fn metadata_path(&self) -> String {
        let path = self.resource.path().trim_end_matches('/');
        format!("/.well-known/oauth-protected-resource{path}")
    }

    /// Where the metadata document is, as clients reach it.
    pub fn metadata_url(&self) -> String {
        format!(
            "{}{}",
            self.resource.origin().ascii_serialization(),
            self.metadata_path()
        )
    }

    /// The Protected Resource Metadata document (RFC 9728).
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "resource": self.resource_uri,
            "authorization_servers": [self.issuer],
            "scopes_supported": Scope::ALL.map(|s| self.scopes.name(s)),
            "bearer_methods_supported": ["header"],
            "resource_name": "nano-banana-mcp",
        })
    }

    /// The challenge of a 401: no token, or (`refused`) one that was
    /// refused.
    pub fn challenge(&self, refused: Option<&Refusal>) -> String {
        let mut h = format!(
            "Bearer resource_metadata=\"{}\", scope=\"{}\"",
            self.metadata_url(),
            self.scopes.joined()
        );
        if let Some(r) = refused {
            h.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{}\"",
                quoted(&r.to_string())
            ));
        }
        h
    }

    /// The challenge of a 403: a valid token without the scope needed.
    pub fn insufficient_scope(&self, needed: Scope) -> String {
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
            self.scopes.name(needed),
            self.metadata_url()
        )
    }
}

/// Text safe inside a quoted-string of a header.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OAuthSettings {
        OAuthSettings::new(
            "https://login.example.com/tenant/v2.0",
            "https://images.example.com/mcp",
            &[],
            &[],
        )
        .expect("valid")
    }

    #[test]
    fn tools_map_to_scopes() {
        assert_eq!(
            needed("tools/call", Some("generate_image")),
            Some(Scope::Generate)
        );
        for t in ["edit_image", "continue_editing"] {
            assert_eq!(needed("tools/call", Some(t)), Some(Scope::Edit), "{t}");
        }
        for t in ["get_last_image_info", "get_configuration_status"] {
            assert_eq!(needed("tools/call", Some(t)), Some(Scope::Read), "{t}");
        }
        assert_eq!(needed("tools/call", Some("configure_gemini_token")), None);
        assert_eq!(needed("tools/call", Some("no_such_tool")), None);
        for m in [
            "resources/read",
            "resources/list",
            "tasks/get",
            "tasks/result",
            "tasks/list",
            "tasks/cancel",
        ] {
            assert_eq!(needed(m, None), Some(Scope::Read), "{m}");
        }
        for m in [
            "initialize",
            "tools/list",
            "ping",
            "notifications/initialized",
            "notifications/cancelled",
        ] {
            assert_eq!(needed(m, None), None, "{m}");
        }
    }

    #[test]
    fn scope_names_parse_over_defaults() {
        let n = ScopeNames::parse(&[]).expect("defaults");
        assert_eq!(n.joined(), "images:generate images:edit images:read");
        let n = ScopeNames::parse(&[
            "generate=Images.Generate".into(),
            " read = Images.Read".into(),
        ])
        .expect("parse");
        assert_eq!(n.generate, "Images.Generate");
        assert_eq!(n.edit, "images:edit");
        assert_eq!(n.read, "Images.Read");
        assert_eq!(n.scope_of("Images.Read"), Some(Scope::Read));
        assert_eq!(n.scope_of("images:read"), None);
        for bad in [
            "generate",
            "write=x",
            "edit=",
            "edit=a b",
            "edit=a\"b",
            "read=images:edit",
        ] {
            assert!(ScopeNames::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn issuer_must_be_https_except_on_loopback() {
        for ok in [
            "https://login.example.com/t/v2.0",
            "http://127.0.0.1:9000",
            "http://localhost:8080/realms/x",
            "http://[::1]:9000",
            "http://127.1.2.3",
        ] {
            assert!(secure_url(ok, "--oauth-issuer").is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1",
            "ftp://localhost",
            "not a url",
            "https://login.example.com/#x",
        ] {
            assert!(secure_url(bad, "--oauth-issuer").is_err(), "{bad}");
        }
    }

    #[test]
    fn audience_defaults_to_the_resource() {
        let s = settings();
        assert_eq!(
            s.audiences,
            vec!["https://images.example.com/mcp".to_string()]
        );
        let s = OAuthSettings::new(
            "https://login.example.com",
            "https://images.example.com/mcp",
            &["api://abc".into(), " ".into(), "x".into()],
            &[],
        )
        .expect("valid");
        assert_eq!(s.audiences, vec!["api://abc".to_string(), "x".to_string()]);
    }

    #[test]
    fn challenges_and_metadata_say_where_and_what() {
        let s = settings();
        assert_eq!(
            s.metadata_url(),
            "https://images.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            s.challenge(None),
            "Bearer resource_metadata=\"https://images.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"images:generate images:edit images:read\""
        );
        let h = s.challenge(Some(&Refusal::Expired));
        assert!(
            h.ends_with(", error=\"invalid_token\", error_description=\"the token has expired\""),
            "{h}"
        );
        assert_eq!(
            s.insufficient_scope(Scope::Edit),
            "Bearer error=\"insufficient_scope\", scope=\"images:edit\", resource_metadata=\"https://images.example.com/.well-known/oauth-protected-resource/mcp\""
        );
        let m = s.metadata();
        assert_eq!(m["resource"], "https://images.example.com/mcp");
        assert_eq!(
            m["authorization_servers"],
            serde_json::json!(["https://login.example.com/tenant/v2.0"])
        );
        assert_eq!(
            m["scopes_supported"],
            serde_json::json!(["images:generate", "images:edit", "images:read"])
        );
        assert_eq!(m["bearer_methods_supported"], serde_json::json!(["header"]));
        assert_eq!(m["resource_name"], "nano-banana-mcp");
        // A resource at the root: no path suffix.
        let root = OAuthSettings::new("https://l.example.com", "https://i.example.com", &[], &[])
            .expect("valid");
        assert_eq!(
            root.metadata_url(),
            "https://i.example.com/.well-known/oauth-protected-resource"
        );
        // The resource and the audience as given, not normalised.
        assert_eq!(root.metadata()["resource"], "https://i.example.com");
        assert_eq!(root.audiences, vec!["https://i.example.com".to_string()]);
    }

    #[test]
    fn scopes_sets() {
        let s = Scopes::NONE.with(Scope::Read);
        assert!(s.contains(Scope::Read) && !s.contains(Scope::Edit));
        assert!(Scope::ALL.iter().all(|x| Scopes::ALL.contains(*x)));
        assert!(Principal::static_token().may(Scope::Generate));
        assert_eq!(Principal::anonymous().id.as_ref(), "anonymous");
    }
}
