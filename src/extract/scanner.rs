//! A push parser for the JSON of Gemini responses. It tracks where it is
//! (`candidates[].content.parts[].inlineData.data`, `usageMetadata`, ...)
//! with a stack of small frames, captures the few short strings it needs
//! under caps, streams the image string into the base64 decoder, and skips
//! everything else without copying it. Key order is never assumed: a part's
//! facts are gathered while it is open and reported when it closes.

use super::b64::{B64Blocks, Sealed};
use super::{
    Event, ExtractError, GroundingSource, ImageBlock, ImageEnd, MAX_GROUNDING_BYTES, StreamError,
    Summary,
};
use crate::memory::pool::BlockPool;

/// Caps that keep one response's bookkeeping small.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub block_size: usize,
    pub max_image_bytes: u64,
    /// All text parts together.
    pub max_text_bytes: usize,
    pub max_signature_bytes: usize,
    /// Hash image bytes (sha256) as blocks are sealed. Off only in
    /// benchmarks that measure parsing and decoding alone.
    pub hash: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            block_size: 4 << 20,
            max_image_bytes: 100 << 20,
            max_text_bytes: 32 << 10,
            max_signature_bytes: 256 << 10,
            hash: true,
        }
    }
}

const MAX_DEPTH: usize = 64;
const SMALL_CAP: usize = 4 << 10;

/// Where a container sits in a Gemini response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Root,
    Response,
    Candidates,
    Candidate,
    Content,
    Parts,
    Part,
    InlineData,
    PromptFeedback,
    Usage,
    Error,
    ErrorDetails,
    ErrorDetail,
    /// `candidates[].groundingMetadata` and what is read inside it.
    Grounding,
    WebQueries,
    ImageQueries,
    Chunks,
    Chunk,
    ChunkSource,
    /// `usageMetadata.candidatesTokensDetails[]`.
    TokenDetails,
    TokenDetail,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    None,
    Candidates,
    Content,
    Parts,
    Text,
    Thought,
    ThoughtSignature,
    InlineData,
    Data,
    MimeType,
    FinishReason,
    FinishMessage,
    PromptFeedback,
    BlockReason,
    BlockReasonMessage,
    UsageMetadata,
    PromptTokenCount,
    CandidatesTokenCount,
    TotalTokenCount,
    ThoughtsTokenCount,
    ModelVersion,
    ResponseId,
    Error,
    Code,
    Message,
    Status,
    Details,
    GroundingMetadata,
    WebSearchQueries,
    ImageSearchQueries,
    GroundingChunks,
    Web,
    Image,
    Uri,
    ImageUri,
    Title,
    Domain,
    CandidatesTokensDetails,
    Modality,
    TokenCount,
    Other,
}

fn key_of(k: &[u8]) -> Key {
    match k {
        b"candidates" => Key::Candidates,
        b"content" => Key::Content,
        b"parts" => Key::Parts,
        b"text" => Key::Text,
        b"thought" => Key::Thought,
        b"thoughtSignature" | b"thought_signature" => Key::ThoughtSignature,
        b"inlineData" | b"inline_data" => Key::InlineData,
        b"data" => Key::Data,
        b"mimeType" | b"mime_type" => Key::MimeType,
        b"finishReason" | b"finish_reason" => Key::FinishReason,
        b"finishMessage" | b"finish_message" => Key::FinishMessage,
        b"promptFeedback" | b"prompt_feedback" => Key::PromptFeedback,
        b"blockReason" | b"block_reason" => Key::BlockReason,
        b"blockReasonMessage" | b"block_reason_message" => Key::BlockReasonMessage,
        b"usageMetadata" | b"usage_metadata" => Key::UsageMetadata,
        b"promptTokenCount" => Key::PromptTokenCount,
        b"candidatesTokenCount" => Key::CandidatesTokenCount,
        b"totalTokenCount" => Key::TotalTokenCount,
        b"thoughtsTokenCount" => Key::ThoughtsTokenCount,
        b"modelVersion" => Key::ModelVersion,
        b"responseId" => Key::ResponseId,
        b"error" => Key::Error,
        b"code" => Key::Code,
        b"message" => Key::Message,
        b"status" => Key::Status,
        b"details" => Key::Details,
        b"groundingMetadata" | b"grounding_metadata" => Key::GroundingMetadata,
        b"webSearchQueries" | b"web_search_queries" => Key::WebSearchQueries,
        b"imageSearchQueries" | b"image_search_queries" => Key::ImageSearchQueries,
        b"groundingChunks" | b"grounding_chunks" => Key::GroundingChunks,
        b"web" => Key::Web,
        b"image" => Key::Image,
        b"uri" | b"sourceUri" | b"source_uri" => Key::Uri,
        b"imageUri" | b"image_uri" => Key::ImageUri,
        b"title" => Key::Title,
        b"domain" => Key::Domain,
        b"candidatesTokensDetails" | b"candidates_tokens_details" => Key::CandidatesTokensDetails,
        b"modality" => Key::Modality,
        b"tokenCount" | b"token_count" => Key::TokenCount,
        _ => Key::Other,
    }
}

