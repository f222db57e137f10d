//! What each model the fake serves accepts, written down separately from
//! the server's table (`gemini::models`) so a wrong request is caught
//! rather than agreed with: the fake answers 400 INVALID_ARGUMENT to what
//! the real API refuses, in the API's words where they are known. Also how
//! many image tokens an output bills (a 1K image is 1,120 tokens on Gemini
//! 3 models, 1,290 on 2.5 Flash).

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct FakeModel {
    sizes: &'static [&'static str],
    extra_ratios: bool,
    thinking_levels: bool,
    web_search: bool,
    image_search: bool,
    /// 2.5 Flash refuses `imageSize` altogether.
    size_field: bool,
    /// Image output tokens for each size in `sizes`.
    tokens: &'static [i64],
}

const BASE_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
const EXTRA_RATIOS: &[&str] = &["1:4", "4:1", "1:8", "8:1"];

pub(super) fn fake_model(model: &str) -> Option<FakeModel> {
    Some(match model {
        "gemini-3.1-flash-image" => FakeModel {
            sizes: &["512", "1K", "2K", "4K"],
            extra_ratios: true,
            thinking_levels: true,
            web_search: true,
            image_search: true,
            size_field: true,
            tokens: &[747, 1120, 1680, 2520],
        },
        "gemini-3.1-flash-lite-image" => FakeModel {
            sizes: &["1K"],
            extra_ratios: true,
            thinking_levels: true,
            web_search: false,
            image_search: false,
            size_field: true,
            tokens: &[1120],
        },
        "gemini-3-pro-image" => FakeModel {
            sizes: &["1K", "2K", "4K"],
            extra_ratios: false,
            thinking_levels: false,
            web_search: true,
            image_search: false,
            size_field: true,
            tokens: &[1120, 1120, 2000],
        },
        "gemini-2.5-flash-image" => FakeModel {
            sizes: &["1K"],
            extra_ratios: false,
            thinking_levels: false,
            web_search: false,
            image_search: false,
            size_field: false,
            tokens: &[1290],
        },
        // Test models take anything and bill like 2.5 Flash.
        m if m.starts_with("fake-") => FakeModel {
            sizes: &["512", "1K", "2K", "4K"],
            extra_ratios: true,
            thinking_levels: true,
            web_search: true,
            image_search: true,
            size_field: true,
            tokens: &[1290, 1290, 1290, 1290],
        },
        _ => return None,
    })
}

impl FakeModel {
    /// The image tokens one output of this request bills.
    pub(super) fn image_tokens(&self, generation_config: Option<&Value>) -> i64 {
        let size = generation_config
            .and_then(|g| field(g, "imageConfig", "image_config"))
            .and_then(|i| field(i, "imageSize", "image_size"))
            .and_then(Value::as_str)
            .unwrap_or("1K");
        self.sizes
            .iter()
            .position(|s| *s == size)
            .or_else(|| self.sizes.iter().position(|s| *s == "1K"))
            .map_or(self.tokens[0], |i| self.tokens[i])
    }

