//! What a call costs, estimated the way Google bills it: input tokens,
//! image output tokens, text and thinking output tokens, each at the
//! model's rate, plus Google Search queries when the call was grounded.
//! The defaults are Google's list prices for the Gemini API's paid tier
//! as of `PRICES_AS_OF` (README, "Cost"); `--prices FILE` overrides any of
//! them. Estimates, not invoices: the free search tier, batch discounts and
//! currency are not modelled.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::extract::Usage;

/// When the default prices were taken from Google's pricing page.
pub const PRICES_AS_OF: &str = "2026-12-01";

/// US dollars per unit, as Google lists them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rates {
    /// Per million input tokens (text and images).
    pub input_per_million: f64,
    /// Per million output tokens of text and thinking.
    pub text_output_per_million: f64,
    /// Per million image output tokens (a 1K image is ~1,120 of them on
    /// Gemini 3 models, 1,290 on 2.5 Flash).
    pub image_output_per_million: f64,
    /// Per Google Search query a grounded call ran.
    #[serde(default)]
    pub search_query: f64,
}

/// Google lists $14 per 1,000 search queries for Gemini 3 models.
const SEARCH_QUERY: f64 = 0.014;

const DEFAULTS: &[(&str, Rates)] = &[
    (
        "gemini-3.1-flash-image",
        Rates {
            input_per_million: 0.50,
            text_output_per_million: 3.0,
            image_output_per_million: 60.0,
            search_query: SEARCH_QUERY,
        },
    ),
    (
        "gemini-3.1-flash-lite-image",
        Rates {
            input_per_million: 0.25,
            text_output_per_million: 1.50,
            image_output_per_million: 30.0,
            search_query: SEARCH_QUERY,
        },
    ),
    (
        "gemini-3-pro-image",
        Rates {
            input_per_million: 2.0,
            text_output_per_million: 12.0,
            image_output_per_million: 120.0,
            search_query: SEARCH_QUERY,
        },
    ),
    (
        "gemini-2.5-flash-image",
        Rates {
            input_per_million: 0.30,
            text_output_per_million: 2.50,
            image_output_per_million: 30.0,
            search_query: 0.035,
        },
    ),
];

/// Prices by model id; an id not listed (a gateway's, a new release) has
/// no estimate unless the table gives a `"*"` entry.
#[derive(Debug, Clone)]
pub struct PriceTable {
    rates: BTreeMap<String, Rates>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            rates: DEFAULTS
                .iter()
                .map(|(id, r)| (id.to_string(), *r))
                .collect(),
        }
    }
}

/// What one call cost, by Google's units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// `None` when the table has no price for the model.
    pub usd: Option<f64>,
    pub input_tokens: u64,
    pub image_tokens: u64,
    pub text_tokens: u64,
    pub search_queries: u64,
}

