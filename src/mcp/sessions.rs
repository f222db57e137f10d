//! The last image of every session, for `continue_editing` and
//! `get_last_image_info`: bounded in count and age, so sessions that are
//! never closed cannot grow it without limit. Over stdio there is one
//! session (the process); over HTTP, one per MCP session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pipeline::StoredImage;

/// How many sessions are remembered, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub max: usize,
    pub ttl: Duration,
}

pub struct Sessions {
    inner: Mutex<HashMap<u64, (Instant, StoredImage)>>,
    next: AtomicU64,
    max: usize,
    ttl: Duration,
}

impl Sessions {
    pub fn new(s: SessionSettings) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            max: s.max.max(1),
            ttl: s.ttl,
        }
    }

    pub fn new_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn remember(&self, id: u64, img: &StoredImage) {
        let Ok(mut m) = self.inner.lock() else { return };
        let now = Instant::now();
        m.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        m.insert(id, (now, img.clone()));
        while m.len() > self.max {
            let oldest = m.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k);
            match oldest {
                Some(k) => m.remove(&k),
                None => break,
            };
        }
    }

    pub fn last(&self, id: u64) -> Option<StoredImage> {
        let m = self.inner.lock().ok()?;
        let (at, img) = m.get(&id)?;
        (at.elapsed() < self.ttl).then(|| img.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
