//! The MCP tools, with the old server's names and argument names. Each tool
//! validates its arguments, calls the pipeline, and shapes the result: a
//! text block with the legacy JSON (`{"azureUrl": ...}`), the same object as
//! `structuredContent` (with an `outputSchema`), and a `resource_link`.
//! Failures the caller should see are tool errors in plain words; protocol
//! errors are left to rmcp.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ProgressToken,
    Resource, ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::{MemoryStatus, SharedApp, Transport};
use crate::gemini::models;
use crate::inputs;
use crate::pipeline::{ImageResult, Job, PipelineError, Progress, Stage};
use crate::secret::Secret;

/// The last image of every session, for `continue_editing` and
/// `get_last_image_info`: bounded in count and age, so sessions that are
/// never closed cannot grow it without limit. Over stdio there is one
/// session (the process); over HTTP, one per MCP session.
pub struct Sessions {
    inner: Mutex<HashMap<u64, (Instant, ImageResult)>>,
    next: AtomicU64,
    max: usize,
    ttl: Duration,
}

impl Sessions {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            max: max.max(1),
            ttl,
        }
    }

    pub fn new_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn remember(&self, id: u64, img: &ImageResult) {
        let Ok(mut m) = self.inner.lock() else { return };
        let now = Instant::now();
        m.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        m.insert(id, (now, img.clone()));
        while m.len() > self.max {
            let oldest = m.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k);
            match oldest {
                Some(k) => m.remove(&k),
                None => break,
            };
        }
    }

    pub fn last(&self, id: u64) -> Option<ImageResult> {
        let m = self.inner.lock().ok()?;
        let (at, img) = m.get(&id)?;
        (at.elapsed() < self.ttl).then(|| img.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone)]
pub struct ImageServer {
    app: SharedApp,
    session: u64,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateArgs {
    /// Text prompt describing the NEW image to create from scratch.
    pub prompt: String,
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9 or 21:9.
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// Output size: 1K, 2K or 4K (2K and 4K need a Gemini 3 image model).
    #[serde(default)]
    pub image_size: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditArgs {
    /// The image to edit: a local file path, an https URL, a URL returned
    /// by this server, or a data: URI.
    pub image_path: String,
    /// Text describing the modifications to make.
    pub prompt: String,
    /// Optional additional images (paths or URLs) for style, elements, etc.
    #[serde(default)]
    pub reference_images: Option<Vec<String>>,
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9 or 21:9.
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// Output size: 1K, 2K or 4K (2K and 4K need a Gemini 3 image model).
    #[serde(default)]
    pub image_size: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinueArgs {
    /// Text describing the changes to make to the last image.
    pub prompt: String,
    /// Optional additional images (paths or URLs).
    #[serde(default)]
    pub reference_images: Option<Vec<String>>,
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    #[serde(default)]
    pub image_size: Option<String>,
}

/// What `get_last_image_info` reports.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastImageInfo {
    pub image: ImageResult,
    pub age_seconds: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigureArgs {
    /// Your Gemini API key from Google AI Studio.
    pub api_key: String,
    /// Also save it to a user config file (mode 0600) for later runs.
    #[serde(default)]
    pub persist: bool,
}

/// What `get_configuration_status` reports.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    pub configured: bool,
    pub model: String,
    pub gemini_endpoint: String,
    pub streaming: bool,
    pub storage: String,
    pub transport: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub memory: MemoryStatus,
    pub hint: Option<String>,
}

fn tool_error(msg: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(msg.to_string())])
}

/// The result every image tool returns.
fn image_result(img: &ImageResult) -> CallToolResult {
    let value = serde_json::to_value(img).unwrap_or_default();
    let mut link = Resource::new(img.url.clone(), img.blob_name.clone());
    link.mime_type = Some(img.content_type.clone());
    link.size = Some(img.bytes);
    link.description = Some(format!("Image for prompt: {}", truncate(&img.prompt, 200)));
    let mut r = CallToolResult::success(vec![
        ContentBlock::text(value.to_string()),
        ContentBlock::resource_link(link),
    ]);
    r.structured_content = Some(value);
    r
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n).collect();
        format!("{t}…")
    }
}

