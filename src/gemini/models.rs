//! What each Gemini image model accepts: one table (`KNOWN`), as Google
//! documented it on 2026-12-01 (README, "Models", shows the same table). Every option a call gives is checked here before
//! a request is built; a refusal names the models that would take it.
//! Unknown ids (gateways, new releases) pass with the widest settings: the
//! API will say if it disagrees.

/// The model a call uses unless it names another: Nano Banana 2, GA, the
/// successor Google names for gemini-2.5-flash-image, and what Google's
/// own MCP servers default to.
pub const DEFAULT_MODEL: &str = "gemini-3.1-flash-image";

/// Shut-down ids (they answer 404) and what replaced them.
pub const RETIRED: &[(&str, &str)] = &[
    ("gemini-2.5-flash-image-preview", "gemini-3.1-flash-image"),
    ("gemini-3-pro-image-preview", "gemini-3-pro-image"),
    ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image"),
    (
        "gemini-2.0-flash-preview-image-generation",
        "gemini-3.1-flash-image",
    ),
    (
        "gemini-2.0-flash-exp-image-generation",
        "gemini-3.1-flash-image",
    ),
];

/// Still served, announced for shutdown: warned about at start.
pub const DEPRECATED: &[(&str, &str)] = &[("gemini-2.5-flash-image", "gemini-3.1-flash-image")];

const RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
const RATIOS_WIDE: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "1:4", "4:1", "1:8",
    "8:1",
];
/// Every size any model makes, in the spelling the API wants.
const ALL_SIZES: &[&str] = &["512", "1K", "2K", "4K"];
pub const PERSON_GENERATION: &[&str] = &["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// gemini-3.1-flash-image (Nano Banana 2).
    Flash31,
    /// gemini-3.1-flash-lite-image.
    FlashLite31,
    /// gemini-3-pro-image (Nano Banana Pro).
    Pro3,
    /// gemini-2.5-flash-image (Nano Banana), announced for shutdown.
    Flash25,
    Unknown,
}

/// How a model thinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    None,
    /// `thinkingConfig.thinkingLevel` takes these.
    Levels(&'static [&'static str]),
    /// Always on, not settable.
    Always,
}

/// What `tools: [{googleSearch}]` can do on a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchSupport {
    pub web: bool,
    pub image: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    pub family: Family,
    /// The id the table knows it by (for messages).
    pub id: &'static str,
    pub sizes: &'static [&'static str],
    pub ratios: &'static [&'static str],
    pub max_inputs: usize,
    pub takes_heic: bool,
    pub thinking: Thinking,
    pub search: SearchSupport,
    /// 2.5 Flash answers an error to any `imageSize`, even "1K".
    pub takes_size_field: bool,
}

const NO_SEARCH: SearchSupport = SearchSupport {
    web: false,
    image: false,
};

/// The table. Longest id prefixes first: `info` takes the first match.
pub const KNOWN: &[ModelInfo] = &[
    ModelInfo {
        family: Family::FlashLite31,
        id: "gemini-3.1-flash-lite-image",
        sizes: &["1K"],
        ratios: RATIOS_WIDE,
        max_inputs: 14,
        takes_heic: true,
        thinking: Thinking::Levels(&["MINIMAL", "HIGH"]),
        search: NO_SEARCH,
        takes_size_field: true,
    },
    ModelInfo {
        family: Family::Flash31,
        id: "gemini-3.1-flash-image",
        sizes: ALL_SIZES,
        ratios: RATIOS_WIDE,
        max_inputs: 14,
        takes_heic: true,
        thinking: Thinking::Levels(&["MINIMAL", "HIGH"]),
        search: SearchSupport {
            web: true,
            image: true,
        },
        takes_size_field: true,
    },
    ModelInfo {
        family: Family::Pro3,
        id: "gemini-3-pro-image",
        sizes: &["1K", "2K", "4K"],
        ratios: RATIOS,
        max_inputs: 14,
        takes_heic: true,
        thinking: Thinking::Always,
        search: SearchSupport {
            web: true,
            image: false,
        },
        takes_size_field: true,
    },
    ModelInfo {
        family: Family::Flash25,
        id: "gemini-2.5-flash-image",
        sizes: &["1K"],
        ratios: RATIOS,
        max_inputs: 3,
        takes_heic: false,
        thinking: Thinking::None,
        search: NO_SEARCH,
        takes_size_field: false,
    },
];

