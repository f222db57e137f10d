//! Test support for the Gemini client: deterministic synthetic images of any
//! size (`images`) and an in-process fake of Google's Gemini image API that
//! imitates its wire format, quirks and failures (`fake_gemini`). Nothing here
//! talks to the network beyond the loopback listener the fake binds.

pub mod fake_gemini;
pub mod images;
