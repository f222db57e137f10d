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
    /// The Gemini image model for this call; without it, the server's
    /// (get_configuration_status names it and the models calls may pick).
    /// gemini-3.1-flash-image: 512 to 4K, 14 ratios, thinkingLevel, web and
    /// image grounding; gemini-3-pro-image: 1K to 4K, always thinks, web
    /// grounding, the most expensive; gemini-3.1-flash-lite-image: 1K only,
    /// the cheapest.
    #[serde(default)]
    pub model: Option<String>,
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9 or 21:9;
    /// 1:4, 4:1, 1:8 and 8:1 on the Gemini 3.1 image models too.
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// Output size: 512 (gemini-3.1-flash-image), 1K, 2K or 4K (Gemini 3
    /// models but 3.1 Flash Lite).
    #[serde(default)]
    pub image_size: Option<String>,
    /// How hard the model thinks first: minimal (default, faster) or high
    /// (better composition and text; Gemini 3.1 image models only).
    #[serde(default)]
    pub thinking_level: Option<String>,
    /// Ground the image on Google Search: web, image or both (image search:
    /// gemini-3.1-flash-image). The result lists the queries and sources.
    /// Each query is billed.
    #[serde(default)]
    pub grounding: Option<String>,
    /// Whether people may appear: allow_all, allow_adult or allow_none.
    #[serde(default)]
    pub person_generation: Option<String>,
    /// How many images to make, 1 to 4 (default 1): separate generations
    /// of the same request, run in parallel and each stored with its own
    /// imageId; not variations of one image. Each is billed.
    #[serde(default)]
    pub n: Option<u32>,
    /// Not offered: the Gemini API rejects it (Vertex AI only).
    #[serde(default)]
    #[schemars(skip)]
    pub output_mime_type: Option<serde_json::Value>,
    /// Not offered: the Gemini API rejects it (Vertex AI only).
    #[serde(default)]
    #[schemars(skip)]
    pub compression_quality: Option<serde_json::Value>,
}

impl OutputOptions {
    /// The options as the model table checks them, or why one is refused
    /// whatever the model.
    pub fn asked(&self) -> Result<crate::gemini::models::AskedOptions<'_>, String> {
        for (name, v) in [
            ("outputMimeType", &self.output_mime_type),
            ("compressionQuality", &self.compression_quality),
        ] {
            if v.is_some() {
                return Err(format!(
                    "{name} is not supported: the Gemini API rejects it (only Vertex AI takes it). Images come back as the model makes them (PNG or JPEG) and are stored byte for byte"
                ));
            }
        }
        Ok(crate::gemini::models::AskedOptions {
            aspect_ratio: self.aspect_ratio.as_deref(),
            image_size: self.image_size.as_deref(),
            thinking_level: self.thinking_level.as_deref(),
            grounding: self.grounding.as_deref(),
            person_generation: self.person_generation.as_deref(),
            count: self.n,
        })
    }
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
    /// Of the candidates' tokens, those billed as image output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_token_count: Option<u64>,
}

/// What the call cost, estimated from Gemini's usage report and the
/// server's price table (list prices unless the operator set others).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostEstimate {
    /// US dollars; absent when the server has no price for the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_usd: Option<f64>,
    pub input_tokens: u64,
    pub image_output_tokens: u64,
    /// Output text and thinking.
    pub text_output_tokens: u64,
    pub search_queries: u64,
    /// The date of the built-in list prices.
    pub prices_as_of: String,
}

/// One source Google Search grounding used.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroundingSourceResult {
    /// `web` (a page) or `image` (an image and the page it is on).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Where a grounded image's facts came from, as Gemini reported it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroundingResult {
    pub web_search_queries: Vec<String>,
    pub image_search_queries: Vec<String>,
    pub sources: Vec<GroundingSourceResult>,
    /// More was reported than the server keeps (16 KiB of text).
    pub truncated: bool,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostEstimate>,
    /// Present when the call was grounded and Gemini said on what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<GroundingResult>,
    pub prompt: String,
    pub created_at: String,
    /// With n > 1: every image the call made (this one first), each with
    /// its own imageId and URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<ImageResult>>,
    /// With n > 1: the images that could not be made, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<FailedImage>>,
}

/// One of a call's n images that was not made.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedImage {
    /// 1-based, in the order the requests were made.
    pub index: u32,
    pub error: String,
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
                image_token_count: u.image_token_count,
            },
            cost: img.cost.map(|c| CostEstimate {
                estimated_usd: c.usd.map(|d| (d * 1e6).round() / 1e6),
                input_tokens: c.input_tokens,
                image_output_tokens: c.image_tokens,
                text_output_tokens: c.text_tokens,
                search_queries: c.search_queries,
                prices_as_of: crate::gemini::pricing::PRICES_AS_OF.into(),
            }),
            grounding: (!img.grounding.is_empty()).then(|| {
                let g = &img.grounding;
                GroundingResult {
                    web_search_queries: g.web_queries.clone(),
                    image_search_queries: g.image_queries.clone(),
                    sources: g
                        .sources
                        .iter()
                        .map(|s| GroundingSourceResult {
                            kind: s.kind.into(),
                            title: s.title.clone(),
                            uri: s.uri.clone(),
                            image_uri: s.image_uri.clone(),
                            domain: s.domain.clone(),
                        })
                        .collect(),
                    truncated: g.truncated,
                }
            }),
            prompt: img.prompt.clone(),
            created_at: img.created_at.clone(),
            images: None,
            failed: None,
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
    /// Stateless: request bodies draw on the waiting calls' pool (the two
    /// budget figures are then the same pool).
    pub bodies_pooled_with_calls: bool,
    /// What Gemini may send ahead unread over HTTP/2, paid for by the
    /// plan (0 for a plain-http base), and the stream window it is made of.
    pub gemini_windows_bytes: u64,
    pub h2_stream_window_bytes: u64,
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
            bodies_pooled_with_calls: app.plan.pooled,
            gemini_windows_bytes: app.plan.gemini_windows,
            h2_stream_window_bytes: app.plan.h2_stream_window,
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
    /// Models a call may name (`*`: any).
    pub allowed_models: Vec<String>,
    /// Estimated spend today (UTC) on this server, and its cap.
    pub spend_today_usd: f64,
    pub daily_spend_cap_usd: Option<f64>,
    pub gemini_endpoint: String,
    pub streaming: bool,
    pub storage: String,
    pub transport: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub memory: MemoryStatus,
    /// When image calls become durable tasks (`off`, `auto`, `always`),
    /// and how many this server runs now.
    pub tasks: String,
    pub tasks_running: usize,
    pub hint: Option<String>,
}
