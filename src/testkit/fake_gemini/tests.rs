//! The fake against its own contract, over real HTTP.

#![allow(clippy::disallowed_methods)] // small test bodies

use super::*;
use serde_json::json;
use std::time::Instant;

const KEY: &str = "test-key";

async fn start() -> FakeGemini {
    start_with(FakeConfig::default()).await
}

async fn start_with(cfg: FakeConfig) -> FakeGemini {
    FakeGemini::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn body_for(prompt: &str) -> String {
    json!({
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}
    })
    .to_string()
}

async fn call(fake: &FakeGemini, model: &str, tail: &str, body: String) -> reqwest::Response {
    client()
        .post(format!("{}/v1beta/models/{model}:{tail}", fake.base_url()))
        .header("x-goog-api-key", KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

async fn sse(fake: &FakeGemini, model: &str, prompt: &str) -> String {
    let resp = call(
        fake,
        model,
        "streamGenerateContent?alt=sse",
        body_for(prompt),
    )
    .await;
    let status = resp.status();
    let ct = resp.headers().get("content-type").cloned();
    let text = String::from_utf8(resp.bytes().await.expect("body").to_vec()).expect("utf8");
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        ct.as_ref().and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    text
}

fn events(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\r\n\r\n"), "event framing");
    body.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let line = e.strip_prefix("data: ").expect("data: prefix");
            assert!(!line.contains('\n'), "one line per event");
            serde_json::from_str(line).expect("event is JSON")
        })
        .collect()
}

fn parts(ev: &Value) -> Vec<Value> {
    ev["candidates"][0]["content"]["parts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn decode_sha(part: &Value) -> (usize, String) {
    let data = part["inlineData"]["data"].as_str().expect("data");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    (bytes.len(), hex::encode(Sha256::digest(&bytes)))
}

fn image_parts(evs: &[Value]) -> Vec<Value> {
    evs.iter()
        .flat_map(parts)
        .filter(|p| p.get("inlineData").is_some())
        .collect()
}

#[tokio::test]
async fn sse_image_round_trip() {
    let fake = start().await;
    let prompt = "a red fox fake:size=300KiB, fake:text";
    let body = sse(&fake, "gemini-2.5-flash-image", prompt).await;
    // Google's SSE lines keep a space after colons.
    assert!(body.starts_with("data: {\"candidates\": [{\"content\": {\"parts\": ["));
    let evs = events(&body);
    assert_eq!(evs.len(), 3, "two text events then the image");
    assert_eq!(parts(&evs[0])[0]["text"], "Here is ");
    let last = &evs[2];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["candidates"][0]["content"]["role"], "model");
    assert_eq!(last["modelVersion"], "gemini-2.5-flash-image");
    assert!(last["usageMetadata"]["candidatesTokenCount"].as_i64() > Some(1000));
    let imgs = image_parts(&evs);
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0]["inlineData"]["mimeType"], "image/png");
    let (len, sha) = decode_sha(&imgs[0]);
    assert_eq!(len, 300 * 1024);

    let sent = fake.state.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sha256, sha);
    assert_eq!(sent[0].bytes, len);
    assert!(sent[0].completed);
    assert!(!sent[0].thought);
    assert_eq!(sent[0].prompt, prompt);
    let reqs = fake.state.requests();
    assert!(reqs[0].sse && reqs[0].method == "streamGenerateContent");
    fake.stop().await;
}