/// Sends MCP progress notifications when the client asked for them.
struct McpProgress<'a> {
    app: &'a crate::app::App,
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    step: AtomicU64,
}

impl<'a> McpProgress<'a> {
    fn new(app: &'a crate::app::App, ctx: &RequestContext<RoleServer>) -> Self {
        Self {
            app,
            peer: ctx.peer.clone(),
            token: ctx.meta.get_progress_token(),
            step: AtomicU64::new(0),
        }
    }

    fn send(&self, message: String) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let progress = self.step.fetch_add(1, Ordering::Relaxed) as f64 + 1.0;
        let peer = self.peer.clone();
        let param = ProgressNotificationParam::new(token, progress).with_message(message);
        tokio::spawn(async move {
            let _ = peer.notify_progress(param).await;
        });
    }
}

impl Progress for McpProgress<'_> {
    fn stage(&self, stage: Stage) {
        let msg = match stage {
            Stage::Requesting => "started: asking Gemini".to_string(),
            Stage::Waiting => "Gemini is generating".to_string(),
            Stage::Receiving { bytes } => format!("receiving and uploading: {} KiB", bytes >> 10),
            Stage::Committing => "uploading the last block and committing".to_string(),
            Stage::Committed { bytes } => format!("committed: {} KiB", bytes >> 10),
        };
        self.send(msg);
    }

    fn retry(&self, attempt: u32, delay: Duration, reason: &str) {
        self.app.metrics.retry();
        self.send(format!(
            "attempt {attempt} failed ({reason}); retrying in {:.1} s",
            delay.as_secs_f64()
        ));
    }
}

#[tool_router]
impl ImageServer {
    pub fn new(app: SharedApp) -> Self {
        Self {
            session: app.sessions.new_id(),
            app,
            tool_router: Self::tool_router(),
        }
    }

    async fn run_job(
        &self,
        tool: &'static str,
        job: Job,
        ctx: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let progress = McpProgress::new(&self.app, ctx);
        let started = Instant::now();
        match self.app.pipeline.run(job, &progress, &ctx.ct).await {
            Ok(img) => {
                self.app
                    .metrics
                    .call(tool, "ok", started.elapsed(), img.bytes);
                self.app.sessions.remember(self.session, &img);
                image_result(&img)
            }
            Err(e) => {
                self.app.metrics.call(tool, e.kind(), started.elapsed(), 0);
                self.app.metrics.error(&e);
                if !matches!(e, PipelineError::Cancelled) {
                    tracing::warn!(tool, kind = e.kind(), error = %e, "tool call failed");
                }
                tool_error(e)
            }
        }
    }

    /// Count a call refused before it reached the pipeline.
    fn refused(&self, tool: &'static str, kind: &str, r: CallToolResult) -> CallToolResult {
        self.app.metrics.call(tool, kind, Duration::ZERO, 0);
        r
    }

