//! Extractor tests: realistic bodies, every split of the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

fn image(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x = seed as u32 | 1;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

fn limits(block: usize) -> Limits {
    Limits {
        block_size: block,
        ..Limits::default()
    }
}

/// One image as seen by a test: sequence, bytes, thought, mime, signature.
type Seen = (u32, Vec<u8>, bool, Option<String>, Option<String>);

/// What the extractor made of a body, in a comparable form.
#[derive(Debug, PartialEq)]
struct Outcome {
    images: Vec<Seen>,
    blocks: Vec<usize>,
    summary: Result<Summary, ExtractError>,
}

fn run(framing: Framing, body: &[u8], cuts: &[usize], block: usize) -> Outcome {
    let mut ex = Extractor::new(framing, limits(block));
    let mut events = Vec::new();
    let mut last = 0;
    let mut err = None;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for &c in cuts {
        let c = c.min(body.len()).max(last);
        pieces.push(&body[last..c]);
        last = c;
    }
    pieces.push(&body[last..]);
    for p in pieces {
        if let Err(e) = ex.feed(p, &mut events) {
            err = Some(e);
            break;
        }
    }
    let summary = match err {
        Some(e) => Err(e),
        None => ex.finish(),
    };
    let mut images: Vec<Seen> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut blocks = Vec::new();
    for e in events {
        match e {
            Event::Block(b) => {
                blocks.push(b.data.len());
                current.extend_from_slice(&b.data);
            }
            Event::End(end) => {
                if !end.thought {
                    let sha: [u8; 32] = Sha256::digest(&current).into();
                    assert_eq!(sha, end.sha256);
                    assert_eq!(end.bytes as usize, current.len());
                }
                images.push((
                    end.image,
                    std::mem::take(&mut current),
                    end.thought,
                    end.declared_mime,
                    end.thought_signature,
                ));
            }
        }
    }
    Outcome {
        images,
        blocks,
        summary,
    }
}

fn sse_body(img: &[u8]) -> Vec<u8> {
    let b64 = STANDARD.encode(img);
    format!(
        "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"Here\"}}],\"role\": \"model\"}},\"index\": 0}}]}}\r\n\r\n\
         data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"inlineData\": {{\"data\": \"{b64}\",\"mimeType\": \"image/png\"}},\"thoughtSignature\":\"c2ln\"}}],\"role\": \"model\"}},\"finishReason\": \"STOP\",\"index\": 0}}],\"usageMetadata\": {{\"promptTokenCount\": 198,\"candidatesTokenCount\": 1308,\"totalTokenCount\": 1506}},\"modelVersion\": \"gemini-2.5-flash-image\",\"responseId\": \"n6weaZ7\"}}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn sse_image_with_mime_after_data() {
    let img = image(10_000, 3);
    let out = run(Framing::Sse, &sse_body(&img), &[], 4096);
    assert_eq!(out.images.len(), 1);
    assert_eq!(out.images[0].1, img);
    assert_eq!(out.images[0].3.as_deref(), Some("image/png"));
    assert_eq!(out.images[0].4.as_deref(), Some("c2ln"));
    assert_eq!(out.blocks, vec![4096, 4096, 1808]);
    let s = out.summary.expect("summary");
    assert_eq!(s.text, "Here");
    assert_eq!(s.finish_reason.as_deref(), Some("STOP"));
    assert_eq!(s.usage.total_token_count, Some(1506));
    assert_eq!(s.model_version.as_deref(), Some("gemini-2.5-flash-image"));
}

#[test]
fn pretty_printed_object_and_json_array() {
    let img = image(3000, 9);
    let b64 = STANDARD.encode(&img);
    let pretty = format!(
        "{{\n  \"candidates\": [\n    {{\n      \"content\": {{\n        \"parts\": [\n          {{\n            \"inlineData\": {{\n              \"mimeType\": \"image/png\",\n              \"data\": \"{b64}\"\n            }}\n          }}\n        ],\n        \"role\": \"model\"\n      }},\n      \"finishReason\": \"STOP\",\n      \"index\": 0\n    }}\n  ],\n  \"usageMetadata\": {{\n    \"promptTokenCount\": 5\n  }}\n}}\n"
    );
    let out = run(Framing::Json, pretty.as_bytes(), &[], 1000);
    assert_eq!(out.images[0].1, img);
    assert_eq!(out.summary.expect("ok").usage.prompt_token_count, Some(5));

    let array = format!(
        "[{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"a\\u00e9\\ud83d\\ude00\"}}]}}}}]}}\r\n,{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"inline_data\":{{\"mime_type\":\"image/png\",\"data\":\"{b64}\"}}}}]}},\"finishReason\":\"STOP\"}}]}}]"
    );
    let out = run(Framing::Json, array.as_bytes(), &[7, 100], 1000);
    assert_eq!(out.images[0].1, img);
    assert_eq!(out.summary.expect("ok").text, "aé😀");
}

#[test]
fn thought_images_are_marked_and_skipped_when_known_first() {
    let real = image(2000, 1);
    let interim = image(1500, 2);
    let body = format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"thought\":true,\"inlineData\":{{\"mimeType\":\"image/png\",\"data\":\"{}\"}}}}]}}}}]}}\n\n\
         data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"inlineData\":{{\"mimeType\":\"image/png\",\"data\":\"{}\"}},\"thought\":true}}]}}}}]}}\n\n\
         data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"inlineData\":{{\"mimeType\":\"image/png\",\"data\":\"{}\"}}}}]}},\"finishReason\":\"STOP\"}}]}}\n\n",
        STANDARD.encode(&interim),
        STANDARD.encode(&interim),
        STANDARD.encode(&real)
    );
    let out = run(Framing::Sse, body.as_bytes(), &[], 512);
    assert_eq!(out.images.len(), 3);
    // Thought known first: no bytes decoded at all.
    assert!(out.images[0].2 && out.images[0].1.is_empty());
    // Thought known after the data: decoded, then marked.
    assert!(out.images[1].2 && out.images[1].1 == interim);
    assert!(!out.images[2].2 && out.images[2].1 == real);
}

#[test]
fn blocked_prompt_safety_finish_and_stream_error() {
    let blocked = b"data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":3}}\r\n\r\n";
    let s = run(Framing::Sse, blocked, &[], 64).summary.expect("ok");
    assert_eq!(s.block_reason.as_deref(), Some("PROHIBITED_CONTENT"));

    let safety = b"data: {\"candidates\":[{\"finishReason\":\"IMAGE_SAFETY\",\"finishMessage\":\"filtered \\\"x\\\"\",\"index\":0}]}\n\n";
    let s = run(Framing::Sse, safety, &[], 64).summary.expect("ok");
    assert_eq!(s.finish_reason.as_deref(), Some("IMAGE_SAFETY"));
    assert_eq!(s.finish_message.as_deref(), Some("filtered \"x\""));

    let err = b"data: {\"error\":{\"code\":500,\"message\":\"Internal error encountered.\",\"status\":\"INTERNAL\"}}\n\n";
    let s = run(Framing::Sse, err, &[], 64).summary.expect("ok");
    assert_eq!(
        s.error,
        Some(StreamError {
            code: Some(500),
            message: "Internal error encountered.".into(),
            status: "INTERNAL".into()
        })
    );
}

