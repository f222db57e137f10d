//! Body streaming: zero-copy chunks, pacing, and cuts mid-body.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct Cursor {
    pub(super) pieces: VecDeque<Bytes>,
    pub(super) chunk: usize,
    pub(super) drip: Duration,
    pub(super) abort: bool,
    pub(super) done: Option<Arc<AtomicBool>>,
    pub(super) started: bool,
    pub(super) finished: bool,
}

impl Cursor {
    pub(super) fn mark_done(&self) {
        if let Some(d) = &self.done {
            d.store(true, Ordering::Release);
        }
    }
}

/// Streams `pieces` in `chunk`-sized zero-copy slices, sleeping `drip`
/// between writes; when `abort`, ends with an error so hyper drops the
/// connection mid-body, which is what a real cut looks like to a client.
pub(super) fn body_stream(
    pieces: Vec<Bytes>,
    abort: bool,
    drip: Duration,
    chunk: usize,
    done: Option<Arc<AtomicBool>>,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let cursor = Cursor {
        pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
        chunk: chunk.max(1),
        drip,
        abort,
        done,
        started: false,
        finished: false,
    };
    futures::stream::unfold(cursor, |mut cur| async move {
        if cur.finished {
            return None;
        }
        let Some(front) = cur.pieces.front_mut() else {
            cur.finished = true;
            if cur.abort {
                // Give hyper a moment to flush what was already written, so
                // the client really receives the partial body before the cut.
                tokio::time::sleep(Duration::from_millis(30)).await;
                let err = io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fake-gemini: response truncated on purpose",
                );
                return Some((Err(err), cur));
            }
            cur.mark_done();
            return None;
        };
        let n = cur.chunk.min(front.len());
        let slice = front.split_to(n);
        if front.is_empty() {
            cur.pieces.pop_front();
        }
        if cur.started && !cur.drip.is_zero() {
            tokio::time::sleep(cur.drip).await;
        }
        cur.started = true;
        if cur.pieces.is_empty() && !cur.abort {
            // Marked before the last write so a client that has read the
            // whole body always observes `completed`.
            cur.mark_done();
        }
        Some((Ok(slice), cur))
    })
}
