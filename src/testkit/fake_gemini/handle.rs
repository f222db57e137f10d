//! Request handling: the routes, parsing a generate request, and the
//! models the fake serves.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Generate,
    Sse,
    Array,
}

/// A fully planned response: head, body pieces and pacing.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) content_type: &'static str,
    pub(super) pieces: Vec<Bytes>,
    /// End the body with an error so hyper cuts the connection.
    pub(super) abort: bool,
    pub(super) latency: Option<Duration>,
    pub(super) drip: Duration,
    pub(super) done: Option<Arc<AtomicBool>>,
}

pub(super) async fn generate(
    State(st): State<Arc<FakeState>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = st.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let (model, method) = match rest.split_once(':') {
        Some((m, v)) => (m.to_string(), v.to_string()),
        None => (rest.clone(), String::new()),
    };
    let sse = query.get("alt").is_some_and(|a| a == "sse");
    let mut rec = RecordedRequest {
        id,
        model,
        method,
        sse,
        status: 0,
        prompt: String::new(),
        text: String::new(),
        generation_config: None,
        tools: None,
        inputs: Vec::new(),
        thought_signatures: Vec::new(),
    };
    let reply = handle(&st, &mut rec, &query, &headers, body).await;
    rec.status = reply.status.as_u16();
    lock(&st.requests).push(rec);

    let latency = reply.latency.unwrap_or(st.cfg.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let chunk = if st.cfg.chunk_size == 0 {
        DEFAULT_CHUNK
    } else {
        st.cfg.chunk_size
    };
    let mut resp = Response::new(Body::from_stream(body_stream(
        reply.pieces,
        reply.abort,
        reply.drip,
        chunk,
        reply.done,
    )));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    resp
}

pub(super) async fn handle(
    st: &FakeState,
    rec: &mut RecordedRequest,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Reply {
    let key = presented_key(headers, query);
    match (key, &st.cfg.api_key) {
        (None, _) => {
            return error_reply(
                403,
                "Method doesn't allow unregistered callers (callers without established \
                 identity). Please use API Key or other form of API consumer identity to call \
                 this API.",
                Vec::new(),
            );
        }
        (Some(k), Some(want)) if k != want => {
            return error_reply(
                400,
                "API key not valid. Please pass a valid API key.",
                vec![J::obj([
                    ("@type", J::str("type.googleapis.com/google.rpc.ErrorInfo")),
                    ("reason", J::str("API_KEY_INVALID")),
                    ("domain", J::str("googleapis.com")),
                    (
                        "metadata",
                        J::obj([("service", J::str("generativelanguage.googleapis.com"))]),
                    ),
                ])],
            );
        }
        _ => {}
    }

    let mode = match rec.method.as_str() {
        "generateContent" => Mode::Generate,
        "streamGenerateContent" if rec.sse => Mode::Sse,
        "streamGenerateContent" => Mode::Array,
        _ => {
            return error_reply(
                404,
                &format!("Method not found: {}.", rec.method),
                Vec::new(),
            );
        }
    };
    if !model_served(&rec.model) {
        return error_reply(
            404,
            &format!(
                "models/{} is not found for API version v1beta, or is not supported for \
                 generateContent. Call ListModels to see the list of available models and \
                 their supported methods.",
                rec.model
            ),
            Vec::new(),
        );
    }

    // Decoding tens of MB of base64 is CPU work: keep it off the reactor.
    let parsed = match tokio::task::spawn_blocking(move || parse_request(&body)).await {
        Ok(Ok(p)) => p,
        Ok(Err(msg)) => return error_reply(400, &msg, Vec::new()),
        Err(e) => return error_reply(500, &format!("fake-gemini: parser failed: {e}"), vec![]),
    };
    rec.prompt = parsed.prompt;
    rec.text = parsed.text;
    rec.generation_config = parsed.generation_config;
    rec.tools = parsed.tools;
    if let Some(m) = fake_model(&rec.model)
        && let Err(msg) = m.check(rec.generation_config.as_ref(), rec.tools.as_ref())
    {
        return error_reply(400, &msg, Vec::new());
    }
    rec.inputs = parsed.inputs;
    rec.thought_signatures = parsed.thought_signatures;

    let d = match Directives::parse(&rec.prompt) {
        Ok(d) => d,
        Err(msg) => {
            return error_reply(400, &format!("fake-gemini: {msg}"), Vec::new());
        }
    };
    let mut reply = respond(st, rec, &d, mode, parsed.edit_input.as_deref()).await;
    reply.latency = d.latency;
    reply
}

/// `GET /v1beta/models/{model}`: the cheap call `doctor` uses to check the
/// key and the model without generating anything.
pub(super) async fn get_model(
    State(st): State<Arc<FakeState>>,
    Path(model): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = presented_key(&headers, &query);
    let reply = match (key, &st.cfg.api_key) {
        (None, _) => error_reply(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            Vec::new(),
        ),
        (Some(k), Some(want)) if k != want => error_reply(
            400,
            "API key not valid. Please pass a valid API key.",
            vec![J::obj([
                ("@type", J::str("type.googleapis.com/google.rpc.ErrorInfo")),
                ("reason", J::str("API_KEY_INVALID")),
            ])],
        ),
        _ if !model_served(&model) => error_reply(
            404,
            &format!("models/{model} is not found for API version v1beta."),
            Vec::new(),
        ),
        _ => {
            let body = serde_json::json!({
                "name": format!("models/{model}"),
                "displayName": model,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            });
            return (
                [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                body.to_string(),
            )
                .into_response();
        }
    };
    let body: Vec<u8> = reply
        .pieces
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    resp
}

pub(super) fn model_served(model: &str) -> bool {
    fake_model(model).is_some()
}

/// Gemini 3 behaviour: thought signatures on every result image and a final
/// event of its own carrying `{"text": ""}` and the finish reason.
pub(super) fn is_gemini3(model: &str) -> bool {
    model.contains("gemini-3") || model.starts_with("fake-3")
}

pub(super) struct Parsed {
    pub(super) prompt: String,
    pub(super) text: String,
    pub(super) generation_config: Option<Value>,
    pub(super) tools: Option<Value>,
    pub(super) inputs: Vec<RecordedInput>,
    pub(super) thought_signatures: Vec<String>,
    /// The first image of the last user turn: what `fake:picture` edits.
    pub(super) edit_input: Option<Vec<u8>>,
}

pub(super) fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

pub(super) fn parse_request(body: &[u8]) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let contents = v
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let last_user = contents
        .iter()
        .rposition(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
        .unwrap_or(contents.len() - 1);

    let mut prompt = Vec::new();
    let mut text = Vec::new();
    let mut inputs = Vec::new();
    let mut thought_signatures = Vec::new();
    let mut edit_input = None;
    for (ci, content) in contents.iter().enumerate() {
        let role = content
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let parts = content
            .get("parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (pi, part) in parts.iter().enumerate() {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                text.push(t);
                if ci == last_user {
                    prompt.push(t);
                }
            }
            if let Some(sig) =
                field(part, "thoughtSignature", "thought_signature").and_then(Value::as_str)
            {
                thought_signatures.push(sig.to_string());
            }
            if let Some(inline) = field(part, "inlineData", "inline_data") {
                let mime = field(inline, "mimeType", "mime_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let data = inline
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let bytes = decode_base64(data).ok_or_else(|| {
                    let shown: String = data.chars().take(40).collect();
                    format!(
                        "Invalid value at 'contents[{ci}].parts[{pi}].inline_data.data' \
                         (TYPE_BYTES), Base64 decoding failed for \"{shown}\""
                    )
                })?;
                inputs.push(RecordedInput {
                    role: role.to_string(),
                    mime_type: mime.to_string(),
                    bytes: bytes.len(),
                    sha256: hex::encode(Sha256::digest(&bytes)),
                });
                if ci == last_user && edit_input.is_none() {
                    edit_input = Some(bytes);
                }
            }
        }
    }
    Ok(Parsed {
        prompt: prompt.join("\n"),
        text: text.join("\n"),
        generation_config: field(&v, "generationConfig", "generation_config").cloned(),
        tools: v.get("tools").cloned(),
        inputs,
        thought_signatures,
        edit_input,
    })
}

/// Google accepts padded or unpadded, standard or URL-safe base64.
pub(super) fn decode_base64(data: &str) -> Option<Vec<u8>> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, cfg)
        .decode(data)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, cfg).decode(data))
        .ok()
}

/// The API key a request presents: the header, else the `key` parameter.
pub(super) fn presented_key<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or(query.get("key").map(String::as_str))
        .filter(|k| !k.is_empty())
}
