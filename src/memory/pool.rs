//! Reusable block buffers. A block handed to storage comes back to the pool
//! when the last reference to it is dropped (inside object_store, after its
//! Put Block), so a stream of blocks reuses a handful of buffers
//! instead of allocating a fresh one each time. Measured: without reuse,
//! blocks freed on one worker thread and allocated on another sit in
//! different jemalloc arenas, and a 30 MiB image left ~12 MiB of dirty pages
//! behind at its peak. The free list is bounded and emptied when the server
//! goes idle, so the pool never keeps memory the budget does not cover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

#[derive(Clone)]
pub struct BlockPool {
    inner: Arc<Inner>,
}

struct Inner {
    size: usize,
    max_free: usize,
    free: Mutex<Vec<Vec<u8>>>,
    allocated: AtomicU64,
    reused: AtomicU64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub block_size: usize,
    pub free: usize,
    pub allocated: u64,
    pub reused: u64,
}

impl BlockPool {
    pub fn new(size: usize, max_free: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                size,
                max_free,
                free: Mutex::new(Vec::new()),
                allocated: AtomicU64::new(0),
                reused: AtomicU64::new(0),
            }),
        }
    }

    pub fn block_size(&self) -> usize {
        self.inner.size
    }

    /// A buffer of exactly `block_size` bytes (contents unspecified).
    pub fn take(&self) -> PoolBuf {
        let reused = self.inner.free.lock().ok().and_then(|mut f| f.pop());
        let buf = match reused {
            Some(b) => {
                self.inner.reused.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => {
                self.inner.allocated.fetch_add(1, Ordering::Relaxed);
                vec![0u8; self.inner.size]
            }
        };
        PoolBuf {
            buf,
            pool: Arc::clone(&self.inner),
        }
    }

    /// Drop every free buffer (when idle, before the allocator purges).
    pub fn clear(&self) {
        if let Ok(mut f) = self.inner.free.lock() {
            f.clear();
            f.shrink_to_fit();
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            block_size: self.inner.size,
            free: self.inner.free.lock().map(|f| f.len()).unwrap_or(0),
            allocated: self.inner.allocated.load(Ordering::Relaxed),
            reused: self.inner.reused.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn give_back(&self, buf: Vec<u8>) {
        if buf.len() != self.size {
            return;
        }
        if let Ok(mut f) = self.free.lock()
            && f.len() < self.max_free
        {
            f.push(buf);
        }
    }
}

/// A writable block, returned to the pool when dropped unsealed.
pub struct PoolBuf {
    buf: Vec<u8>,
    pool: Arc<Inner>,
}

impl PoolBuf {
    /// Seal the first `len` bytes as an immutable block; the buffer returns
    /// to the pool when the last clone of the `Bytes` is dropped.
    pub fn freeze(mut self, len: usize) -> Bytes {
        let buf = std::mem::take(&mut self.buf);
        Bytes::from_owner(Sealed {
            len: len.min(buf.len()),
            buf,
            pool: Arc::clone(&self.pool),
        })
    }
}

impl std::ops::Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl std::ops::DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

struct Sealed {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Inner>,
}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blocks_come_back() {
        let pool = BlockPool::new(1024, 2);
        let mut b = pool.take();
        b[..3].copy_from_slice(b"abc");
        let bytes = b.freeze(3);
        assert_eq!(&bytes[..], b"abc");
        let clone = bytes.slice(1..);
        drop(bytes);
        assert_eq!(pool.stats().free, 0, "a clone still holds it");
        drop(clone);
        assert_eq!(pool.stats().free, 1);
        let _again = pool.take();
        assert_eq!(pool.stats().reused, 1);
        assert_eq!(pool.stats().allocated, 1);
    }

    #[test]
    fn free_list_is_bounded_and_clearable() {
        let pool = BlockPool::new(16, 2);
        let bufs: Vec<_> = (0..5).map(|_| pool.take()).collect();
        drop(bufs);
        assert_eq!(pool.stats().free, 2);
        pool.clear();
        assert_eq!(pool.stats().free, 0);
    }
}
