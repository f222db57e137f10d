//! Deterministic synthetic images of a requested byte size, for tests and load
//! runs. Owns the four container writers (PNG, JPEG, WebP, GIF), the seeded
//! pseudo-random filler that keeps them incompressible, the CRC-32 and
//! Adler-32 they need, and a small process-wide cache so a load test that asks
//! for the same 30 MiB image hundreds of times pays for it once.
//!
//! The files are structurally valid where it matters to a byte-sniffing client:
//! PNG decodes (stored deflate blocks of random rows), JPEG has a walkable
//! segment chain with the SOF placed after filler and even decodes to a grey
//! picture, WebP is a well-sized RIFF with VP8X dimensions and a solid-colour
//! lossless frame, GIF decodes to a one-pixel frame on a canvas of the stated
//! size. Sizes hit `approx_bytes` exactly where the container allows (WebP
//! rounds up to even, GIF and JPEG may land 1-3 bytes short); very small
//! requests get the format's minimum.

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Image container to synthesize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Png,
    Jpeg,
    Webp,
    Gif,
}

impl Format {
    /// The IANA media type of this container.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
        }
    }

    /// Lower-case short name (`png`, `jpeg`, `webp`, `gif`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Webp => "webp",
            Format::Gif => "gif",
        }
    }

    /// Accepts the short names, `jpg`, and full media types.
    pub fn parse(s: &str) -> Option<Format> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("image/").unwrap_or(&s);
        match s {
            "png" => Some(Format::Png),
            "jpeg" | "jpg" => Some(Format::Jpeg),
            "webp" => Some(Format::Webp),
            "gif" => Some(Format::Gif),
            _ => None,
        }
    }

    /// Identifies a container by its leading magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Format::Webp)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Format::Gif)
        } else {
            None
        }
    }
}

/// One synthesized image. Cloning is cheap: `bytes` is reference-counted.
#[derive(Clone, Debug)]
pub struct Synth {
    pub bytes: Bytes,
    pub width: u32,
    pub height: u32,
    pub mime: &'static str,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// Returns the image for `(format, approx_bytes, seed)`, building it on first
/// use. Building a multi-MB image is CPU work: call from a blocking context
/// (e.g. `spawn_blocking`) when inside an async runtime.
pub fn synth(format: Format, approx_bytes: usize, seed: u64) -> Synth {
    cached(format, approx_bytes, seed).synth().clone()
}

/// Like [`synth`], plus the standard base64 text of the bytes, also cached,
/// so a server can splice it into many responses without re-encoding.
pub fn synth_base64(format: Format, approx_bytes: usize, seed: u64) -> (Synth, Bytes) {
    let entry = cached(format, approx_bytes, seed);
    let synth = entry.synth().clone();
    let b64 = entry
        .b64
        .get_or_init(|| Bytes::from(base64::engine::general_purpose::STANDARD.encode(&synth.bytes)))
        .clone();
    (synth, b64)
}

// ---------------------------------------------------------------------------
// Cache

/// Enough for a test suite's working set; each entry may hold tens of MB, so
/// this stays small rather than growing with every distinct seed.
const CACHE_ENTRIES: usize = 8;

type Key = (Format, usize, u64);

struct Entry {
    key: Key,
    synth: OnceLock<Synth>,
    b64: OnceLock<Bytes>,
}

impl Entry {
    fn synth(&self) -> &Synth {
        let (format, size, seed) = self.key;
        self.synth.get_or_init(|| build(format, size, seed))
    }
}

struct Cache {
    entries: Vec<(Arc<Entry>, u64)>,
    tick: u64,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: Vec::new(),
    tick: 0,
});

/// Builds happen outside the cache lock (inside the entry's `OnceLock`), so
/// concurrent callers of one key wait for a single build while callers of
/// other keys proceed.
fn cached(format: Format, approx_bytes: usize, seed: u64) -> Arc<Entry> {
    let key = (format, approx_bytes, seed);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.tick += 1;
    let tick = cache.tick;
    if let Some(slot) = cache.entries.iter_mut().find(|(e, _)| e.key == key) {
        slot.1 = tick;
        return slot.0.clone();
    }
    if cache.entries.len() >= CACHE_ENTRIES
        && let Some(oldest) = cache
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(i, _)| i)
    {
        cache.entries.swap_remove(oldest);
    }
    let entry = Arc::new(Entry {
        key,
        synth: OnceLock::new(),
        b64: OnceLock::new(),
    });
    cache.entries.push((entry.clone(), tick));
    entry
}

// ---------------------------------------------------------------------------
// Building