impl PriceTable {
    /// The defaults with the entries of a JSON file on top:
    /// `{"gemini-3-pro-image": {"inputPerMillion": 2, "textOutputPerMillion": 12,
    /// "imageOutputPerMillion": 120, "searchQuery": 0.014}, "*": {...}}`.
    pub fn with_overrides(json: &str) -> Result<Self, String> {
        let over: BTreeMap<String, Rates> =
            serde_json::from_str(json).map_err(|e| format!("price table: {e}"))?;
        let mut t = Self::default();
        for (id, r) in over {
            let fields = [
                r.input_per_million,
                r.text_output_per_million,
                r.image_output_per_million,
                r.search_query,
            ];
            if fields.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!("price table: {id}: prices must be numbers >= 0"));
            }
            t.rates.insert(id, r);
        }
        Ok(t)
    }

    /// The rates for a model id: its own entry, the entry of the id it is
    /// a release of (`gemini-3-pro-image-001`), or `"*"`.
    pub fn rates(&self, model: &str) -> Option<Rates> {
        let m = super::models::bare(model);
        self.rates
            .get(m)
            .or_else(|| {
                self.rates.iter().find_map(|(id, r)| {
                    m.strip_prefix(id.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
                        .then_some(r)
                })
            })
            .or_else(|| self.rates.get("*"))
            .copied()
    }

    /// The cost of a response's usage. Image tokens are the IMAGE entries
    /// of `candidatesTokensDetails`; without details, every candidate token
    /// is priced as an image token (the higher rate: an estimate errs high).
    pub fn estimate(&self, model: &str, usage: &Usage, search_queries: u64) -> Cost {
        let input = usage.prompt_token_count.unwrap_or(0);
        let candidates = usage.candidates_token_count.unwrap_or(0);
        let image = usage
            .image_token_count
            .unwrap_or(candidates)
            .min(candidates);
        let text = candidates - image + usage.thoughts_token_count.unwrap_or(0);
        let usd = self.rates(model).map(|r| {
            input as f64 * r.input_per_million / 1e6
                + image as f64 * r.image_output_per_million / 1e6
                + text as f64 * r.text_output_per_million / 1e6
                + search_queries as f64 * r.search_query
        });
        Cost {
            usd,
            input_tokens: input,
            image_tokens: image,
            text_tokens: text,
            search_queries,
        }
    }

    /// What one image of this model is expected to cost before the call
    /// (for the spend cap): a 4K output at the image rate, plus input.
    pub fn upper_bound(&self, model: &str) -> f64 {
        self.rates(model).map_or(0.0, |r| {
            // 4K on Gemini 3 models: 2,000 (Pro) to 2,520 (3.1 Flash)
            // image tokens; a few thousand input tokens, some thinking.
            2_520.0 * r.image_output_per_million / 1e6
                + 5_000.0 * r.input_per_million / 1e6
                + 2_000.0 * r.text_output_per_million / 1e6
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, candidates: u64, image: Option<u64>, thoughts: u64) -> Usage {
        Usage {
            prompt_token_count: Some(prompt),
            candidates_token_count: Some(candidates),
            thoughts_token_count: Some(thoughts),
            image_token_count: image,
            ..Usage::default()
        }
    }

    #[test]
    fn list_prices_give_the_per_image_figures_google_publishes() {
        let t = PriceTable::default();
        let one_k = |m| {
            t.estimate(m, &usage(0, 1120, Some(1120), 0), 0)
                .usd
                .expect("priced")
        };
        assert!((one_k("gemini-3.1-flash-image") - 0.0672).abs() < 1e-9);
        assert!((one_k("gemini-3-pro-image") - 0.1344).abs() < 1e-9);
        let flash25 = t
            .estimate("gemini-2.5-flash-image", &usage(0, 1290, None, 0), 0)
            .usd
            .expect("priced");
        assert!((flash25 - 0.0387).abs() < 1e-9);
        // A release of a listed model has its price; an unknown id none,
        // though its tokens are still counted.
        assert!(t.rates("gemini-3-pro-image-001").is_some());
        let unpriced = t.estimate("some-gateway-model", &usage(5, 7, None, 0), 0);
        assert_eq!((unpriced.usd, unpriced.input_tokens), (None, 5));
    }

    #[test]
    fn every_unit_is_counted_at_its_rate() {
        let t = PriceTable::default();
        let c = t.estimate(
            "gemini-3-pro-image",
            &usage(1_000, 1_140, Some(1_120), 200),
            2,
        );
        assert_eq!(
            (c.input_tokens, c.image_tokens, c.text_tokens),
            (1_000, 1_120, 220)
        );
        let want = 1_000.0 * 2.0 / 1e6 + 1_120.0 * 120.0 / 1e6 + 220.0 * 12.0 / 1e6 + 2.0 * 0.014;
        let usd = c.usd.expect("priced");
        assert!((usd - want).abs() < 1e-12, "{usd} {want}");
    }

    #[test]
    fn overrides_replace_and_add_entries_and_refuse_nonsense() {
        let t = PriceTable::with_overrides(
            r#"{"gemini-3-pro-image": {"inputPerMillion": 1, "textOutputPerMillion": 6, "imageOutputPerMillion": 60},
                "*": {"inputPerMillion": 0, "textOutputPerMillion": 0, "imageOutputPerMillion": 10}}"#,
        )
        .expect("valid");
        assert_eq!(
            t.rates("gemini-3-pro-image")
                .map(|r| r.image_output_per_million),
            Some(60.0)
        );
        assert_eq!(
            t.rates("gateway/x").map(|r| r.image_output_per_million),
            Some(10.0)
        );
        assert!(PriceTable::with_overrides(r#"{"m": {"inputPerMillion": -1, "textOutputPerMillion": 0, "imageOutputPerMillion": 0}}"#).is_err());
        assert!(PriceTable::with_overrides(r#"{"m": {"inputPerMilion": 1}}"#).is_err());
    }
}
