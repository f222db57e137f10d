//! The OAuth resource server against the real binary: a small OpenID
//! provider runs inside the test on loopback (discovery document and a
//! JWKS of keys made here, EC P-256 and RSA 2048, signing real JWTs), and
//! the server is started with `--oauth-issuer` pointing at it. Good tokens
//! get through MCP (initialize, tools/list, generate_image, over rmcp and
//! over the stateless direct path); expired ones, ones for another
//! audience or issuer, with a wrong signature, an unknown key or
//! algorithm `none`/`HS256` get 401 with `invalid_token`; one missing the
//! scope gets 403 `insufficient_scope` naming it; a key the provider adds
//! later (rotation) is followed; the metadata document and the challenges
//! say what RFC 9728 asks.

#![allow(clippy::disallowed_methods)] // reads small JSON and header values

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use base64::Engine as _;
use common::*;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const STATIC_TOKEN: &str = "static-oauth-test-token-0123456789";
const ALL: &str = "images:generate images:edit images:read";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

/// A signing key of the test's provider.
enum Signer {
    Ec(sig::EcdsaKeyPair),
    Rsa(sig::RsaKeyPair),
}

struct TestKey {
    kid: String,
    signer: Signer,
}

impl TestKey {
    fn ec(kid: &str) -> Self {
        let k = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec key");
        Self {
            kid: kid.into(),
            signer: Signer::Ec(k),
        }
    }

    fn rsa(kid: &str) -> Self {
        let k = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
        Self {
            kid: kid.into(),
            signer: Signer::Rsa(k),
        }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        }
    }

    /// The public key as a JWKS entry.
    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Ec(k) => {
                // Uncompressed point: 0x04 || x || y.
                let p = k.public_key().as_ref();
                assert_eq!(p.len(), 65);
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
                       "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            Signer::Rsa(k) => {
                let pk = k.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig",
                       "n": b64(pk.modulus().big_endian_without_leading_zero()),
                       "e": b64(pk.exponent().big_endian_without_leading_zero())})
            }
        }
    }

    /// A JWS over `claims` with this key, its header naming `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "at+jwt", "kid": kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Signer::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                    .expect("sign");
                out
            }
        };
        format!("{input}.{}", b64(&signature))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// The provider: discovery and the JWKS, which the test may change.
struct Provider {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicU64>,
}

async fn provider(keys: &[&TestKey]) -> Provider {
    provider_on(0, keys).await
}

async fn provider_on(port: u16, keys: &[&TestKey]) -> Provider {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let jwks = Arc::new(Mutex::new(
        json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}),
    ));
    let fetches = Arc::new(AtomicU64::new(0));
    let discovery = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
    });
    let (j, f) = (Arc::clone(&jwks), Arc::clone(&fetches));
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let body = j.lock().expect("jwks").clone();
                async move { axum::Json(body) }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Provider {
        issuer,
        jwks,
        fetches,
    }
}

struct Srv {
    _child: tokio::process::Child,
    base: String,
    resource: String,
    stderr: tokio::task::JoinHandle<String>,
}