fn build(format: Format, approx_bytes: usize, seed: u64) -> Synth {
    let mut rng = Rng::new(seed ^ (format as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (bytes, width, height) = match format {
        Format::Png => png(approx_bytes, &mut rng),
        Format::Jpeg => jpeg(approx_bytes, &mut rng),
        Format::Webp => webp(approx_bytes, &mut rng),
        Format::Gif => gif(approx_bytes, &mut rng),
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Synth {
        bytes: Bytes::from(bytes),
        width,
        height,
        mime: format.mime(),
        sha256,
    }
}

/// xorshift64*: fast, seedable, and good enough that deflate finds nothing.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 step: spreads small seeds and avoids the all-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn push(&mut self, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        out.resize(start + n, 0);
        self.fill(&mut out[start..]);
    }
}

/// Picks a roughly 16:9 canvas of about `pixels` pixels, each side capped.
fn dims(pixels: usize, max_side: usize) -> (usize, usize) {
    let w = (pixels.saturating_mul(16) / 9).isqrt().clamp(1, max_side);
    let h = (pixels / w).clamp(1, max_side);
    (w, h)
}

// --- PNG --------------------------------------------------------------------

const PNG_SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
/// Stored deflate blocks carry at most 65535 bytes each.
const STORED_MAX: usize = 65_535;
/// IDAT payload per chunk; encoders commonly split, and clients must cope.
const IDAT_MAX: usize = 256 * 1024;

fn png_len(w: usize, h: usize) -> usize {
    let raw = h * (1 + 3 * w);
    let zlib = 2 + raw + 5 * raw.div_ceil(STORED_MAX) + 4;
    PNG_SIG.len() + 25 + zlib + 12 * zlib.div_ceil(IDAT_MAX) + 12
}

fn png(approx: usize, rng: &mut Rng) -> (Vec<u8>, u32, u32) {
    let (w, _) = dims(approx / 3, 8192);
    let mut h = (approx / (1 + 3 * w)).max(1);
    while h > 1 && png_len(w, h) > approx {
        h -= 1;
    }
    // A private ancillary chunk ("faKe": ancillary, private, safe to copy)
    // soaks up the remainder so the size is exact; decoders skip it. Chunks
    // need 12 bytes of framing, so a smaller remainder goes unfilled.
    let pad = approx.saturating_sub(png_len(w, h));
    let pad = if pad >= 12 { pad } else { 0 };

    let row = 1 + 3 * w;
    let mut raw = vec![0u8; h * row];
    for r in raw.chunks_mut(row) {
        // filter byte 0 (None) stays zero
        rng.fill(&mut r[1..]);
    }
    let out = png_from_rows(w, h, &raw, pad, |n| {
        let mut filler = Vec::with_capacity(n);
        rng.push(&mut filler, n);
        filler
    });
    (out, w as u32, h as u32)
}

/// A PNG of `h` raw rows (filter byte + RGB each) in stored deflate blocks,
/// `pad` bytes longer (0, or at least the 12 of a chunk's framing) by a
/// private ancillary "faKe" chunk holding `filler(pad - 12)`.
fn png_from_rows(
    w: usize,
    h: usize,
    raw: &[u8],
    pad: usize,
    filler: impl FnOnce(usize) -> Vec<u8>,
) -> Vec<u8> {
    let mut zlib = Vec::with_capacity(raw.len() + raw.len() / STORED_MAX * 5 + 16);
    // CMF 0x78 (deflate, 32K window), FLG 0x01 makes CMF*256+FLG divisible by 31.
    zlib.extend_from_slice(&[0x78, 0x01]);
    let blocks = raw.len().div_ceil(STORED_MAX);
    for (i, block) in raw.chunks(STORED_MAX).enumerate() {
        let last = i + 1 == blocks;
        zlib.push(u8::from(last));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(raw).to_be_bytes());

    let mut out = Vec::with_capacity(png_len(w, h) + pad);
    out.extend_from_slice(PNG_SIG);
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    if pad >= 12 {
        png_chunk(&mut out, b"faKe", &filler(pad - 12));
    }
    for part in zlib.chunks(IDAT_MAX) {
        png_chunk(&mut out, b"IDAT", part);
    }
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
    out.extend_from_slice(&crc.to_be_bytes());
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// Raw CRC-32 register update (no pre/post inversion), so callers can chain
/// the chunk type and data.
fn crc32_update(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-32 as used by PNG (and zip, gzip).
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, data) ^ 0xFFFF_FFFF
}

/// Adler-32 as used by zlib.
pub fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // Largest run that cannot overflow u32 before reducing (zlib's NMAX).
    const NMAX: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for run in data.chunks(NMAX) {
        for &x in run {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

// --- JPEG -------------------------------------------------------------------

/// Largest payload a marker segment can carry (its length field counts itself).
const SEG_MAX: usize = 65_533;

fn jpeg_segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes `total` bytes of random-payload COM/APP15 segments. APP15 is used
/// because no common reader interprets it (APP1 would be read as Exif, APP14
/// as Adobe colour info).
fn jpeg_filler(out: &mut Vec<u8>, mut total: usize, rng: &mut Rng) {
    let mut payload = Vec::with_capacity(SEG_MAX);
    let mut app = true;
    while total >= 4 {
        let n = (total - 4).min(SEG_MAX);
        // Never leave a 1-3 byte remainder that no segment can hold.
        let rest = total - 4 - n;
        let n = if rest > 0 && rest < 4 {
            n - (4 - rest)
        } else {
            n
        };
        payload.clear();
        rng.push(&mut payload, n);
        jpeg_segment(out, if app { 0xEF } else { 0xFE }, &payload);
        app = !app;
        total -= n + 4;
    }
}

fn jpeg(approx: usize, rng: &mut Rng) -> (Vec<u8>, u32, u32) {
    let (w, h) = dims(approx * 2, 65_535);
    let (wu, hu) = (w as u16, h as u16);

    // Baseline scan where every block is DC diff 0 + EOB: two one-bit codes,
    // so the file really decodes (to mid-grey) while staying tiny.
    let blocks = w.div_ceil(8) * h.div_ceil(8) * 3;
    let bits = blocks * 2;
    let mut entropy = vec![0u8; bits.div_ceil(8)];
    if bits % 8 != 0
        && let Some(last) = entropy.last_mut()
    {
        // pad the final byte with 1-bits, as the standard requires
        *last = (1u8 << (8 - bits % 8)) - 1;
    }

    let app0: &[u8] = b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00";
    let dqt = {
        let mut d = vec![0u8];
        d.extend_from_slice(&[1u8; 64]);
        d
    };
    let sof = {
        let mut s = vec![8];
        s.extend_from_slice(&hu.to_be_bytes());
        s.extend_from_slice(&wu.to_be_bytes());
        s.push(3);
        for id in 1..=3u8 {
            s.extend_from_slice(&[id, 0x11, 0]);
        }
        s
    };
    let dht = {
        let mut d = Vec::new();
        for class_id in [0x00u8, 0x10] {
            d.push(class_id);
            let mut counts = [0u8; 16];
            counts[0] = 1;
            d.extend_from_slice(&counts);
            d.push(0x00);
        }
        d
    };
    let sos: &[u8] = &[3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0];

    let fixed = 2
        + (4 + app0.len())
        + (4 + dqt.len())
        + (4 + sof.len())
        + (4 + dht.len())
        + (4 + sos.len())
        + entropy.len()
        + 2;
    let filler = approx.saturating_sub(fixed);
    // Real files carry Exif/ICC/XMP before the frame header; one full segment
    // there forces a sniffer to walk rather than peek at a fixed offset.
    let before = filler.min(SEG_MAX + 4);
    let before = if filler - before < 4 { filler } else { before };

    let mut out = Vec::with_capacity(fixed + filler);
    out.extend_from_slice(&[0xFF, 0xD8]);
    jpeg_segment(&mut out, 0xE0, app0);
    jpeg_filler(&mut out, before, rng);
    jpeg_segment(&mut out, 0xDB, &dqt);
    jpeg_segment(&mut out, 0xC0, &sof);
    jpeg_filler(&mut out, filler - before, rng);
    jpeg_segment(&mut out, 0xC4, &dht);
    jpeg_segment(&mut out, 0xDA, sos);
    out.extend_from_slice(&entropy);
    out.extend_from_slice(&[0xFF, 0xD9]);
    (out, w as u32, h as u32)
}

// --- WebP -------------------------------------------------------------------

/// A lossless (VP8L) bitstream for a solid-colour `w`x`h` image. Every prefix
/// code is a "simple" one-symbol code, which costs zero bits per pixel, so
/// the frame is a dozen bytes at any size yet really decodes.
fn vp8l_solid(w: usize, h: usize, argb: [u8; 4]) -> Vec<u8> {
    let mut bits = BitWriter::default();
    bits.put(0x2F, 8); // signature
    bits.put((w - 1) as u32, 14);
    bits.put((h - 1) as u32, 14);
    bits.put(0, 1); // alpha_is_used
    bits.put(0, 3); // version
    bits.put(0, 1); // no transforms
    bits.put(0, 1); // no colour cache
    bits.put(0, 1); // no meta prefix codes
    // green, red, blue, alpha, distance
    let [a, r, g, b] = argb;
    for symbol in [g, r, b, a, 0] {
        bits.put(1, 1); // simple code
        bits.put(0, 1); // one symbol
        bits.put(1, 1); // 8-bit symbol
        bits.put(u32::from(symbol), 8);
    }
    bits.finish()
}

/// LSB-first bit packer, as VP8L reads.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

fn riff_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(kind);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}

fn webp(approx: usize, rng: &mut Rng) -> (Vec<u8>, u32, u32) {
    let (w, h) = dims(approx * 2, 16_384);
    let colour = (rng.next() as u32 | 0xFF00_0000).to_be_bytes();
    let frame = vp8l_solid(w, h, colour);
    let frame_len = 8 + frame.len() + frame.len() % 2;
    // RIFF header 12 + VP8X chunk 18 + VP8L chunk + JUNK chunk header 8
    let fixed = 12 + 18 + frame_len + 8;
    let junk = approx.saturating_sub(fixed);
    let mut out = Vec::with_capacity(fixed + junk + 1);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&[0; 4]); // patched below
    out.extend_from_slice(b"WEBP");
    let mut vp8x = vec![0u8; 4];
    vp8x.extend_from_slice(&((w - 1) as u32).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&((h - 1) as u32).to_le_bytes()[..3]);
    riff_chunk(&mut out, b"VP8X", &vp8x);
    riff_chunk(&mut out, b"VP8L", &frame);
    // "JUNK" is RIFF's traditional padding chunk; WebP readers skip unknown
    // chunks. It comes last so decoders meet the frame first.
    let mut filler = Vec::with_capacity(junk);
    rng.push(&mut filler, junk);
    riff_chunk(&mut out, b"JUNK", &filler);
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    (out, w as u32, h as u32)
}

// --- GIF --------------------------------------------------------------------

fn gif(approx: usize, rng: &mut Rng) -> (Vec<u8>, u32, u32) {
    let (w, h) = dims(approx * 2, 65_535);
    // header 6 + screen descriptor 7 + 2-entry colour table 6 + 1x1 frame 15
    // + trailer 1; a small table keeps tiny requests tiny.
    const FIXED: usize = 6 + 7 + 6 + 15 + 1;
    let mut out = Vec::with_capacity(approx.max(FIXED));
    out.extend_from_slice(b"GIF89a");
    out.extend_from_slice(&(w as u16).to_le_bytes());
    out.extend_from_slice(&(h as u16).to_le_bytes());
    // global colour table present, 8-bit resolution, 2 entries
    out.extend_from_slice(&[0xF0, 0, 0]);
    rng.push(&mut out, 6);

    // Comment extension: 0x21 0xFE, sub-blocks of <=255 bytes, 0 terminator.
    let room = approx.saturating_sub(FIXED);
    if room >= 4 {
        let budget = room - 3;
        let mut data = budget - budget.div_ceil(256);
        while data + data.div_ceil(255) > budget {
            data -= 1;
        }
        out.extend_from_slice(&[0x21, 0xFE]);
        let mut left = data;
        while left > 0 {
            let n = left.min(255);
            out.push(n as u8);
            rng.push(&mut out, n);
            left -= n;
        }
        out.push(0);
    }

    // A 1x1 frame at the origin: LZW minimum code size 2, so codes are 3 bits:
    // CLEAR(4), index 0, END(5), packed LSB-first into 0x44 0x01.
    out.push(0x2C);
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0, 0]);
    out.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    out.push(0x3B);
    (out, w as u32, h as u32)
}

