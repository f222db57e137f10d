//! JSON output with a fixed key order and spliced base64 (serde_json would
//! sort keys and copy the image string).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A tiny ordered JSON tree. serde_json's `Value` sorts keys (without the
/// crate-wide `preserve_order` feature) and would copy the image string; the
/// fake needs both a chosen key order and zero-copy splicing.
#[derive(Clone)]
pub(super) enum J {
    Str(String),
    Num(i64),
    Bool(bool),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
    Data(DataSpec),
}

impl J {
    pub(super) fn str(s: &str) -> J {
        J::Str(s.to_string())
    }

    pub(super) fn obj<const N: usize>(fields: [(&'static str, J); N]) -> J {
        J::Obj(fields.into())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    None,
    /// Stop halfway through the base64 and abort the connection.
    Half,
    /// Stop right after the closing quote, ending the body cleanly.
    After,
}

#[derive(Clone)]
pub(super) struct DataSpec {
    pub(super) b64: Bytes,
    pub(super) bad: bool,
    pub(super) cut: Cut,
}

/// Body under construction: small text accumulates in `buf`, big base64 is
/// pushed as its own shared `Bytes`. Once stopped, further writes vanish.
#[derive(Default)]
pub(super) struct Out {
    pub(super) pieces: Vec<Bytes>,
    pub(super) buf: Vec<u8>,
    pub(super) stopped: bool,
    pub(super) abort: bool,
    /// The body deliberately lacks its end (cut, or final event withheld).
    pub(super) incomplete: bool,
}

impl Out {
    pub(super) fn raw(&mut self, s: &[u8]) {
        if !self.stopped {
            self.buf.extend_from_slice(s);
        }
    }

    pub(super) fn splice(&mut self, b: Bytes) {
        if self.stopped || b.is_empty() {
            return;
        }
        self.flush();
        self.pieces.push(b);
    }

    pub(super) fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.pieces.push(Bytes::from(std::mem::take(&mut self.buf)));
        }
    }

    pub(super) fn stop(&mut self, abort: bool) {
        self.flush();
        self.stopped = true;
        self.abort = abort;
        self.incomplete = true;
    }

    /// Returns the pieces, whether to abort after them, and whether the
    /// body is complete.
    pub(super) fn finish(mut self) -> (Vec<Bytes>, bool, bool) {
        self.flush();
        (self.pieces, self.abort, !self.incomplete)
    }
}

pub(super) fn write_str(out: &mut Out, s: &str) {
    out.raw(b"\"");
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.raw(&s.as_bytes()[start..i]);
        match esc {
            Some(e) => out.raw(e),
            None => out.raw(format!("\\u{:04x}", c as u32).as_bytes()),
        }
        start = i + c.len_utf8();
    }
    out.raw(&s.as_bytes()[start..]);
    out.raw(b"\"");
}

pub(super) fn newline(out: &mut Out, depth: usize) {
    out.raw(b"\n");
    for _ in 0..depth {
        out.raw(b"  ");
    }
}

/// Pretty mode matches Google's non-streaming bodies (2-space indent).
/// Compact mode matches its SSE lines, which keep a space after each colon:
/// `{"candidates": [{"content": {"parts": [...`.
pub(super) fn write_json(out: &mut Out, j: &J, pretty: bool, depth: usize) {
    match j {
        J::Str(s) => write_str(out, s),
        J::Num(n) => out.raw(n.to_string().as_bytes()),
        J::Bool(b) => out.raw(if *b { b"true" } else { b"false" }),
        J::Arr(items) => {
            if items.is_empty() {
                out.raw(b"[]");
                return;
            }
            out.raw(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.raw(b",");
                }
                if pretty {
                    newline(out, depth + 1);
                }
                write_json(out, item, pretty, depth + 1);
            }
            if pretty {
                newline(out, depth);
            }
            out.raw(b"]");
        }
        J::Obj(fields) => {
            if fields.is_empty() {
                out.raw(b"{}");
                return;
            }
            out.raw(b"{");
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.raw(b",");
                }
                if pretty {
                    newline(out, depth + 1);
                }
                write_str(out, k);
                out.raw(b": ");
                write_json(out, v, pretty, depth + 1);
            }
            if pretty {
                newline(out, depth);
            }
            out.raw(b"}");
        }
        J::Data(spec) => {
            out.raw(b"\"");
            let b64 = &spec.b64;
            match spec.cut {
                Cut::Half => {
                    out.splice(b64.slice(..b64.len() / 2));
                    out.stop(true);
                    return;
                }
                _ if spec.bad => {
                    // quartet-aligned so the corruption is a whole bogus group
                    let mid = (b64.len() / 2) & !3;
                    out.splice(b64.slice(..mid));
                    out.raw(b"!!!!");
                    out.splice(b64.slice(mid..));
                }
                _ => out.splice(b64.clone()),
            }
            out.raw(b"\"");
            if spec.cut == Cut::After {
                out.stop(false);
            }
        }
    }
}
