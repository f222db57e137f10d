//! Building replies: images, text, thought parts, finish reasons and
//! Google's error envelopes, for both streaming and non-streaming modes.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One image placed in a reply.
pub(super) struct Img {
    pub(super) synth: Synth,
    pub(super) b64: Bytes,
    pub(super) declared: String,
    pub(super) thought: bool,
    pub(super) sig: Option<String>,
}

/// What a reply says, before it is framed for a mode. Streaming sends each
/// lead text, the big text, each image and the tail text as its own event;
/// generateContent puts them all in one candidate (lead texts joined).
pub(super) struct Content {
    pub(super) lead: Vec<String>,
    pub(super) big: Option<String>,
    pub(super) imgs: Vec<Img>,
    pub(super) tail: Option<String>,
}

/// Per-reply facts every envelope repeats.
pub(super) struct Ctx<'a> {
    pub(super) model: &'a str,
    pub(super) response_id: String,
    pub(super) prompt_tokens: i64,
    pub(super) candidate_tokens: i64,
    pub(super) thoughts_tokens: i64,
    /// Image tokens of one output (by model and size).
    pub(super) image_tokens: i64,
    /// `groundingMetadata`, for a grounded request.
    pub(super) grounding: Option<J>,
}

pub(super) async fn respond(
    st: &FakeState,
    rec: &RecordedRequest,
    d: &Directives,
    mode: Mode,
    edit_input: Option<&[u8]>,
) -> Reply {
    if let Some(code) = d.status {
        let fail = {
            let mut failures = lock(&st.failures);
            let seen = failures.entry(rec.prompt.clone()).or_insert(0);
            let fail = d.times == 0 || *seen < d.times;
            *seen = seen.saturating_add(1);
            fail
        };
        if fail {
            return status_error(code, &rec.model, d);
        }
    }

    let seed = d.seed.unwrap_or_else(|| {
        let h = Sha256::digest(rec.prompt.as_bytes());
        u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    });
    let gemini3 = is_gemini3(&rec.model);
    let finish = if let Some(reason) = &d.blocked {
        Finish::Blocked(reason.clone())
    } else if d.safety {
        let message = d.message.clone().unwrap_or_else(|| {
            "Unable to show the generated image. The generated image was filtered out because \
             it violated Google's Generative AI Prohibited Use policy. You will not be charged \
             for blocked images. Try rephrasing the prompt."
                .into()
        });
        Finish::Reason("IMAGE_SAFETY".into(), Some(message))
    } else if let Some(reason) = &d.finish {
        Finish::Reason(reason.clone(), d.message.clone())
    } else {
        Finish::Reason("STOP".into(), None)
    };
    let special = !matches!(&finish, Finish::Reason(r, _) if r == "STOP");
    let blocked = matches!(finish, Finish::Blocked(_));

    let mut imgs = Vec::new();
    if !special && !d.midstream_error {
        for i in 0..d.thoughts {
            let s = (seed ^ 0xA5A5_5A5A_0F0F_F0F0).wrapping_add(i as u64);
            imgs.push(make_image(d, s, true, false, None).await);
        }
        for i in 0..d.images {
            let s = seed.wrapping_add(i as u64);
            let picture = d.picture.then_some((rec.prompt.as_str(), edit_input));
            imgs.push(make_image(d, s, false, d.sig || gemini3, picture).await);
        }
    }
    let last_sha = imgs
        .iter()
        .rev()
        .find(|i| !i.thought)
        .map(|i| i.synth.sha256.clone());

    let mut lead: Vec<String> = if blocked {
        Vec::new()
    } else if d.images == 0 && !special {
        vec![
            "Here is a description ".into(),
            "instead of an image.".into(),
        ]
    } else if d.text {
        vec!["Here is ".into(), "your image.".into()]
    } else {
        Vec::new()
    };
    let mut tail = None;
    if d.echo_sha
        && let Some(sha) = &last_sha
    {
        if lead.is_empty() {
            tail = Some(format!("sha256={sha}"));
        } else {
            lead.push(format!(" sha256={sha}"));
        }
    }
    let content = Content {
        lead,
        big: d.bigtext.filter(|_| !blocked).map(big_text),
        imgs,
        tail,
    };

    let image_count = content.imgs.iter().filter(|i| !i.thought).count() as i64;
    let thought_count = content.imgs.iter().filter(|i| i.thought).count() as i64;
    let image_tokens = fake_model(&rec.model).map_or(IMAGE_TOKENS, |m| {
        m.image_tokens(rec.generation_config.as_ref())
    });
    let ctx = Ctx {
        model: &rec.model,
        response_id: response_id(&rec.prompt, rec.id),
        prompt_tokens: (rec.text.len() / 4) as i64 + 258 * rec.inputs.len() as i64 + 1,
        candidate_tokens: image_tokens * image_count + 20,
        image_tokens,
        grounding: grounding_metadata(&rec.prompt, rec.tools.as_ref()),
        thoughts_tokens: if gemini3 {
            200 + IMAGE_TOKENS * thought_count
        } else {
            0
        },
    };

    let done = Arc::new(AtomicBool::new(false));
    {
        let mut sent = lock(&st.sent);
        for img in &content.imgs {
            let info = SentImage {
                request_id: rec.id,
                prompt: rec.prompt.clone(),
                format: d.format,
                declared_mime: img.declared.clone(),
                bytes: img.synth.bytes.len(),
                sha256: img.synth.sha256.clone(),
                width: img.synth.width,
                height: img.synth.height,
                thought: img.thought,
                thought_signature: img.sig.clone(),
                completed: false,
            };
            sent.push((info, done.clone()));
        }
    }

    let plan = Plan {
        ctx: &ctx,
        d,
        content: &content,
        finish: &finish,
        gemini3,
        image_count,
    };
    let (out, content_type) = match mode {
        Mode::Generate => (plan.generate(), "application/json; charset=UTF-8"),
        Mode::Sse => (plan.stream(true), "text/event-stream"),
        Mode::Array => (plan.stream(false), "application/json; charset=UTF-8"),
    };
    let (pieces, abort, complete) = out.finish();
    Reply {
        status: StatusCode::OK,
        content_type,
        pieces,
        abort,
        latency: None,
        drip: d.drip,
        // a deliberately incomplete body never counts as completed
        done: complete.then_some(done),
    }
}