fn child_ctx(parent: Ctx, key: Key, array: bool) -> Ctx {
    use Ctx as C;
    match (parent, key, array) {
        (C::Root, _, true) => C::Root,
        (C::Root, _, false) => C::Response,
        (C::Response, Key::Candidates, true) => C::Candidates,
        (C::Candidates, Key::None, false) => C::Candidate,
        (C::Candidate, Key::Content, false) => C::Content,
        (C::Content, Key::Parts, true) => C::Parts,
        (C::Parts, Key::None, false) => C::Part,
        (C::Part, Key::InlineData, false) => C::InlineData,
        (C::Response, Key::PromptFeedback, false) => C::PromptFeedback,
        (C::Response, Key::UsageMetadata, false) => C::Usage,
        (C::Response, Key::Error, false) => C::Error,
        (C::Error, Key::Details, true) => C::ErrorDetails,
        (C::ErrorDetails, Key::None, false) => C::ErrorDetail,
        (C::Candidate, Key::GroundingMetadata, false) => C::Grounding,
        (C::Grounding, Key::WebSearchQueries, true) => C::WebQueries,
        (C::Grounding, Key::ImageSearchQueries, true) => C::ImageQueries,
        (C::Grounding, Key::GroundingChunks, true) => C::Chunks,
        (C::Chunks, Key::None, false) => C::Chunk,
        (C::Chunk, Key::Web | Key::Image, false) => C::ChunkSource,
        (C::Usage, Key::CandidatesTokensDetails, true) => C::TokenDetails,
        (C::TokenDetails, Key::None, false) => C::TokenDetail,
        _ => C::Ignore,
    }
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    ctx: Ctx,
    object: bool,
    /// The key whose value is being read (objects only).
    key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between top-level values (or before the first).
    Top,
    Value,
    /// After `{` or `,` in an object: a key or (after `{`) the end.
    KeyOrEnd,
    Key,
    Colon,
    After,
    Str,
    /// Inside a string, after a backslash.
    Escape,
    /// Inside `\uXXXX`: hex digits read so far.
    Unicode(u8),
    Literal,
}

/// Where the characters of the current string go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Skip,
    Key,
    Text,
    Signature,
    Image,
    Small(Small),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Small {
    Mime,
    FinishReason,
    FinishMessage,
    BlockReason,
    BlockMessage,
    ModelVersion,
    ResponseId,
    ErrorMessage,
    ErrorStatus,
    WebQuery,
    ImageQuery,
    SourceUri,
    SourceImageUri,
    SourceTitle,
    SourceDomain,
    Modality,
}

#[derive(Default)]
struct Part {
    thought: bool,
    mime: Option<String>,
    signature: Option<String>,
    image: Option<u32>,
    /// The image was a thought known up front, so its bytes were skipped.
    skipped: bool,
}

