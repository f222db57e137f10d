//! Test support for the Gemini client: deterministic synthetic images of any
//! size (`images`) and an in-process fake of Google's Gemini image API that
//! imitates its wire format, quirks and failures (`fake_gemini`). Nothing here
//! talks to the network beyond the loopback listener the fake binds.

pub mod fake_gemini;
pub mod images;

/// Cases for the fuzz-style property tests: `default`, or `FUZZ_CASES` from
/// the environment for a long run (cargo-fuzz needs a nightly toolchain;
/// these run on stable), e.g.
/// `FUZZ_CASES=200000 cargo test --release --lib never_panic`.
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