async fn start(
    fake_url: &str,
    out: &std::path::Path,
    issuer: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Srv {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let resource = format!("{base}/mcp");
    let mut child = tokio::process::Command::new(bin())
        .args(["serve", "--http", &format!("127.0.0.1:{port}")])
        .args(["--oauth-issuer", issuer, "--resource-url", &resource])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GEMINI_API_KEY", TEST_KEY)
        .env("GEMINI_BASE_URL", fake_url)
        .env("NANO_BANANA_OUTPUT_DIR", out)
        .env("LOG_LEVEL", "info,nano_banana_mcp=debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(&mut err).lines();
        let mut s = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            if std::env::var_os("OAUTH_TEST_VERBOSE").is_some() {
                eprintln!("server: {l}");
            }
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return Srv {
                _child: child,
                base,
                resource,
                stderr,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

impl Srv {
    /// Stop the server and return what it logged.
    async fn log(mut self) -> String {
        let _ = self._child.start_kill();
        let _ = self._child.wait().await;
        self.stderr.await.expect("stderr")
    }
}

fn claims(p: &Provider, aud: &str, scope: &str) -> Value {
    let t = now();
    json!({"iss": p.issuer, "sub": "user-1", "aud": aud, "exp": t + 600,
           "nbf": t - 5, "iat": t - 5, "scope": scope, "client_id": "test-client"})
}

fn with(mut c: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

fn tool_call(tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name": tool, "arguments": args}})
}

/// POST a JSON-RPC body to /mcp with a bearer token (if any).
async fn post(base: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.send().await.expect("send")
}

fn www_auth(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default()
}

/// A refusal: status, the `WWW-Authenticate` header and the body.
async fn refusal(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let h = www_auth(&r);
    (status, h, r.text().await.expect("body"))
}

async fn client(base: &str, token: &str) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(token),
    );
    ().serve(transport).await.expect("initialize over HTTP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_are_checked_as_the_spec_says() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let ec = TestKey::ec("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let idp = provider(&[&ec, &rsa]).await;
    let srv = start(&fake.base_url(), dir.path(), &idp.issuer, &[], &[]).await;
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", srv.base);
    let aud = srv.resource.clone();

    // The Protected Resource Metadata, both forms, no token needed.
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = reqwest::get(format!("{}{path}", srv.base))
            .await
            .expect("prm");
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(
            v,
            json!({
                "resource": srv.resource,
                "authorization_servers": [idp.issuer],
                "scopes_supported": ["images:generate", "images:edit", "images:read"],
                "bearer_methods_supported": ["header"],
                "resource_name": "nano-banana-mcp",
            }),
            "{path}"
        );
    }

    // No token: 401 and where to find the metadata.
    let (status, h, _) = refusal(post(&srv.base, None, INIT).await).await;
    assert_eq!(status, 401);
    assert_eq!(
        h,
        format!("Bearer resource_metadata=\"{metadata_url}\", scope=\"{ALL}\"")
    );

    // A good token: a real MCP client initializes, lists and generates.
    let good = ec.sign(&claims(&idp, &aud, ALL));
    let c = client(&srv.base, &good).await;
    let tools = c.list_all_tools().await.expect("list");
    assert_eq!(tools.len(), 6);
    let r = c
        .call_tool(
            CallToolRequestParams::new("generate_image").with_arguments(
                json!({"prompt": "an oauth banana fake:size=100000"})
                    .as_object()
                    .cloned()
                    .expect("o"),
            ),
        )
        .await
        .expect("call");
    assert!(!is_error(&r), "{}", text_of(&r));
    assert!(structured(&r)["imageId"].is_string());
    c.cancel().await.expect("close");

    // A session belongs to the subject that opened it: another user's
    // valid token with its id gets 404, as for a session that is gone.
    let r = post(&srv.base, Some(&good), INIT).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"]
        .to_str()
        .expect("sid")
        .to_string();
    drop(r);
    let bob = ec.sign(&with(claims(&idp, &aud, ALL), json!({"sub": "bob"})));
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let in_session = |token: String| {
        let sid = sid.clone();
        let base = srv.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/mcp"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .header("mcp-session-id", sid)
                .header("authorization", format!("Bearer {token}"))
                .body(initialized)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    assert_eq!(in_session(bob.clone()).await, 404);
    assert_eq!(in_session(good.clone()).await, 202);

    // RS256 works too, and aud may be an array.
    let rs = rsa.sign(&with(
        claims(&idp, &aud, ALL),
        json!({"aud": ["someone-else", aud]}),
    ));
    assert_eq!(post(&srv.base, Some(&rs), INIT).await.status(), 200);

    // Refused tokens: 401, invalid_token, the reason, never the token.
    let other = TestKey::ec("ec-1");
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            ec.sign(&with(
                claims(&idp, &aud, ALL),
                json!({"exp": t - 3600, "iat": t - 7200, "nbf": t - 7200}),
            )),
            "expired",
        ),
        (
            "not yet valid",
            ec.sign(&with(claims(&idp, &aud, ALL), json!({"nbf": t + 3600}))),
            "not valid yet",
        ),
        (
            "other audience",
            ec.sign(&with(
                claims(&idp, &aud, ALL),
                json!({"aud": "https://other.example.com/mcp"}),
            )),
            "audience",
        ),
        (
            "other issuer",
            ec.sign(&with(
                claims(&idp, &aud, ALL),
                json!({"iss": "https://evil.example.com"}),
            )),
            "issuer",
        ),
        (
            "wrong signature",
            // Same kid, another key.
            other.sign(&claims(&idp, &aud, ALL)),
            "signature",
        ),
        (
            "algorithm none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims(&idp, &aud, ALL).to_string().as_bytes())
            ),
            "well-formed",
        ),
        (
            "HS256",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"HS256","typ":"JWT","kid":"ec-1"}"#),
                b64(claims(&idp, &aud, ALL).to_string().as_bytes()),
                b64(b"mac")
            ),
            "HS256",
        ),
        (
            "RS256 header on the EC key",
            rsa.sign_as("ec-1", &claims(&idp, &aud, ALL)),
            "algorithm does not match",
        ),
        ("garbage", "not-a-jwt".to_string(), "well-formed"),
    ];
    for (what, token, reason) in &cases {
        let (status, h, body) = refusal(post(&srv.base, Some(token), INIT).await).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            h.starts_with(&format!(
                "Bearer resource_metadata=\"{metadata_url}\", scope=\"{ALL}\", error=\"invalid_token\", error_description=\""
            )),
            "{what}: {h}"
        );
        assert!(h.contains(reason), "{what}: {h}");
        assert!(body.contains(reason), "{what}: {body}");
        assert!(!body.contains(token.as_str()) && !h.contains(token.as_str()));
    }

    // Scopes: any valid token initializes; a call needs its tool's scope.
    let read_only = ec.sign(&claims(&idp, &aud, "openid images:read"));
    let no_scope = ec.sign(&claims(&idp, &aud, ""));
    assert_eq!(post(&srv.base, Some(&no_scope), INIT).await.status(), 200);
    let gen_call = tool_call("generate_image", json!({"prompt": "x"})).to_string();
    let (status, h, body) = refusal(post(&srv.base, Some(&read_only), &gen_call).await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        h,
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"images:generate\", resource_metadata=\"{metadata_url}\""
        )
    );
    assert!(body.contains("images:generate"), "{body}");
    for (tool, scope) in [
        ("edit_image", "images:edit"),
        ("continue_editing", "images:edit"),
        ("get_configuration_status", "images:read"),
        ("get_last_image_info", "images:read"),
    ] {
        let (status, h, body) = refusal(
            post(
                &srv.base,
                Some(&no_scope),
                &tool_call(tool, json!({})).to_string(),
            )
            .await,
        )
        .await;
        assert_eq!(status, 403, "{tool}: {body}");
        assert!(h.contains(&format!("scope=\"{scope}\"")), "{tool}: {h}");
    }
    let read = r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"nano-banana://images/x"}}"#;
    let (status, h, _) = refusal(post(&srv.base, Some(&no_scope), read).await).await;
    assert_eq!(status, 403);
    assert!(h.contains("scope=\"images:read\""), "{h}");
    // Entra-style: scopes in `scp`, app roles in `roles`.
    let scp = ec.sign(&with(
        claims(&idp, &aud, ""),
        json!({"scp": "images:read", "roles": ["images:edit"]}),
    ));
    let status = post(
        &srv.base,
        Some(&scp),
        &tool_call("edit_image", json!({})).to_string(),
    )
    .await
    .status();
    assert_ne!(status, 403, "roles grant edit");

    // An unknown key is refused, and at most one JWKS fetch per 10 s
    // however many such tokens come; once the provider publishes the key
    // (a rotation), the same token is accepted.
    let rotated = TestKey::ec("ec-2");
    let new_token = rotated.sign(&claims(&idp, &aud, ALL));
    let before = idp.fetches.load(Ordering::SeqCst);
    for _ in 0..20 {
        let (status, h, _) = refusal(post(&srv.base, Some(&new_token), INIT).await).await;
        assert_eq!(status, 401);
        assert!(h.contains("does not publish"), "{h}");
    }
    let flood = idp.fetches.load(Ordering::SeqCst) - before;
    assert!(flood <= 1, "{flood} JWKS fetches for 20 unknown-kid tokens");
    idp.jwks
        .lock()
        .expect("jwks")
        .get_mut("keys")
        .and_then(Value::as_array_mut)
        .expect("keys")
        .push(rotated.jwk());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = post(&srv.base, Some(&new_token), INIT).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated key was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The old key still works after the refresh (it is still published).
    assert_eq!(post(&srv.base, Some(&good), INIT).await.status(), 200);

    let log = srv.log().await;
    assert!(
        log.contains("principal=user-1"),
        "calls are logged with their principal: {log}"
    );
    for (_, token, _) in &cases {
        assert!(!log.contains(token.as_str()), "a token leaked into the log");
    }
    assert_no_secret(&log, &[&good, &rs, &read_only, &new_token]);
}