#[tokio::test]
async fn json_array_mode() {
    let fake = start().await;
    let resp = call(
        &fake,
        "fake-model",
        "streamGenerateContent",
        body_for("fake:text fake:format=jpeg fake:size=20000"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.expect("body");
    assert!(body.starts_with(b"[{\n  \"candidates\""));
    assert!(body.windows(4).any(|w| w == b"},\r\n"));
    let arr: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(arr.len(), 3);
    let imgs = image_parts(&arr);
    assert_eq!(imgs[0]["inlineData"]["mimeType"], "image/jpeg");
    let (_, sha) = decode_sha(&imgs[0]);
    assert_eq!(fake.state.sent()[0].sha256, sha);
    assert!(!fake.state.requests()[0].sse);
    fake.stop().await;
}

#[tokio::test]
async fn generate_content_is_pretty() {
    let fake = start().await;
    let resp = call(
        &fake,
        "gemini-2.5-flash-image",
        "generateContent",
        body_for("fake:text fake:size=64KiB"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(
        body.starts_with("{\n  \"candidates\": [\n    {\n      \"content\": {\n"),
        "{}",
        &body[..200]
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    let ps = parts(&v);
    assert_eq!(ps[0]["text"], "Here is your image.");
    let (len, sha) = decode_sha(&ps[1]);
    assert_eq!(len, 64 * 1024);
    assert_eq!(fake.state.sent()[0].sha256, sha);
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["candidates"][0]["index"], 0);
    assert_eq!(v["responseId"].as_str().map(str::len), Some(23));
    fake.stop().await;
}

#[tokio::test]
async fn quota_429_with_retry_info_then_success() {
    let fake = start().await;
    let prompt = "cat fake:status=429 fake:times=1 fake:retry=0.4 fake:size=1000";
    let resp = call(
        &fake,
        "gemini-2.5-flash-image",
        "generateContent",
        body_for(prompt),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_none());
    let err: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(err["error"]["code"], 429);
    assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("You exceeded your current quota"));
    assert!(msg.ends_with("Please retry in 0.4s."));
    let details = err["error"]["details"].as_array().expect("details");
    let retry = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
        .expect("RetryInfo");
    assert_eq!(retry["retryDelay"], "0.4s");
    let quota = &details[0]["violations"][0]["quotaId"];
    assert_eq!(
        quota,
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    );

    let resp = call(
        &fake,
        "gemini-2.5-flash-image",
        "generateContent",
        body_for(prompt),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.state.sent().len(), 1);

    let day = "fake:status=429 fake:quota=day";
    for _ in 0..2 {
        let resp = call(
            &fake,
            "gemini-2.5-flash-image",
            "generateContent",
            body_for(day),
        )
        .await;
        assert_eq!(resp.status(), 429, "times absent: always fails");
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        let id = &err["error"]["details"][0]["violations"][0]["quotaId"];
        assert!(id.as_str().unwrap_or_default().contains("PerDay"));
    }
    let statuses: Vec<u16> = fake.state.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 429, 429]);
    fake.stop().await;
}

#[tokio::test]
async fn other_status_codes_use_google_envelope() {
    let fake = start().await;
    for (code, status) in [
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
    ] {
        let prompt = format!("fake:status={code}");
        let resp = call(
            &fake,
            "fake-x",
            "streamGenerateContent?alt=sse",
            body_for(&prompt),
        )
        .await;
        assert_eq!(resp.status().as_u16(), code);
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert_eq!(err["error"]["status"], status);
        if code == 503 {
            assert_eq!(
                err["error"]["message"],
                "The model is overloaded. Please try again later."
            );
        }
    }
    fake.stop().await;
}

#[tokio::test]
async fn bad_and_missing_keys() {
    let fake = start_with(FakeConfig {
        api_key: Some(KEY.into()),
        ..FakeConfig::default()
    })
    .await;
    let url = format!(
        "{}/v1beta/models/gemini-2.5-flash-image:generateContent",
        fake.base_url()
    );
    let resp = client()
        .post(&url)
        .header("x-goog-api-key", "wrong")
        .body(body_for("x"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400);
    let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
    assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(
        err["error"]["message"],
        "API key not valid. Please pass a valid API key."
    );
    assert_eq!(err["error"]["details"][0]["reason"], "API_KEY_INVALID");
    assert_eq!(err["error"]["details"][0]["domain"], "googleapis.com");

    let resp = client()
        .post(&url)
        .body(body_for("x"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403);
    let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
    assert_eq!(err["error"]["status"], "PERMISSION_DENIED");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Method doesn't allow unregistered callers")
    );

    let resp = client()
        .post(format!("{url}?key={KEY}"))
        .body(body_for("fake:size=500"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200, "?key= works too");
    let statuses: Vec<u16> = fake.state.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 403, 200]);
    fake.stop().await;
}

#[tokio::test]
async fn retired_and_unknown_models_are_404() {
    let fake = start().await;
    for model in [
        "gemini-2.5-flash-image-preview",
        "gemini-3-pro-image-preview",
        "gemini-9-ultra",
    ] {
        let resp = call(&fake, model, "generateContent", body_for("x")).await;
        assert_eq!(resp.status(), 404);
        let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
        assert_eq!(err["error"]["status"], "NOT_FOUND");
        let expected = format!(
            "models/{model} is not found for API version v1beta, or is not supported for \
             generateContent. Call ListModels to see the list of available models and their \
             supported methods."
        );
        assert_eq!(err["error"]["message"], expected.as_str());
    }
    for model in ["gemini-3-pro-image", "fake-anything"] {
        let resp = call(&fake, model, "generateContent", body_for("fake:size=500")).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    fake.stop().await;
}

#[tokio::test]
async fn truncate_yields_body_error() {
    let fake = start().await;
    let resp = call(
        &fake,
        "gemini-2.5-flash-image",
        "streamGenerateContent?alt=sse",
        body_for("fake:truncate fake:size=1MiB"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = 0usize;
    let mut failed = false;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(c) => got += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "a cut body is an error, not a clean end");
    // about half of the ~1.4 MB of base64 arrived before the cut
    assert!(got > 500_000 && got < 900_000, "got {got}");
    let sent = fake.state.sent();
    assert!(!sent[0].completed);

    let resp = call(
        &fake,
        "gemini-2.5-flash-image",
        "generateContent",
        body_for("fake:truncate fake:size=100KiB"),
    )
    .await;
    assert!(resp.bytes().await.is_err());
    fake.stop().await;
}

#[tokio::test]
async fn truncate_after_image_ends_cleanly_without_finish() {
    let fake = start().await;
    let body = sse(
        &fake,
        "gemini-2.5-flash-image",
        "fake:truncate-after-image fake:size=10000",
    )
    .await;
    let evs = events(&body);
    assert_eq!(image_parts(&evs).len(), 1);
    assert!(
        evs.iter()
            .all(|e| e["candidates"][0].get("finishReason").is_none())
    );
    assert!(!fake.state.sent()[0].completed);

    let resp = call(
        &fake,
        "fake-x",
        "streamGenerateContent",
        body_for("fake:truncate-after-image fake:size=10000"),
    )
    .await;
    let body = resp.bytes().await.expect("clean end");
    assert!(body.ends_with(b"}"), "no closing bracket");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    fake.stop().await;
}

#[tokio::test]
async fn thought_images_and_signatures() {
    let fake = start().await;
    let body = sse(&fake, "gemini-3-pro-image", "fake:thought fake:size=50000").await;
    let evs = events(&body);
    assert_eq!(
        evs.len(),
        3,
        "thought image, result image, final empty text"
    );
    let first = &parts(&evs[0])[0];
    assert_eq!(first["thought"], true);
    let result = &parts(&evs[1])[0];
    assert!(result.get("thought").is_none());
    assert!(
        result["thoughtSignature"]
            .as_str()
            .is_some_and(|s| s.len() > 100)
    );
    assert!(evs[1]["candidates"][0].get("finishReason").is_none());
    assert_eq!(parts(&evs[2])[0]["text"], "");
    assert_eq!(evs[2]["candidates"][0]["finishReason"], "STOP");
    assert!(evs[2]["usageMetadata"]["thoughtsTokenCount"].as_i64() > Some(0));

    let sent = fake.state.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].thought && !sent[1].thought);
    assert_ne!(sent[0].sha256, sent[1].sha256);
    assert_eq!(decode_sha(first).1, sent[0].sha256);
    assert_eq!(decode_sha(result).1, sent[1].sha256);
    assert_eq!(
        sent[1].thought_signature.as_deref(),
        result["thoughtSignature"].as_str()
    );

    // thought-after: the flag follows the image data on the wire
    let body = sse(&fake, "fake-x", "fake:thought-after fake:size=2000").await;
    let first_event = body.split("\r\n\r\n").next().unwrap_or_default();
    let data_at = first_event.find("\"inlineData\"").expect("inlineData");
    let thought_at = first_event.find("\"thought\"").expect("thought");
    assert!(data_at < thought_at);
    fake.stop().await;
}

#[tokio::test]
async fn key_order_and_lying_mime() {
    let fake = start().await;
    let body = sse(
        &fake,
        "fake-x",
        "fake:order=mime-after+sig-before fake:sig fake:format=jpeg fake:label=image/png \
         fake:size=3000",
    )
    .await;
    let at = |k: &str| body.find(k).expect(k);
    assert!(at("\"data\"") < at("\"mimeType\""));
    assert!(at("\"thoughtSignature\"") < at("\"inlineData\""));
    let evs = events(&body);
    let img = &image_parts(&evs)[0];
    assert_eq!(img["inlineData"]["mimeType"], "image/png");
    let data = img["inlineData"]["data"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("b64");
    assert_eq!(Format::sniff(&bytes), Some(Format::Jpeg));
    let sent = &fake.state.sent()[0];
    assert_eq!(sent.format, Format::Jpeg);
    assert_eq!(sent.declared_mime, "image/png");
    fake.stop().await;
}

#[tokio::test]
async fn safety_blocked_and_finish_reasons() {
    let fake = start().await;
    let body = sse(&fake, "fake-x", "fake:safety").await;
    let evs = events(&body);
    let cand = &evs[evs.len() - 1]["candidates"][0];
    assert_eq!(cand["finishReason"], "IMAGE_SAFETY");
    assert!(cand.get("content").is_none());
    assert!(
        cand["finishMessage"]
            .as_str()
            .is_some_and(|m| m.contains("You will not be charged"))
    );

    let resp = call(&fake, "fake-x", "generateContent", body_for("fake:blocked")).await;
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
    assert!(v.get("candidates").is_none());
    assert_eq!(v["promptFeedback"]["blockReason"], "PROHIBITED_CONTENT");

    let resp = call(
        &fake,
        "fake-x",
        "generateContent",
        body_for("fake:finish=recitation fake:message=Too_close_to_a_source"),
    )
    .await;
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
    assert_eq!(v["candidates"][0]["finishReason"], "RECITATION");
    assert_eq!(v["candidates"][0]["finishMessage"], "Too close to a source");
    assert!(fake.state.sent().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn text_only_bigtext_and_echo_sha() {
    let fake = start().await;
    let body = sse(&fake, "fake-x", "fake:images=0").await;
    let evs = events(&body);
    assert!(image_parts(&evs).is_empty());
    assert_eq!(evs[evs.len() - 1]["candidates"][0]["finishReason"], "STOP");
    assert!(fake.state.sent().is_empty());

    let body = sse(
        &fake,
        "fake-x",
        "fake:bigtext=100000 fake:echo-sha fake:size=999",
    )
    .await;
    let evs = events(&body);
    assert_eq!(
        parts(&evs[0])[0]["text"].as_str().map(str::len),
        Some(100_000)
    );
    let tail = parts(&evs[evs.len() - 1])[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(tail, format!("sha256={}", fake.state.sent()[0].sha256));

    let resp = call(
        &fake,
        "fake-x",
        "generateContent",
        body_for("fake:text fake:echo-sha"),
    )
    .await;
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
    let text = parts(&v)[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.starts_with("Here is your image. sha256="));
    assert!(text.ends_with(&fake.state.sent()[1].sha256));
    fake.stop().await;
}

#[tokio::test]
async fn badbase64_and_midstream_error() {
    let fake = start().await;
    let body = sse(&fake, "fake-x", "fake:badbase64 fake:size=5000").await;
    let evs = events(&body);
    let data = image_parts(&evs)[0]["inlineData"]["data"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(data.contains("!!!!"));
    assert!(
        base64::engine::general_purpose::STANDARD
            .decode(&data)
            .is_err()
    );

    let body = sse(&fake, "fake-x", "fake:text fake:midstream-error").await;
    let evs = events(&body);
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2]["error"]["code"], 500);
    assert_eq!(evs[2]["error"]["status"], "INTERNAL");
    assert!(image_parts(&evs).is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn snake_case_request_recorded() {
    let fake = start().await;
    let img = images::synth(Format::Png, 4000, 11);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&img.bytes);
    let body = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "first turn"}]},
            {"role": "model", "parts": [
                {"inline_data": {"mime_type": "image/png", "data": b64},
                 "thought_signature": "c2lnLW9uZQ=="}]},
            {"role": "user", "parts": [{"text": "now make it blue"}, {"text": "fake:size=700"}]}
        ],
        "generation_config": {"response_modalities": ["IMAGE"],
                              "image_config": {"aspect_ratio": "16:9"}}
    });
    let resp = call(&fake, "fake-x", "generateContent", body.to_string()).await;
    assert_eq!(resp.status(), 200);
    let rec = &fake.state.requests()[0];
    assert_eq!(rec.prompt, "now make it blue\nfake:size=700");
    assert_eq!(rec.text, "first turn\nnow make it blue\nfake:size=700");
    assert_eq!(
        rec.generation_config
            .as_ref()
            .map(|g| &g["image_config"]["aspect_ratio"]),
        Some(&json!("16:9"))
    );
    assert_eq!(rec.thought_signatures, ["c2lnLW9uZQ=="]);
    assert_eq!(rec.inputs.len(), 1);
    assert_eq!(rec.inputs[0].role, "model");
    assert_eq!(rec.inputs[0].mime_type, "image/png");
    assert_eq!(rec.inputs[0].sha256, img.sha256);
    assert_eq!(fake.state.sent()[0].bytes, 700);
    fake.stop().await;
}

