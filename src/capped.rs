//! Reading a small HTTP body (an error envelope, a status answer, a test
//! log) without trusting the other side to keep it small: at most `cap`
//! bytes are kept, and the read stops there.

/// A body read up to a cap.
#[derive(Debug, Default)]
pub struct Capped {
    pub bytes: Vec<u8>,
    /// The body had more than `cap` bytes, or broke before its end.
    pub truncated: bool,
}

/// Read at most `cap` bytes of the body.
pub async fn read_body(mut resp: reqwest::Response, cap: usize) -> Capped {
    let mut out = Capped::default();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(out.bytes.len());
                out.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    out.truncated = true;
                    return out;
                }
            }
            Ok(None) => return out,
            Err(_) => {
                out.truncated = true;
                return out;
            }
        }
    }
}