/// Stateless, with the static token too: the direct path checks scopes
/// as rmcp's does, and the static token is the principal `static`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_and_the_static_token_under_oauth() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let ec = TestKey::ec("k1");
    let idp = provider(&[&ec]).await;
    let srv = start(
        &fake.base_url(),
        dir.path(),
        &idp.issuer,
        &[
            "--stateless",
            "--oauth-audience",
            "api://nano-banana,other",
            "--oauth-scopes",
            "generate=Images.Generate,read=Images.Read",
        ],
        &[("NANO_BANANA_AUTH_TOKEN", STATIC_TOKEN)],
    )
    .await;
    let claims = |scope: &str| {
        let t = now();
        json!({"iss": idp.issuer, "sub": "svc-7", "aud": "api://nano-banana",
               "exp": t + 600, "iat": t, "scp": scope})
    };
    let call = tool_call(
        "generate_image",
        json!({"prompt": "direct fake:size=50000"}),
    )
    .to_string();
    let direct_count = || async {
        let r = reqwest::Client::new()
            .get(format!("{}/metrics", srv.base))
            .header("authorization", format!("Bearer {STATIC_TOKEN}"))
            .send()
            .await
            .expect("metrics");
        let text = r.text().await.expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix("nano_banana_direct_calls_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("direct_calls metric")
    };

    // The resource URL is not the audience here: --oauth-audience is.
    let wrong = ec.sign(
        &json!({"iss": idp.issuer, "sub": "svc-7", "aud": srv.resource,
                                "exp": now() + 600, "scp": "Images.Generate"}),
    );
    assert_eq!(post(&srv.base, Some(&wrong), &call).await.status(), 401);

    let reader = ec.sign(&claims("Images.Read"));
    let (status, h, body) = refusal(post(&srv.base, Some(&reader), &call).await).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        h.starts_with("Bearer error=\"insufficient_scope\", scope=\"Images.Generate\""),
        "{h}"
    );
    assert!(body.contains("Images.Generate"));

    let before = direct_count().await;
    let maker = ec.sign(&claims("Images.Generate"));
    let r = post(&srv.base, Some(&maker), &call).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["result"]["structuredContent"]["imageId"].is_string(),
        "{v}"
    );
    assert_eq!(
        direct_count().await,
        before + 1.0,
        "served by the direct path"
    );

    // The static token: every scope, principal "static".
    let r = post(&srv.base, Some(STATIC_TOKEN), &call).await;
    assert_eq!(r.status(), 200);
    // ... and the challenge for a wrong one is OAuth's.
    let (status, h, _) =
        refusal(post(&srv.base, Some("wrong-static-token-000000"), &call).await).await;
    assert_eq!(status, 401);
    assert!(h.contains("error=\"invalid_token\""), "{h}");
    assert!(
        h.contains("scope=\"Images.Generate images:edit Images.Read\""),
        "{h}"
    );

    let log = srv.log().await;
    assert!(log.contains("principal=svc-7"), "{log}");
    assert!(log.contains("principal=static"), "{log}");
    assert_no_secret(&log, &[&maker, &reader, STATIC_TOKEN]);
}

