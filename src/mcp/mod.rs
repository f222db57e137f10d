//! The MCP tools, with the old server's names and argument names. Each tool
//! validates its arguments, calls the pipeline, and shapes the result: a
//! text block with the legacy JSON (`{"azureUrl": ...}`), the same object as
//! `structuredContent` (with an `outputSchema`), and a `resource_link`.
//! Failures the caller should see are tool errors in plain words; protocol
//! errors are left to rmcp.

mod sessions;
mod tasks;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ProgressNotificationParam,
    ProgressToken, Resource, ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use tokio_util::sync::CancellationToken;

use crate::app::{KeyError, SharedApp, Transport};
pub use crate::auth::Principal;
use crate::auth::Via;
use crate::gemini::models;
use crate::inputs;
use crate::pipeline::{History, Job, PipelineError, Progress, Request, Stage, StoredImage};
use crate::store::records::ImageId;

pub use sessions::{SessionSettings, Sessions};
use wire::{
    ConfigurationStatus, ConfigureArgs, ContinueArgs, EditArgs, GenerateArgs, ImageResult,
    InfoArgs, LastImageInfo, OutputOptions,
};

/// The MCP side of one process: the app and the sessions' state. Each
/// MCP session (one over stdio, one per client over HTTP) gets an
/// `ImageServer` from `session()`.
#[derive(Clone)]
pub struct Service {
    app: SharedApp,
    sessions: Arc<Sessions>,
    /// Built once: building it makes every tool's JSON schema, which
    /// stateless HTTP would otherwise pay on every request.
    tool_router: ToolRouter<ImageServer>,
    /// Handlers alive now: one per live MCP session over HTTP (and one per
    /// request in flight when stateless).
    live: Arc<AtomicU64>,
}

/// Counts one handler while any clone of it lives.
struct Live(Arc<AtomicU64>);