/// One image: noise of the asked size, or with `picture` (the prompt and
/// the image being edited) a PNG drawn from the prompt.
pub(super) async fn make_image(
    d: &Directives,
    seed: u64,
    thought: bool,
    sig: bool,
    picture: Option<(&str, Option<&[u8]>)>,
) -> Img {
    let (format, size) = (d.format, d.size);
    let picture = picture.map(|(p, i)| (p.to_string(), i.map(<[u8]>::to_vec)));
    let build = move || match &picture {
        Some((prompt, None)) if format == images::Format::Jpeg => {
            images::picture_jpeg_base64(prompt, size)
        }
        Some((prompt, input)) => images::picture_base64(prompt, input.as_deref(), size),
        None => images::synth_base64(format, size, seed),
    };
    let again = build.clone();
    // A panic while building is a bug in the generator; retrying on this
    // thread lets it surface in the test instead of sending an empty image.
    let (synth, b64) = match tokio::task::spawn_blocking(build).await {
        Ok(v) => v,
        Err(_) => again(),
    };
    let sig = sig.then(|| thought_signature(seed, &synth.sha256));
    Img {
        declared: d.label.clone().unwrap_or_else(|| synth.mime.to_string()),
        synth,
        b64,
        thought,
        sig,
    }
}

/// Opaque-looking and long like the real ones, and stable per image.
pub(super) fn thought_signature(seed: u64, sha: &str) -> String {
    let mut raw = Vec::with_capacity(192);
    let mut h = Sha256::digest(format!("sig:{seed}:{sha}").as_bytes());
    for _ in 0..6 {
        raw.extend_from_slice(&h);
        h = Sha256::digest(h);
    }
    base64::engine::general_purpose::STANDARD.encode(raw)
}