const UNKNOWN: ModelInfo = ModelInfo {
    family: Family::Unknown,
    id: "",
    sizes: ALL_SIZES,
    ratios: RATIOS_WIDE,
    max_inputs: 14,
    takes_heic: true,
    thinking: Thinking::Levels(&["MINIMAL", "LOW", "MEDIUM", "HIGH"]),
    search: SearchSupport {
        web: true,
        image: true,
    },
    takes_size_field: true,
};

/// The id without a `models/` or gateway prefix.
pub fn bare(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

pub fn info(model: &str) -> ModelInfo {
    let m = bare(model);
    // A known id, or a dated or suffixed release of one
    // ("gemini-3-pro-image-001"); previews are in RETIRED.
    KNOWN
        .iter()
        .find(|k| m == k.id || m.strip_prefix(k.id).is_some_and(|r| r.starts_with('-')))
        .copied()
        .unwrap_or(UNKNOWN)
}

/// The replacement for a retired model id, if it is one.
pub fn retired(model: &str) -> Option<&'static str> {
    let m = bare(model);
    RETIRED
        .iter()
        .find(|(old, _)| *old == m)
        .map(|(_, new)| *new)
}

/// The successor of a model announced for shutdown.
pub fn deprecated(model: &str) -> Option<&'static str> {
    let m = bare(model);
    DEPRECATED
        .iter()
        .find(|(old, _)| *old == m)
        .map(|(_, new)| *new)
}

/// Grounding with Google Search: which searches the model may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Search {
    pub web: bool,
    pub image: bool,
}

/// Validated settings, ready for the request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    pub aspect_ratio: Option<String>,
    pub image_size: Option<String>,
    /// `generationConfig.thinkingConfig.thinkingLevel`.
    pub thinking_level: Option<String>,
    /// `tools: [{"googleSearch": …}]`, when asked for.
    pub search: Option<Search>,
    /// `imageConfig.personGeneration`.
    pub person_generation: Option<String>,
}

/// The options a call gives, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct AskedOptions<'a> {
    pub aspect_ratio: Option<&'a str>,
    pub image_size: Option<&'a str>,
    pub thinking_level: Option<&'a str>,
    pub grounding: Option<&'a str>,
    pub person_generation: Option<&'a str>,
    /// Images to make (1 to `MAX_IMAGES_PER_CALL`); checked by the
    /// pipeline, not the model.
    pub count: Option<u32>,
}

/// The most images one call may ask for: each is a request of its own.
pub const MAX_IMAGES_PER_CALL: u32 = 4;

fn given(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// "… ; gemini-x and gemini-y take it (pass model: …)", or nothing when no
/// known model does.
fn who_takes(what: &str, model: &str, takes: impl Fn(&ModelInfo) -> bool) -> String {
    let ids: Vec<&str> = KNOWN
        .iter()
        .filter(|k| k.id != bare(model) && takes(k))
        .map(|k| k.id)
        .collect();
    match ids.as_slice() {
        [] => String::new(),
        [one] => format!("; {one} takes {what} (pass model: \"{one}\")"),
        many => format!(
            "; {} take {what} (pass model: \"{}\")",
            many.join(" and "),
            many[0]
        ),
    }
}

/// The API's spelling of a size: "512", "1K", "2K", "4K" ("2k" and "0.5K"
/// are accepted too).
fn size_name(s: &str) -> Option<&'static str> {
    let up = s.to_ascii_uppercase();
    match up.as_str() {
        "512" | "0.5K" => Some("512"),
        "1K" => Some("1K"),
        "2K" => Some("2K"),
        "4K" => Some("4K"),
        _ => None,
    }
}