impl Live {
    fn new(n: &Arc<AtomicU64>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Live(Arc::clone(n))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The least the last-image memory may hold.
pub const LAST_IMAGES_FLOOR: usize = 1 << 20;

impl Service {
    pub fn new(app: SharedApp, sessions: SessionSettings) -> Self {
        // Half the session share pays for live sessions (transport::http
        // caps them), half for the last images they leave behind; over
        // stdio (no share) one entry with a whole signature fits.
        let last_images = usize::try_from(app.plan.sessions / 2)
            .unwrap_or(usize::MAX)
            .max(LAST_IMAGES_FLOOR);
        Self {
            app,
            sessions: Arc::new(Sessions::new(sessions, last_images)),
            tool_router: ImageServer::tool_router(),
            live: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Session handlers alive now.
    pub fn live_sessions(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    pub fn app(&self) -> &SharedApp {
        &self.app
    }

    /// The handler for a new MCP session.
    pub fn session(&self) -> ImageServer {
        ImageServer {
            session: self.sessions.new_id(),
            app: Arc::clone(&self.app),
            sessions: Arc::clone(&self.sessions),
            tool_router: self.tool_router.clone(),
            _live: Arc::new(Live::new(&self.live)),
        }
    }
}

#[derive(Clone)]
pub struct ImageServer {
    app: SharedApp,
    sessions: Arc<Sessions>,
    session: u64,
    tool_router: ToolRouter<Self>,
    _live: Arc<Live>,
}

/// Put on a request by the HTTP transport when it carried the admin
/// token (`--admin-token`); nothing else sets it.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

/// Who made this request: what the HTTP transport put on it, else the
/// local stdio client.
pub fn principal_of(ctx: &RequestContext<RoleServer>) -> Principal {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Principal>())
        .cloned()
        .unwrap_or_else(Principal::stdio)
}

fn is_admin(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .is_some_and(|p| p.extensions.get::<AdminCaller>().is_some())
}

/// The id a principal owns images, tasks and limits under: its `id`
/// when it carries an identity (an OAuth subject, the static or the admin
/// token); `None` without one (stdio, HTTP with auth off), where nothing
/// is owned and nothing limited per caller.
pub fn owner_id(p: &Principal) -> Option<String> {
    match p.via {
        Via::Stdio | Via::NoAuth => None,
        Via::OAuth | Via::StaticToken | Via::AdminToken => Some(p.id.to_string()),
    }
}

/// The owner id of the request's principal (`owner_id`).
fn caller(ctx: &RequestContext<RoleServer>) -> Option<String> {
    owner_id(&principal_of(ctx))
}

fn tool_error(msg: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(msg.to_string())])
}

/// The image's preview as an image content block (`--preview`).
fn preview_block(img: &StoredImage) -> Option<ContentBlock> {
    use base64::Engine as _;
    let p = img.preview.as_ref()?;
    Some(ContentBlock::image(
        base64::engine::general_purpose::STANDARD.encode(&p.jpeg),
        "image/jpeg",
    ))
}

/// What the image tools return: the first image's fields on top (what a
/// client reading one image expects) and, when the call asked for n > 1
/// images, every image in `images` and the failures in `failed`; then one
/// link per image and the previews.
fn images_result(made: &[StoredImage], failed: &[(u32, PipelineError)]) -> CallToolResult {
    let all: Vec<ImageResult> = made.iter().map(ImageResult::from).collect();
    let mut top = all[0].clone();
    if all.len() + failed.len() > 1 {
        top.images = Some(all.clone());
        top.failed = (!failed.is_empty()).then(|| {
            failed
                .iter()
                .map(|(i, e)| wire::FailedImage {
                    index: *i,
                    error: e.to_string(),
                })
                .collect()
        });
    }
    let value = serde_json::to_value(&top).unwrap_or_default();
    let mut content = vec![ContentBlock::text(value.to_string())];
    for img in &all {
        let mut link = Resource::new(img.url.clone(), img.blob_name.clone());
        link.mime_type = Some(img.content_type.clone());
        link.size = Some(img.bytes);
        link.description = Some(format!("Image for prompt: {}", truncate(&img.prompt, 200)));
        content.push(ContentBlock::resource_link(link));
    }
    content.extend(made.iter().filter_map(preview_block));
    let mut r = CallToolResult::success(content);
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

/// Longest progress token honoured. The token is repeated in every
/// notification; a client that sends a huge one gets no progress rather
/// than making the server copy it again and again.
const MAX_PROGRESS_TOKEN_BYTES: usize = 1024;

/// Notifications queued per call; past this, intermediate ones are dropped
/// (progress is advice; the result is what counts).
const PROGRESS_QUEUE: usize = 16;

/// While a call that asked for progress waits (Gemini can think for a
/// minute and more before the first byte), a notification goes out at
/// least this often, so clients that reset their timeout on progress
/// keep waiting (README, "Long generations").
pub const PROGRESS_KEEPALIVE: Duration = Duration::from_secs(5);

/// How long a task may wait for admission (the queue's length cap does
/// not apply: tasks are capped by their own count).
const TASK_ADMISSION_WAIT: Duration = Duration::from_secs(600);

/// What a tool call needs from the transport that carries it: a token
/// that is cancelled when the client goes away or cancels, where to send
/// progress (if the client asked for it), and what the transport itself
/// holds for the call beyond what the pipeline counts.
pub struct CallCtx {
    ct: CancellationToken,
    progress: Option<(ProgressToken, Peer<RoleServer>)>,
    overhead: u64,
    /// The request body's payment on the direct path: the arguments
    /// (a `data:` URI can be megabytes) live until the inputs are files,
    /// so it is released then, not when the body was parsed.
    body: std::sync::Mutex<Option<crate::memory::Reservation>>,
    /// A task's run: admission may wait past the queue's length cap.
    patient: bool,
    /// Who asked for the call.
    principal: Principal,
}

/// What rmcp's per-request service holds for a stateless HTTP call:
/// four tokio channels whose first block is 32 messages of ~370 bytes,
/// and their tasks. Measured: a waiting call through it costs 33 KiB more
/// than on the direct path (`transport::direct`), which does not pay it
/// (BENCHMARKS.md, "Calls waiting for Gemini").
pub const RMCP_STATELESS_CALL_BYTES: u64 = 40 << 10;

impl CallCtx {
    /// A call that came through rmcp.
    fn rmcp(app: &crate::app::App, ctx: &RequestContext<RoleServer>) -> Self {
        let progress = ctx.meta.get_progress_token().filter(|t| {
            let len = serde_json::to_string(t).map_or(usize::MAX, |s| s.len());
            if len > MAX_PROGRESS_TOKEN_BYTES {
                tracing::debug!(len, "progress token too long; no progress for this call");
            }
            len <= MAX_PROGRESS_TOKEN_BYTES
        });
        let stateless = app.transport == Transport::Http && app.stateless;
        Self {
            ct: ctx.ct.clone(),
            progress: progress.map(|t| (t, ctx.peer.clone())),
            overhead: if stateless {
                RMCP_STATELESS_CALL_BYTES
            } else {
                0
            },
            // rmcp's path: the transport holds the payment to the end.
            body: std::sync::Mutex::new(None),
            patient: false,
            principal: principal_of(ctx),
        }
    }

    /// The arguments are gone (inputs are files now, or were never
    /// more than a prompt): what the body cost is free again.
    fn release_body(&self) {
        if let Ok(mut b) = self.body.lock() {
            b.take();
        }
    }

    /// A call served without rmcp (no progress: the direct path takes
    /// only calls that did not ask for it).
    pub fn direct(
        ct: CancellationToken,
        body: Option<crate::memory::Reservation>,
        principal: Principal,
    ) -> Self {
        Self {
            ct,
            progress: None,
            overhead: 0,
            body: std::sync::Mutex::new(body),
            patient: false,
            principal,
        }
    }

    /// A task's run: nobody waits on a connection for it; it ends when
    /// `ct` is cancelled (a cancel, the shutdown, a lost record).
    pub fn task(ct: CancellationToken, principal: Principal) -> Self {
        Self {
            ct,
            progress: None,
            overhead: 0,
            body: std::sync::Mutex::new(None),
            patient: true,
            principal,
        }
    }

    /// Who asked for the call.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The id the caller owns things under (`owner_id`).
    fn owner(&self) -> Option<String> {
        owner_id(&self.principal)
    }
}

/// A stateless `tools/call` the transport can serve without rmcp: the
/// image tools, whose calls wait longest. Anything else goes to rmcp.
pub enum DirectCall {
    Generate(GenerateArgs),
    Edit(EditArgs),
    Continue(ContinueArgs),
}

impl DirectCall {
    /// The call, if `name` is a direct tool and its arguments parse as
    /// rmcp would parse them; `None` leaves the request to rmcp, which
    /// then gives its own answer (an unknown tool, invalid params).
    pub fn parse(name: &str, arguments: Option<JsonObject>) -> Option<Self> {
        let args = serde_json::Value::Object(arguments.unwrap_or_default());
        match name {
            "generate_image" => serde_json::from_value(args).ok().map(Self::Generate),
            "edit_image" => serde_json::from_value(args).ok().map(Self::Edit),
            "continue_editing" => serde_json::from_value(args).ok().map(Self::Continue),
            _ => None,
        }
    }

    /// The tool's name.
    pub fn tool(&self) -> &'static str {
        match self {
            Self::Generate(_) => "generate_image",
            Self::Edit(_) => "edit_image",
            Self::Continue(_) => "continue_editing",
        }
    }
}

impl Service {
    /// Run a direct call to its result; `body` is the request body's
    /// payment, held until the arguments are no longer needed.
    pub async fn call_direct(
        &self,
        call: DirectCall,
        ct: CancellationToken,
        body: Option<crate::memory::Reservation>,
        principal: Principal,
    ) -> CallToolResult {
        let server = self.session();
        let ctx = CallCtx::direct(ct, body, principal);
        // Boxed: the task's future would otherwise be as large as the
        // largest of the three (an edit's input fetching), for every call
        // while it waits for Gemini.
        match call {
            DirectCall::Generate(args) => Box::pin(server.generate(args, &ctx)).await,
            DirectCall::Edit(args) => Box::pin(server.edit(args, &ctx)).await,
            DirectCall::Continue(args) => Box::pin(server.continue_call(args, &ctx)).await,
        }
    }
}

/// Sends MCP progress notifications when the client asked for them: in
/// order, through one task per call, and all of them before the result
/// (`finish`).
struct McpProgress<'a> {
    app: &'a crate::app::App,
    tx: Option<tokio::sync::mpsc::Sender<String>>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl<'a> McpProgress<'a> {
    fn new(app: &'a crate::app::App, call: &CallCtx) -> Self {
        let (tx, sender) = match &call.progress {
            Some((token, peer)) => {
                let (tx, rx) = tokio::sync::mpsc::channel(PROGRESS_QUEUE);
                let sender = tokio::spawn(send_progress(token.clone(), peer.clone(), rx));
                (Some(tx), Some(sender))
            }
            None => (None, None),
        };
        Self { app, tx, sender }
    }

    fn send(&self, message: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(message);
        }
    }

    /// Let every queued notification go out (bounded), so none arrives
    /// after the result.
    async fn finish(mut self) {
        self.tx = None;
        if let Some(sender) = self.sender.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), sender).await;
        }
    }
}