// ---------------------------------------------------------------------------
// Pictures

/// Canvas sizes tried, largest first, until the picture fits the size asked
/// for; the rest of the bytes go into a zero-filled ancillary chunk.
const PICTURE_SIZES: [(usize, usize); 5] = [(384, 256), (192, 128), (96, 64), (48, 32), (24, 16)];

/// A picture a person recognises, drawn from the words of `prompt`, of
/// exactly `approx_bytes` (where a PNG that small can hold one; below that,
/// the noise image of [`synth`]). With `input` (the PNG being edited, as
/// this module wrote it), the edit the prompt names is applied to it
/// instead: a colour word tints it, "dark"/"night" darkens, "bright"
/// lightens, "gray"/"mono" desaturates, "flip"/"mirror" mirrors, and
/// anything else inverts it, so the change is always visible.
pub fn picture_base64(prompt: &str, input: Option<&[u8]>, approx_bytes: usize) -> (Synth, Bytes) {
    let key = {
        let mut h = Sha256::new();
        h.update(prompt.as_bytes());
        h.update([0]);
        if let Some(i) = input {
            h.update(Sha256::digest(i));
        }
        h.update((approx_bytes as u64).to_le_bytes());
        let d = h.finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    static PICTURES: Mutex<Vec<(u64, Synth, Bytes)>> = Mutex::new(Vec::new());
    if let Some((_, s, b)) = PICTURES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _, _)| *k == key)
    {
        return (s.clone(), b.clone());
    }
    let Some((bytes, width, height)) = picture_png(prompt, input, approx_bytes) else {
        return synth_base64(Format::Png, approx_bytes, key);
    };
    let synth = Synth {
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: Bytes::from(bytes),
        width,
        height,
        mime: Format::Png.mime(),
    };
    let b64 = Bytes::from(base64::engine::general_purpose::STANDARD.encode(&synth.bytes));
    let mut cache = PICTURES.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CACHE_ENTRIES {
        cache.remove(0);
    }
    cache.push((key, synth.clone(), b64.clone()));
    (synth, b64)
}

