//! generate_image end to end: the real binary over stdio, driven by rmcp's
//! client, against the fake Gemini, into a local folder and into Azurite.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_old_names_and_schemas() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![],
    })
    .await;
    let tools = s.client.list_all_tools().await.expect("list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for want in [
        "generate_image",
        "get_configuration_status",
        "configure_gemini_token",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let gen_tool = tools
        .iter()
        .find(|t| t.name == "generate_image")
        .expect("tool");
    assert!(gen_tool.output_schema.is_some());
    let input = serde_json::to_string(&gen_tool.input_schema).expect("json");
    assert!(
        input.contains("aspectRatio") && input.contains("imageSize") && input.contains("prompt")
    );

    let status = s.call("get_configuration_status", json!({})).await;
    let v = structured(&status);
    assert_eq!(v["configured"], true);
    assert_eq!(v["model"], "gemini-2.5-flash-image");
    assert!(v["memory"]["budgetBytes"].as_u64().expect("budget") > 0);
    assert!(!text_of(&status).contains(TEST_KEY));
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
    assert!(log.contains("memory limit"), "start-up line missing: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generates_into_the_local_folder() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![("NANO_BANANA_BLOCK_SIZE".into(), "1MiB".into())],
    })
    .await;
    // One block (one write) and many blocks (streamed).
    for size in ["fake:size=200000", "fake:size=5MiB fake:text"] {
        let r = s.call("generate_image", prompt(size)).await;
        assert!(!is_error(&r), "{}", text_of(&r));
        let v = structured(&r);
        let path = v["path"].as_str().expect("path");
        let bytes = std::fs::read(path).expect("file exists");
        assert_eq!(sha256_hex(&bytes), v["sha256"].as_str().expect("sha"));
        let sent = fake.state.sent();
        let last = sent.last().expect("sent");
        assert_eq!(
            last.sha256,
            sha256_hex(&bytes),
            "stored bytes differ from what Gemini sent"
        );
        assert_eq!(v["contentType"], "image/png");
        assert_eq!(v["storage"], "local");
        assert!(v["width"].as_u64().expect("width") > 0);
        assert!(
            v["blobName"]
                .as_str()
                .expect("name")
                .starts_with("generated-")
        );
        // The legacy text carries azureUrl (null for local files).
        let legacy: serde_json::Value =
            serde_json::from_str(r.content[0].as_text().expect("text").text.as_str())
                .expect("legacy JSON");
        assert!(legacy.get("azureUrl").is_some());
        assert!(
            r.content
                .iter()
                .any(|c| matches!(c, rmcp::model::ContentBlock::ResourceLink(_)))
        );
    }
    let files = files_in(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("generated-") && f.ends_with(".png"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generates_into_azurite_and_the_url_downloads() {
    let Some(endpoint) = azurite() else { return };
    let fake = fake().await;
    let container = unique("gen");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((azurite_connection_string(&endpoint), container.clone())),
        env: vec![("NANO_BANANA_BLOCK_SIZE".into(), "1MiB".into())],
    })
    .await;
    for p in [
        "fake:size=300000",
        "fake:size=6MiB",
        "fake:format=jpeg fake:label=image/png fake:size=2MiB",
    ] {
        let r = s.call("generate_image", prompt(p)).await;
        assert!(!is_error(&r), "{}", text_of(&r));
        let v = structured(&r);
        let url = v["url"].as_str().expect("url");
        assert!(url.contains("sig="), "expected a SAS URL: {url}");
        let (status, ct, body) = download(url).await;
        assert_eq!(status, 200);
        let sent = fake.state.sent();
        assert_eq!(sha256_hex(&body), sent.last().expect("sent").sha256);
        assert_eq!(ct.as_deref(), v["contentType"].as_str());
        if p.contains("jpeg") {
            // The model said PNG; the bytes are JPEG, and so is the blob.
            assert_eq!(v["contentType"], "image/jpeg");
            assert!(v["blobName"].as_str().expect("name").ends_with(".jpg"));
        }
        let legacy: serde_json::Value =
            serde_json::from_str(&r.content[0].as_text().expect("text").text).expect("json");
        assert_eq!(legacy["azureUrl"], url);
    }
    assert_eq!(list_blobs(&endpoint, &container).await.len(), 3);
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
    assert!(!log.contains(AZURITE_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_credential_is_never_handed_out() {
    let Some(endpoint) = azurite() else { return };
    let fake = fake().await;
    let container = unique("sasurl");
    let sas = account_sas("rwdlac", "sco");
    let sig = sas_signature(&sas);
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: None,
        azure: Some((
            format!("BlobEndpoint={endpoint};SharedAccessSignature={sas}"),
            container.clone(),
        )),
        env: vec![],
    })
    .await;
    let r = s.call("generate_image", prompt("fake:size=200000")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    let url = v["url"].as_str().expect("url");
    let blob = v["blobName"].as_str().expect("blob name");
    assert_eq!(url, format!("{endpoint}/{container}/{blob}"), "a plain URL");
    let everything = serde_json::to_string(&r).expect("json");
    assert_no_secret(&everything, &[&sig]);
    assert!(!everything.contains("sp=rwdlac"), "{everything}");
    // Stored all the same, and the status says why the URL is plain.
    assert_eq!(
        list_blobs(&endpoint, &container).await,
        vec![blob.to_string()]
    );
    let st = s.call("get_configuration_status", json!({})).await;
    let storage = structured(&st)["storage"]
        .as_str()
        .expect("storage")
        .to_string();
    assert!(storage.contains("never handed out"), "{storage}");
    let log = s.stop().await;
    assert_no_secret(&log, &[&sig]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained_and_leave_nothing_behind() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![
            ("NANO_BANANA_BLOCK_SIZE".into(), "256KiB".into()),
            ("GEMINI_MAX_ATTEMPTS".into(), "3".into()),
        ],
    })
    .await;
    let cases = [
        ("fake:safety", "IMAGE_SAFETY"),
        ("fake:blocked", "blocked the prompt (PROHIBITED_CONTENT)"),
        ("fake:images=0", "answered with text"),
        ("fake:truncate fake:size=2MiB", "cut off"),
        ("fake:badbase64 fake:size=2MiB", "not valid base64"),
        ("fake:truncate-after-image fake:size=1MiB", "cut off"),
        ("fake:midstream-error", "Internal error encountered"),
        ("fake:status=400", "refused the request"),
        ("fake:status=503 fake:times=0", "unavailable"),
    ];
    for (p, want) in cases {
        let r = s.call("generate_image", prompt(p)).await;
        assert!(is_error(&r), "{p}: expected an error, got {}", text_of(&r));
        let t = text_of(&r);
        assert!(t.contains(want), "{p}: {t:?} does not say {want:?}");
        assert!(
            files_in(dir.path()).is_empty(),
            "{p} left {:?}",
            files_in(dir.path())
        );
    }
    // Retried after the delay Gemini asked for, then it works.
    let r = s
        .call(
            "generate_image",
            prompt("fake:status=429 fake:times=1 fake:retry=0.3"),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let r = s
        .call("generate_image", prompt("fake:status=503 fake:times=2"))
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    // A thought image first: the result is the real one.
    let r = s
        .call(
            "generate_image",
            prompt("fake:thought-after fake:size=600000"),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let sent = fake.state.sent();
    let real = sent.iter().rev().find(|i| !i.thought).expect("real image");
    assert_eq!(structured(&r)["sha256"], real.sha256.as_str());
    // Bad arguments are refused before any request.
    let r = s
        .call("generate_image", json!({"prompt": "x", "imageSize": "4K"}))
        .await;
    assert!(is_error(&r) && text_of(&r).contains("GEMINI_MODEL=gemini-3-pro-image"));
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "x", "aspectRatio": "7:5"}),
        )
        .await;
    assert!(is_error(&r) && text_of(&r).contains("16:9"));
    let r = s
        .call("generate_image", json!({"prompt": "x".repeat(100_000)}))
        .await;
    assert!(is_error(&r) && text_of(&r).contains("--max-prompt-bytes"));
    let files = files_in(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_and_missing_model_say_what_to_fix() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![("GEMINI_API_KEY".into(), "AIzaWRONG-key-123456".into())],
    })
    .await;
    let r = s.call("generate_image", prompt("")).await;
    assert!(is_error(&r));
    assert!(text_of(&r).contains("GEMINI_API_KEY"), "{}", text_of(&r));
    assert!(!text_of(&r).contains("AIzaWRONG"));
    // configure_gemini_token fixes it for this process.
    let r = s
        .call("configure_gemini_token", json!({"apiKey": TEST_KEY}))
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let r = s.call("generate_image", prompt("")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let log = s.stop().await;
    assert_no_secret(&log, &["AIzaWRONG"]);

    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![(
            "GEMINI_MODEL".into(),
            "gemini-2.5-flash-image-preview".into(),
        )],
    })
    .await;
    let r = s.call("generate_image", prompt("")).await;
    assert!(is_error(&r));
    assert!(text_of(&r).contains("GEMINI_MODEL"), "{}", text_of(&r));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_mode_reads_pretty_json() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake: &fake,
        out_dir: Some(dir.path()),
        azure: None,
        env: vec![("GEMINI_STREAMING".into(), "false".into())],
    })
    .await;
    let r = s
        .call(
            "generate_image",
            prompt("fake:size=3MiB fake:order=mime-after"),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let sent = fake.state.sent();
    assert_eq!(
        structured(&r)["sha256"],
        sent.last().expect("sent").sha256.as_str()
    );
    s.stop().await;
}
