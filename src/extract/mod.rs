//! Bytes in, image blocks out. The extractor reads a Gemini response body
//! (server-sent events, a streamed JSON array, or one pretty-printed object)
//! in whatever pieces the network delivers, and emits sealed image blocks as
//! the base64 inside one JSON string is decoded. It never holds a whole SSE
//! line, a whole JSON value or a whole image: only the current block, small
//! capped strings (text, mime type, finish reason) and a stack of JSON
//! frames. It does no I/O and knows nothing about where the blocks go.

mod b64;
mod hasher;
mod scanner;
pub mod sniff;

use bytes::Bytes;

pub use crate::memory::pool::BlockPool;
pub use scanner::Limits;
use scanner::Scanner;

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `streamGenerateContent?alt=sse`: `data: <json>` events.
    Sse,
    /// `generateContent` (one object) or `streamGenerateContent` without
    /// `alt=sse` (an array of objects).
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the response is not valid JSON ({0})")]
    Syntax(&'static str),
    #[error("the image data is not valid base64 ({0})")]
    InvalidBase64(&'static str),
    #[error("the image is larger than the configured cap of {0} bytes")]
    ImageTooLarge(u64),
    #[error("the response was cut off before it was complete ({0})")]
    Truncated(&'static str),
}

/// One image part has started or continued: a sealed block of its bytes.
#[derive(Debug)]
pub struct ImageBlock {
    /// Sequence number of the image part within the response.
    pub image: u32,
    /// Block number within the image, from 0.
    pub index: u32,
    pub data: Bytes,
}

/// An image part has ended; everything known about it.
#[derive(Debug, Clone)]
pub struct ImageEnd {
    pub image: u32,
    pub declared_mime: Option<String>,
    /// An interim "thinking" image: not the result.
    pub thought: bool,
    pub thought_signature: Option<String>,
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// The last bytes of the image, for the completeness check.
    pub tail: Vec<u8>,
}

#[derive(Debug)]
pub enum Event {
    Block(ImageBlock),
    End(ImageEnd),
}

/// Token counts as Gemini reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_token_count: Option<u64>,
    pub candidates_token_count: Option<u64>,
    pub total_token_count: Option<u64>,
    pub thoughts_token_count: Option<u64>,
    /// The IMAGE entries of `candidatesTokensDetails`: what is billed at
    /// the image output rate. `None` when the response gave no details.
    pub image_token_count: Option<u64>,
}

/// Where a grounded image's facts came from: `groundingMetadata`, kept
/// under `MAX_GROUNDING_BYTES` (queries and sources past it are dropped
/// and `truncated` says so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grounding {
    pub web_queries: Vec<String>,
    pub image_queries: Vec<String>,
    pub sources: Vec<GroundingSource>,
    pub truncated: bool,
}

impl Grounding {
    pub fn is_empty(&self) -> bool {
        self.web_queries.is_empty() && self.image_queries.is_empty() && self.sources.is_empty()
    }

    /// Search queries run, web and image.
    pub fn queries(&self) -> u64 {
        (self.web_queries.len() + self.image_queries.len()) as u64
    }
}

/// One `groundingChunks` entry: a web page, or an image and the page it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroundingSource {
    /// `web` or `image`.
    pub kind: &'static str,
    pub title: Option<String>,
    /// The page.
    pub uri: Option<String>,
    /// The image itself (image search).
    pub image_uri: Option<String>,
    pub domain: Option<String>,
}

/// The most grounding text one response keeps (queries, titles, links).
pub const MAX_GROUNDING_BYTES: usize = 16 << 10;

/// An `{"error": ...}` object found inside a response stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamError {
    pub code: Option<u64>,
    pub message: String,
    pub status: String,
}

/// Everything but the image bytes, known when the body has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub text: String,
    pub text_truncated: bool,
    pub finish_reason: Option<String>,
    pub finish_message: Option<String>,
    pub block_reason: Option<String>,
    pub block_message: Option<String>,
    pub usage: Usage,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
    pub error: Option<StreamError>,
    pub grounding: Grounding,
    /// How many image parts were seen (thought images included).
    pub images: u32,
}

/// The incremental extractor: feed it body pieces, collect events.
pub struct Extractor {
    framing: Framing,
    sse: SseFramer,
    scanner: Scanner,
}

impl Extractor {
    /// An extractor with its own small pool of block buffers.
    pub fn new(framing: Framing, limits: Limits) -> Self {
        Self::with_pool(framing, limits, BlockPool::new(limits.block_size, 2))
    }