/// An issuer unreachable at start: the server starts, says so, refuses
/// with 503 (not the token's fault), and accepts the token once the
/// issuer is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_down_at_start_is_retried() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    // A port with nothing on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let srv = start(&fake.base_url(), dir.path(), &issuer, &[], &[]).await;
    let ready = reqwest::get(format!("{}/readyz", srv.base))
        .await
        .expect("readyz")
        .text()
        .await
        .expect("text");
    assert!(ready.contains("not loaded"), "{ready}");
    let ec = TestKey::ec("k");
    let t = now();
    let token = ec.sign(&json!({"iss": issuer, "sub": "u", "aud": srv.resource, "exp": t + 600}));
    let r = post(&srv.base, Some(&token), INIT).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // The issuer comes up: within the 10 s between fetches (and the 30 s
    // of the background retry) the token is accepted.
    let _idp = provider_on(port, &[&ec]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let status = post(&srv.base, Some(&token), INIT).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready = reqwest::get(format!("{}/readyz", srv.base))
        .await
        .expect("readyz")
        .text()
        .await
        .expect("text");
    assert_eq!(ready, "ready\n");
    let log = srv.log().await;
    assert!(log.contains("could not be fetched at start"), "{log}");
}

/// Bad OAuth configuration stops the server before it starts, exit 2.
#[tokio::test]
async fn bad_oauth_configuration_exits_2() {
    for (args, says) in [
        (
            vec!["--oauth-issuer", "https://login.example.com"],
            "--resource-url",
        ),
        (
            vec![
                "--oauth-issuer",
                "http://login.example.com",
                "--resource-url",
                "https://i.example.com/mcp",
            ],
            "https",
        ),
        (
            vec![
                "--oauth-issuer",
                "https://login.example.com",
                "--resource-url",
                "https://i.example.com/mcp",
                "--oauth-scopes",
                "write=x",
            ],
            "--oauth-scopes",
        ),
    ] {
        let out = tokio::process::Command::new(bin())
            .args(["serve", "--http", "127.0.0.1:0"])
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A tool call over 2026-07-28; the tool's result.
async fn call26(base: &str, token: &str, tool: &str, args: Value) -> Value {
    let r = rpc_2026(
        base,
        token,
        "tools/call",
        tool,
        json!({"name": tool, "arguments": args}),
        false,
    )
    .await;
    r.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("no result: {r}"))
}

fn text_in(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Principal A cannot continue from, read or cancel principal B's image
/// or task (the answer is the one an unknown id gets), records name who
/// made them, and the per-principal limits refuse past their bound with
/// when to retry, one principal's use never counting against another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_see_only_their_own_and_their_limits_hold() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = TestKey::ec("k1");
    let idp = provider(&[&key]).await;
    let srv = start(
        &fake.base_url(),
        dir.path(),
        &idp.issuer,
        &[
            "--stateless",
            "--tasks",
            "always",
            "--principal-concurrent-calls",
            "1",
            "--principal-daily-spend-usd",
            "0.20",
        ],
        &[],
    )
    .await;
    let token = |sub: &str| key.sign(&with(claims(&idp, &srv.resource, ALL), json!({"sub": sub})));
    let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));

    // Alice's image, made synchronously (only a client that declares the
    // tasks extension gets a task, even with --tasks always).
    let made = post(
        &srv.base,
        Some(&alice),
        &tool_call(
            "generate_image",
            json!({"prompt": "alice's own fake:size=40000"}),
        )
        .to_string(),
    )
    .await;
    assert_eq!(made.status(), 200);
    let made: Value = made.json().await.expect("json");
    let id = made["result"]["structuredContent"]["imageId"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"))
        .to_string();
    let rec: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".records").join(format!("{id}.json"))).expect("record"),
    )
    .expect("record json");
    assert_eq!(rec["principal"], "alice", "{rec}");

    // Bob gets what an unknown id gets, for every way of reaching it.
    let unknown = "img_0123456789abcdef0123456789abcdef";
    for tool in ["get_last_image_info", "continue_editing"] {
        let mut args = json!({"imageId": id});
        if tool == "continue_editing" {
            args["prompt"] = json!("make it bob's");
        }
        let theirs = call26(&srv.base, &bob, tool, args.clone()).await;
        assert_eq!(theirs["isError"], true, "{tool}: {theirs}");
        args["imageId"] = json!(unknown);
        let none = call26(&srv.base, &bob, tool, args).await;
        assert_eq!(
            text_in(&theirs).replace(&id, "ID"),
            text_in(&none).replace(unknown, "ID"),
            "{tool}: another's image must look unknown"
        );
    }
    let uri = format!("nano-banana://images/{id}");
    let r = rpc_2026(
        &srv.base,
        &bob,
        "resources/read",
        &uri,
        json!({"uri": uri}),
        false,
    )
    .await;
    assert!(r["error"].is_object(), "{r}");
    let r = rpc_2026(
        &srv.base,
        &alice,
        "resources/read",
        &uri,
        json!({"uri": uri}),
        false,
    )
    .await;
    assert!(r["result"]["contents"][0]["text"].as_str().is_some(), "{r}");
    let own = call26(
        &srv.base,
        &alice,
        "get_last_image_info",
        json!({"imageId": id}),
    )
    .await;
    assert_ne!(own["isError"], true, "{own}");
    assert_eq!(own["structuredContent"]["image"]["imageId"], id.as_str());

    // Alice's task: hers to read and cancel, unknown to Bob.
    let started = rpc_2026(
        &srv.base,
        &alice,
        "tools/call",
        "generate_image",
        json!({"name": "generate_image",
               "arguments": {"prompt": "alice's task fake:latency=3000 fake:size=1000"}}),
        true,
    )
    .await;
    let task = started["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_string();
    for method in ["tasks/get", "tasks/cancel"] {
        let r = rpc_2026(
            &srv.base,
            &bob,
            method,
            &task,
            json!({"taskId": task}),
            true,
        )
        .await;
        assert_eq!(r["error"]["code"], -32602, "{method}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("no task"),
            "{r}"
        );
    }
    let r = rpc_2026(
        &srv.base,
        &alice,
        "tasks/get",
        &task,
        json!({"taskId": task}),
        true,
    )
    .await;
    assert!(r["result"]["status"].is_string(), "{r}");
    let trec: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".tasks").join(format!("{task}.json")))
            .expect("task record"),
    )
    .expect("task json");
    assert_eq!(trec["principal"], "alice", "{trec}");
    let r = rpc_2026(
        &srv.base,
        &alice,
        "tasks/cancel",
        &task,
        json!({"taskId": task}),
        true,
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");

    // One call at a time each: Bob's second is refused while his first
    // runs; Carol, at the same moment, is not.
    let slow = {
        let (base, bob) = (srv.base.clone(), bob.clone());
        tokio::spawn(async move {
            post(
                &base,
                Some(&bob),
                &tool_call(
                    "generate_image",
                    json!({"prompt": "bob slow fake:latency=3000 fake:size=1000"}),
                )
                .to_string(),
            )
            .await
            .json::<Value>()
            .await
            .expect("json")
        })
    };
    let mut refused = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = call26(
            &srv.base,
            &bob,
            "generate_image",
            json!({"prompt": "bob again fake:size=1000"}),
        )
        .await;
        if second["isError"] == true {
            refused = Some(text_in(&second));
            break;
        }
    }
    let refused = refused.expect("a second concurrent call of bob's is refused");
    assert!(refused.contains("1 of your calls are running"), "{refused}");
    let carols = post(
        &srv.base,
        Some(&carol),
        &tool_call(
            "generate_image",
            json!({"prompt": "carol meanwhile fake:size=1000"}),
        )
        .to_string(),
    )
    .await
    .json::<Value>()
    .await
    .expect("json");
    assert_ne!(carols["result"]["isError"], true, "{carols}");
    let first = slow.await.expect("slow call");
    assert_ne!(first["result"]["isError"], true, "{first}");

    // Carol's day: her first image is paid, her next one would pass her
    // $0.20 at its worst case and is refused before anything is sent;
    // Alice's spend is hers.
    let again = call26(
        &srv.base,
        &carol,
        "generate_image",
        json!({"prompt": "carol twice fake:size=1000"}),
    )
    .await;
    assert_eq!(again["isError"], true, "{again}");
    let why = text_in(&again);
    assert!(
        why.contains("your daily spend cap of $0.20") && why.contains("00:00 UTC"),
        "{why}"
    );

    let log = srv.log().await;
    assert!(log.contains("belongs to another principal"), "{log}");
    assert!(log.contains("refused by a per-principal limit"), "{log}");
    assert_no_secret(&log, &[&alice, &bob, &carol]);
}

