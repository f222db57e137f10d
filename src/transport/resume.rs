//! Resuming an SSE stream (`GET /mcp` with `Last-Event-ID`): rmcp 3.11
//! replays from the event the client names, inclusive, so the client gets
//! again the event it already had. For a call that finished, that is its
//! result a second time; for a cancelled one, its last progress event,
//! which SDK clients take as a live stream and poll again every few
//! seconds for the rest of the session. Here the replayed stream is cut
//! into events and the one whose `id` the client sent is dropped, so a
//! resumption carries only what the client has not seen, and a finished
//! stream resumes as an empty one that ends.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

/// An event longer than this is passed on as it comes, unchecked; the
/// events rmcp sends (progress, results with a link) are far smaller.
const MAX_EVENT_BYTES: usize = 256 << 10;

/// The response with the event `id == last_event_id` left out.
pub fn without_event(resp: Response, last_event_id: String) -> Response {
    let (parts, body) = resp.into_parts();
    let is_sse = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if !is_sse {
        return Response::from_parts(parts, body);
    }
    let mut filter = Filter::new(last_event_id);
    let events = body.into_data_stream().map(move |chunk| match chunk {
        Ok(c) => Ok::<_, axum::Error>(filter.push(&c)),
        Err(e) => Err(e),
    });
    Response::from_parts(parts, Body::from_stream(events))
}

/// Cuts a byte stream into SSE events (ended by a blank line) and drops
/// the event with the given id.
struct Filter {
    skip_id: String,
    buf: BytesMut,
    /// Inside an event too long to check: pass bytes on until its end.
    passing: bool,
}

impl Filter {
    fn new(skip_id: String) -> Self {
        Self {
            skip_id,
            buf: BytesMut::new(),
            passing: false,
        }
    }

    /// Take a chunk; return what may go to the client now.
    fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.buf.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        loop {
            let Some(end) = find_event_end(&self.buf) else {
                if self.buf.len() > MAX_EVENT_BYTES || self.passing {
                    self.passing = true;
                    out.extend_from_slice(&self.buf.split());
                }
                break;
            };
            let event = self.buf.split_to(end);
            if self.passing || !self.has_skipped_id(&event) {
                out.extend_from_slice(&event);
            }
            self.passing = false;
        }
        out.freeze()
    }

    fn has_skipped_id(&self, event: &[u8]) -> bool {
        event.split(|&b| b == b'\n').any(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.strip_prefix(b"id:").is_some_and(|v| {
                let v = v.strip_prefix(b" ").unwrap_or(v);
                v == self.skip_id.as_bytes()
            })
        })
    }
}

/// The length of the first whole event in `buf`, its blank line included.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2)
        .or_else(|| buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_event_is_dropped_and_the_rest_kept_across_chunks() {
        let stream = b"data: {\"a\":1}\nid: 3/0\n\ndata: {\"b\":2}\nid: 4/0\n\n:\n\n";
        for cut in 1..stream.len() {
            let mut f = Filter::new("3/0".into());
            let mut out = f.push(&stream[..cut]).to_vec();
            out.extend_from_slice(&f.push(&stream[cut..]));
            assert_eq!(
                String::from_utf8_lossy(&out),
                "data: {\"b\":2}\nid: 4/0\n\n:\n\n",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn ids_must_match_whole_and_long_events_pass() {
        let mut f = Filter::new("3/0".into());
        let out = f.push(b"data: x\nid: 3/01\n\nid:3/0\ndata: y\n\n");
        assert_eq!(&out[..], b"data: x\nid: 3/01\n\n");
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        let mut f = Filter::new("1".into());
        let first = f.push(&big);
        assert_eq!(first.len(), big.len(), "an over-long event is not held");
        let rest = f.push(b"\nid: 1\n\nid: 2\n\n");
        assert_eq!(&rest[..], b"\nid: 1\n\nid: 2\n\n");
    }
}