    #[tool(
        name = "generate_image",
        description = "Generate a NEW image from a text prompt. Use this only to create a new image, not to modify an existing one. Returns the image's URL (Azure Blob Storage) or file path (local folder).",
        output_schema = schema_for_output::<ImageResult>()
    )]
    async fn generate_image(
        &self,
        Parameters(args): Parameters<GenerateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let model = &self.app.pipeline.gemini.config().model;
        let opts = match models::validate(
            model,
            args.aspect_ratio.as_deref(),
            args.image_size.as_deref(),
        ) {
            Ok(o) => o,
            Err(m) => return Ok(tool_error(m)),
        };
        Ok(self
            .run_job("generate_image", Job::generate(args.prompt, opts), &ctx)
            .await)
    }

    fn options(
        &self,
        aspect_ratio: Option<&str>,
        image_size: Option<&str>,
    ) -> Result<crate::gemini::ImageOptions, CallToolResult> {
        let model = &self.app.pipeline.gemini.config().model;
        models::validate(model, aspect_ratio, image_size).map_err(tool_error)
    }

    /// An edit job over prepared inputs; the inputs live as long as the job.
    fn edit_job(
        &self,
        prompt: String,
        options: crate::gemini::ImageOptions,
        history: Option<inputs::History>,
        images: Vec<inputs::Prepared>,
    ) -> Job {
        let body = inputs::edit_body(history.as_ref(), &images, &prompt, &options);
        let mut keep = images;
        if let Some(h) = history {
            keep.push(h.image);
        }
        Job {
            prompt,
            options,
            prefix: "edited",
            body: Box::new(body),
            // Read buffer, one base64 chunk and HTTP write buffers.
            extra_reservation: 1 << 20,
            inputs: keep,
        }
    }

    #[tool(
        name = "edit_image",
        description = "Edit a SPECIFIC existing image, optionally with additional reference images. imagePath may be a local file path, an https URL, a URL this server returned, or a data: URI.",
        output_schema = schema_for_output::<ImageResult>()
    )]
    async fn edit_image(
        &self,
        Parameters(args): Parameters<EditArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let opts = match self.options(args.aspect_ratio.as_deref(), args.image_size.as_deref()) {
            Ok(o) => o,
            Err(e) => return Ok(e),
        };
        if args.prompt.len() > self.app.pipeline.cfg.max_prompt_bytes {
            return Ok(tool_error(PipelineError::Invalid(format!(
                "prompt is {} bytes; the limit is {} (--max-prompt-bytes)",
                args.prompt.len(),
                self.app.pipeline.cfg.max_prompt_bytes
            ))));
        }
        let mut specs = vec![args.image_path];
        specs.extend(args.reference_images.unwrap_or_default());
        let model = self.app.pipeline.gemini.config().model.clone();
        let prepared = tokio::select! {
            _ = ctx.ct.cancelled() => return Ok(tool_error(PipelineError::Cancelled)),
            p = self.app.fetcher.prepare_all(&specs, &model) => p,
        };
        let images = match prepared {
            Ok(p) => p,
            Err(e) => return Ok(self.refused("edit_image", "input", tool_error(e))),
        };
        let job = self.edit_job(args.prompt, opts, None, images);
        Ok(self.run_job("edit_image", job, &ctx).await)
    }

    #[tool(
        name = "continue_editing",
        description = "Continue editing the LAST image generated or edited in this session, optionally with additional reference images. Uses the previous image automatically; no path needed.",
        output_schema = schema_for_output::<ImageResult>()
    )]
    async fn continue_editing(
        &self,
        Parameters(args): Parameters<ContinueArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if self.app.transport == Transport::Http && self.app.stateless {
            return Ok(tool_error(
                "continue_editing needs an MCP session, and this server runs statelessly (--stateless); use edit_image with the URL of the last image instead",
            ));
        }
        let Some(last) = self.app.sessions.last(self.session) else {
            return Ok(tool_error(
                "there is no previous image in this session; call generate_image or edit_image first",
            ));
        };
        let opts = match self.options(args.aspect_ratio.as_deref(), args.image_size.as_deref()) {
            Ok(o) => o,
            Err(e) => return Ok(e),
        };
        let model = self.app.pipeline.gemini.config().model.clone();
        let refs = args.reference_images.unwrap_or_default();
        let prepared = async {
            let base = self
                .app
                .fetcher
                .load_stored(&last.blob_name, last.path.as_deref())
                .await?;
            let more = self.app.fetcher.prepare_all(&refs, &model).await?;
            Ok::<_, inputs::InputError>((base, more))
        };
        let (base, more) = tokio::select! {
            _ = ctx.ct.cancelled() => return Ok(tool_error(PipelineError::Cancelled)),
            p = prepared => match p {
                Ok(p) => p,
                Err(e) => return Ok(tool_error(e)),
            },
        };
        let max = models::info(&model).max_inputs;
        if more.len() + 1 > max {
            return Ok(tool_error(inputs::InputError::TooMany {
                n: more.len() + 1,
                max,
                model,
            }));
        }
        // Gemini 3 asks for its thought signature back with the history;
        // other models get the last image as a plain input.
        let job = match &last.thought_signature {
            Some(sig) => {
                let history = inputs::History {
                    prompt: last.prompt.clone(),
                    image: base,
                    signature: sig.clone(),
                };
                self.edit_job(args.prompt, opts, Some(history), more)
            }
            None => {
                let mut images = vec![base];
                images.extend(more);
                self.edit_job(args.prompt, opts, None, images)
            }
        };
        Ok(self.run_job("continue_editing", job, &ctx).await)
    }

    #[tool(
        name = "get_last_image_info",
        description = "Get information about the last image generated or edited in this session (URL or path, type, size, dimensions, prompt, when). Use it to check what continue_editing will edit.",
        output_schema = schema_for_output::<LastImageInfo>()
    )]
    async fn get_last_image_info(&self) -> Result<CallToolResult, ErrorData> {
        let Some(img) = self.app.sessions.last(self.session) else {
            return Ok(tool_error(
                "no image has been generated or edited in this session yet",
            ));
        };
        let age = chrono::DateTime::parse_from_rfc3339(&img.created_at)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
            .unwrap_or(0);
        let info = LastImageInfo {
            image: img,
            age_seconds: age,
        };
        let value = serde_json::to_value(&info).unwrap_or_default();
        let mut r = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
        r.structured_content = Some(value);
        Ok(r)
    }

    #[tool(
        name = "get_configuration_status",
        description = "Check whether the Gemini API key is configured, and report the model, storage and memory budget.",
        output_schema = schema_for_output::<ConfigurationStatus>()
    )]
    async fn get_configuration_status(&self) -> Result<CallToolResult, ErrorData> {
        let gemini = &self.app.pipeline.gemini;
        let cfg = gemini.config();
        let configured = gemini.has_key();
        let endpoint = url::Url::parse(&cfg.base_url)
            .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")))
            .unwrap_or_default();
        let status = ConfigurationStatus {
            configured,
            model: cfg.model.clone(),
            gemini_endpoint: endpoint,
            streaming: cfg.streaming,
            storage: self.app.pipeline.store.describe(),
            transport: format!("{:?}", self.app.transport).to_lowercase(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.app.started.elapsed().as_secs(),
            memory: self.app.memory_status(),
            hint: (!configured).then(|| {
                "set GEMINI_API_KEY in the server's environment, or call configure_gemini_token"
                    .into()
            }),
        };
        let value = serde_json::to_value(&status).unwrap_or_default();
        let mut r = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
        r.structured_content = Some(value);
        Ok(r)
    }

    #[tool(
        name = "configure_gemini_token",
        description = "Configure the Gemini API key for this server (kept in memory; saved to a 0600 user config file only with persist: true)."
    )]
    async fn configure_gemini_token(
        &self,
        Parameters(args): Parameters<ConfigureArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if self.app.transport == Transport::Http && !self.app.allow_configure_token {
            return Ok(tool_error(
                "configure_gemini_token is disabled over HTTP: one client must not change the key for everyone. Set GEMINI_API_KEY on the server, or start it with --allow-configure-token",
            ));
        }
        let key = args.api_key.trim();
        if key.len() < 8 || key.chars().any(char::is_whitespace) {
            return Ok(tool_error(
                "that does not look like an API key (too short or contains spaces)",
            ));
        }
        self.app.pipeline.gemini.set_key(Secret::new(key));
        let mut msg = "Gemini API key configured for this server process.".to_string();
        if args.persist {
            match &self.app.key_file {
                Some(path) => match crate::config::persist_key(path, key) {
                    Ok(()) => msg.push_str(&format!(" Saved to {} (mode 0600).", path.display())),
                    Err(e) => {
                        return Ok(tool_error(format!(
                            "the key is set, but saving it failed: {e}"
                        )));
                    }
                },
                None => msg.push_str(
                    " Not saved: no user config directory is known (set XDG_CONFIG_HOME or HOME).",
                ),
            }
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(msg)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ImageServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("nano-banana-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Image generation with Google's Gemini image models. generate_image makes a new image from a prompt; edit_image edits an image given by path or URL; continue_editing edits the last image of this session. Results carry a URL (or a file path for local storage).",
            )
    }
}