pub(super) fn response_id(prompt: &str, id: u64) -> String {
    let h = Sha256::digest(format!("resp:{id}:{prompt}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h[..17])
}

pub(super) fn big_text(n: usize) -> String {
    const WORDS: &[&str] = &[
        "a", "quiet", "harbour", "at", "dusk", "with", "pink", "clouds", "over", "the", "water",
        "and", "small", "boats", "resting", "near", "old", "stone", "piers",
    ];
    let mut s = String::with_capacity(n + 16);
    let mut i = 0usize;
    while s.len() < n {
        s.push_str(WORDS[(i * 7 + i / 3) % WORDS.len()]);
        s.push(' ');
        i += 1;
    }
    s.truncate(n);
    s
}

pub(super) enum Finish {
    Reason(String, Option<String>),
    Blocked(String),
}

pub(super) struct Plan<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) d: &'a Directives,
    pub(super) content: &'a Content,
    pub(super) finish: &'a Finish,
    pub(super) gemini3: bool,
    pub(super) image_count: i64,
}

impl Plan<'_> {
    pub(super) fn image_part(&self, idx: usize, whole_body: bool) -> J {
        let img = &self.content.imgs[idx];
        let is_result = Some(idx) == self.content.imgs.iter().rposition(|i| !i.thought);
        let cut = if !is_result {
            Cut::None
        } else if self.d.truncate {
            Cut::Half
        } else if self.d.truncate_after_image && whole_body {
            Cut::After
        } else {
            Cut::None
        };
        let data = J::Data(DataSpec {
            b64: img.b64.clone(),
            bad: self.d.badbase64 && is_result,
            cut,
        });
        let inline = if self.d.mime_after {
            J::obj([("data", data), ("mimeType", J::str(&img.declared))])
        } else {
            J::obj([("mimeType", J::str(&img.declared)), ("data", data)])
        };
        let mut fields = Vec::new();
        if img.thought && !self.d.thought_after {
            fields.push(("thought", J::Bool(true)));
        }
        let sig = img.sig.as_ref().map(|s| ("thoughtSignature", J::str(s)));
        if self.d.sig_before
            && let Some(s) = sig.clone()
        {
            fields.push(s);
        }
        fields.push(("inlineData", inline));
        if !self.d.sig_before
            && let Some(s) = sig
        {
            fields.push(s);
        }
        if img.thought && self.d.thought_after {
            fields.push(("thought", J::Bool(true)));
        }
        J::Obj(fields)
    }

    pub(super) fn usage(&self, full: bool) -> J {
        let c = self.ctx;
        if !full {
            return J::obj([
                ("promptTokenCount", J::Num(c.prompt_tokens)),
                ("totalTokenCount", J::Num(c.prompt_tokens)),
            ]);
        }
        let mut f = vec![
            ("promptTokenCount", J::Num(c.prompt_tokens)),
            ("candidatesTokenCount", J::Num(c.candidate_tokens)),
            (
                "totalTokenCount",
                J::Num(c.prompt_tokens + c.candidate_tokens + c.thoughts_tokens),
            ),
        ];
        if c.thoughts_tokens > 0 {
            f.push(("thoughtsTokenCount", J::Num(c.thoughts_tokens)));
        }
        f.push((
            "promptTokensDetails",
            J::Arr(vec![J::obj([
                ("modality", J::str("TEXT")),
                ("tokenCount", J::Num(c.prompt_tokens)),
            ])]),
        ));
        if self.image_count > 0 {
            f.push((
                "candidatesTokensDetails",
                J::Arr(vec![J::obj([
                    ("modality", J::str("IMAGE")),
                    ("tokenCount", J::Num(c.image_tokens * self.image_count)),
                ])]),
            ));
        }
        J::Obj(f)
    }

    pub(super) fn envelope(&self, candidate: Option<J>, full_usage: bool) -> J {
        let mut f = Vec::new();
        if let Some(c) = candidate {
            f.push(("candidates", J::Arr(vec![c])));
        }
        if let Finish::Blocked(reason) = self.finish {
            f.push(("promptFeedback", J::obj([("blockReason", J::str(reason))])));
        }
        f.push(("usageMetadata", self.usage(full_usage)));
        f.push(("modelVersion", J::str(self.ctx.model)));
        f.push(("responseId", J::str(&self.ctx.response_id)));
        J::Obj(f)
    }

    pub(super) fn candidate(&self, parts: Vec<J>, finish: bool) -> J {
        let mut f = Vec::new();
        if !parts.is_empty() {
            f.push((
                "content",
                J::obj([("parts", J::Arr(parts)), ("role", J::str("model"))]),
            ));
        }
        if finish && let Finish::Reason(reason, message) = self.finish {
            f.push(("finishReason", J::str(reason)));
            if let Some(m) = message {
                f.push(("finishMessage", J::str(m)));
            }
            if let Some(g) = &self.ctx.grounding {
                f.push(("groundingMetadata", g.clone()));
            }
        }
        f.push(("index", J::Num(0)));
        J::Obj(f)
    }

    /// generateContent: one pretty-printed object holding every part.
    pub(super) fn generate(&self) -> Out {
        let c = self.content;
        let body = if matches!(self.finish, Finish::Blocked(_)) {
            self.envelope(None, false)
        } else {
            let mut parts = Vec::new();
            if !c.lead.is_empty() {
                parts.push(text_part(&c.lead.concat()));
            }
            if let Some(big) = &c.big {
                parts.push(text_part(big));
            }
            for i in 0..c.imgs.len() {
                parts.push(self.image_part(i, true));
            }
            if let Some(tail) = &c.tail {
                parts.push(text_part(tail));
            }
            self.envelope(Some(self.candidate(parts, true)), true)
        };
        let mut out = Out::default();
        write_json(&mut out, &body, true, 0);
        out.raw(b"\n");
        out
    }

    /// streamGenerateContent: SSE events, or a streamed JSON array.
    pub(super) fn stream(&self, sse: bool) -> Out {
        let c = self.content;
        let mut events = Vec::new();
        // false: the body ends without its final event (or closing bracket)
        let mut complete = true;
        if matches!(self.finish, Finish::Blocked(_)) {
            events.push(self.envelope(None, false));
        } else {
            let mut parts: Vec<J> = c.lead.iter().map(|t| text_part(t)).collect();
            parts.extend(c.big.as_deref().map(text_part));
            let error = self.d.midstream_error;
            if !error {
                parts.extend((0..c.imgs.len()).map(|i| self.image_part(i, false)));
                parts.extend(c.tail.as_deref().map(text_part));
            }
            let special = !matches!(self.finish, Finish::Reason(r, _) if r == "STOP");
            // Real streams put finishReason on the last event; Gemini 3 ends
            // with an extra `{"text": ""}` event; truncate-after-image needs
            // the finish in an event of its own so it can be withheld.
            let separate = self.gemini3
                || special
                || error
                || parts.is_empty()
                || (self.d.truncate_after_image && self.image_count > 0);
            let n = parts.len();
            for (i, part) in parts.into_iter().enumerate() {
                let last = i + 1 == n && !separate;
                events.push(self.envelope(Some(self.candidate(vec![part], last)), last));
            }
            if error {
                events.push(error_json(500, "Internal error encountered.", Vec::new()));
            } else if self.d.truncate_after_image && self.image_count > 0 {
                complete = false;
            } else if separate {
                let parts = if special {
                    Vec::new()
                } else {
                    vec![text_part("")]
                };
                events.push(self.envelope(Some(self.candidate(parts, true)), true));
            }
        }

        let mut out = Out::default();
        if !sse {
            out.raw(b"[");
        }
        for (i, ev) in events.iter().enumerate() {
            if sse {
                out.raw(b"data: ");
                write_json(&mut out, ev, false, 0);
                out.raw(b"\r\n\r\n");
            } else {
                if i > 0 {
                    out.raw(b",\r\n");
                }
                write_json(&mut out, ev, true, 0);
            }
        }
        if !sse && complete {
            out.raw(b"]");
        }
        out.incomplete |= !complete;
        out
    }
}