/// One call's notifications, in order, numbered; when nothing happened
/// for `PROGRESS_KEEPALIVE`, the last message again with the time so far.
async fn send_progress(
    token: ProgressToken,
    peer: Peer<RoleServer>,
    mut rx: tokio::sync::mpsc::Receiver<String>,
) {
    let started = tokio::time::Instant::now();
    let mut quiet = tokio::time::interval_at(started + PROGRESS_KEEPALIVE, PROGRESS_KEEPALIVE);
    quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::from("started");
    let mut step = 0u64;
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    quiet.reset();
                    last.clone_from(&m);
                    m
                }
                None => break,
            },
            _ = quiet.tick() => format!("{last} ({} s so far)", started.elapsed().as_secs()),
        };
        step += 1;
        let param =
            ProgressNotificationParam::new(token.clone(), step as f64).with_message(message);
        let _ = peer.notify_progress(param).await;
    }
}

impl Drop for McpProgress<'_> {
    fn drop(&mut self) {
        // A cancelled call: nothing more is worth sending.
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
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

impl ImageServer {
    /// A call of the caller's within their per-principal limits (calls per
    /// minute, calls at once), checked before anything is fetched or sent.
    fn principal_pass(
        &self,
        tool: &'static str,
        call: &CallCtx,
    ) -> Result<crate::pipeline::quota::CallPass<'_>, CallToolResult> {
        self.app
            .pipeline
            .quotas
            .start_call(call.owner().as_deref())
            .map_err(|refusal| {
                tracing::info!(tool, principal = %call.principal, reason = %refusal, "call refused by a per-principal limit");
                self.app.metrics.principal_refused();
                self.refused(tool, "principal_limit", tool_error(refusal))
            })
    }

    async fn generate(&self, args: GenerateArgs, call: &CallCtx) -> CallToolResult {
        const TOOL: &str = "generate_image";
        let _pass = match self.principal_pass(TOOL, call) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let job = self
            .request(TOOL, args.prompt, &args.options)
            .map(Job::generate);
        self.image_call(TOOL, job, call).await
    }

    async fn edit(&self, args: EditArgs, call: &CallCtx) -> CallToolResult {
        const TOOL: &str = "edit_image";
        let _pass = match self.principal_pass(TOOL, call) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let job = async {
            let req = self.request(TOOL, args.prompt, &args.more.options)?;
            let refs = args.more.reference_images.unwrap_or_default();
            match (args.image_path, args.image_id) {
                (Some(path), None) => {
                    let mut specs = vec![path];
                    specs.extend(refs);
                    let images = self
                        .inputs(
                            TOOL,
                            call,
                            self.app.fetcher.prepare_all(&specs, req.model()),
                        )
                        .await?;
                    Ok(Job::edit(req, None, images))
                }
                (None, Some(id)) => {
                    let base = self.find(TOOL, call, &id).await?;
                    let (base_file, more) = self
                        .base_and_refs(TOOL, call, req.model(), &base, &refs)
                        .await?;
                    let mut images = vec![base_file];
                    images.extend(more);
                    Ok(Job::edit(req, None, images).with_parent(base.image_id))
                }
                (Some(_), Some(_)) => Err(self.refused(
                    TOOL,
                    "input",
                    tool_error("give imagePath or imageId, not both"),
                )),
                (None, None) => Err(self.refused(
                    TOOL,
                    "input",
                    tool_error(
                        "edit_image needs the image to edit: imageId (from an earlier result) or imagePath",
                    ),
                )),
            }
        };
        self.image_call(TOOL, job.await, call).await
    }

    /// The continue_editing job, the same on every path.
    async fn continue_call(&self, args: ContinueArgs, call: &CallCtx) -> CallToolResult {
        const TOOL: &str = "continue_editing";
        let _pass = match self.principal_pass(TOOL, call) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let job = self.continue_job(args, call).await;
        self.image_call(TOOL, job, call).await
    }

    /// The image `id` names, from its record in the store (any replica
    /// wrote it), or the error the caller sees.
    async fn find(
        &self,
        tool: &'static str,
        call: &CallCtx,
        id: &str,
    ) -> Result<StoredImage, CallToolResult> {
        let id = ImageId::parse(id).map_err(|e| self.refused(tool, "input", tool_error(e)))?;
        let found = self
            .inputs(tool, call, self.app.fetcher.find_image(&id))
            .await?;
        match found.filter(|(rec, _)| self.may_see(call.owner().as_deref(), rec.principal.as_deref(), "image", id.as_str())) {
            Some((rec, at)) => Ok(StoredImage::from_record(rec, at)),
            None => Err(self.refused(
                tool,
                "input",
                tool_error(format!(
                    "no image with imageId {id} in this server's storage; pass an imageId exactly as an earlier result returned it"
                )),
            )),
        }
    }

    /// The stored image an edit starts from and its reference images,
    /// prepared as inputs (at most the model's number in all).
    async fn base_and_refs(
        &self,
        tool: &'static str,
        call: &CallCtx,
        model: &str,
        base: &StoredImage,
        refs: &[String],
    ) -> Result<(inputs::Prepared, Vec<inputs::Prepared>), CallToolResult> {
        let fetch = async {
            let first = self
                .app
                .fetcher
                .load_stored(&base.blob_name, base.path.as_deref())
                .await?;
            let more = self.app.fetcher.prepare_all(refs, model).await?;
            let max = models::info(model).max_inputs;
            if more.len() + 1 > max {
                return Err(inputs::InputError::TooMany {
                    n: more.len() + 1,
                    max,
                    model: model.to_string(),
                });
            }
            Ok((first, more))
        };
        self.inputs(tool, call, fetch).await
    }

    /// Whether `viewer` may see what `owner` made: always when the operator
    /// shares everything, when either has no identity (stdio, auth off,
    /// records from before identities), else only their own. A refusal
    /// looks to the caller exactly like an unknown id, so ids of others
    /// reveal nothing; the log says why.
    pub(crate) fn may_see(
        &self,
        viewer: Option<&str>,
        owner: Option<&str>,
        what: &'static str,
        id: &str,
    ) -> bool {
        match (viewer, owner) {
            _ if self.app.shared_access => true,
            (Some(v), Some(o)) if v != o => {
                tracing::info!(
                    what,
                    id,
                    principal = v,
                    "refused: it belongs to another principal"
                );
                false
            }
            _ => true,
        }
    }

    /// The image a tool without imageId falls back to: this session's
    /// last, where sessions exist.
    fn session_last(&self) -> Result<StoredImage, &'static str> {
        if self.app.transport == Transport::Http && self.app.stateless {
            return Err(
                "pass the imageId from the earlier result: this server runs statelessly (MCP 2026-07-28 clients and --stateless), so there is no session to remember the last image in",
            );
        }
        self.sessions.last(self.session).ok_or(
            "there is no previous image in this session; pass the imageId from an earlier result, or call generate_image or edit_image first",
        )
    }
}