#[test]
fn truncation_is_an_error_never_an_image() {
    let img = image(5000, 4);
    let body = sse_body(&img);
    for cut in [10, body.len() / 2, body.len() - 10] {
        let out = run(Framing::Sse, &body[..cut], &[], 1024);
        assert!(
            matches!(out.summary, Err(ExtractError::Truncated(_))),
            "cut at {cut}: {:?}",
            out.summary
        );
        assert!(out.images.iter().all(|i| i.1 != img) || cut > body.len() - 20);
    }
    assert!(matches!(
        run(Framing::Json, b"", &[], 64).summary,
        Err(ExtractError::Truncated(_))
    ));
}

#[test]
fn last_event_without_blank_line_counts_when_whole() {
    let img = image(100, 5);
    let body = sse_body(&img);
    let trimmed = &body[..body.len() - 4];
    let out = run(Framing::Sse, trimmed, &[], 1024);
    assert_eq!(out.images.len(), 1);
    assert!(out.summary.is_ok());
}

#[test]
fn invalid_base64_and_caps() {
    let body = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"iVBO!!!!Rw0K\"}}]}}]}\n\n";
    assert!(matches!(
        run(Framing::Sse, body, &[], 64).summary,
        Err(ExtractError::InvalidBase64(_))
    ));
    let big_text = format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{}\"}}]}},\"finishReason\":\"STOP\"}}]}}\n\n",
        "x".repeat(100_000)
    );
    let s = run(Framing::Sse, big_text.as_bytes(), &[], 64)
        .summary
        .expect("ok");
    assert!(s.text_truncated);
    assert_eq!(s.text.len(), Limits::default().max_text_bytes);
    let mut ex = Extractor::new(
        Framing::Json,
        Limits {
            max_image_bytes: 10,
            ..Limits::default()
        },
    );
    let body = format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"inlineData\":{{\"data\":\"{}\"}}}}]}}}}]}}",
        STANDARD.encode([0u8; 64])
    );
    assert_eq!(
        ex.feed(body.as_bytes(), &mut Vec::new()),
        Err(ExtractError::ImageTooLarge(10))
    );
}