#[tokio::test]
async fn edit_request_inline_data_recorded() {
    let fake = start().await;
    let a = images::synth(Format::Jpeg, 3 * 1024 * 1024, 21);
    let b = images::synth(Format::Webp, 10_000, 22);
    let enc = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let body = json!({
        "contents": [{"role": "user", "parts": [
            {"text": "merge these fake:size=2000"},
            {"inlineData": {"mimeType": "image/jpeg", "data": enc(&a.bytes)}},
            {"inlineData": {"data": enc(&b.bytes), "mimeType": "image/webp"}}
        ]}],
        "generationConfig": {"imageConfig": {"imageSize": "2K"}}
    });
    let resp = call(
        &fake,
        "gemini-3-pro-image",
        "generateContent",
        body.to_string(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let rec = &fake.state.requests()[0];
    let got: Vec<(&str, usize, &str)> = rec
        .inputs
        .iter()
        .map(|i| (i.mime_type.as_str(), i.bytes, i.sha256.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("image/jpeg", a.bytes.len(), a.sha256.as_str()),
            ("image/webp", b.bytes.len(), b.sha256.as_str())
        ]
    );
    assert_eq!(
        rec.generation_config
            .as_ref()
            .map(|g| &g["imageConfig"]["imageSize"]),
        Some(&json!("2K"))
    );

    let bad = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]}]});
    let resp = call(&fake, "fake-x", "generateContent", bad.to_string()).await;
    assert_eq!(resp.status(), 400);
    fake.stop().await;
}