pub struct Scanner {
    limits: Limits,
    pool: BlockPool,
    /// SSE: one value per event; JSON: exactly one value in all.
    per_event: bool,
    state: State,
    stack: Vec<Frame>,
    sink: Sink,
    buf: Vec<u8>,
    /// Literal (number, true, false, null) being read.
    lit: Vec<u8>,
    unicode: u32,
    high_surrogate: Option<u32>,
    values_done: u32,
    part: Option<Part>,
    decoder: Option<B64Blocks>,
    images: u32,
    sealed: Vec<Sealed>,
    summary: Summary,
    text: Vec<u8>,
    signature_overflow: bool,
    /// Totals of the image string that just closed, reported with its part.
    pending_end: Option<(u64, [u8; 32], Vec<u8>)>,
    /// The grounding source being read, and the bytes kept so far.
    source: Option<GroundingSource>,
    grounding_bytes: usize,
    /// The token detail being read (modality, count), and the IMAGE
    /// tokens of the usageMetadata object being read.
    detail: (Option<String>, Option<u64>),
    usage_images: Option<u64>,
}

impl Scanner {
    pub fn new(limits: Limits, pool: BlockPool, per_event: bool) -> Self {
        Self {
            limits,
            pool,
            per_event,
            state: State::Top,
            stack: Vec::with_capacity(16),
            sink: Sink::Skip,
            buf: Vec::new(),
            lit: Vec::new(),
            unicode: 0,
            high_surrogate: None,
            values_done: 0,
            part: None,
            decoder: None,
            images: 0,
            sealed: Vec::new(),
            summary: Summary::default(),
            text: Vec::new(),
            signature_overflow: false,
            pending_end: None,
            source: None,
            grounding_bytes: 0,
            detail: (None, None),
            usage_images: None,
        }
    }