#[test]
fn syntax_errors_are_reported() {
    for bad in [
        &b"data: {\"a\" 1}\n\n"[..],
        b"data: {]\n\n",
        b"data: [}\n\n",
        b"data: {\"a\":tru}\n\n",
    ] {
        assert!(
            matches!(
                run(Framing::Sse, bad, &[], 64).summary,
                Err(ExtractError::Syntax(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(matches!(
        run(Framing::Json, b"{} {}", &[], 64).summary,
        Err(ExtractError::Syntax(_))
    ));
}

#[test]
fn escaped_slashes_in_image_data() {
    let img = image(300, 7);
    let b64 = STANDARD.encode(&img).replace('/', "\\/");
    let body = format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"inlineData\":{{\"data\":\"{b64}\"}}}}]}},\"finishReason\":\"STOP\"}}]}}"
    );
    let out = run(Framing::Json, body.as_bytes(), &[], 100);
    assert_eq!(out.images[0].1, img);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// The same bytes give the same result however the network splits them.
    #[test]
    fn every_split_gives_the_same_result(
        size in 1usize..3000,
        cuts in proptest::collection::vec(0usize..6000, 0..12),
        crlf in any::<bool>(),
    ) {
        let img = image(size, 11);
        let mut body = sse_body(&img);
        if !crlf {
            body = String::from_utf8(body).expect("utf8").replace("\r\n", "\n").into_bytes();
        }
        let whole = run(Framing::Sse, &body, &[], 256);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let split = run(Framing::Sse, &body, &cuts, 256);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(&whole.images[0].1, &img);
        prop_assert!(whole.summary.is_ok());
    }

    /// Byte-at-a-time feeding of a pretty body matches whole feeding.
    #[test]
    fn byte_at_a_time(size in 1usize..400) {
        let img = image(size, 13);
        let body = format!(
            "{{\n  \"candidates\": [ {{ \"content\": {{ \"parts\": [ {{ \"inlineData\": {{ \"data\": \"{}\", \"mimeType\": \"image/jpeg\" }} }} ] }}, \"finishReason\": \"STOP\" }} ]\n}}",
            STANDARD.encode(&img)
        );
        let cuts: Vec<usize> = (1..body.len()).collect();
        let whole = run(Framing::Json, body.as_bytes(), &[], 64);
        let split = run(Framing::Json, body.as_bytes(), &cuts, 64);
        prop_assert_eq!(whole, split);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testkit::fuzz_cases(2000)))]
    /// Untrusted bytes never panic the extractor, whatever the framing
    /// (the stable toolchain here cannot run cargo-fuzz; this is the
    /// nearest real thing).
    #[test]
    fn arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..4096),
        cut in 0usize..4096,
        sse in any::<bool>(),
    ) {
        let framing = if sse { Framing::Sse } else { Framing::Json };
        let cut = cut.min(body.len());
        let mut ex = Extractor::new(framing, limits(64));
        let mut ev = Vec::new();
        if ex.feed(&body[..cut], &mut ev).is_ok() && ex.feed(&body[cut..], &mut ev).is_ok() {
            let _ = ex.finish();
        }
    }

    /// Mutated real responses (a byte flipped, inserted or dropped) never
    /// panic and never yield a block count beyond the image size.
    #[test]
    fn mutated_responses_never_panic(
        size in 1usize..2000,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        op in 0u8..3,
    ) {
        let img = image(size, 5);
        let mut body = sse_body(&img);
        let i = at.index(body.len());
        match op {
            0 => body[i] = byte,
            1 => body.insert(i, byte),
            _ => { body.remove(i); }
        }
        let out = run(Framing::Sse, &body, &[i / 2], 128);
        let total: usize = out.blocks.iter().sum();
        prop_assert!(total <= img.len() + 3);
    }
}

