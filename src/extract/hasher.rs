//! The sha256 of an image, computed beside the decoder instead of in it.
//!
//! Hashing costs about as much CPU as base64 decoding (SHA-NI hashes
//! ~1.5 GB/s; the decoder writes ~1.4 GB/s of image bytes), so doing both on
//! the decode thread halves its throughput. Sealed blocks are immutable and
//! reference-counted, so the hasher takes a clone of each one and hashes it,
//! in order, on a thread of its own; the decoder only waits for the digest
//! when the image ends.
//!
//! The thread starts with the first block (tens of microseconds, against the
//! milliseconds a 2 MiB block takes to hash); if it cannot be started, the
//! hashing stays on the decode thread.
//!
//! Memory: the hand-over is a rendezvous: the hash thread holds one block
//! (the one it is hashing, the same block the upload holds, not a copy) and
//! the decoder waits to hand over the next until it is done. So the hasher
//! adds no block to a request's reservation (`PipelineConfig::per_request_bytes`
//! counts one block being filled and one in hand beyond the uploads), and a
//! hasher that falls behind slows the decoder instead of piling blocks up.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Blocks waiting for the hash thread besides the one it hashes: none.
const QUEUE: usize = 0;

pub struct BlockHasher {
    state: State,
    /// Whether the thread was asked for (once; a failure is not retried).
    tried: bool,
}

enum State {
    Inline(Sha256),
    Thread {
        tx: SyncSender<Bytes>,
        join: JoinHandle<[u8; 32]>,
    },
}

impl Default for BlockHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockHasher {
    pub fn new() -> Self {
        Self {
            state: State::Inline(Sha256::new()),
            tried: false,
        }
    }

    /// Add the next block of the image.
    pub fn update(&mut self, data: &Bytes) {
        if let State::Inline(h) = &self.state
            && !self.tried
        {
            self.tried = true;
            if let Some(t) = spawn(h.clone()) {
                self.state = t;
            }
        }
        match &mut self.state {
            State::Inline(h) => h.update(data),
            State::Thread { tx, .. } => {
                // Fails only if the thread is gone, which only a panic in
                // sha256 could cause; finish() then reports it.
                let _ = tx.send(data.clone());
            }
        }
    }

    /// The digest of every block added.
    pub fn finish(self) -> [u8; 32] {
        match self.state {
            State::Inline(h) => h.finalize().into(),
            State::Thread { tx, join } => {
                drop(tx);
                // sha256 accepts any bytes, so the thread cannot fail on the
                // data; if it panicked anyway, do not invent a digest.
                join.join().expect("sha256 thread panicked")
            }
        }
    }
}

/// Move a running hash to a thread of its own. `None` when no thread can be
/// started (a pid limit): the caller keeps hashing in line.
fn spawn(mut h: Sha256) -> Option<State> {
    let (tx, rx) = sync_channel::<Bytes>(QUEUE);
    let started = std::thread::Builder::new()
        .name("sha256".into())
        // Unoptimised builds (the dev profile the tests' binaries use)
        // overflowed 64 KiB now and then; optimised ones use a fraction.
        .stack_size(if cfg!(debug_assertions) {
            1 << 20
        } else {
            64 << 10
        })
        .spawn(move || {
            for block in rx {
                h.update(&block);
            }
            h.finalize().into()
        });
    match started {
        Ok(join) => Some(State::Thread { tx, join }),
        Err(e) => {
            tracing::warn!(error = %e, "no thread for sha256; hashing on the decode thread");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_digest_in_line_and_on_a_thread() {
        for blocks in [0usize, 1, 2, 3, 17] {
            let data: Vec<Bytes> = (0..blocks)
                .map(|i| Bytes::from(vec![i as u8; 1000 + i]))
                .collect();
            let mut whole = Sha256::new();
            let mut h = BlockHasher::new();
            for b in &data {
                whole.update(b);
                h.update(b);
            }
            let want: [u8; 32] = whole.finalize().into();
            assert_eq!(h.finish(), want, "{blocks} blocks");
        }
    }
}