/// A JPEG picture of `prompt` (edits are PNG-only), as big in pixels as
/// the noise JPEG of `approx_bytes` (so `size=8520000` is 4K), with a fine
/// grain so its entropy-coded data is megabytes, like a photograph's:
/// 4:2:0, a restart marker every 64 MCUs. Padded with metadata segments
/// to `approx_bytes` when it comes out smaller.
pub fn picture_jpeg_base64(prompt: &str, approx_bytes: usize) -> (Synth, Bytes) {
    static PICTURES: Mutex<Vec<(String, usize, Synth, Bytes)>> = Mutex::new(Vec::new());
    let cached = PICTURES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(p, n, _, _)| p == prompt && *n == approx_bytes)
        .map(|(_, _, s, b)| (s.clone(), b.clone()));
    if let Some(hit) = cached {
        return hit;
    }
    let (w, h) = dims(approx_bytes * 2, 65_535);
    let small = draw(prompt, PICTURE_SIZES[0].0, PICTURE_SIZES[0].1);
    let mut rng = Rng::new(approx_bytes as u64);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let src = &small.px[(y * small.h / h) * small.w..][..small.w];
        for x in 0..w {
            let grain = (rng.next() % 17) as i16 - 8;
            for c in src[x * small.w / w] {
                rgb.push((i16::from(c) + grain).clamp(0, 255) as u8);
            }
        }
    }
    let mut jpeg = Vec::with_capacity(approx_bytes);
    let mut enc = jpeg_encoder::Encoder::new(&mut jpeg, 90);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    enc.set_restart_interval(64);
    enc.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("a JPEG of at most 65535 px a side encodes");
    drop(rgb);
    // The padding goes after the frame header, where real files keep
    // their metadata too, so a reader learns the size early.
    let mut at = 2;
    while at + 4 < jpeg.len() && jpeg[at + 1] != 0xC4 && jpeg[at + 1] != 0xDA {
        at += 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
    }
    let mut bytes = Vec::with_capacity(approx_bytes.max(jpeg.len()));
    bytes.extend_from_slice(&jpeg[..at]);
    let pad = approx_bytes.saturating_sub(jpeg.len());
    if pad >= 4 {
        jpeg_filler(&mut bytes, pad, &mut rng);
    }
    bytes.extend_from_slice(&jpeg[at..]);
    let synth = Synth {
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: Bytes::from(bytes),
        width: w as u32,
        height: h as u32,
        mime: Format::Jpeg.mime(),
    };
    let b64 = Bytes::from(base64::engine::general_purpose::STANDARD.encode(&synth.bytes));
    let mut cache = PICTURES.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 2 {
        cache.remove(0);
    }
    cache.push((prompt.to_string(), approx_bytes, synth.clone(), b64.clone()));
    (synth, b64)
}

