//! The `fake:NAME[=VALUE]` prompt directives that choose each reply.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug)]
pub(super) struct Directives {
    pub(super) size: usize,
    pub(super) format: Format,
    pub(super) seed: Option<u64>,
    pub(super) label: Option<String>,
    pub(super) images: usize,
    pub(super) mime_after: bool,
    pub(super) sig_before: bool,
    pub(super) sig: bool,
    pub(super) thoughts: usize,
    pub(super) thought_after: bool,
    /// Draw a picture from the prompt instead of incompressible noise: a
    /// PNG, or with `format=jpeg` a grainy JPEG as big in pixels as that
    /// size's noise JPEG.
    pub(super) picture: bool,
    pub(super) text: bool,
    pub(super) bigtext: Option<usize>,
    pub(super) echo_sha: bool,
    pub(super) safety: bool,
    pub(super) blocked: Option<String>,
    pub(super) finish: Option<String>,
    pub(super) message: Option<String>,
    pub(super) status: Option<u16>,
    pub(super) times: u32,
    pub(super) quota_day: bool,
    pub(super) retry: String,
    pub(super) truncate: bool,
    pub(super) truncate_after_image: bool,
    pub(super) badbase64: bool,
    pub(super) midstream_error: bool,
    pub(super) drip: Duration,
    pub(super) latency: Option<Duration>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            size: DEFAULT_IMAGE_BYTES,
            format: Format::Png,
            seed: None,
            label: None,
            images: 1,
            mime_after: false,
            sig_before: false,
            sig: false,
            thoughts: 0,
            thought_after: false,
            picture: false,
            text: false,
            bigtext: None,
            echo_sha: false,
            safety: false,
            blocked: None,
            finish: None,
            message: None,
            status: None,
            times: 0,
            quota_day: false,
            retry: "1".to_string(),
            truncate: false,
            truncate_after_image: false,
            badbase64: false,
            midstream_error: false,
            drip: Duration::ZERO,
            latency: None,
        }
    }
}

impl Directives {
    /// Reads every `fake:NAME[=VALUE]` token; tokens are split on whitespace
    /// and commas, and may carry sentence punctuation around them. Unknown
    /// names and bad values are errors so a typo in a test fails loudly.
    pub(super) fn parse(prompt: &str) -> Result<Directives, String> {
        let mut d = Directives::default();
        let tokens = prompt
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(|t| t.trim_matches(|c: char| "\"'()[]{};.".contains(c)));
        for token in tokens {
            let Some(directive) = token.strip_prefix("fake:") else {
                continue;
            };
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), Some(v)),
                None => (directive.to_ascii_lowercase(), None),
            };
            let need = |v: Option<&str>| {
                v.filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("fake:{name} needs a value"))
                    .map(str::to_string)
            };
            let bad = |v: &str| format!("bad value for fake:{name}: {v:?}");
            match name.as_str() {
                "size" => {
                    let v = need(value)?;
                    d.size = parse_size(&v).ok_or_else(|| bad(&v))?;
                }
                "format" => {
                    let v = need(value)?;
                    d.format = Format::parse(&v).ok_or_else(|| bad(&v))?;
                }
                "seed" => {
                    let v = need(value)?;
                    d.seed = Some(v.parse().map_err(|_| bad(&v))?);
                }
                "label" => d.label = Some(need(value)?),
                "images" => {
                    let v = need(value)?;
                    d.images = v.parse().ok().filter(|n| *n <= 16).ok_or_else(|| bad(&v))?;
                }
                "order" => {
                    let v = need(value)?;
                    for o in v.split('+') {
                        match o.to_ascii_lowercase().as_str() {
                            "mime-after" => d.mime_after = true,
                            "sig-before" => d.sig_before = true,
                            _ => return Err(bad(o)),
                        }
                    }
                }
                "sig" => d.sig = true,
                "thought" => {
                    d.thoughts = match value {
                        None => 1,
                        Some(v) => v.parse().ok().filter(|n| *n <= 8).ok_or_else(|| bad(v))?,
                    };
                }
                "picture" => {
                    d.picture = true;
                }
                "thought-after" => {
                    d.thought_after = true;
                    d.thoughts = d.thoughts.max(1);
                }
                "text" => d.text = true,
                "bigtext" => {
                    let v = need(value)?;
                    d.bigtext = Some(parse_size(&v).ok_or_else(|| bad(&v))?);
                }
                "echo-sha" => d.echo_sha = true,
                "safety" => d.safety = true,
                "blocked" => {
                    d.blocked = Some(value.unwrap_or("PROHIBITED_CONTENT").to_ascii_uppercase());
                }
                "finish" => d.finish = Some(need(value)?.to_ascii_uppercase()),
                "message" => d.message = Some(need(value)?.replace('_', " ")),
                "status" => {
                    let v = need(value)?;
                    d.status = Some(
                        v.parse()
                            .ok()
                            .filter(|c| (400..600).contains(c))
                            .ok_or_else(|| bad(&v))?,
                    );
                }
                "times" => {
                    let v = need(value)?;
                    d.times = v.parse().map_err(|_| bad(&v))?;
                }
                "quota" => {
                    let v = need(value)?;
                    d.quota_day = match v.to_ascii_lowercase().as_str() {
                        "day" => true,
                        "minute" => false,
                        _ => return Err(bad(&v)),
                    };
                }
                "retry" => {
                    let v = need(value)?;
                    let v = v.trim_end_matches('s');
                    let ok = v.parse::<f64>().is_ok_and(|s| s.is_finite() && s >= 0.0);
                    if !ok {
                        return Err(bad(v));
                    }
                    d.retry = v.to_string();
                }
                "truncate" => d.truncate = true,
                "truncate-after-image" => d.truncate_after_image = true,
                "badbase64" => d.badbase64 = true,
                "midstream-error" => d.midstream_error = true,
                "drip" => {
                    let v = need(value)?;
                    d.drip = Duration::from_millis(v.parse().map_err(|_| bad(&v))?);
                }
                "latency" => {
                    let v = need(value)?;
                    d.latency = Some(Duration::from_millis(v.parse().map_err(|_| bad(&v))?));
                }
                _ => {
                    return Err(format!(
                        "unknown directive fake:{name}; known: {DIRECTIVES}"
                    ));
                }
            }
        }
        Ok(d)
    }
}

/// `123`, `1.5MiB`, `512KiB`, `2MB`, `64k`; binary units for K/KiB/M/MiB.
pub(super) fn parse_size(s: &str) -> Option<usize> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1000.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1_000_000.0,
        _ => return None,
    };
    let n = (num * mult).round();
    (n.is_finite() && n >= 0.0 && n <= MAX_SIZE as f64).then_some(n as usize)
}