    /// An SSE event ended: its JSON value must be complete.
    pub fn end_value(&mut self) -> Result<(), ExtractError> {
        if self.state == State::Literal {
            self.end_literal()?;
        }
        if self.state != State::Top || !self.stack.is_empty() {
            return Err(ExtractError::Truncated("an event ended inside its JSON"));
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Summary, ExtractError> {
        if self.state == State::Literal {
            self.end_literal()?;
        }
        if self.state != State::Top || !self.stack.is_empty() {
            return Err(ExtractError::Truncated(
                "the body ended inside a JSON value",
            ));
        }
        if self.values_done == 0 {
            return Err(ExtractError::Truncated("the body was empty"));
        }
        self.summary.text = String::from_utf8_lossy(&self.text).into_owned();
        self.summary.images = self.images;
        Ok(self.summary)
    }

    fn top(&self) -> Option<Frame> {
        self.stack.last().copied()
    }

    /// Context and key of the value about to be read.
    fn value_site(&self) -> (Ctx, Key) {
        match self.top() {
            None => (Ctx::Root, Key::None),
            Some(f) if f.object => (f.ctx, f.key),
            Some(f) => (f.ctx, Key::None),
        }
    }

    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), ExtractError> {
        while !input.is_empty() {
            match self.state {
                State::Str => {
                    input = self.string_run(input, out)?;
                    continue;
                }
                State::Escape => {
                    let c = input[0];
                    input = &input[1..];
                    self.escape(c, out)?;
                    continue;
                }
                State::Unicode(n) => {
                    let c = input[0];
                    input = &input[1..];
                    let d = (c as char)
                        .to_digit(16)
                        .ok_or(ExtractError::Syntax("bad \\u escape"))?;
                    self.unicode = self.unicode << 4 | d;
                    if n == 3 {
                        self.state = State::Str;
                        self.unicode_done(out)?;
                    } else {
                        self.state = State::Unicode(n + 1);
                    }
                    continue;
                }
                State::Literal => {
                    let c = input[0];
                    if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.') {
                        if self.lit.len() < 40 {
                            self.lit.push(c);
                        }
                        input = &input[1..];
                    } else {
                        self.end_literal()?;
                    }
                    continue;
                }
                _ => {}
            }
            let c = input[0];
            input = &input[1..];
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                continue;
            }
            match self.state {
                State::Top => {
                    if self.per_event || self.values_done == 0 {
                        self.begin_value(c, out)?;
                    } else {
                        return Err(ExtractError::Syntax("data after the end of the response"));
                    }
                }
                State::Value => self.begin_value(c, out)?,
                State::KeyOrEnd => match c {
                    b'"' => self.begin_key(),
                    b'}' => self.close(true, out)?,
                    _ => return Err(ExtractError::Syntax("expected a key")),
                },
                State::Key => match c {
                    b'"' => self.begin_key(),
                    _ => return Err(ExtractError::Syntax("expected a key")),
                },
                State::Colon => match c {
                    b':' => self.state = State::Value,
                    _ => return Err(ExtractError::Syntax("expected ':'")),
                },
                State::After => match (c, self.top()) {
                    (b',', Some(f)) if f.object => self.state = State::Key,
                    (b',', Some(_)) => self.state = State::Value,
                    (b'}', _) => self.close(true, out)?,
                    (b']', _) => self.close(false, out)?,
                    _ => return Err(ExtractError::Syntax("expected ',' or a closing bracket")),
                },
                State::Str | State::Escape | State::Unicode(_) | State::Literal => {
                    unreachable!("handled above")
                }
            }
        }
        Ok(())
    }

    fn begin_key(&mut self) {
        self.sink = Sink::Key;
        self.buf.clear();
        self.state = State::Str;
    }

    fn begin_value(&mut self, c: u8, out: &mut Vec<Event>) -> Result<(), ExtractError> {
        let (ctx, key) = self.value_site();
        match c {
            b'{' | b'[' => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(ExtractError::Syntax("nested too deeply"));
                }
                let object = c == b'{';
                let child = child_ctx(ctx, key, !object);
                match child {
                    Ctx::Part => self.part = Some(Part::default()),
                    Ctx::ChunkSource => {
                        self.source = Some(GroundingSource {
                            kind: if key == Key::Image { "image" } else { "web" },
                            ..GroundingSource::default()
                        });
                    }
                    Ctx::Usage => self.usage_images = None,
                    Ctx::TokenDetail => self.detail = (None, None),
                    _ => {}
                }
                self.stack.push(Frame {
                    ctx: child,
                    object,
                    key: Key::None,
                });
                self.state = if object {
                    State::KeyOrEnd
                } else {
                    State::Value
                };
            }
            b']' => {
                // Only legal right after '['.
                match self.top() {
                    Some(f) if !f.object => self.close(false, out)?,
                    _ => return Err(ExtractError::Syntax("unexpected ']'")),
                }
            }
            b'"' => {
                self.sink = self.string_sink(ctx, key)?;
                self.buf.clear();
                self.state = State::Str;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                self.lit.clear();
                self.lit.push(c);
                self.state = State::Literal;
            }
            _ => return Err(ExtractError::Syntax("expected a value")),
        }
        Ok(())
    }

    fn string_sink(&mut self, ctx: Ctx, key: Key) -> Result<Sink, ExtractError> {
        Ok(match (ctx, key) {
            (Ctx::Part, Key::Text) => Sink::Text,
            (Ctx::Part, Key::ThoughtSignature) => Sink::Signature,
            (Ctx::InlineData, Key::Data) => {
                self.images += 1;
                let image = self.images - 1;
                let Some(part) = self.part.as_mut() else {
                    return Ok(Sink::Skip);
                };
                part.image = Some(image);
                if part.thought {
                    // Known to be an interim image: do not decode it at all.
                    part.skipped = true;
                    Sink::Skip
                } else {
                    self.decoder = Some(B64Blocks::new(
                        self.pool.clone(),
                        self.limits.max_image_bytes,
                        self.limits.hash,
                    ));
                    Sink::Image
                }
            }
            (Ctx::InlineData, Key::MimeType) => Sink::Small(Small::Mime),
            (Ctx::Candidate, Key::FinishReason) => Sink::Small(Small::FinishReason),
            (Ctx::Candidate, Key::FinishMessage) => Sink::Small(Small::FinishMessage),
            (Ctx::PromptFeedback, Key::BlockReason) => Sink::Small(Small::BlockReason),
            (Ctx::PromptFeedback, Key::BlockReasonMessage) => Sink::Small(Small::BlockMessage),
            (Ctx::Response, Key::ModelVersion) => Sink::Small(Small::ModelVersion),
            (Ctx::Response, Key::ResponseId) => Sink::Small(Small::ResponseId),
            (Ctx::Error, Key::Message) => Sink::Small(Small::ErrorMessage),
            (Ctx::Error, Key::Status) => Sink::Small(Small::ErrorStatus),
            (Ctx::WebQueries, Key::None) => Sink::Small(Small::WebQuery),
            (Ctx::ImageQueries, Key::None) => Sink::Small(Small::ImageQuery),
            (Ctx::ChunkSource, Key::Uri) => Sink::Small(Small::SourceUri),
            (Ctx::ChunkSource, Key::ImageUri) => Sink::Small(Small::SourceImageUri),
            (Ctx::ChunkSource, Key::Title) => Sink::Small(Small::SourceTitle),
            (Ctx::ChunkSource, Key::Domain) => Sink::Small(Small::SourceDomain),
            (Ctx::TokenDetail, Key::Modality) => Sink::Small(Small::Modality),
            _ => Sink::Skip,
        })
    }

    /// Consume string characters up to the next quote or backslash.
    fn string_run<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut Vec<Event>,
    ) -> Result<&'a [u8], ExtractError> {
        match memchr::memchr2(b'"', b'\\', input) {
            Some(i) => {
                self.deliver(&input[..i], out)?;
                if input[i] == b'"' {
                    self.end_string(out)?;
                } else {
                    self.state = State::Escape;
                }
                Ok(&input[i + 1..])
            }
            None => {
                self.deliver(input, out)?;
                Ok(&[])
            }
        }
    }

    fn deliver(&mut self, s: &[u8], out: &mut Vec<Event>) -> Result<(), ExtractError> {
        if s.is_empty() {
            return Ok(());
        }
        match self.sink {
            Sink::Skip => {}
            Sink::Image => {
                if let Some(d) = self.decoder.as_mut() {
                    d.push(s, &mut self.sealed)?;
                    self.flush_sealed(out);
                }
            }
            Sink::Key => push_capped(&mut self.buf, s, 64),
            Sink::Text => {
                let room = self.limits.max_text_bytes.saturating_sub(self.text.len());
                if s.len() > room {
                    self.summary.text_truncated = true;
                }
                self.text.extend_from_slice(&s[..s.len().min(room)]);
            }
            Sink::Signature => {
                if self.buf.len() + s.len() > self.limits.max_signature_bytes {
                    self.signature_overflow = true;
                } else {
                    self.buf.extend_from_slice(s);
                }
            }
            Sink::Small(_) => push_capped(&mut self.buf, s, SMALL_CAP),
        }
        Ok(())
    }

    fn flush_sealed(&mut self, out: &mut Vec<Event>) {
        for s in self.sealed.drain(..) {
            out.push(Event::Block(ImageBlock {
                image: self.images - 1,
                index: s.index,
                data: s.data,
            }));
        }
    }

    fn escape(&mut self, c: u8, out: &mut Vec<Event>) -> Result<(), ExtractError> {
        self.state = State::Str;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                self.unicode = 0;
                self.state = State::Unicode(0);
                return Ok(());
            }
            _ => return Err(ExtractError::Syntax("bad escape")),
        };
        self.deliver_char(ch, out)
    }

    fn unicode_done(&mut self, out: &mut Vec<Event>) -> Result<(), ExtractError> {
        let u = self.unicode;
        let ch = if (0xD800..0xDC00).contains(&u) {
            self.high_surrogate = Some(u);
            return Ok(());
        } else if (0xDC00..0xE000).contains(&u) {
            match self.high_surrogate.take() {
                Some(h) => char::from_u32(0x10000 + ((h - 0xD800) << 10) + (u - 0xDC00)),
                None => None,
            }
        } else {
            char::from_u32(u)
        };
        self.deliver_char(ch.unwrap_or('\u{FFFD}'), out)
    }

    fn deliver_char(&mut self, ch: char, out: &mut Vec<Event>) -> Result<(), ExtractError> {
        let mut tmp = [0u8; 4];
        let s = ch.encode_utf8(&mut tmp);
        self.deliver(s.as_bytes(), out)
    }

    fn end_string(&mut self, out: &mut Vec<Event>) -> Result<(), ExtractError> {
        self.state = State::After;
        match self.sink {
            Sink::Key => {
                let key = key_of(&self.buf);
                if let Some(f) = self.stack.last_mut() {
                    f.key = key;
                }
                self.state = State::Colon;
            }
            Sink::Image => {
                if let Some(d) = self.decoder.take() {
                    let fin = d.finish(&mut self.sealed)?;
                    self.flush_sealed(out);
                    if let Some(p) = self.part.as_mut() {
                        p.image = Some(self.images - 1);
                    }
                    self.pending_end = Some((fin.bytes, fin.sha256, fin.tail));
                }
            }
            Sink::Signature => {
                if !self.signature_overflow
                    && let Some(p) = self.part.as_mut()
                {
                    p.signature = Some(String::from_utf8_lossy(&self.buf).into_owned());
                }
                self.signature_overflow = false;
            }
            Sink::Small(which) => {
                let v = String::from_utf8_lossy(&self.buf).into_owned();
                let s = &mut self.summary;
                match which {
                    Small::Mime => {
                        if let Some(p) = self.part.as_mut() {
                            p.mime = Some(v);
                        }
                    }
                    Small::FinishReason => s.finish_reason = Some(v),
                    Small::FinishMessage => s.finish_message = Some(v),
                    Small::BlockReason => s.block_reason = Some(v),
                    Small::BlockMessage => s.block_message = Some(v),
                    Small::ModelVersion => s.model_version = Some(v),
                    Small::ResponseId => s.response_id = Some(v),
                    Small::ErrorMessage => {
                        s.error.get_or_insert_with(StreamError::default).message = v
                    }
                    Small::ErrorStatus => {
                        s.error.get_or_insert_with(StreamError::default).status = v
                    }
                    Small::WebQuery | Small::ImageQuery => {
                        let g = &mut s.grounding;
                        let list = if which == Small::WebQuery {
                            &mut g.web_queries
                        } else {
                            &mut g.image_queries
                        };
                        // SSE may repeat the metadata in more than one event.
                        if !list.contains(&v) {
                            if self.grounding_bytes + v.len() > MAX_GROUNDING_BYTES {
                                g.truncated = true;
                            } else {
                                self.grounding_bytes += v.len();
                                list.push(v);
                            }
                        }
                    }
                    Small::SourceUri
                    | Small::SourceImageUri
                    | Small::SourceTitle
                    | Small::SourceDomain => {
                        if let Some(src) = self.source.as_mut() {
                            let field = match which {
                                Small::SourceUri => &mut src.uri,
                                Small::SourceImageUri => &mut src.image_uri,
                                Small::SourceTitle => &mut src.title,
                                _ => &mut src.domain,
                            };
                            *field = Some(v);
                        }
                    }
                    Small::Modality => self.detail.0 = Some(v),
                }
            }
            Sink::Text | Sink::Skip => {}
        }
        self.sink = Sink::Skip;
        self.after_value();
        Ok(())
    }

    fn end_literal(&mut self) -> Result<(), ExtractError> {
        let (ctx, key) = self.value_site();
        let lit = std::mem::take(&mut self.lit);
        let number = || -> Option<u64> { std::str::from_utf8(&lit).ok()?.parse().ok() };
        match lit.as_slice() {
            b"true" | b"false" | b"null" => {}
            [b'-' | b'0'..=b'9', ..] => {}
            _ => return Err(ExtractError::Syntax("bad literal")),
        }
        match (ctx, key) {
            (Ctx::Part, Key::Thought) => {
                if lit == b"true"
                    && let Some(p) = self.part.as_mut()
                {
                    p.thought = true;
                }
            }
            (Ctx::Usage, k) => {
                let u = &mut self.summary.usage;
                match k {
                    Key::PromptTokenCount => u.prompt_token_count = number(),
                    Key::CandidatesTokenCount => u.candidates_token_count = number(),
                    Key::TotalTokenCount => u.total_token_count = number(),
                    Key::ThoughtsTokenCount => u.thoughts_token_count = number(),
                    _ => {}
                }
            }
            (Ctx::TokenDetail, Key::TokenCount) => self.detail.1 = number(),
            (Ctx::Error, Key::Code) => {
                self.summary
                    .error
                    .get_or_insert_with(StreamError::default)
                    .code = number();
            }
            _ => {}
        }
        self.lit = lit;
        self.lit.clear();
        self.state = State::After;
        self.after_value();
        Ok(())
    }

    /// A value ended; at the top level that completes a response object.
    fn after_value(&mut self) {
        if self.stack.is_empty() {
            self.state = State::Top;
            self.values_done += 1;
        }
    }

    fn close(&mut self, object: bool, out: &mut Vec<Event>) -> Result<(), ExtractError> {
        let f = self
            .stack
            .pop()
            .ok_or(ExtractError::Syntax("unbalanced brackets"))?;
        if f.object != object {
            return Err(ExtractError::Syntax("mismatched brackets"));
        }
        match f.ctx {
            Ctx::ChunkSource => self.close_source(),
            Ctx::TokenDetail => {
                if let (Some(m), Some(n)) = std::mem::take(&mut self.detail)
                    && m == "IMAGE"
                {
                    self.usage_images = Some(self.usage_images.unwrap_or(0) + n);
                }
            }
            Ctx::Usage => {
                if let Some(n) = self.usage_images.take() {
                    self.summary.usage.image_token_count = Some(n);
                }
            }
            _ => {}
        }
        if f.ctx == Ctx::Part
            && let Some(p) = self.part.take()
            && let Some(image) = p.image
        {
            let (bytes, sha256, tail) = self.pending_end.take().unwrap_or_default();
            out.push(Event::End(ImageEnd {
                image,
                declared_mime: p.mime,
                thought: p.thought,
                thought_signature: p.signature,
                bytes: if p.skipped { 0 } else { bytes },
                sha256,
                tail,
            }));
        }
        self.state = State::After;
        self.after_value();
        Ok(())
    }
}

impl Scanner {
    /// A grounding source closed: keep it unless it is known already or
    /// the grounding cap is reached.
    fn close_source(&mut self) {
        let Some(src) = self.source.take() else {
            return;
        };
        let g = &mut self.summary.grounding;
        if src.uri.is_none() && src.image_uri.is_none() {
            return;
        }
        if g.sources
            .iter()
            .any(|s| s.uri == src.uri && s.image_uri == src.image_uri)
        {
            return;
        }
        let len: usize = [&src.uri, &src.image_uri, &src.title, &src.domain]
            .iter()
            .map(|f| f.as_ref().map_or(0, String::len))
            .sum();
        if self.grounding_bytes + len > MAX_GROUNDING_BYTES {
            g.truncated = true;
        } else {
            self.grounding_bytes += len;
            g.sources.push(src);
        }
    }
}

fn push_capped(buf: &mut Vec<u8>, s: &[u8], cap: usize) {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&s[..s.len().min(room)]);
}