#[tool_router]
impl ImageServer {
    async fn run_job(&self, tool: &'static str, job: Job, call: &CallCtx) -> CallToolResult {
        let progress = McpProgress::new(&self.app, call);
        let job = job
            .with_overhead(call.overhead)
            .with_patience(call.patient.then_some(TASK_ADMISSION_WAIT))
            .with_principal(call.owner());
        // n images are n separate runs of the job, in parallel, each with
        // its own reservations; the call waits for all of them.
        let mut jobs: Vec<Job> = (1..job.count).map(|_| job.again()).collect();
        jobs.insert(0, job);
        let runs = jobs.into_iter().map(|job| async {
            let started = Instant::now();
            let model = job.model().to_string();
            let (outcome, billed) = self.app.pipeline.run_billed(job, &progress, &call.ct).await;
            self.count_outcome(tool, &outcome, started.elapsed());
            // An answer that left no image is billed all the same.
            if let Some(cost) = &billed {
                let label = self.app.pipeline.model_label(&model);
                self.app.metrics.cost(&label, cost);
            }
            outcome
        });
        let outcomes = futures::future::join_all(runs).await;
        progress.finish().await;
        let n = outcomes.len();
        let mut made = Vec::new();
        let mut failed = Vec::new();
        for (i, o) in outcomes.into_iter().enumerate() {
            match o {
                Ok(img) => made.push(img),
                Err(e) => failed.push((i as u32 + 1, e)),
            }
        }
        let Some(last) = made.last() else {
            return match failed.as_slice() {
                [(_, e)] => tool_error(e),
                all => tool_error(format!(
                    "none of the {n} images was made: {}",
                    all.iter()
                        .map(|(i, e)| format!("{i}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            };
        };
        // Stateless HTTP gives every request a new session: what is
        // remembered there can never be read again.
        if !(self.app.transport == Transport::Http && self.app.stateless) {
            self.sessions.remember(self.session, last);
        }
        images_result(&made, &failed)
    }

    /// Metrics and the log line for one image run.
    fn count_outcome(
        &self,
        tool: &'static str,
        outcome: &Result<StoredImage, PipelineError>,
        took: Duration,
    ) {
        match outcome {
            Ok(img) => {
                self.app.metrics.call(tool, "ok", took, img.bytes);
                if let Some(cost) = &img.cost {
                    let label = self.app.pipeline.model_label(&img.model);
                    self.app.metrics.cost(&label, cost);
                }
            }
            Err(e) => {
                self.app.metrics.call(tool, e.kind(), took, 0);
                self.app.metrics.error(e);
                if matches!(e, PipelineError::SpendCap(_)) {
                    self.app.metrics.spend_refused();
                }
                if !matches!(e, PipelineError::Cancelled) {
                    tracing::warn!(tool, kind = e.kind(), error = %e, "tool call failed");
                }
            }
        }
    }

    /// Count a call refused before it reached the pipeline.
    fn refused(&self, tool: &'static str, kind: &str, r: CallToolResult) -> CallToolResult {
        self.app.metrics.call(tool, kind, Duration::ZERO, 0);
        r
    }

    /// Run a job the tool prepared, or return why it could not.
    async fn image_call(
        &self,
        tool: &'static str,
        job: Result<Job, CallToolResult>,
        call: &CallCtx,
    ) -> CallToolResult {
        // The job is built: its inputs are files and the argument strings
        // are dropped.
        call.release_body();
        match job {
            Ok(job) => {
                use tracing::Instrument as _;
                // Every log line of the run names the tool and the caller.
                let span = tracing::info_span!("call", tool, principal = %call.principal);
                self.run_job(tool, job, call).instrument(span).await
            }
            Err(refused) => {
                tracing::debug!(tool, principal = %call.principal, "tool call refused before it ran");
                refused
            }
        }
    }

    /// Check the prompt and options once, before anything is fetched.
    fn request(
        &self,
        tool: &'static str,
        prompt: String,
        options: &OutputOptions,
    ) -> Result<Request, CallToolResult> {
        let asked = options
            .asked()
            .map_err(|e| self.refused(tool, "invalid", tool_error(e)))?;
        self.app
            .pipeline
            .request(prompt, options.model.as_deref(), asked)
            .map_err(|e| self.refused(tool, e.kind(), tool_error(e)))
    }

    /// Fetch and check inputs, unless the call is cancelled first.
    async fn inputs<T>(
        &self,
        tool: &'static str,
        call: &CallCtx,
        fetch: impl Future<Output = Result<T, inputs::InputError>>,
    ) -> Result<T, CallToolResult> {
        tokio::select! {
            _ = call.ct.cancelled() => Err(tool_error(PipelineError::Cancelled)),
            r = fetch => r.map_err(|e| self.refused(tool, "input", tool_error(e))),
        }
    }

    #[tool(
        name = "generate_image",
        description = "Generate a NEW image from a text prompt. Use this only to create a new image, not to modify an existing one. Returns the image's URL (Azure Blob Storage) or file path (local folder) and its imageId: keep the imageId and pass it to continue_editing to refine this image.",
        output_schema = schema_for_output::<ImageResult>()
    )]
    async fn generate_image(
        &self,
        Parameters(args): Parameters<GenerateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self.generate(args, &CallCtx::rmcp(&self.app, &ctx)).await)
    }

    #[tool(
        name = "edit_image",
        description = "Edit a SPECIFIC existing image, optionally with additional reference images. Name it by imageId (from an earlier result of this server) or by imagePath: a local file path, an https URL, a URL this server returned, or a data: URI.",
        output_schema = schema_for_output::<ImageResult>()
    )]
    async fn edit_image(
        &self,
        Parameters(args): Parameters<EditArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self.edit(args, &CallCtx::rmcp(&self.app, &ctx)).await)
    }

    #[tool(
        name = "continue_editing",
        description = "Continue editing an image this server made, optionally with additional reference images: pass the imageId from the earlier result (required on stateless servers and MCP 2026-07-28 clients). Without imageId, the last image of this session. Keeps the model's context from the earlier turn.",
        output_schema = schema_for_output::<ImageResult>()
    )]
    async fn continue_editing(
        &self,
        Parameters(args): Parameters<ContinueArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .continue_call(args, &CallCtx::rmcp(&self.app, &ctx))
            .await)
    }

    /// The edit of the image the call names, or of this session's last.
    async fn continue_job(
        &self,
        args: ContinueArgs,
        call: &CallCtx,
    ) -> Result<Job, CallToolResult> {
        const TOOL: &str = "continue_editing";
        let last = match &args.image_id {
            Some(id) => self.find(TOOL, call, id).await?,
            None => self
                .session_last()
                .map_err(|e| self.refused(TOOL, "input", tool_error(e)))?,
        };
        let req = self.request(TOOL, args.prompt, &args.more.options)?;
        let refs = args.more.reference_images.unwrap_or_default();
        let model = req.model().to_string();
        let (base, more) = self.base_and_refs(TOOL, call, &model, &last, &refs).await?;
        // Gemini 3 asks for its thought signature back with the history;
        // other models get the last image as a plain input.
        let job = match &last.thought_signature {
            Some(sig) => {
                let history = History {
                    prompt: last.prompt.clone(),
                    image: base,
                    signature: sig.clone(),
                };
                Job::edit(req, Some(history), more)
            }
            None => {
                let mut images = vec![base];
                images.extend(more);
                Job::edit(req, None, images)
            }
        };
        Ok(job.with_parent(last.image_id))
    }

    #[tool(
        name = "get_last_image_info",
        description = "Get information about an image this server made (URL or path, type, size, sha256, dimensions, prompt, when): the one imageId names, or without it the last image of this session. Use it to check what continue_editing will edit.",
        output_schema = schema_for_output::<LastImageInfo>()
    )]
    async fn get_last_image_info(
        &self,
        Parameters(args): Parameters<InfoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        const TOOL: &str = "get_last_image_info";
        let img = match &args.image_id {
            Some(id) => match self.find(TOOL, &CallCtx::rmcp(&self.app, &ctx), id).await {
                Ok(img) => img,
                Err(r) => return Ok(r),
            },
            None => match self.session_last() {
                Ok(img) => img,
                Err(e) => return Ok(tool_error(e)),
            },
        };
        let age = chrono::DateTime::parse_from_rfc3339(&img.created_at)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
            .unwrap_or(0);
        let info = LastImageInfo {
            image: ImageResult::from(&img),
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
        let configured = self.app.has_gemini_key();
        let status = ConfigurationStatus {
            configured,
            model: self.app.pipeline.model().to_string(),
            allowed_models: self.app.pipeline.allowed_models(),
            spend_today_usd: (self.app.pipeline.spend.spent_today() * 1e6).round() / 1e6,
            daily_spend_cap_usd: self.app.pipeline.spend.cap(),
            gemini_endpoint: self.app.gemini_endpoint(),
            streaming: self.app.gemini_streaming(),
            storage: self.app.storage_description(),
            transport: format!("{:?}", self.app.transport).to_lowercase(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.app.started.elapsed().as_secs(),
            memory: wire::MemoryStatus::read(&self.app),
            tasks: format!("{:?}", self.app.tasks.settings().mode).to_lowercase(),
            tasks_running: self.app.tasks.running(),
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
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let http = self.app.transport == Transport::Http;
        if http && !self.app.allow_configure_token {
            return Ok(tool_error(
                "configure_gemini_token is disabled over HTTP: one client must not change the key for everyone. Set GEMINI_API_KEY on the server, or start it with --admin-token (NANO_BANANA_ADMIN_TOKEN) and call this tool with that token as the bearer token",
            ));
        }
        if http && !is_admin(&ctx) {
            return Ok(tool_error(
                "configure_gemini_token over HTTP needs the admin token (NANO_BANANA_ADMIN_TOKEN) as the bearer token; this request carries the clients' token",
            ));
        }
        if http && args.persist {
            return Ok(tool_error(
                "over HTTP the key is never saved to disk (persist: true refused, nothing changed); call again without persist, or put the key in GEMINI_API_KEY (a Kubernetes Secret) for every replica",
            ));
        }
        let key = args.api_key.trim();
        if key.len() < 8 || key.chars().any(char::is_whitespace) {
            return Ok(tool_error(
                "that does not look like an API key (too short or contains spaces)",
            ));
        }
        let mut msg = if http {
            "Gemini API key configured for this replica's process, in memory only (other replicas keep theirs; a restart forgets it).".to_string()
        } else {
            "Gemini API key configured for this server process.".to_string()
        };
        match self.app.set_gemini_key(key, args.persist) {
            Ok(Some(path)) => msg.push_str(&format!(" Saved to {} (mode 0600).", path.display())),
            Ok(None) => {}
            Err(KeyError::NoConfigDir) => msg.push_str(
                " Not saved: no user config directory is known (set XDG_CONFIG_HOME or HOME).",
            ),
            Err(e) => return Ok(tool_error(e)),
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(msg)]))
    }
}