pub(super) fn text_part(t: &str) -> J {
    J::obj([("text", J::str(t))])
}

pub(super) fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    }
}

pub(super) fn status_error(code: u16, model: &str, d: &Directives) -> Reply {
    let retry = &d.retry;
    let (message, details) = match code {
        429 => {
            let (quota_id, limit) = if d.quota_day {
                ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "100")
            } else {
                ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10")
            };
            let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
            let message = format!(
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, head to: \
                 https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for \
                 metric: {metric}, limit: {limit}, model: {model}\nPlease retry in {retry}s."
            );
            let details = vec![
                J::obj([
                    (
                        "@type",
                        J::str("type.googleapis.com/google.rpc.QuotaFailure"),
                    ),
                    (
                        "violations",
                        J::Arr(vec![J::obj([
                            ("quotaMetric", J::str(metric)),
                            ("quotaId", J::str(quota_id)),
                            (
                                "quotaDimensions",
                                J::obj([("location", J::str("global")), ("model", J::str(model))]),
                            ),
                            ("quotaValue", J::str(limit)),
                        ])]),
                    ),
                ]),
                J::obj([
                    ("@type", J::str("type.googleapis.com/google.rpc.Help")),
                    (
                        "links",
                        J::Arr(vec![J::obj([
                            ("description", J::str("Learn more about Gemini API quotas")),
                            (
                                "url",
                                J::str("https://ai.google.dev/gemini-api/docs/rate-limits"),
                            ),
                        ])]),
                    ),
                ]),
                J::obj([
                    ("@type", J::str("type.googleapis.com/google.rpc.RetryInfo")),
                    ("retryDelay", J::str(&format!("{retry}s"))),
                ]),
            ];
            (message, details)
        }
        400 => ("Request contains an invalid argument.".to_string(), vec![]),
        403 => (
            "The caller does not have permission".to_string(),
            Vec::new(),
        ),
        404 => ("Requested entity was not found.".to_string(), Vec::new()),
        500 => (
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting"
                .to_string(),
            Vec::new(),
        ),
        503 => (
            "The model is overloaded. Please try again later.".to_string(),
            Vec::new(),
        ),
        504 | 408 => (
            "Deadline expired before operation could complete.".to_string(),
            Vec::new(),
        ),
        _ => (format!("fake-gemini: HTTP {code} on request"), Vec::new()),
    };
    error_reply(code, &message, details)
}

pub(super) fn error_json(code: u16, message: &str, details: Vec<J>) -> J {
    let mut f = vec![
        ("code", J::Num(i64::from(code))),
        ("message", J::str(message)),
        ("status", J::str(status_name(code))),
    ];
    if !details.is_empty() {
        f.push(("details", J::Arr(details)));
    }
    J::obj([("error", J::Obj(f))])
}

/// Errors come back pretty-printed in Google's envelope, whatever the mode.
pub(super) fn error_reply(code: u16, message: &str, details: Vec<J>) -> Reply {
    let mut out = Out::default();
    write_json(&mut out, &error_json(code, message, details), true, 0);
    out.raw(b"\n");
    let (pieces, _, _) = out.finish();
    Reply {
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        content_type: "application/json; charset=UTF-8",
        pieces,
        abort: false,
        latency: None,
        drip: Duration::ZERO,
        done: None,
    }
}