/// Check every option against the model's documented values.
pub fn validate(model: &str, asked: AskedOptions<'_>) -> Result<ImageOptions, String> {
    let info = info(model);
    let mut out = ImageOptions::default();
    if let Some(r) = given(asked.aspect_ratio) {
        if !RATIOS_WIDE.contains(&r) {
            return Err(format!(
                "aspectRatio {r:?} is not supported; use one of {}",
                RATIOS_WIDE.join(", ")
            ));
        }
        if !info.ratios.contains(&r) {
            return Err(format!(
                "aspectRatio {r} is not supported by {model} (it takes {}){}",
                info.ratios.join(", "),
                who_takes(&format!("aspectRatio {r}"), model, |k| k
                    .ratios
                    .contains(&r))
            ));
        }
        out.aspect_ratio = Some(r.to_string());
    }
    if let Some(s) = given(asked.image_size) {
        let Some(size) = size_name(s) else {
            return Err(format!(
                "imageSize {s:?} is not supported; use 512, 1K, 2K or 4K"
            ));
        };
        if !info.sizes.contains(&size) {
            return Err(format!(
                "imageSize {size} is not supported by {model} (it makes {}){}",
                info.sizes.join(", "),
                who_takes(&format!("imageSize {size}"), model, |k| k
                    .sizes
                    .contains(&size))
            ));
        }
        // 2.5 Flash makes 1K only and refuses the field itself.
        out.image_size = info.takes_size_field.then(|| size.to_string());
    }
    if let Some(t) = given(asked.thinking_level) {
        let up = t.to_ascii_uppercase();
        match info.thinking {
            Thinking::Levels(levels) if levels.contains(&up.as_str()) => {
                out.thinking_level = Some(up);
            }
            Thinking::Levels(levels) => {
                return Err(format!(
                    "thinkingLevel {t:?} is not supported by {model}; use {}",
                    levels.join(" or ")
                ));
            }
            Thinking::Always => {
                return Err(format!(
                    "{model} always thinks and takes no thinkingLevel; leave it out{}",
                    who_takes("thinkingLevel", model, |k| matches!(
                        k.thinking,
                        Thinking::Levels(_)
                    ))
                ));
            }
            Thinking::None => {
                return Err(format!(
                    "{model} does not think, so it takes no thinkingLevel{}",
                    who_takes("thinkingLevel", model, |k| matches!(
                        k.thinking,
                        Thinking::Levels(_)
                    ))
                ));
            }
        }
    }
    if let Some(g) = given(asked.grounding) {
        let want = match g.to_ascii_lowercase().as_str() {
            "web" => Search {
                web: true,
                image: false,
            },
            "image" => Search {
                web: false,
                image: true,
            },
            "both" | "web+image" | "web,image" => Search {
                web: true,
                image: true,
            },
            "none" | "off" => Search::default(),
            _ => {
                return Err(format!(
                    "grounding {g:?} is not supported; use web, image or both"
                ));
            }
        };
        if want.web && !info.search.web {
            return Err(format!(
                "{model} cannot ground on Google Search{}",
                who_takes("grounding: web", model, |k| k.search.web)
            ));
        }
        if want.image && !info.search.image {
            return Err(format!(
                "{model} cannot ground on Google Image Search{}",
                who_takes("grounding: image", model, |k| k.search.image)
            ));
        }
        out.search = (want.web || want.image).then_some(want);
    }
    if let Some(p) = given(asked.person_generation) {
        let up = p.to_ascii_uppercase();
        if !PERSON_GENERATION.contains(&up.as_str()) {
            return Err(format!(
                "personGeneration {p:?} is not supported; use {}",
                PERSON_GENERATION.join(", ")
            ));
        }
        out.person_generation = Some(up);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(model: &str, ratio: Option<&str>, size: Option<&str>) -> Result<ImageOptions, String> {
        validate(
            model,
            AskedOptions {
                aspect_ratio: ratio,
                image_size: size,
                ..AskedOptions::default()
            },
        )
    }

    #[test]
    fn each_family_is_found_by_its_id() {
        assert_eq!(info("gemini-3.1-flash-image").family, Family::Flash31);
        assert_eq!(
            info("models/gemini-3.1-flash-image").family,
            Family::Flash31
        );
        assert_eq!(
            info("gemini-3.1-flash-lite-image").family,
            Family::FlashLite31
        );
        assert_eq!(info("gemini-3-pro-image").family, Family::Pro3);
        assert_eq!(info("gemini-3-pro-image-001").family, Family::Pro3);
        assert_eq!(info("gemini-2.5-flash-image").family, Family::Flash25);
        // Not every gemini-3 id is Pro any more.
        assert_eq!(info("gemini-3.5-flash-image").family, Family::Unknown);
        assert_eq!(info("gemini-3-pro-imagex").family, Family::Unknown);
    }

    #[test]
    fn flash_31_takes_512_and_the_wide_ratios() {
        let ok = sized("gemini-3.1-flash-image", Some("4:1"), Some("512")).expect("ok");
        assert_eq!(ok.aspect_ratio.as_deref(), Some("4:1"));
        assert_eq!(ok.image_size.as_deref(), Some("512"));
        assert_eq!(
            sized("gemini-3.1-flash-image", None, Some("4k"))
                .expect("ok")
                .image_size
                .as_deref(),
            Some("4K")
        );
    }

    #[test]
    fn refusals_name_the_model_that_takes_it() {
        let e = sized("gemini-3-pro-image", None, Some("512")).unwrap_err();
        assert!(
            e.contains("gemini-3-pro-image") && e.contains("1K, 2K, 4K"),
            "{e}"
        );
        assert!(e.contains("pass model: \"gemini-3.1-flash-image\""), "{e}");
        let e = sized("gemini-3-pro-image", Some("8:1"), None).unwrap_err();
        assert!(e.contains("gemini-3.1-flash-image"), "{e}");
        let e = sized("gemini-2.5-flash-image", None, Some("2K")).unwrap_err();
        assert!(
            e.contains("gemini-3.1-flash-image and gemini-3-pro-image"),
            "{e}"
        );
        let e = sized("gemini-3-pro-image", Some("7:5"), None).unwrap_err();
        assert!(e.contains("7:5") && e.contains("16:9"));
        assert!(sized("x", None, Some("8K")).is_err());
    }

    #[test]
    fn flash_25_never_sends_a_size() {
        let ok = sized("gemini-2.5-flash-image", Some("16:9"), Some("1k")).expect("ok");
        assert_eq!(ok.aspect_ratio.as_deref(), Some("16:9"));
        assert_eq!(ok.image_size, None);
    }

    #[test]
    fn thinking_grounding_and_people() {
        let asked = |model, t, g, p| {
            validate(
                model,
                AskedOptions {
                    thinking_level: t,
                    grounding: g,
                    person_generation: p,
                    ..AskedOptions::default()
                },
            )
        };
        let ok = asked(
            "gemini-3.1-flash-image",
            Some("high"),
            Some("both"),
            Some("allow_adult"),
        )
        .expect("ok");
        assert_eq!(ok.thinking_level.as_deref(), Some("HIGH"));
        assert_eq!(
            ok.search,
            Some(Search {
                web: true,
                image: true
            })
        );
        assert_eq!(ok.person_generation.as_deref(), Some("ALLOW_ADULT"));
        let e = asked("gemini-3-pro-image", Some("high"), None, None).unwrap_err();
        assert!(e.contains("always thinks") && e.contains("gemini-3.1-flash-image"));
        let e = asked("gemini-2.5-flash-image", Some("minimal"), None, None).unwrap_err();
        assert!(e.contains("does not think"), "{e}");
        let ok = asked("gemini-3-pro-image", None, Some("web"), None).expect("pro: web");
        assert_eq!(
            ok.search,
            Some(Search {
                web: true,
                image: false
            })
        );
        let e = asked("gemini-3-pro-image", None, Some("image"), None).unwrap_err();
        assert!(e.contains("Image Search") && e.contains("gemini-3.1-flash-image"));
        let e = asked("gemini-3.1-flash-lite-image", None, Some("web"), None).unwrap_err();
        assert!(
            e.contains("gemini-3.1-flash-image and gemini-3-pro-image"),
            "{e}"
        );
        assert!(asked("gemini-3.1-flash-image", Some("max"), None, None).is_err());
        assert!(asked("gemini-3.1-flash-image", None, None, Some("everyone")).is_err());
        assert!(asked("gemini-3.1-flash-image", None, Some("maps"), None).is_err());
    }

    #[test]
    fn retired_and_deprecated_models_point_to_successors() {
        assert_eq!(
            retired("gemini-2.5-flash-image-preview"),
            Some("gemini-3.1-flash-image")
        );
        assert_eq!(
            retired("gemini-3.1-flash-image-preview"),
            Some("gemini-3.1-flash-image")
        );
        assert_eq!(retired(DEFAULT_MODEL), None);
        assert_eq!(
            deprecated("gemini-2.5-flash-image"),
            Some("gemini-3.1-flash-image")
        );
        assert_eq!(info("gemini-3-pro-image").max_inputs, 14);
        assert_eq!(info("gemini-2.5-flash-image").max_inputs, 3);
        // Every successor is a model the table knows and nothing retired.
        for (_, new) in RETIRED.iter().chain(DEPRECATED) {
            assert_ne!(info(new).family, Family::Unknown, "{new}");
            assert!(retired(new).is_none() && deprecated(new).is_none());
        }
    }
}