/// Stored images as MCP resources: `nano-banana://images/<imageId>`.
const IMAGE_URI_PREFIX: &str = "nano-banana://images/";

/// The resource of a recorded image: its URI names the id; the link to
/// the bytes is in what `resources/read` returns.
fn image_resource(img: &StoredImage) -> Option<Resource> {
    let id = img.image_id.as_ref()?;
    let mut r = Resource::new(format!("{IMAGE_URI_PREFIX}{id}"), img.blob_name.clone());
    r.mime_type = Some("application/json".into());
    r.description = Some(format!(
        "{} image, {} bytes, for prompt: {}",
        img.content_type,
        img.bytes,
        truncate(&img.prompt, 200)
    ));
    Some(r)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ImageServer {
    /// The image tools may become durable tasks (`tasks`); everything
    /// else, and every call that does not, goes to the tool router.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        if let Some(task) = self.call_as_task(&request, &context).await {
            return task;
        }
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        self.get_task_result(&request.task_id, caller(&ctx).as_deref())
            .await
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.cancel(&request.task_id, caller(&ctx).as_deref()).await
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.update(&request.task_id, caller(&ctx).as_deref()).await
    }

    /// Only the caller's own images: this session's last one. Without
    /// sessions (stateless HTTP) the server cannot tell callers apart and
    /// lists nothing; any image is still readable by its id.
    async fn list_resources(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        let own = self.session_last().ok();
        Ok(rmcp::model::ListResourcesResult::with_all_items(
            own.as_ref().and_then(image_resource).into_iter().collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        let t = rmcp::model::ResourceTemplate::new(format!("{IMAGE_URI_PREFIX}{{imageId}}"), "image")
            .with_title("A stored image by imageId")
            .with_description(
                "What this server knows about an image it stored (URL or path, type, size, sha256, dimensions, model, prompt, parent image, time), by the imageId a tool result returned. The image itself is at the url field.",
            )
            .with_mime_type("application/json");
        Ok(rmcp::model::ListResourceTemplatesResult::with_all_items(
            vec![t],
        ))
    }

    /// The image's record as JSON (the shape of a tool's structured
    /// result), never its bytes: those are one fetch of `url` away, and
    /// inlining them would put a whole image in memory.
    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let data = serde_json::json!({ "uri": uri });
        let not_found = |why: String| ErrorData::resource_not_found(why, Some(data.clone()));
        let Some(raw) = uri.strip_prefix(IMAGE_URI_PREFIX) else {
            return Err(not_found(format!(
                "no resource {uri:?}: this server's resources are {IMAGE_URI_PREFIX}<imageId>"
            )));
        };
        let id = ImageId::parse(raw).map_err(not_found)?;
        let found = tokio::select! {
            _ = ctx.ct.cancelled() => return Err(ErrorData::internal_error("cancelled", None)),
            r = self.app.fetcher.find_image(&id) => r,
        };
        let viewer = caller(&ctx);
        let found = found.map(|f| {
            f.filter(|(rec, _)| {
                self.may_see(
                    viewer.as_deref(),
                    rec.principal.as_deref(),
                    "image",
                    id.as_str(),
                )
            })
        });
        match found {
            Ok(Some((rec, at))) => {
                let img = StoredImage::from_record(rec, at);
                let text = serde_json::to_string(&ImageResult::from(&img)).unwrap_or_default();
                Ok(rmcp::model::ReadResourceResult::new(vec![
                    rmcp::model::ResourceContents::TextResourceContents {
                        uri,
                        mime_type: Some("application/json".into()),
                        text,
                        meta: None,
                    },
                ])
                .into())
            }
            Ok(None) => Err(not_found(format!(
                "no image with imageId {id} in this server's storage"
            ))),
            Err(e) => Err(ErrorData::internal_error(e.to_string(), None)),
        }
    }

    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources();
        let caps = if self.app.tasks.settings().mode == crate::tasks::TaskMode::Off {
            caps.build()
        } else {
            caps.enable_tasks().build()
        };
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("nano-banana-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Image generation with Google's Gemini image models. generate_image makes a new image from a prompt; edit_image edits an image given by path or URL; continue_editing edits an earlier image: pass the imageId its result returned (any replica, no session needed). Results carry a URL (or a file path for local storage) and the imageId; stored images are also resources, nano-banana://images/{imageId}.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tool has a scope decision in `auth`, so a new tool cannot be
    /// reachable with any token by being forgotten there.
    #[test]
    fn every_tool_has_a_scope_decision() {
        let tools = ImageServer::tool_router().list_all();
        assert_eq!(tools.len(), 6);
        for t in tools {
            assert!(
                crate::auth::tool_scope(&t.name).is_some(),
                "{} has no scope in auth::tool_scope",
                t.name
            );
        }
        for name in ["generate_image", "edit_image", "continue_editing"] {
            let call = DirectCall::parse(
                name,
                Some(serde_json::Map::from_iter([(
                    "prompt".to_string(),
                    serde_json::json!("p"),
                )])),
            );
            if let Some(c) = call {
                assert_eq!(c.tool(), name);
            }
        }
    }
}
