//! The last image of every session, for `continue_editing` and
//! `get_last_image_info`: bounded in count, age and bytes, so sessions
//! that are never closed cannot grow it without limit. Over stdio there is
//! one session (the process); over HTTP, one per MCP session. An entry
//! keeps what those tools need: names, type, size, the thought signature
//! (Gemini 3 needs it whole to continue), and the prompt and model text
//! cut to a few KiB.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pipeline::StoredImage;

use crate::pipeline::outcome::cut;
pub use crate::pipeline::outcome::{KEPT_PROMPT_BYTES, KEPT_TEXT_BYTES};

/// How many sessions are remembered, for how long, in how many bytes.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub max: usize,
    pub ttl: Duration,
}

struct Entry {
    at: Instant,
    cost: usize,
    image: StoredImage,
}

#[derive(Default)]
struct Map {
    entries: HashMap<u64, Entry>,
    bytes: usize,
}

impl Map {
    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            self.bytes -= e.cost;
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.entries
            .iter()
            .min_by_key(|(_, e)| e.at)
            .map(|(k, _)| *k)
    }
}

pub struct Sessions {
    inner: Mutex<Map>,
    next: AtomicU64,
    max: usize,
    max_bytes: usize,
    ttl: Duration,
}

/// What an entry holds on the heap, plus the entry itself and the map's
/// slot: an estimate on the high side, so the cap is never passed.
fn cost(img: &StoredImage) -> usize {
    let strings = [
        img.url.capacity(),
        img.blob_name.capacity(),
        img.sha256.capacity(),
        img.model.capacity(),
        img.prompt.capacity(),
        img.created_at.capacity(),
        img.text.as_ref().map_or(0, String::capacity),
        img.finish_reason.as_ref().map_or(0, String::capacity),
        img.thought_signature.as_ref().map_or(0, String::capacity),
        img.path.as_ref().map_or(0, |p| p.as_os_str().len()),
        img.image_id.as_ref().map_or(0, String::capacity),
        img.record_error.as_ref().map_or(0, String::capacity),
        img.parent.as_ref().map_or(0, String::capacity),
    ];
    strings.iter().sum::<usize>() + std::mem::size_of::<Entry>() + 64
}

impl Sessions {
    /// `max_bytes` caps what all entries hold together (at least one
    /// entry with a whole signature always fits).
    pub fn new(s: SessionSettings, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Map::default()),
            next: AtomicU64::new(1),
            max: s.max.max(1),
            max_bytes,
            ttl: s.ttl,
        }
    }

    pub fn new_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn remember(&self, id: u64, img: &StoredImage) {
        let mut image = img.clone();
        image.prompt = cut(&image.prompt, KEPT_PROMPT_BYTES);
        image.text = image.text.map(|t| cut(&t, KEPT_TEXT_BYTES));
        // What the call reported (grounding, cost) was in its result; the
        // entry keeps what a later edit needs, as the record does.
        image.grounding = Default::default();
        image.cost = None;
        image.preview = None;
        let cost = cost(&image);
        let Ok(mut m) = self.inner.lock() else { return };
        let now = Instant::now();
        let expired: Vec<u64> = m
            .entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.at) >= self.ttl)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            m.remove(k);
        }
        m.remove(id);
        while !m.entries.is_empty()
            && (m.entries.len() >= self.max || m.bytes + cost > self.max_bytes)
        {
            match m.oldest() {
                Some(k) => m.remove(k),
                None => break,
            }
        }
        m.bytes += cost;
        m.entries.insert(
            id,
            Entry {
                at: now,
                cost,
                image,
            },
        );
    }

    pub fn last(&self, id: u64) -> Option<StoredImage> {
        let m = self.inner.lock().ok()?;
        let e = m.entries.get(&id)?;
        (e.at.elapsed() < self.ttl).then(|| e.image.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries hold now (estimated as in `cost`).
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|m| m.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Usage;
    use crate::store::StorageKind;

    fn image(prompt: &str, signature: usize) -> StoredImage {
        StoredImage {
            url: "file:///x.png".into(),
            path: None,
            storage: StorageKind::Local,
            blob_name: "x.png".into(),
            content_type: "image/png",
            bytes: 1,
            sha256: "0".repeat(64),
            width: None,
            height: None,
            model: "m".into(),
            text: Some("t".repeat(10_000)),
            finish_reason: None,
            usage: Usage::default(),
            grounding: Default::default(),
            cost: None,
            prompt: prompt.into(),
            created_at: "now".into(),
            thought_signature: Some("s".repeat(signature)),
            preview: None,
            image_id: None,
            record_error: None,
            parent: None,
            principal: None,
        }
    }

    #[test]
    fn bytes_stay_under_the_cap_and_the_newest_is_kept() {
        let settings = SessionSettings {
            max: 10_000,
            ttl: Duration::from_secs(3600),
        };
        let s = Sessions::new(settings, 1 << 20);
        for id in 0..100 {
            s.remember(id, &image(&"p".repeat(50_000), 100 << 10));
            assert!(s.bytes() <= 1 << 20, "{} bytes after {id}", s.bytes());
        }
        // Each entry is ~106 KiB (signature whole, prompt and text cut).
        assert!((8..=10).contains(&s.len()), "{} entries", s.len());
        let last = s.last(99).expect("the newest is kept");
        assert_eq!(last.prompt.len(), KEPT_PROMPT_BYTES);
        assert_eq!(last.text.as_deref().map(str::len), Some(KEPT_TEXT_BYTES));
        assert_eq!(last.thought_signature.map(|x| x.len()), Some(100 << 10));
        assert!(s.last(0).is_none(), "the oldest went first");
    }

    #[test]
    fn count_cap_and_replacing_an_entry() {
        let settings = SessionSettings {
            max: 3,
            ttl: Duration::from_secs(3600),
        };
        let s = Sessions::new(settings, 64 << 20);
        for id in 0..5 {
            s.remember(id, &image("a", 10));
        }
        assert_eq!(s.len(), 3);
        let before = s.bytes();
        s.remember(4, &image("é".repeat(3000).as_str(), 10));
        assert_eq!(s.len(), 3);
        let kept = s.last(4).expect("replaced").prompt;
        assert!(kept.len() <= KEPT_PROMPT_BYTES && kept.chars().all(|c| c == 'é'));
        assert!(s.bytes() > before);
    }
}