#[tokio::test]
async fn unknown_directive_is_400() {
    let fake = start().await;
    let resp = call(
        &fake,
        "fake-x",
        "generateContent",
        body_for("fake:sise=1MiB"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = serde_json::from_slice(&resp.bytes().await.expect("b")).expect("j");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("fake:sise")
    );
    fake.stop().await;
}

#[tokio::test]
async fn latency_drip_and_chunking() {
    let fake = start_with(FakeConfig {
        chunk_size: 1000,
        ..FakeConfig::default()
    })
    .await;
    let t = Instant::now();
    let resp = call(
        &fake,
        "fake-x",
        "generateContent",
        body_for("fake:latency=200 fake:size=500"),
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(resp.status(), 200);

    let t = Instant::now();
    let resp = call(
        &fake,
        "fake-x",
        "generateContent",
        body_for("fake:drip=20 fake:size=6000"),
    )
    .await;
    let body = resp.bytes().await.expect("body");
    // ~8 KB in 1000-byte writes with 20 ms between them
    assert!(body.len() > 8000);
    assert!(
        t.elapsed() >= Duration::from_millis(140),
        "{:?}",
        t.elapsed()
    );
    fake.stop().await;
}

#[tokio::test]
async fn fake_endpoints_serve_logs() {
    let fake = start().await;
    let _ = call(
        &fake,
        "fake-x",
        "generateContent",
        body_for("fake:size=500"),
    )
    .await;
    let get = |p: &str| client().get(format!("{}{p}", fake.base_url())).send();
    let health: Value = serde_json::from_slice(
        &get("/_fake/health")
            .await
            .expect("h")
            .bytes()
            .await
            .expect("b"),
    )
    .expect("j");
    assert_eq!(health["ok"], true);
    let sent: Value = serde_json::from_slice(
        &get("/_fake/sent")
            .await
            .expect("s")
            .bytes()
            .await
            .expect("b"),
    )
    .expect("j");
    assert_eq!(sent[0]["format"], "png");
    assert_eq!(sent[0]["bytes"], 500);
    let reqs: Value = serde_json::from_slice(
        &get("/_fake/requests")
            .await
            .expect("r")
            .bytes()
            .await
            .expect("b"),
    )
    .expect("j");
    assert_eq!(reqs[0]["model"], "fake-x");
    let reset = client()
        .post(format!("{}/_fake/reset", fake.base_url()))
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), 204);
    assert!(fake.state.requests().is_empty() && fake.state.sent().is_empty());
    fake.stop().await;
}