/// Calls per minute: a principal's bucket empties, the refusal says when
/// to retry, another principal is unaffected, and after that wait the
/// call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_minute_refuse_and_then_let_through() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = TestKey::ec("k1");
    let idp = provider(&[&key]).await;
    let srv = start(
        &fake.base_url(),
        dir.path(),
        &idp.issuer,
        &["--stateless", "--principal-calls-per-minute", "6"],
        &[],
    )
    .await;
    let token = |sub: &str| key.sign(&with(claims(&idp, &srv.resource, ALL), json!({"sub": sub})));
    let (alice, bob) = (token("alice"), token("bob"));
    let gen_call = |token: String, i: u32| {
        let base = srv.base.clone();
        async move {
            let r = post(
                &base,
                Some(&token),
                &tool_call(
                    "generate_image",
                    json!({"prompt": format!("rate {i} fake:size=1000")}),
                )
                .to_string(),
            )
            .await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")["result"].clone()
        }
    };
    for i in 0..6 {
        let r = gen_call(alice.clone(), i).await;
        assert_ne!(r["isError"], true, "call {i}: {r}");
    }
    let r = gen_call(alice.clone(), 6).await;
    assert_eq!(r["isError"], true, "{r}");
    let why = text_in(&r);
    assert!(why.contains("6 calls in the last minute"), "{why}");
    let secs: u64 = why
        .split("retry in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry time: {why}"));
    assert!((1..=10).contains(&secs), "{why}");
    let r = gen_call(bob.clone(), 0).await;
    assert_ne!(r["isError"], true, "bob has his own minute: {r}");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let r = gen_call(alice.clone(), 7).await;
    assert_ne!(r["isError"], true, "after the wait it names: {r}");
    let _ = srv.log().await;
}
