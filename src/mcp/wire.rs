//! The MCP wire schema, defined once: tool arguments and structured
//! results, with their JSON Schemas (what `tools/list` publishes) and the
//! old server's `azureUrl` shape. The layers below keep plain types; a
//! field renamed there does not change the public schema here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pipeline::StoredImage;
use crate::store::StorageKind;

/// Output options every image tool takes.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputOptions {
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9 or 21:9.
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// Output size: 1K, 2K or 4K (2K and 4K need a Gemini 3 image model).
    #[serde(default)]
    pub image_size: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateArgs {
    /// Text prompt describing the NEW image to create from scratch.
    pub prompt: String,
    #[serde(flatten)]
    pub options: OutputOptions,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditArgs {
    /// The image to edit: a local file path, an https URL, a URL returned
    /// by this server, or a data: URI. Give this or imageId.
    #[serde(default)]
    pub image_path: Option<String>,
    /// The imageId an earlier result of this server returned (works on
    /// any replica, with or without a session). Give this or imagePath.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Text describing the modifications to make.
    pub prompt: String,
    #[serde(flatten)]
    pub more: MoreInputs,
}

/// What every edit tool takes besides its prompt.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoreInputs {
    /// Optional additional images (paths or URLs) for style, elements, etc.
    #[serde(default)]
    pub reference_images: Option<Vec<String>>,
    #[serde(flatten)]
    pub options: OutputOptions,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinueArgs {
    /// Text describing the changes to make to the last image.
    pub prompt: String,
    /// The imageId of the image to continue from, as an earlier result
    /// returned it. Pass it whenever you have it: it works on any replica
    /// and without a session. Without it, this session's last image.
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(flatten)]
    pub more: MoreInputs,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfoArgs {
    /// The imageId an earlier result returned. Without it, this session's
    /// last image.
    #[serde(default)]
    pub image_id: Option<String>,
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

/// Where the image was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Azure,
    Local,
}

/// Token counts as Gemini reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_token_count: Option<u64>,
    pub candidates_token_count: Option<u64>,
    pub total_token_count: Option<u64>,
    pub thoughts_token_count: Option<u64>,
}

/// What the caller learns about a stored image (every image tool's
/// structured output).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    /// The image's handle: pass it to continue_editing, edit_image or
    /// get_last_image_info to work on this image again, from any replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Why the image has no imageId (its record could not be stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    /// The imageId this image was edited from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_image_id: Option<String>,
    /// Where to fetch the image: an https URL (Azure, read SAS unless
    /// public) or a file:// URL (local folder).
    pub url: String,
    /// The old server's field, kept for existing prompts and scripts: the
    /// blob URL for Azure, null for local files.
    pub azure_url: Option<String>,
    /// The file path, when stored in the local folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub storage: Storage,
    pub blob_name: String,
    /// From the bytes themselves, not from what the model declared.
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub model: String,
    /// Text the model sent with the image, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub prompt: String,
    pub created_at: String,
}

impl From<&StoredImage> for ImageResult {
    fn from(img: &StoredImage) -> Self {
        let u = &img.usage;
        Self {
            image_id: img.image_id.clone(),
            record_error: img.record_error.clone(),
            parent_image_id: img.parent.clone(),
            url: img.url.clone(),
            azure_url: img.is_azure().then(|| img.url.clone()),
            path: img.path.as_ref().map(|p| p.display().to_string()),
            storage: match img.storage {
                StorageKind::Azure => Storage::Azure,
                StorageKind::Local => Storage::Local,
            },
            blob_name: img.blob_name.clone(),
            content_type: img.content_type.to_string(),
            bytes: img.bytes,
            sha256: img.sha256.clone(),
            width: img.width,
            height: img.height,
            model: img.model.clone(),
            text: img.text.clone(),
            finish_reason: img.finish_reason.clone(),
            usage: Usage {
                prompt_token_count: u.prompt_token_count,
                candidates_token_count: u.candidates_token_count,
                total_token_count: u.total_token_count,
                thoughts_token_count: u.thoughts_token_count,
            },
            prompt: img.prompt.clone(),
            created_at: img.created_at.clone(),
        }
    }
}

/// What `get_last_image_info` reports.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastImageInfo {
    pub image: ImageResult,
    pub age_seconds: i64,
}

/// Memory figures in `get_configuration_status`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStatus {
    pub limit_bytes: u64,
    pub limit_source: String,
    pub baseline_bytes: u64,
    pub budget_bytes: u64,
    /// The budget's parts: the image path (responses streaming), waiting
    /// calls, request bodies, connections, sessions (docs/ARCHITECTURE.md,
    /// "What the server can be made to hold").
    pub images_budget_bytes: u64,
    pub calls_budget_bytes: u64,
    /// Calls admitted (waiting for Gemini or streaming), calls waiting to
    /// be admitted, and what one waiting call reserves.
    pub calls_in_flight: u64,
    pub calls_queued: u64,
    pub per_call_bytes: u64,
    pub max_waiting: u64,
    pub bodies_budget_bytes: u64,
    pub bodies_reserved_bytes: u64,
    pub connections_budget_bytes: u64,
    pub sessions_budget_bytes: u64,
    pub per_request_bytes: u64,
    pub max_concurrent: u64,
    pub reserved_bytes: u64,
    pub in_flight: u64,
    pub queued: u64,
    pub busy_rejections: u64,
    pub rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub allocator_resident_bytes: Option<u64>,
}

impl MemoryStatus {
    /// The plan made at start, the budget's state and the process's own
    /// counters, read now.
    pub fn read(app: &crate::app::App) -> Self {
        let b = app.budget().stats();
        let c = app.calls().stats();
        let rss = crate::memory::cgroup::proc_self_status_rss();
        Self {
            limit_bytes: app.limit.bytes,
            limit_source: app.limit.source.to_string(),
            baseline_bytes: app.plan.baseline,
            budget_bytes: app.plan.budget,
            images_budget_bytes: app.plan.images,
            calls_budget_bytes: app.plan.calls,
            calls_in_flight: c.in_flight as u64,
            calls_queued: c.queued as u64,
            per_call_bytes: app.plan.per_call,
            max_waiting: app.plan.max_waiting,
            bodies_budget_bytes: app.plan.bodies,
            bodies_reserved_bytes: app.bodies.stats().reserved_bytes,
            connections_budget_bytes: app.plan.connections,
            sessions_budget_bytes: app.plan.sessions,
            per_request_bytes: app.plan.per_request,
            max_concurrent: app.plan.max_concurrent,
            reserved_bytes: b.reserved_bytes,
            in_flight: b.in_flight as u64,
            queued: b.queued as u64,
            busy_rejections: b.rejections_busy + c.rejections_busy,
            rss_bytes: rss.map(|r| r.0),
            peak_rss_bytes: rss.map(|r| r.1),
            allocator_resident_bytes: crate::memory::alloc::stats().map(|s| s.resident),
        }
    }
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