#[test]
fn directive_parsing() {
    assert_eq!(parse_size("1.5MiB"), Some(1_572_864));
    assert_eq!(parse_size("512KiB"), Some(524_288));
    assert_eq!(parse_size("2MB"), Some(2_000_000));
    assert_eq!(parse_size("300"), Some(300));
    assert_eq!(parse_size("3GiB"), None);
    let d = Directives::parse("draw (fake:size=1KiB), \"fake:format=gif\". fake:retry=2.5s")
        .expect("parses");
    assert_eq!(
        (d.size, d.format, d.retry.as_str()),
        (1024, Format::Gif, "2.5")
    );
    assert!(Directives::parse("fake:status=200").is_err());
    assert!(Directives::parse("fake:size").is_err());
    assert!(Directives::parse("plain prompt with fake: nothing").is_err());
    let d = Directives::parse("no directives here").expect("parses");
    assert_eq!(d.size, DEFAULT_IMAGE_BYTES);
}

#[tokio::test]
async fn each_model_takes_what_the_api_takes_and_refuses_the_rest() {
    let fake = start().await;
    let body = |cfg: Value, tools: Option<Value>| {
        let mut b = json!({
            "contents": [{"role": "user", "parts": [{"text": "the 2026 final fake:size=300"}]}],
            "generationConfig": cfg,
        });
        if let Some(t) = tools {
            b["tools"] = t;
        }
        b.to_string()
    };
    let status = |model: &'static str, cfg: Value, tools: Option<Value>| {
        let b = body(cfg, tools);
        let fake = &fake;
        async move {
            let r = call(fake, model, "generateContent", b).await;
            let code = r.status().as_u16();
            let v: Value = serde_json::from_slice(&r.bytes().await.expect("b")).expect("j");
            (code, v)
        }
    };
    let ok = [
        (
            "gemini-3.1-flash-image",
            json!({"imageConfig": {"aspectRatio": "4:1", "imageSize": "512"}}),
        ),
        (
            "gemini-3.1-flash-image",
            json!({"thinkingConfig": {"thinkingLevel": "HIGH"}}),
        ),
        (
            "gemini-3-pro-image",
            json!({"imageConfig": {"imageSize": "4K", "personGeneration": "ALLOW_ADULT"}}),
        ),
        (
            "gemini-3.1-flash-lite-image",
            json!({"imageConfig": {"imageSize": "1K"}}),
        ),
        (
            "gemini-2.5-flash-image",
            json!({"imageConfig": {"aspectRatio": "21:9"}}),
        ),
    ];
    for (model, cfg) in ok {
        assert_eq!(
            status(model, cfg.clone(), None).await.0,
            200,
            "{model} {cfg}"
        );
    }
    let refused = [
        (
            "gemini-3-pro-image",
            json!({"imageConfig": {"imageSize": "512"}}),
        ),
        (
            "gemini-3-pro-image",
            json!({"imageConfig": {"aspectRatio": "8:1"}}),
        ),
        (
            "gemini-3-pro-image",
            json!({"thinkingConfig": {"thinkingLevel": "HIGH"}}),
        ),
        (
            "gemini-2.5-flash-image",
            json!({"imageConfig": {"imageSize": "1K"}}),
        ),
        (
            "gemini-3.1-flash-lite-image",
            json!({"imageConfig": {"imageSize": "2K"}}),
        ),
        (
            "gemini-3.1-flash-image",
            json!({"imageConfig": {"outputMimeType": "image/jpeg"}}),
        ),
        (
            "gemini-3.1-flash-image",
            json!({"thinkingConfig": {"thinkingLevel": "LOUD"}}),
        ),
    ];
    for (model, cfg) in refused {
        let (code, v) = status(model, cfg.clone(), None).await;
        assert_eq!(code, 400, "{model} {cfg}");
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    }
    let web = json!([{"googleSearch": {}}]);
    let image = json!([{"googleSearch": {"searchTypes": {"imageSearch": {}}}}]);
    assert_eq!(
        status("gemini-2.5-flash-image", json!({}), Some(web.clone()))
            .await
            .0,
        400
    );
    assert_eq!(
        status("gemini-3-pro-image", json!({}), Some(image.clone()))
            .await
            .0,
        400
    );
    let (code, v) = status("gemini-3-pro-image", json!({}), Some(web)).await;
    assert_eq!(code, 200);
    let g = &v["candidates"][0]["groundingMetadata"];
    assert_eq!(g["webSearchQueries"], json!(["the 2026 final"]));
    assert_eq!(
        g["groundingChunks"][0]["web"]["uri"],
        "https://example.org/fake-source/1"
    );
    assert!(g.get("imageSearchQueries").is_none());
    let (code, v) = status(
        "gemini-3.1-flash-image",
        json!({"imageConfig": {"imageSize": "4K"}}),
        Some(image),
    )
    .await;
    assert_eq!(code, 200);
    let g = &v["candidates"][0]["groundingMetadata"];
    assert_eq!(
        g["groundingChunks"][0]["image"]["imageUri"],
        "https://example.net/fake-image.jpg"
    );
    assert_eq!(g["imageSearchQueries"], json!(["the 2026 final photo"]));
    // 4K on 3.1 Flash bills 2,520 image tokens.
    assert_eq!(
        v["usageMetadata"]["candidatesTokensDetails"][0]["tokenCount"],
        2520
    );
    let rec = fake.state.requests();
    assert!(rec.last().and_then(|r| r.tools.as_ref()).is_some());
    fake.stop().await;
}
