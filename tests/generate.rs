//! generate_image end to end: the real binary over stdio, driven by rmcp's
//! client, against the fake Gemini, into a local folder and into Azurite.

mod common;

use common::*;
use serde_json::json;

/// A stdio server on the fake Gemini, storing into a fresh local folder.
async fn local(
    fake: &nano_banana_mcp::testkit::fake_gemini::FakeGemini,
    env: Vec<(String, String)>,
) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(ServerOpts {
        fake,
        out_dir: Some(dir.path()),
        azure: None,
        env,
    })
    .await;
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_old_names_and_schemas() {
    let fake = fake().await;
    let (_dir, s) = local(&fake, vec![]).await;
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
    assert_eq!(v["model"], "gemini-3.1-flash-image");
    // Over stdio a call may name any model.
    assert_eq!(v["allowedModels"], json!(["*"]));
    assert!(v["memory"]["budgetBytes"].as_u64().expect("budget") > 0);
    assert!(!text_of(&status).contains(TEST_KEY));
    let log = s.stop().await;
    assert_no_secret(&log, &[]);
    assert!(log.contains("memory limit"), "start-up line missing: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generates_into_the_local_folder() {
    let fake = fake().await;
    let (dir, s) = local(
        &fake,
        vec![("NANO_BANANA_BLOCK_SIZE".into(), "1MiB".into())],
    )
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
    let (dir, s) = local(
        &fake,
        vec![
            ("NANO_BANANA_BLOCK_SIZE".into(), "256KiB".into()),
            ("GEMINI_MAX_ATTEMPTS".into(), "3".into()),
        ],
    )
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
        .call(
            "generate_image",
            json!({"prompt": "x", "imageSize": "512", "model": "gemini-3-pro-image"}),
        )
        .await;
    assert!(
        is_error(&r) && text_of(&r).contains("pass model: \"gemini-3.1-flash-image\""),
        "{}",
        text_of(&r)
    );
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
    let (dir, s) = local(
        &fake,
        vec![("GEMINI_API_KEY".into(), "AIzaWRONG-key-123456".into())],
    )
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
    let (_dir, s) = local(&fake, vec![("GEMINI_STREAMING".into(), "false".into())]).await;
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

/// The list prices the server's table holds for gemini-3.1-flash-image and
/// gemini-3-pro-image: (input, text output, image output) per million
/// tokens, and one search query. Written out here so a changed table
/// fails this test instead of agreeing with it.
const FLASH31: (f64, f64, f64, f64) = (0.50, 3.0, 60.0, 0.014);
const PRO3: (f64, f64, f64, f64) = (2.0, 12.0, 120.0, 0.014);

fn priced(usage: &serde_json::Value, queries: u64, rates: (f64, f64, f64, f64)) -> f64 {
    let n = |k: &str| usage[k].as_u64().unwrap_or(0) as f64;
    let image = n("imageTokenCount");
    let text = n("candidatesTokenCount") - image + n("thoughtsTokenCount");
    n("promptTokenCount") * rates.0 / 1e6
        + text * rates.1 / 1e6
        + image * rates.2 / 1e6
        + queries as f64 * rates.3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_models_options_grounding_and_cost_reach_the_wire() {
    let fake = fake().await;
    let (_dir, s) = local(&fake, vec![]).await;
    // The default model takes 4:1 and 512, and they reach the request.
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "a wide banner fake:size=2000", "aspectRatio": "4:1", "imageSize": "512"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let reqs = fake.state.requests();
    let last = reqs.last().expect("request");
    assert_eq!(last.model, "gemini-3.1-flash-image");
    let g = last.generation_config.clone().expect("generationConfig");
    assert_eq!(
        g["imageConfig"],
        json!({"aspectRatio": "4:1", "imageSize": "512"})
    );
    // 512 bills 747 image tokens on 3.1 Flash; the cost is the table's.
    let v = structured(&r);
    assert_eq!(v["usage"]["imageTokenCount"], 747);
    let want = priced(&v["usage"], 0, FLASH31);
    let got = v["cost"]["estimatedUsd"].as_f64().expect("cost");
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    assert_eq!(v["cost"]["pricesAsOf"], "2026-12-01");

    // thinkingLevel, grounding and personGeneration, exactly as the API
    // expects them; the sources come back in the result and its text.
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "the 2026 final's winners fake:size=2000", "thinkingLevel": "high",
                   "grounding": "both", "personGeneration": "allow_adult"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let reqs = fake.state.requests();
    let last = reqs.last().expect("request");
    let g = last.generation_config.clone().expect("generationConfig");
    assert_eq!(g["thinkingConfig"], json!({"thinkingLevel": "HIGH"}));
    assert_eq!(g["imageConfig"]["personGeneration"], "ALLOW_ADULT");
    assert_eq!(
        last.tools,
        Some(json!([{"googleSearch": {"searchTypes": {"webSearch": {}, "imageSearch": {}}}}]))
    );
    let v = structured(&r);
    let gr = &v["grounding"];
    assert_eq!(gr["webSearchQueries"], json!(["the 2026 final's winners"]));
    assert_eq!(
        gr["imageSearchQueries"],
        json!(["the 2026 final's winners photo"])
    );
    let uris: Vec<&str> = gr["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|x| x["uri"].as_str())
        .collect();
    assert_eq!(
        uris,
        [
            "https://example.org/fake-source/1",
            "https://example.org/fake-source/2",
            "https://example.net/fake-page"
        ]
    );
    assert!(text_of(&r).contains("https://example.org/fake-source/1"));
    assert_eq!(v["cost"]["searchQueries"], 2);
    let want = priced(&v["usage"], 2, FLASH31);
    let got = v["cost"]["estimatedUsd"].as_f64().expect("cost");
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");

    // Another model for one call; its refusals name who takes the option.
    let n = fake.state.requests().len();
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "x fake:size=2000", "model": "gemini-3-pro-image", "imageSize": "4K", "grounding": "web"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let reqs = fake.state.requests();
    assert_eq!(
        reqs.last().map(|r| r.model.as_str()),
        Some("gemini-3-pro-image")
    );
    let v = structured(&r);
    assert_eq!(v["usage"]["imageTokenCount"], 2000);
    let want = priced(&v["usage"], 1, PRO3);
    let got = v["cost"]["estimatedUsd"].as_f64().expect("cost");
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    for (args, want) in [
        (
            json!({"model": "gemini-3-pro-image", "thinkingLevel": "high"}),
            "always thinks",
        ),
        (
            json!({"model": "gemini-3-pro-image", "grounding": "image"}),
            "gemini-3.1-flash-image",
        ),
        (
            json!({"model": "gemini-3.1-flash-lite-image", "imageSize": "2K"}),
            "1K",
        ),
        (
            json!({"model": "gemini-3.1-flash-image-preview"}),
            "shut down; use gemini-3.1-flash-image",
        ),
        (json!({"model": "../../v1/evil?x="}), "not a model id"),
        (
            json!({"outputMimeType": "image/jpeg"}),
            "Gemini API rejects it",
        ),
        (json!({"compressionQuality": 80}), "Gemini API rejects it"),
        (json!({"grounding": "maps"}), "web, image or both"),
    ] {
        let mut a = args.clone();
        a["prompt"] = json!("x");
        let r = s.call("generate_image", a).await;
        assert!(
            is_error(&r) && text_of(&r).contains(want),
            "{args}: {}",
            text_of(&r)
        );
    }
    assert_eq!(
        fake.state.requests().len(),
        n + 1,
        "a refused call reached Gemini"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_sent_but_not_kept_still_counts_against_the_cap() {
    let fake = fake().await;
    let (dir, s) = local(
        &fake,
        vec![("NANO_BANANA_DAILY_SPEND_CAP_USD".into(), "5".into())],
    )
    .await;
    let spent = |v: &serde_json::Value| v["spendTodayUsd"].as_f64().expect("spend");
    let before = spent(&structured(
        &s.call("get_configuration_status", json!({})).await,
    ));
    assert_eq!(before, 0.0);
    // Blocked: no image, no charge (Google bills no filtered answer).
    let r = s.call("generate_image", prompt("fake:blocked")).await;
    assert!(is_error(&r), "{}", text_of(&r));
    let after_block = spent(&structured(
        &s.call("get_configuration_status", json!({})).await,
    ));
    assert_eq!(after_block, 0.0);
    // The image came, then the stream was cut before Gemini said it had
    // finished: nothing is kept, and what the answer reported is counted.
    let r = s
        .call(
            "generate_image",
            prompt("fake:size=20000 fake:truncate-after-image"),
        )
        .await;
    assert!(is_error(&r), "{}", text_of(&r));
    let after_cut = spent(&structured(
        &s.call("get_configuration_status", json!({})).await,
    ));
    assert!(after_cut > 0.0, "the image sent is billed");
    assert!(files_in(dir.path()).is_empty(), "no image was kept");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_and_the_daily_spend_cap_refuse_before_any_request() {
    let fake = fake().await;
    let (dir, s) = local(
        &fake,
        vec![
            (
                "NANO_BANANA_ALLOWED_MODELS".into(),
                "gemini-3-pro-image".into(),
            ),
            // One 3.1 Flash call holds its worst case (~$0.16) and costs
            // ~$0.07: the second call no longer fits under $0.20.
            ("NANO_BANANA_DAILY_SPEND_CAP_USD".into(), "0.20".into()),
        ],
    )
    .await;
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "x", "model": "gemini-3.1-flash-lite-image"}),
        )
        .await;
    assert!(is_error(&r));
    let t = text_of(&r);
    assert!(
        t.contains("not allowed") && t.contains("gemini-3.1-flash-image, gemini-3-pro-image"),
        "{t}"
    );
    assert_eq!(fake.state.requests().len(), 0);
    let r = s.call("generate_image", prompt("fake:size=2000")).await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let spent = structured(&r)["cost"]["estimatedUsd"]
        .as_f64()
        .expect("cost");
    let status = structured(&s.call("get_configuration_status", json!({})).await);
    assert_eq!(status["dailySpendCapUsd"], 0.2);
    let today = status["spendTodayUsd"].as_f64().expect("spend");
    assert!((today - spent).abs() < 1e-6, "{today} vs {spent}");
    let r = s.call("generate_image", prompt("fake:size=2000")).await;
    assert!(is_error(&r));
    let t = text_of(&r);
    assert!(
        t.contains("daily spend cap of $0.20") && t.contains("00:00 UTC"),
        "{t}"
    );
    assert_eq!(
        fake.state.requests().len(),
        1,
        "the refused call reached Gemini"
    );
    assert_eq!(files_in(dir.path()).len(), 1, "one image");
    assert_eq!(records_in(dir.path()).len(), 1, "and its record");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_images_are_separate_generations_each_stored_and_failures_explained() {
    let fake = fake().await;
    let (dir, s) = local(&fake, vec![]).await;
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "three cats fake:size=3000", "n": 3}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    let images = v["images"].as_array().expect("images");
    assert_eq!(images.len(), 3);
    let ids: std::collections::HashSet<&str> = images
        .iter()
        .filter_map(|i| i["imageId"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "three handles: {ids:?}");
    assert_eq!(v["imageId"], images[0]["imageId"]);
    assert!(v.get("failed").is_none());
    assert_eq!(fake.state.requests().len(), 3);
    assert_eq!(files_in(dir.path()).len(), 3, "{:?}", files_in(dir.path()));
    assert_eq!(records_in(dir.path()).len(), 3);
    // Every stored file is the image its result names.
    for img in images {
        let path = img["path"].as_str().expect("path");
        let bytes = std::fs::read(path).expect("read");
        assert_eq!(sha256_hex(&bytes), img["sha256"].as_str().expect("sha"));
    }
    let links = r
        .content
        .iter()
        .filter(|c| c.as_resource_link().is_some())
        .count();
    assert_eq!(links, 3);

    // One of three refused by Gemini: the other two are kept, the failure
    // is explained.
    let r = s
        .call(
            "generate_image",
            json!({"prompt": "two of three fake:size=3000 fake:status=400 fake:times=1", "n": 3}),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    let v = structured(&r);
    assert_eq!(v["images"].as_array().map(Vec::len), Some(2));
    let failed = v["failed"].as_array().expect("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"].as_str().expect("error").contains("400"),
        "{failed:?}"
    );
    assert_eq!(files_in(dir.path()).len(), 5);
    for bad in [json!(0), json!(5)] {
        let r = s
            .call("generate_image", json!({"prompt": "x", "n": bad}))
            .await;
        assert!(
            is_error(&r) && text_of(&r).contains("1 to 4"),
            "{}",
            text_of(&r)
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_is_a_small_jpeg_beside_the_untouched_original() {
    use base64::Engine as _;
    let fake = fake().await;
    let (_dir, s) = local(&fake, vec![("NANO_BANANA_PREVIEW".into(), "true".into())]).await;
    for format in ["png", "jpeg"] {
        let r = s
            .call(
                "generate_image",
                prompt(&format!("fake:format={format} fake:size=3MiB fake:picture")),
            )
            .await;
        assert!(!is_error(&r), "{}", text_of(&r));
        let images: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
        assert_eq!(images.len(), 1, "{format}");
        assert_eq!(images[0].mime_type, "image/jpeg");
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(&images[0].data)
            .expect("base64");
        assert!(jpeg.len() <= 48 << 10 && jpeg.starts_with(&[0xFF, 0xD8]));
        let v = structured(&r);
        let stored = std::fs::read(v["path"].as_str().expect("path")).expect("file");
        assert_eq!(
            sha256_hex(&stored),
            fake.state.sent().last().expect("sent").sha256,
            "{format}: the original is stored byte for byte"
        );
    }
    // WebP has no bounded streaming decoder here: no preview, the image
    // is fine.
    let r = s
        .call(
            "generate_image",
            prompt("fake:format=webp fake:size=300000"),
        )
        .await;
    assert!(!is_error(&r), "{}", text_of(&r));
    assert!(r.content.iter().all(|c| c.as_image().is_none()));
    s.stop().await;
}
