//! edit_image, continue_editing and get_last_image_info end to end, and the
//! input rules that keep the same tools safe over HTTP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use nano_banana_mcp::testkit::images::{Format, synth};
use serde_json::json;

fn png(size: usize, seed: u64) -> Vec<u8> {
    synth(Format::Png, size, seed).bytes.to_vec()
}

/// A tiny HTTP server for URL inputs: `/img.png` serves an image, and
/// `/redirect?to=URL` answers 302 to URL.
async fn url_server(image: Vec<u8>) -> SocketAddr {
    use axum::extract::Query;
    use axum::response::IntoResponse;
    use axum::routing::get;
    let image = bytes::Bytes::from(image);
    let app = axum::Router::new()
        .route(
            "/img.png",
            get(move || {
                let image = image.clone();
                async move { ([("content-type", "image/png")], image) }
            }),
        )
        .route(
            "/redirect",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let to = q.get("to").cloned().unwrap_or_default();
                    (axum::http::StatusCode::FOUND, [("location", to)]).into_response()
                },
            ),
        )
        .route("/text", get(|| async { "just text, not an image" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_stream_inputs_exactly() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let a = png(3 << 20, 1);
    let b = png(100_000, 2);
    let c = png(50_000, 3);
    std::fs::write(dir.path().join("a.png"), &a).expect("write");
    std::fs::write(dir.path().join("b.png"), &b).expect("write");
    // Started in the folder the files are in, as a client starts a stdio
    // server in the user's project.
    let s = start_in(
        ServerOpts {
            fake: &fake,
            out_dir: Some(&out),
            azure: None,
            env: vec![],
        },
        Some(dir.path()),
    )
    .await;

    // A local file plus two references: a file and a data: URI.
    let data_uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&c)
    );
    let r = s
        .call(
            "edit_image",
            json!({
                "imagePath": dir.path().join("a.png"),
                "prompt": "make it pink fake:size=200000",
                "referenceImages": [dir.path().join("b.png"), data_uri],
            }),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    assert!(v["blobName"].as_str().expect("name").starts_with("edited-"));
    let req = fake.state.requests().pop().expect("request");
    let got: Vec<&str> = req.inputs.iter().map(|i| i.sha256.as_str()).collect();
    assert_eq!(got, vec![sha256_hex(&a), sha256_hex(&b), sha256_hex(&c)]);
    assert!(req.prompt.contains("make it pink"));

    // continue_editing sends the last image back, byte for byte.
    let last_sha = v["sha256"].as_str().expect("sha").to_string();
    let info = s.call("get_last_image_info", json!({})).await;
    assert!(!is_error(&info), "{}", text_of(&info));
    assert_eq!(structured(&info)["image"]["sha256"], last_sha.as_str());
    let r = s
        .call(
            "continue_editing",
            json!({"prompt": "now add a hat fake:size=150000"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let req = fake.state.requests().pop().expect("request");
    assert_eq!(req.inputs.len(), 1);
    assert_eq!(req.inputs[0].sha256, last_sha);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_from_azurite_urls_and_continue_with_gemini_3() {
    let Some(endpoint) = azurite() else { return };
    let fake = fake().await;
    let container = unique("edit");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((azurite_connection_string(&endpoint), container.clone())),
        env: vec![("GEMINI_MODEL".into(), "gemini-3-pro-image".into())],
    })
    .await;
    let r = s.call("generate_image", prompt("fake:size=2MiB")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let first = structured(&r);
    let url = first["url"].as_str().expect("url");
    let sent_sig = fake.state.sent().pop().expect("sent").thought_signature;
    assert!(sent_sig.is_some(), "gemini-3 responses carry a signature");

    // Edit from the URL generate_image returned (Azurite, over http).
    let r = s
        .call(
            "edit_image",
            json!({"imagePath": url, "prompt": "brighter fake:size=300000"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let req = fake.state.requests().pop().expect("request");
    assert_eq!(req.inputs[0].sha256, first["sha256"].as_str().expect("sha"));

    // The same blob without its SAS, with a forged one, and a blob that is
    // not there: the server does not read its container for the caller,
    // and all three get the same answer.
    let plain = url.split('?').next().expect("base").to_string();
    let forged = url.replace("sig=", "sig=AAAA");
    let missing = format!("{}/{container}/nope.png", endpoint);
    // Well signed, with the account key, but: for another blob, expired,
    // granting write too, and for a blob that is not there.
    let blob = first["blobName"].as_str().expect("blobName");
    let (past, future) = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let other = format!(
        "{plain}?{}",
        blob_sas(&container, "nope.png", "r", past, future)
    );
    let expired = format!(
        "{plain}?{}",
        blob_sas(&container, blob, "r", past, "2021-01-01T00:00:00Z")
    );
    let write = format!("{plain}?{}", blob_sas(&container, blob, "rw", past, future));
    let missing_signed = format!(
        "{missing}?{}",
        blob_sas(&container, "nope.png", "r", past, future)
    );
    // The URL the server signed starts a quarter hour back (clock skew).
    let st = url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "st")
        .map(|(_, v)| v.into_owned())
        .expect("st");
    let back = chrono::Utc::now()
        - chrono::DateTime::parse_from_rfc3339(&st)
            .expect("st")
            .with_timezone(&chrono::Utc);
    assert!(
        back >= chrono::Duration::minutes(14) && back < chrono::Duration::minutes(20),
        "st={st}"
    );
    let asked = fake.state.requests().len();
    for u in [
        &plain,
        &forged,
        &missing,
        &other,
        &expired,
        &write,
        &missing_signed,
    ] {
        let r = s
            .call("edit_image", json!({"imagePath": u, "prompt": "x"}))
            .await;
        assert!(is_error(&r), "{u} was read");
        let t = text_of(&r);
        assert!(t.contains("does not allow reading it"), "{u}: {t}");
        assert!(!t.contains("does not exist"), "{u}: {t}");
    }
    assert_eq!(fake.state.requests().len(), asked, "nothing reached Gemini");

    // Multi-turn with Gemini 3: the previous signature goes back.
    let edited_sig = fake.state.sent().pop().expect("sent").thought_signature;
    let r = s
        .call(
            "continue_editing",
            json!({"prompt": "and a moon fake:size=300000"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let req = fake.state.requests().pop().expect("request");
    assert_eq!(req.thought_signatures, vec![edited_sig.expect("sig")]);
    assert_eq!(req.inputs.len(), 1);
    assert_eq!(req.inputs[0].role, "model");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_rules_refuse_what_they_should() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&allowed).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let img = png(200_000, 9);
    std::fs::write(allowed.join("ok.png"), &img).expect("write");
    std::fs::write(outside.join("secret.png"), &img).expect("write");
    std::fs::write(allowed.join("big.png"), png(3 << 20, 10)).expect("write");
    std::fs::write(allowed.join("notes.txt"), b"hello, not an image").expect("write");
    std::os::unix::fs::symlink(outside.join("secret.png"), allowed.join("link.png"))
        .expect("symlink");
    let srv = url_server(img.clone()).await;
    let private = url_server(img.clone()).await;
    // A proxy in the environment would resolve names again, past the pin:
    // downloads must not use it (it counts the connections it is offered).
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    proxy.set_nonblocking(true).expect("nonblocking");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(&dir.path().join("out")),
        azure: None,
        env: vec![
            ("HTTP_PROXY".into(), proxy_url.clone()),
            ("HTTPS_PROXY".into(), proxy_url.clone()),
            ("ALL_PROXY".into(), proxy_url),
            // Gemini may go through a proxy; here it is reached directly,
            // by a name the proxy rules exempt.
            (
                "GEMINI_BASE_URL".into(),
                fake.base_url().replace("127.0.0.1", "localhost"),
            ),
            ("NO_PROXY".into(), "localhost".into()),
            (
                "NANO_BANANA_ALLOWED_DIRS".into(),
                allowed.display().to_string(),
            ),
            ("NANO_BANANA_MAX_INPUT_BYTES".into(), "1MiB".into()),
            // The test server is on loopback; allow exactly that one host:port.
            (
                "NANO_BANANA_ALLOW_URL_HOSTS".into(),
                format!("127.0.0.1:{}", srv.port()),
            ),
        ],
    })
    .await;
    let edit = |path: String| json!({"imagePath": path, "prompt": "x"});
    let cases = [
        (
            outside.join("secret.png").display().to_string(),
            "--allowed-dir",
        ),
        (
            format!("{}/../outside/secret.png", allowed.display()),
            "--allowed-dir",
        ),
        (
            allowed.join("link.png").display().to_string(),
            "--allowed-dir",
        ),
        (
            allowed.join("big.png").display().to_string(),
            "--max-input-bytes",
        ),
        (allowed.join("notes.txt").display().to_string(), "not a PNG"),
        // Missing inside or outside: the same answer as "not allowed", so
        // callers cannot probe which host files exist.
        (
            allowed.join("missing.png").display().to_string(),
            "--allowed-dir",
        ),
        (
            outside.join("missing.png").display().to_string(),
            "--allowed-dir",
        ),
        ("http://169.254.169.254/latest/meta-data".into(), "https"),
        ("https://[::1]/img.png".into(), "not a public"),
        ("https://[::7f00:1]/img.png".into(), "not a public"),
        ("https://[::ffff:a9fe:a9fe]/img.png".into(), "not a public"),
        ("https://[fec0::1]/img.png".into(), "not a public"),
        ("https://[2002:a00:1::1]/img.png".into(), "not a public"),
        ("https://198.18.0.1/img.png".into(), "not a public"),
        (
            "https://169.254.169.254/latest/meta-data".into(),
            "not a public",
        ),
        (
            format!("http://127.0.0.1:{}/img.png", private.port()),
            "--allow-url-host",
        ),
        (
            format!("https://127.0.0.1:{}/img.png", private.port()),
            "not a public",
        ),
        (
            format!(
                "http://127.0.0.1:{}/redirect?to=http://127.0.0.1:{}/img.png",
                srv.port(),
                private.port()
            ),
            "--allow-url-host",
        ),
        (
            format!(
                "http://127.0.0.1:{}/redirect?to=https://169.254.169.254/",
                srv.port()
            ),
            "not a public",
        ),
        (format!("http://127.0.0.1:{}/text", srv.port()), "not a PNG"),
    ];
    for (input, want) in cases {
        let r = s.call("edit_image", edit(input.clone())).await;
        assert!(is_error(&r), "{input} was accepted");
        let t = text_of(&r);
        assert!(t.contains(want), "{input}: {t:?} does not mention {want:?}");
        assert!(
            !t.contains(&format!("({})", allowed.display())),
            "{input}: the refusal lists the allowed directories: {t}"
        );
        assert!(!t.contains("No such file"), "{input}: {t}");
    }
    // Four inputs are too many for gemini-2.5-flash-image.
    let p = allowed.join("ok.png").display().to_string();
    let r = s
        .call(
            "edit_image",
            json!({"imagePath": p, "prompt": "x", "referenceImages": [p, p, p],
                   "model": "gemini-2.5-flash-image"}),
        )
        .await;
    assert!(
        is_error(&r) && text_of(&r).contains("at most 3"),
        "{}",
        text_of(&r)
    );
    // And what is allowed works: a file under the allowed dir, the allowed URL.
    for ok in [
        p.clone(),
        format!("http://127.0.0.1:{}/img.png", srv.port()),
    ] {
        let r = s.call("edit_image", edit(ok.clone())).await;
        assert!(!is_error(&r), "{ok}: {}", text_of(&r));
        let req = fake.state.requests().pop().expect("request");
        assert_eq!(req.inputs[0].sha256, sha256_hex(&img));
    }
    // No request reached Gemini for any refused input.
    assert_eq!(fake.state.requests().len(), 2);
    assert!(proxy.accept().is_err(), "a download went through the proxy");
    let r = s.call("continue_editing", json!({"prompt": "again"})).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    // What the callers were not told is in the log, for the operator.
    let log = s.stop().await;
    for why in [
        "kind=\"site-local\"",
        "kind=\"benchmarking\"",
        "kind=\"loopback\"",
        "kind=\"link-local (cloud metadata)\"",
        "input path refused",
        "No such file",
    ] {
        assert!(log.contains(why), "the log does not say {why}: {log}");
    }

    // A fresh session has nothing to continue.
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(&dir.path().join("out")),
        azure: None,
        env: vec![],
    })
    .await;
    let r = s.call("continue_editing", json!({"prompt": "again"})).await;
    assert!(is_error(&r) && text_of(&r).contains("generate_image"));
    let r = s.call("get_last_image_info", json!({})).await;
    assert!(is_error(&r));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_swapped_between_attempts_still_sends_the_checked_file() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&allowed).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let mine = png(150_000, 21);
    let secret = png(150_000, 22);
    let input = allowed.join("swap.png");
    std::fs::write(&input, &mine).expect("write");
    std::fs::write(outside.join("secret.png"), &secret).expect("write");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(&dir.path().join("out")),
        azure: None,
        env: vec![
            (
                "NANO_BANANA_ALLOWED_DIRS".into(),
                allowed.display().to_string(),
            ),
            // A long back-off after the first (refused) attempt: the window
            // in which the name is pointed at a file outside.
            ("GEMINI_RETRY_BASE_MS".into(), "3000".into()),
        ],
    })
    .await;
    let call = {
        let args = json!({
            "imagePath": input.display().to_string(),
            "prompt": "swap fake:status=503 fake:times=1",
        });
        let peer = s.client.peer().clone();
        tokio::spawn(async move {
            let serde_json::Value::Object(map) = args else {
                unreachable!()
            };
            peer.call_tool(
                rmcp::model::CallToolRequestParams::new("edit_image").with_arguments(map),
            )
            .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.state.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&input).expect("rm");
    std::os::unix::fs::symlink(outside.join("secret.png"), &input).expect("symlink");
    let r = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("in time")
        .expect("join")
        .expect("call");
    assert!(!is_error(&r), "{}", text_of(&r));
    let reqs = fake.state.requests();
    assert_eq!(reqs.len(), 2, "one refused attempt and one retry");
    for req in &reqs {
        assert_eq!(
            req.inputs[0].sha256,
            sha256_hex(&mine),
            "sent the swapped-in file"
        );
    }
    s.stop().await;
}

/// Over stdio with no --allowed-dir, edit inputs are files under the
/// working directory and the output folder; --allow-any-path restores any
/// readable file; started at `/`, only the output folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_inputs_default_to_the_working_directory() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let project = dir.path().join("project");
    let elsewhere = dir.path().join("elsewhere");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&project).expect("mkdir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let img = png(60_000, 4);
    std::fs::write(project.join("in.png"), &img).expect("write");
    std::fs::write(elsewhere.join("private.png"), &img).expect("write");
    let edit = |path: std::path::PathBuf| json!({"imagePath": path, "prompt": "x fake:size=50000"});
    let opts = |env: Vec<(String, String)>| ServerOpts {
        fake: &fake,
        out_dir: Some(&out),
        azure: None,
        env,
    };

    let s = start_in(opts(vec![]), Some(&project)).await;
    let r = s.call("edit_image", edit(project.join("in.png"))).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    // The output folder is an input over stdio (the user's own images).
    let made = structured(&r)["path"].as_str().expect("path").to_string();
    let r = s.call("edit_image", edit(made.clone().into())).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let asked = fake.state.requests().len();
    for p in [
        elsewhere.join("private.png"),
        project.join("../elsewhere/private.png"),
    ] {
        let r = s.call("edit_image", edit(p.clone())).await;
        assert!(is_error(&r), "{} was read", p.display());
        assert!(text_of(&r).contains("--allowed-dir"), "{}", text_of(&r));
    }
    assert_eq!(fake.state.requests().len(), asked, "nothing reached Gemini");
    let log = s.stop().await;
    assert!(log.contains("input path refused"), "{log}");

    // Any file, when the user says so.
    let s = start_in(
        opts(vec![("NANO_BANANA_ALLOW_ANY_PATH".into(), "true".into())]),
        Some(&project),
    )
    .await;
    let r = s
        .call("edit_image", edit(elsewhere.join("private.png")))
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    s.stop().await;

    // Started at the filesystem root: the root is no default.
    let s = start_in(opts(vec![]), Some(std::path::Path::new("/"))).await;
    let r = s.call("edit_image", edit(project.join("in.png"))).await;
    assert!(is_error(&r), "read from / as working directory");
    let r = s.call("edit_image", edit(made.into())).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    s.stop().await;
}