    /// Whether a request's settings are ones the model takes; the error
    /// message when not.
    pub(super) fn check(
        &self,
        generation_config: Option<&Value>,
        tools: Option<&Value>,
    ) -> Result<(), String> {
        let empty = Value::Null;
        let g = generation_config.unwrap_or(&empty);
        let image = field(g, "imageConfig", "image_config").unwrap_or(&empty);
        for (camel, snake) in [
            ("outputMimeType", "output_mime_type"),
            ("compressionQuality", "compression_quality"),
        ] {
            if field(image, camel, snake).is_some() {
                return Err(format!("{camel} parameter is not supported in Gemini API."));
            }
        }
        if let Some(size) = field(image, "imageSize", "image_size") {
            let size = size.as_str().unwrap_or_default();
            if !self.size_field || !self.sizes.contains(&size) {
                return Err(format!(
                    "* GenerateContentRequest.generation_config.image_config.image_size: unsupported value {size:?} for this model"
                ));
            }
        }
        if let Some(r) = field(image, "aspectRatio", "aspect_ratio") {
            let r = r.as_str().unwrap_or_default();
            let ok = BASE_RATIOS.contains(&r) || (self.extra_ratios && EXTRA_RATIOS.contains(&r));
            if !ok {
                return Err(format!(
                    "* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported value {r:?} for this model"
                ));
            }
        }
        if let Some(p) = field(image, "personGeneration", "person_generation") {
            let p = p.as_str().unwrap_or_default();
            if !["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"].contains(&p) {
                return Err(format!(
                    "Invalid value at 'generation_config.image_config.person_generation', \"{p}\""
                ));
            }
        }
        if let Some(t) = field(g, "thinkingConfig", "thinking_config") {
            let level = field(t, "thinkingLevel", "thinking_level").and_then(Value::as_str);
            match level {
                Some(_) if !self.thinking_levels => {
                    return Err("Thinking level is not supported for this model.".into());
                }
                Some(l) if !["MINIMAL", "HIGH"].contains(&l) => {
                    return Err(format!(
                        "Invalid value at 'generation_config.thinking_config.thinking_level', \"{l}\""
                    ));
                }
                _ => {}
            }
        }
        for tool in tools.and_then(Value::as_array).into_iter().flatten() {
            let Some(search) = field(tool, "googleSearch", "google_search") else {
                return Err("Only the googleSearch tool is served by this fake.".into());
            };
            let (web, image_search) = search_types(search);
            if web && !self.web_search {
                return Err("Search as tool is not enabled for this model.".into());
            }
            if image_search && !self.image_search {
                return Err("Image search is not supported for this model.".into());
            }
        }
        Ok(())
    }
}

/// Which searches a `googleSearch` tool asks for: web alone when it names
/// none.
pub(super) fn search_types(search: &Value) -> (bool, bool) {
    match field(search, "searchTypes", "search_types") {
        None => (true, false),
        Some(t) => (
            field(t, "webSearch", "web_search").is_some(),
            field(t, "imageSearch", "image_search").is_some(),
        ),
    }
}

/// `groundingMetadata` for a grounded request: a query made of the prompt's
/// first words, and two web sources (and an image source for image search).
pub(super) fn grounding_metadata(prompt: &str, tools: Option<&Value>) -> Option<J> {
    let mut web = false;
    let mut image = false;
    for tool in tools.and_then(Value::as_array).into_iter().flatten() {
        if let Some(s) = field(tool, "googleSearch", "google_search") {
            let (w, i) = search_types(s);
            web |= w;
            image |= i;
        }
    }
    if !web && !image {
        return None;
    }
    let words: Vec<&str> = prompt
        .split_whitespace()
        .filter(|w| !w.starts_with("fake:"))
        .take(6)
        .collect();
    let query = words.join(" ");
    let mut chunks = Vec::new();
    let mut f = vec![(
        "searchEntryPoint",
        J::obj([(
            "renderedContent",
            J::str(
                "<style>.container{display:flex}</style><div class=\"container\">fake search chip</div>",
            ),
        )]),
    )];
    if web {
        for n in 1..=2 {
            chunks.push(J::obj([(
                "web",
                J::obj([
                    (
                        "uri",
                        J::Str(format!("https://example.org/fake-source/{n}")),
                    ),
                    ("title", J::Str(format!("Fake source {n}"))),
                    ("domain", J::str("example.org")),
                ]),
            )]));
        }
    }
    if image {
        chunks.push(J::obj([(
            "image",
            J::obj([
                ("sourceUri", J::str("https://example.net/fake-page")),
                ("imageUri", J::str("https://example.net/fake-image.jpg")),
                ("title", J::str("Fake image source")),
                ("domain", J::str("example.net")),
            ]),
        )]));
    }
    f.push(("groundingChunks", J::Arr(chunks)));
    if web {
        f.push(("webSearchQueries", J::Arr(vec![J::Str(query.clone())])));
    }
    if image {
        f.push((
            "imageSearchQueries",
            J::Arr(vec![J::Str(format!("{query} photo"))]),
        ));
    }
    Some(J::Obj(f))
}