    /// An extractor whose blocks come from (and return to) a shared pool;
    /// the pool's block size wins over `limits.block_size`.
    pub fn with_pool(framing: Framing, limits: Limits, pool: BlockPool) -> Self {
        Self {
            framing,
            sse: SseFramer::default(),
            scanner: Scanner::new(limits, pool, framing == Framing::Sse),
        }
    }

    /// Process one piece of the body. Events found in it are appended to
    /// `out`; a piece of network size seals at most a block or two.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<(), ExtractError> {
        match self.framing {
            Framing::Json => self.scanner.feed(input, out),
            Framing::Sse => self.sse.feed(input, &mut self.scanner, out),
        }
    }

    /// The body has ended. Anything left open means it was cut off.
    pub fn finish(mut self) -> Result<Summary, ExtractError> {
        if self.framing == Framing::Sse {
            self.sse.finish(&mut self.scanner)?;
        }
        self.scanner.finish()
    }
}

/// Server-sent events framing: strips `data:` prefixes and line ends and
/// passes the payload through to the scanner without buffering a line.
#[derive(Default)]
struct SseFramer {
    state: SseState,
    field: [u8; 8],
    field_len: usize,
    /// A data line has been passed on in the current event.
    event_has_data: bool,
    /// The previous byte was '\r': a following '\n' belongs to it.
    after_cr: bool,
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum SseState {
    #[default]
    LineStart,
    Field,
    /// Right after `data:`; one optional space is dropped.
    DataStart,
    Data,
    Ignore,
}

impl SseFramer {
    fn feed(
        &mut self,
        mut input: &[u8],
        scanner: &mut Scanner,
        out: &mut Vec<Event>,
    ) -> Result<(), ExtractError> {
        while !input.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match self.state {
                SseState::LineStart => {
                    let c = input[0];
                    if c == b'\r' || c == b'\n' {
                        self.after_cr = c == b'\r';
                        input = &input[1..];
                        self.dispatch(scanner)?;
                    } else {
                        self.field_len = 0;
                        self.state = SseState::Field;
                    }
                }
                SseState::Field => {
                    let c = input[0];
                    input = &input[1..];
                    match c {
                        b':' => {
                            self.state = if &self.field[..self.field_len] == b"data" {
                                SseState::DataStart
                            } else {
                                SseState::Ignore
                            };
                        }
                        b'\r' | b'\n' => {
                            // A field with no colon has an empty value.
                            self.after_cr = c == b'\r';
                            if &self.field[..self.field_len] == b"data" {
                                self.begin_data_line(scanner, out)?;
                            }
                            self.state = SseState::LineStart;
                        }
                        _ => {
                            if self.field_len < self.field.len() {
                                self.field[self.field_len] = c;
                                self.field_len += 1;
                            } else {
                                // Longer than any field we act on.
                                self.field_len = self.field.len();
                                self.field[0] = b'-';
                            }
                        }
                    }
                }
                SseState::DataStart => {
                    if input[0] == b' ' {
                        input = &input[1..];
                    }
                    self.begin_data_line(scanner, out)?;
                    self.state = SseState::Data;
                }
                SseState::Data => match memchr::memchr2(b'\r', b'\n', input) {
                    Some(i) => {
                        scanner.feed(&input[..i], out)?;
                        self.after_cr = input[i] == b'\r';
                        input = &input[i + 1..];
                        self.state = SseState::LineStart;
                    }
                    None => {
                        scanner.feed(input, out)?;
                        input = &[];
                    }
                },
                SseState::Ignore => match memchr::memchr2(b'\r', b'\n', input) {
                    Some(i) => {
                        self.after_cr = input[i] == b'\r';
                        input = &input[i + 1..];
                        self.state = SseState::LineStart;
                    }
                    None => input = &[],
                },
            }
        }
        Ok(())
    }

    fn begin_data_line(
        &mut self,
        scanner: &mut Scanner,
        out: &mut Vec<Event>,
    ) -> Result<(), ExtractError> {
        // Data lines of one event are joined with a newline, which is
        // whitespace to JSON.
        if self.event_has_data {
            scanner.feed(b"\n", out)?;
        }
        self.event_has_data = true;
        Ok(())
    }

    fn dispatch(&mut self, scanner: &mut Scanner) -> Result<(), ExtractError> {
        if self.event_has_data {
            self.event_has_data = false;
            scanner.end_value()?;
        }
        Ok(())
    }

    fn finish(&mut self, scanner: &mut Scanner) -> Result<(), ExtractError> {
        // A last event without its blank line still counts if its JSON is
        // whole; the scanner decides.
        if self.state != SseState::Data && self.state != SseState::LineStart {
            return Ok(());
        }
        self.dispatch(scanner)
    }
}

#[cfg(test)]
mod tests;
