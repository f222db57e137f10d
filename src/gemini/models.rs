//! What each Gemini image model accepts, as documented (late 2026). Unknown
//! model ids (gateways, new releases) are let through with the widest
//! settings rather than refused: the API will say if it disagrees.

pub const DEFAULT_MODEL: &str = "gemini-2.5-flash-image";

/// Retired ids and what replaced them.
pub const RETIRED: &[(&str, &str)] = &[
    ("gemini-2.5-flash-image-preview", "gemini-2.5-flash-image"),
    ("gemini-3-pro-image-preview", "gemini-3-pro-image"),
];

pub const ASPECT_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// gemini-2.5-flash-image: 1K output only, up to 3 input images.
    Flash25,
    /// gemini-3-pro-image: 1K/2K/4K, thinking, up to 14 inputs.
    Pro3,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    pub family: Family,
    pub sizes: &'static [&'static str],
    pub max_inputs: usize,
    pub takes_heic: bool,
}

pub fn info(model: &str) -> ModelInfo {
    let m = model.rsplit('/').next().unwrap_or(model);
    if m.starts_with("gemini-2.5-flash-image") {
        ModelInfo {
            family: Family::Flash25,
            sizes: &["1K"],
            max_inputs: 3,
            takes_heic: false,
        }
    } else if m.starts_with("gemini-3") && m.contains("image") {
        ModelInfo {
            family: Family::Pro3,
            sizes: &["1K", "2K", "4K"],
            max_inputs: 14,
            takes_heic: true,
        }
    } else {
        ModelInfo {
            family: Family::Unknown,
            sizes: &["1K", "2K", "4K"],
            max_inputs: 14,
            takes_heic: true,
        }
    }
}

/// The replacement for a retired model id, if it is one.
pub fn retired(model: &str) -> Option<&'static str> {
    RETIRED
        .iter()
        .find(|(old, _)| *old == model)
        .map(|(_, new)| *new)
}

/// Validated image settings, ready for `generationConfig.imageConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    pub aspect_ratio: Option<String>,
    pub image_size: Option<String>,
}

/// Check `aspectRatio` and `imageSize` against the model's documented
/// values. Sizes are accepted in any case ("2k") and sent as the API wants.
pub fn validate(
    model: &str,
    aspect_ratio: Option<&str>,
    image_size: Option<&str>,
) -> Result<ImageOptions, String> {
    let aspect_ratio = match aspect_ratio.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(r) if ASPECT_RATIOS.contains(&r) => Some(r.to_string()),
        Some(r) => {
            return Err(format!(
                "aspectRatio {r:?} is not supported; use one of {}",
                ASPECT_RATIOS.join(", ")
            ));
        }
    };
    let info = info(model);
    let image_size = match image_size.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let up = s.to_ascii_uppercase();
            if !["1K", "2K", "4K"].contains(&up.as_str()) {
                return Err(format!(
                    "imageSize {s:?} is not supported; use 1K, 2K or 4K"
                ));
            }
            if !info.sizes.contains(&up.as_str()) {
                return Err(format!(
                    "imageSize {up} needs a Gemini 3 image model (set GEMINI_MODEL=gemini-3-pro-image); {model} makes 1K images only"
                ));
            }
            // 1K is the only size 2.5 Flash makes; sending it is redundant.
            (info.family != Family::Flash25).then_some(up)
        }
    };
    Ok(ImageOptions {
        aspect_ratio,
        image_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_makes_1k_only() {
        assert!(validate("gemini-2.5-flash-image", None, Some("2K")).is_err());
        let ok = validate("gemini-2.5-flash-image", Some("16:9"), Some("1k")).expect("ok");
        assert_eq!(ok.aspect_ratio.as_deref(), Some("16:9"));
        assert_eq!(ok.image_size, None);
    }

    #[test]
    fn pro_takes_4k_and_bad_values_are_named() {
        let ok = validate("gemini-3-pro-image", None, Some("4k")).expect("ok");
        assert_eq!(ok.image_size.as_deref(), Some("4K"));
        let e = validate("gemini-3-pro-image", Some("7:5"), None).unwrap_err();
        assert!(e.contains("7:5") && e.contains("16:9"));
        assert!(validate("x", None, Some("8K")).is_err());
    }

    #[test]
    fn retired_models_point_to_successors() {
        assert_eq!(
            retired("gemini-2.5-flash-image-preview"),
            Some("gemini-2.5-flash-image")
        );
        assert_eq!(retired(DEFAULT_MODEL), None);
        assert_eq!(info("gemini-3-pro-image").max_inputs, 14);
        assert_eq!(info(DEFAULT_MODEL).max_inputs, 3);
    }
}