fn picture_png(prompt: &str, input: Option<&[u8]>, approx: usize) -> Option<(Vec<u8>, u32, u32)> {
    let edited = input.and_then(decode_own_png).map(|mut c| {
        edit_canvas(&mut c, prompt);
        c
    });
    let fits = |w: usize, h: usize| png_len(w, h) + 12 <= approx || png_len(w, h) == approx;
    let canvas = match edited {
        Some(c) if fits(c.w, c.h) => c,
        Some(c) => {
            let &(w, h) = PICTURE_SIZES.iter().find(|&&(w, h)| fits(w, h))?;
            c.resized(w, h)
        }
        None => {
            let &(w, h) = PICTURE_SIZES.iter().find(|&&(w, h)| fits(w, h))?;
            draw(prompt, w, h)
        }
    };
    let pad = approx - png_len(canvas.w, canvas.h);
    let png = png_from_rows(canvas.w, canvas.h, &canvas.raw_rows(), pad, |n| vec![0; n]);
    Some((png, canvas.w as u32, canvas.h as u32))
}

/// An RGB canvas, row-major.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn new(w: usize, h: usize, fill: [u8; 3]) -> Self {
        Self {
            w,
            h,
            px: vec![fill; w * h],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = c;
        }
    }

    /// Fill every pixel whose centre, in units of the canvas height, `inside`
    /// accepts (so shapes keep their proportions on every canvas size).
    fn shape(&mut self, c: [u8; 3], inside: impl Fn(f64, f64) -> bool) {
        let s = self.h as f64;
        for y in 0..self.h {
            for x in 0..self.w {
                if inside((x as f64 + 0.5) / s, (y as f64 + 0.5) / s) {
                    self.px[y * self.w + x] = c;
                }
            }
        }
    }

    fn raw_rows(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.h * (1 + 3 * self.w));
        for row in self.px.chunks(self.w) {
            raw.push(0);
            for p in row {
                raw.extend_from_slice(p);
            }
        }
        raw
    }

    fn resized(&self, w: usize, h: usize) -> Canvas {
        let mut out = Canvas::new(w, h, [0; 3]);
        for y in 0..h {
            for x in 0..w {
                out.px[y * w + x] = self.px[(y * self.h / h) * self.w + x * self.w / w];
            }
        }
        out
    }
}

fn has(prompt: &str, words: &[&str]) -> bool {
    let p = prompt.to_ascii_lowercase();
    words.iter().any(|w| p.contains(w))
}

fn circle(cx: f64, cy: f64, r: f64) -> impl Fn(f64, f64) -> bool {
    move |x, y| (x - cx).powi(2) + (y - cy).powi(2) <= r * r
}

/// A scene from the prompt's words: sky and ground, then whatever of a sun,
/// moon, sea, tree, house, rocket, banana, cat or fox it names; a prompt
/// naming none gets shapes in colours taken from its own hash.
fn draw(prompt: &str, w: usize, h: usize) -> Canvas {
    let night = has(prompt, &["night", "moon", "space", "star", "rocket"]);
    let sky = if night { [18, 22, 60] } else { [120, 180, 240] };
    let mut c = Canvas::new(w, h, sky);
    let aspect = w as f64 / h as f64;
    if night {
        let mut seed = 0x5eed_u64;
        for _ in 0..(w * h / 300).max(3) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            c.set(
                ((seed >> 33) % w as u64) as i64,
                ((seed >> 13) % (h as u64 * 2 / 3)) as i64,
                [255, 255, 230],
            );
        }
    }
    if has(prompt, &["sea", "ocean", "water", "beach", "lake"]) {
        c.shape([30, 90, 170], |_, y| y > 0.7);
    } else {
        c.shape([70, 150, 60], |_, y| y > 0.8);
    }
    if has(prompt, &["sun", "day", "summer"]) || !night {
        c.shape([255, 215, 40], circle(aspect - 0.2, 0.2, 0.11));
    }
    if has(prompt, &["moon"]) {
        let (outer, inner) = (
            circle(aspect - 0.25, 0.22, 0.12),
            circle(aspect - 0.2, 0.19, 0.11),
        );
        c.shape([240, 240, 220], move |x, y| outer(x, y) && !inner(x, y));
    }
    let mut named = false;
    if has(prompt, &["tree", "forest"]) {
        named = true;
        c.shape([110, 70, 30], |x, y| {
            (0.17..0.23).contains(&x) && (0.55..0.82).contains(&y)
        });
        c.shape([40, 130, 50], circle(0.2, 0.47, 0.13));
    }
    if has(prompt, &["house", "city", "home", "building"]) {
        named = true;
        let x0 = aspect * 0.35;
        c.shape([200, 80, 60], move |x, y| {
            (x0..x0 + 0.3).contains(&x) && (0.5..0.82).contains(&y)
        });
        c.shape([120, 40, 40], move |x, y| {
            y < 0.5 && y > 0.32 && (x - (x0 + 0.15)).abs() < (y - 0.32) * 0.9
        });
        c.shape([250, 240, 150], move |x, y| {
            (x0 + 0.05..x0 + 0.11).contains(&x) && (0.58..0.66).contains(&y)
        });
    }
    if has(prompt, &["rocket", "spaceship"]) {
        named = true;
        let cx = aspect * 0.5;
        c.shape([210, 210, 220], move |x, y| {
            (x - cx).abs() < 0.06 && (0.25..0.65).contains(&y)
        });
        c.shape([220, 40, 40], move |x, y| {
            (0.12..0.25).contains(&y) && (x - cx).abs() < (y - 0.12) * 0.46
        });
        c.shape([255, 140, 0], move |x, y| {
            (0.65..0.8).contains(&y) && (x - cx).abs() < (0.8 - y) * 0.4
        });
        c.shape([60, 140, 220], circle(cx, 0.38, 0.03));
    }
    if has(prompt, &["banana"]) {
        named = true;
        let cx = aspect * 0.5;
        let (outer, inner) = (circle(cx, 0.3, 0.3), circle(cx, 0.2, 0.3));
        c.shape([250, 220, 50], move |x, y| {
            outer(x, y) && !inner(x, y) && y > 0.38
        });
        c.shape([90, 60, 20], circle(cx - 0.27, 0.43, 0.02));
        c.shape([90, 60, 20], circle(cx + 0.27, 0.43, 0.02));
    }
    if has(prompt, &["cat", "fox", "dog"]) {
        named = true;
        let fur = if has(prompt, &["fox"]) {
            [230, 120, 30]
        } else if has(prompt, &["dog"]) {
            [150, 100, 60]
        } else {
            [120, 120, 120]
        };
        let cx = aspect * 0.75;
        let head = circle(cx, 0.58, 0.14);
        c.shape(fur, head);
        c.shape(fur, move |x, y| {
            (0.36..0.5).contains(&y)
                && ((x - (cx - 0.08)).abs() < (y - 0.36) * 0.5
                    || (x - (cx + 0.08)).abs() < (y - 0.36) * 0.5)
        });
        c.shape([20, 20, 20], circle(cx - 0.05, 0.55, 0.018));
        c.shape([20, 20, 20], circle(cx + 0.05, 0.55, 0.018));
    }
    if !named {
        let d = Sha256::digest(prompt.as_bytes());
        for i in 0..3 {
            let color = [d[i * 3], d[i * 3 + 1], d[i * 3 + 2]];
            let cx = aspect * (0.25 + 0.25 * i as f64);
            let r = 0.08 + f64::from(d[10 + i]) / 255.0 * 0.08;
            if d[20 + i] % 2 == 0 {
                c.shape(color, circle(cx, 0.55, r));
            } else {
                c.shape(color, move |x, y| {
                    (x - cx).abs() < r && (y - 0.55).abs() < r
                });
            }
        }
    }
    c
}