#[test]
fn grounding_and_image_tokens_are_kept_under_their_cap() {
    let event = |extra: &str| {
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"ok\"}}]}},\"groundingMetadata\":{{\"searchEntryPoint\":{{\"renderedContent\":\"<style>big</style>\"}},\"groundingChunks\":[{{\"web\":{{\"title\":\"Wiki \\\"A\\\"\",\"uri\":\"https://example.org/a\",\"domain\":\"example.org\"}}}},{{\"image\":{{\"sourceUri\":\"https://example.net/page\",\"imageUri\":\"https://example.net/i.jpg\",\"title\":\"I\"}}}}],\"webSearchQueries\":[\"who won\",\"score\"],\"imageSearchQueries\":[\"stadium\"]{extra}}},\"finishReason\":\"STOP\"}}],\"usageMetadata\":{{\"candidatesTokensDetails\":[{{\"tokenCount\":20,\"modality\":\"TEXT\"}},{{\"modality\":\"IMAGE\",\"tokenCount\":1120}}],\"candidatesTokenCount\":1140,\"promptTokenCount\":9}}}}\n\n"
        )
    };
    // The same metadata twice (SSE may repeat it) is kept once.
    let body = format!("{}{}", event(""), event(""));
    for cut in [0, 7, 100, 333, body.len() - 3] {
        let s = run(Framing::Sse, body.as_bytes(), &[cut], 64)
            .summary
            .expect("ok");
        let g = &s.grounding;
        assert_eq!(g.web_queries, ["who won", "score"]);
        assert_eq!(g.image_queries, ["stadium"]);
        assert_eq!(g.sources.len(), 2, "{g:?}");
        assert_eq!(g.sources[0].kind, "web");
        assert_eq!(g.sources[0].title.as_deref(), Some("Wiki \"A\""));
        assert_eq!(g.sources[0].uri.as_deref(), Some("https://example.org/a"));
        assert_eq!(g.sources[1].kind, "image");
        assert_eq!(
            g.sources[1].uri.as_deref(),
            Some("https://example.net/page")
        );
        assert_eq!(
            g.sources[1].image_uri.as_deref(),
            Some("https://example.net/i.jpg")
        );
        assert!(!g.truncated);
        assert_eq!(s.usage.image_token_count, Some(1120));
        assert_eq!(s.usage.candidates_token_count, Some(1140));
    }
    // Thousands of distinct sources: kept up to the cap, and it says so.
    let many: String = (0..2000)
        .map(|i| format!(",{{\"web\":{{\"uri\":\"https://example.org/{i}\",\"title\":\"t{i}\"}}}}"))
        .collect();
    let body = event("").replace(
        "\"groundingChunks\":[",
        &format!("\"groundingChunks\":[{{\"web\":{{\"uri\":\"https://x.org\"}}}}{many},"),
    );
    let s = run(Framing::Sse, body.as_bytes(), &[], 64)
        .summary
        .expect("ok");
    let kept: usize = s
        .grounding
        .sources
        .iter()
        .map(|x| x.uri.as_ref().map_or(0, String::len) + x.title.as_ref().map_or(0, String::len))
        .sum();
    assert!(s.grounding.truncated);
    assert!(
        kept <= MAX_GROUNDING_BYTES && kept > MAX_GROUNDING_BYTES / 2,
        "{kept}"
    );
}