/// The edit the prompt names, applied to every pixel.
fn edit_canvas(c: &mut Canvas, prompt: &str) {
    const COLOURS: [(&str, [u8; 3]); 8] = [
        ("pink", [255, 105, 180]),
        ("red", [220, 30, 30]),
        ("blue", [30, 80, 230]),
        ("green", [30, 180, 60]),
        ("purple", [140, 50, 200]),
        ("orange", [255, 140, 0]),
        ("gold", [240, 190, 40]),
        ("yellow", [250, 230, 40]),
    ];
    let blend = |p: [u8; 3], t: [u8; 3], k: f64| {
        [0, 1, 2].map(|i| (f64::from(p[i]) * (1.0 - k) + f64::from(t[i]) * k) as u8)
    };
    let tint = COLOURS
        .iter()
        .find(|(w, _)| has(prompt, &[w]))
        .map(|(_, t)| *t);
    if has(prompt, &["flip", "mirror"]) {
        for row in c.px.chunks_mut(c.w) {
            row.reverse();
        }
    } else if let Some(t) = tint {
        c.px.iter_mut().for_each(|p| *p = blend(*p, t, 0.5));
    } else if has(prompt, &["dark", "night"]) {
        c.px.iter_mut()
            .for_each(|p| *p = blend(*p, [0, 0, 0], 0.55));
    } else if has(prompt, &["bright", "light"]) {
        c.px.iter_mut()
            .for_each(|p| *p = blend(*p, [255, 255, 255], 0.45));
    } else if has(prompt, &["gray", "grey", "mono", "black and white"]) {
        c.px.iter_mut().for_each(|p| {
            let l = ((u32::from(p[0]) * 3 + u32::from(p[1]) * 6 + u32::from(p[2])) / 10) as u8;
            *p = [l; 3];
        });
    } else {
        c.px.iter_mut().for_each(|p| *p = p.map(|v| 255 - v));
    }
}

/// The pixels of a PNG this module wrote (width, height, RGB row-major),
/// for tests that check what a picture shows.
pub fn read_back(png: &[u8]) -> Option<(usize, usize, Vec<[u8; 3]>)> {
    decode_own_png(png).map(|c| (c.w, c.h, c.px))
}

/// Reads back a PNG this module wrote (8-bit RGB, filter 0, stored deflate
/// blocks); `None` for anything else.
fn decode_own_png(png: &[u8]) -> Option<Canvas> {
    let mut at = PNG_SIG.len();
    if png.get(..at)? != PNG_SIG {
        return None;
    }
    let (mut w, mut h, mut zlib) = (0usize, 0usize, Vec::new());
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().ok()?) as usize;
        let kind = &png[at + 4..at + 8];
        let data = png.get(at + 8..at + 8 + len)?;
        match kind {
            b"IHDR" => {
                if data.get(8..10)? != [8, 2] {
                    return None;
                }
                w = u32::from_be_bytes(data[0..4].try_into().ok()?) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().ok()?) as usize;
            }
            b"IDAT" => zlib.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    if w == 0 || h == 0 || w * h > 1 << 22 {
        return None;
    }
    let mut raw = Vec::with_capacity(h * (1 + 3 * w));
    let mut i = 2;
    loop {
        let header = *zlib.get(i)?;
        if header & 0b110 != 0 {
            return None; // not a stored block
        }
        let len = u16::from_le_bytes(zlib.get(i + 1..i + 3)?.try_into().ok()?) as usize;
        raw.extend_from_slice(zlib.get(i + 5..i + 5 + len)?);
        i += 5 + len;
        if header & 1 == 1 {
            break;
        }
    }
    let row = 1 + 3 * w;
    if raw.len() < h * row {
        return None;
    }
    let mut c = Canvas::new(w, h, [0; 3]);
    for (y, r) in raw.chunks(row).take(h).enumerate() {
        if r[0] != 0 {
            return None;
        }
        for x in 0..w {
            c.px[y * w + x] = [r[1 + 3 * x], r[2 + 3 * x], r[3 + 3 * x]];
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn mean(c: &Canvas) -> [f64; 3] {
        let n = c.px.len() as f64;
        [0, 1, 2].map(|i| c.px.iter().map(|p| f64::from(p[i])).sum::<f64>() / n)
    }

    #[test]
    fn jpeg_pictures_carry_real_entropy_coded_data() {
        let (s, b64) = picture_jpeg_base64("a banana at night", 1_000_000);
        assert_eq!(Format::sniff(&s.bytes), Some(Format::Jpeg));
        assert_eq!(
            (s.width as usize, s.height as usize),
            dims(2_000_000, 65_535)
        );
        let sof = s
            .bytes
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("SOF0");
        assert!(sof < 1024, "the frame header comes first");
        assert!(s.bytes.len() >= 1_000_000, "{}", s.bytes.len());
        assert_eq!(b64.len(), s.bytes.len().div_ceil(3) * 4);
        // The scan is most of the file: the grain is not free to code.
        let sos = s
            .bytes
            .windows(2)
            .position(|m| m == [0xFF, 0xDA])
            .expect("SOS");
        let scan = s.bytes.len() - sos;
        assert!(scan > 500_000, "scan {scan}");
        assert!(
            s.bytes.windows(2).any(|m| m == [0xFF, 0xD0]),
            "restart markers"
        );
    }

    #[test]
    fn pictures_are_drawn_from_the_prompt_and_edits_show() {
        let size = 300_000;
        let (banana, b64) = picture_base64("a banana riding a rocket at night", None, size);
        assert_eq!(banana.bytes.len(), size, "padded to the exact size");
        assert_eq!(check_png(&banana.bytes), (banana.width, banana.height));
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .expect("b64"),
            banana.bytes
        );
        let canvas = decode_own_png(&banana.bytes).expect("our own PNG reads back");
        // Night sky, a yellow banana: the picture is not noise.
        let yellow = canvas.px.iter().filter(|p| **p == [250, 220, 50]).count();
        assert!(yellow > canvas.px.len() / 50, "{yellow} banana pixels");
        assert!(mean(&canvas)[2] > mean(&canvas)[0], "a dark blue sky");
        // Another prompt, another picture; the same prompt, the same bytes.
        let (cat, _) = picture_base64("a cat in the sun", None, size);
        assert_ne!(cat.sha256, banana.sha256);
        assert_eq!(
            picture_base64("a cat in the sun", None, size).0.sha256,
            cat.sha256
        );

        let (pink, _) = picture_base64("make it pink", Some(&banana.bytes), size);
        assert_eq!(pink.bytes.len(), size);
        let edited = decode_own_png(&pink.bytes).expect("edit reads back");
        assert_eq!(
            (edited.w, edited.h),
            (canvas.w, canvas.h),
            "the edit keeps the picture"
        );
        // Asked for fewer bytes than the picture needs, the edit is scaled.
        let (small, _) = picture_base64("make it pink", Some(&banana.bytes), size / 2);
        assert_eq!(small.bytes.len(), size / 2);
        assert_eq!(
            (small.width * 2, small.height * 2),
            (banana.width, banana.height)
        );
        let (before, after) = (mean(&canvas), mean(&edited));
        assert!(
            after[0] > before[0] + 40.0,
            "redder: {before:?} -> {after:?}"
        );
        // A size too small for any picture falls back to a valid noise PNG.
        let (tiny, _) = picture_base64("a banana", None, 300);
        assert_eq!(check_png(&tiny.bytes), (tiny.width, tiny.height));
    }

    /// Walks the PNG, checks every CRC, inflates the stored blocks and checks
    /// Adler-32 and the raw size against IHDR.
    fn check_png(b: &[u8]) -> (u32, u32) {
        assert!(b.starts_with(PNG_SIG));
        let mut at = 8;
        let (mut w, mut h) = (0, 0);
        let mut zlib = Vec::new();
        let mut saw_iend = false;
        while at < b.len() {
            let len = be32(b, at) as usize;
            let kind = &b[at + 4..at + 8];
            let data = &b[at + 8..at + 8 + len];
            let crc = be32(b, at + 8 + len);
            assert_eq!(crc, crc32(&b[at + 4..at + 8 + len]), "crc of {kind:?}");
            match kind {
                b"IHDR" => {
                    w = be32(data, 0);
                    h = be32(data, 4);
                    assert_eq!(&data[8..], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => zlib.extend_from_slice(data),
                b"IEND" => saw_iend = true,
                _ => assert!(kind[0].is_ascii_lowercase(), "unknown critical chunk"),
            }
            at += 12 + len;
        }
        assert!(saw_iend);
        assert_eq!(at, b.len());
        assert_eq!((u16::from(zlib[0]) * 256 + u16::from(zlib[1])) % 31, 0);
        let mut raw = Vec::new();
        let mut p = 2;
        loop {
            let header = zlib[p];
            assert_eq!(header & 0b110, 0, "stored block");
            let len = u16::from_le_bytes([zlib[p + 1], zlib[p + 2]]);
            let nlen = u16::from_le_bytes([zlib[p + 3], zlib[p + 4]]);
            assert_eq!(len, !nlen);
            raw.extend_from_slice(&zlib[p + 5..p + 5 + len as usize]);
            p += 5 + len as usize;
            if header & 1 == 1 {
                break;
            }
        }
        assert_eq!(be32(&zlib, p), adler32(&raw));
        assert_eq!(p + 4, zlib.len());
        let row = 1 + 3 * w as usize;
        assert_eq!(raw.len(), row * h as usize);
        assert!(raw.chunks(row).all(|r| r[0] == 0));
        (w, h)
    }

    /// Walks JPEG segments the way a sniffer would and returns SOF0's size.
    fn jpeg_sof(b: &[u8]) -> (u32, u32) {
        assert_eq!(&b[..2], &[0xFF, 0xD8]);
        assert_eq!(&b[b.len() - 2..], &[0xFF, 0xD9]);
        let mut at = 2;
        let mut sof = None;
        loop {
            assert_eq!(b[at], 0xFF);
            let marker = b[at + 1];
            let len = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
            if marker == 0xC0 {
                let h = u16::from_be_bytes([b[at + 5], b[at + 6]]);
                let w = u16::from_be_bytes([b[at + 7], b[at + 8]]);
                sof = Some((u32::from(w), u32::from(h)));
            }
            at += 2 + len;
            if marker == 0xDA {
                break;
            }
        }
        // entropy data has no markers: only the final EOI
        assert!(!b[at..b.len() - 2].contains(&0xFF));
        sof.expect("SOF0 present")
    }

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(&[]), 1);
    }

    #[test]
    fn png_is_valid_and_sized() {
        for size in [100, 1_000, 200_000, 1_234_567] {
            let s = synth(Format::Png, size, 7);
            let (w, h) = check_png(&s.bytes);
            assert_eq!((w, h), (s.width, s.height));
            assert!(
                s.bytes.len() <= size.max(100) + 16,
                "{size}: {}",
                s.bytes.len()
            );
            assert!(s.bytes.len() + 16 >= size, "{size}: {}", s.bytes.len());
            assert_eq!(s.mime, "image/png");
            assert_eq!(Format::sniff(&s.bytes), Some(Format::Png));
        }
        assert_eq!(synth(Format::Png, 200_000, 1).bytes.len(), 200_000);
    }

    #[test]
    fn jpeg_sof_sits_after_filler() {
        for size in [100, 5_000, 300_000, 2_000_000] {
            let s = synth(Format::Jpeg, size, 3);
            assert_eq!(jpeg_sof(&s.bytes), (s.width, s.height));
            assert!(s.bytes.len().abs_diff(size) <= 3 || size < 200, "{size}");
        }
        let s = synth(Format::Jpeg, 300_000, 3);
        let sof_at = s
            .bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap_or(0);
        assert!(sof_at > 65_000, "SOF at {sof_at}");
    }

    #[test]
    fn webp_riff_size_is_right() {
        for size in [10, 999, 1_000, 250_000] {
            let s = synth(Format::Webp, size, 5);
            let b = &s.bytes;
            assert_eq!(&b[..4], b"RIFF");
            let riff = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
            assert_eq!(riff + 8, b.len());
            assert_eq!(&b[12..16], b"VP8X");
            let w = u32::from_le_bytes([b[24], b[25], b[26], 0]) + 1;
            let h = u32::from_le_bytes([b[27], b[28], b[29], 0]) + 1;
            assert_eq!((w, h), (s.width, s.height));
            assert_eq!(&b[30..34], b"VP8L");
            if size >= 64 {
                assert!(b.len() == size || b.len() == size + 1);
            }
        }
    }

    #[test]
    fn gif_has_header_and_trailer() {
        for size in [100, 1_000, 100_000] {
            let s = synth(Format::Gif, size, 9);
            let b = &s.bytes;
            assert_eq!(&b[..6], b"GIF89a");
            let w = u16::from_le_bytes([b[6], b[7]]);
            let h = u16::from_le_bytes([b[8], b[9]]);
            assert_eq!((u32::from(w), u32::from(h)), (s.width, s.height));
            assert_eq!(b[b.len() - 1], 0x3B);
            if size >= 1_000 {
                assert!(b.len().abs_diff(size) <= 1, "{size}: {}", b.len());
            }
        }
    }

    #[test]
    fn deterministic_incompressible_and_seeded() {
        let a = build(Format::Png, 50_000, 1);
        let b = build(Format::Png, 50_000, 1);
        let c = build(Format::Png, 50_000, 2);
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.sha256, b.sha256);
        assert_ne!(a.sha256, c.sha256);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(&a.bytes)));
        // A crude randomness check: byte values are spread out.
        let mut seen = [0u32; 256];
        for &x in &a.bytes[1000..] {
            seen[x as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50));
    }

    #[test]
    fn cache_shares_bytes_and_base64() {
        let (s1, b1) = synth_base64(Format::Webp, 77_777, 42);
        let (s2, b2) = synth_base64(Format::Webp, 77_777, 42);
        assert_eq!(s1.bytes.as_ptr(), s2.bytes.as_ptr());
        assert_eq!(b1.as_ptr(), b2.as_ptr());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&b1)
            .expect("valid base64");
        assert_eq!(decoded, s1.bytes);
    }
}
