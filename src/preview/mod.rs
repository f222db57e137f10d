//! A small preview of an image while it streams (`--preview`): at most
//! `MAX_SIDE` pixels on the long side and `MAX_BYTES` of JPEG, for clients
//! that show images inline. The image's blocks are handed over as they are
//! sealed, in slices, to a decoder on a blocking thread that never holds
//! the whole image: PNG row by row (one row of the original and one output
//! row of sums), JPEG from its DC terms, one MCU row at a time ([`jpeg`]).
//! The stored original is untouched (its SynthID and C2PA credentials stay
//! in it); only the preview is a re-encode. Anything else gets no preview:
//! WebP, GIF, HEIC and interlaced PNG, whose decoders hold the whole image.
//! (jpeg-decoder 0.3 is not used for JPEG: it decodes through worker
//! threads fed by unbounded channels of coefficient rows, so its memory
//! depends on timing; measured +5 MiB for a 4K image.)

mod jpeg;

use std::io::Read;

use bytes::Bytes;

use crate::extract::sniff::ImageFormat;

pub const MAX_SIDE: u32 = 256;
pub const MAX_BYTES: usize = 48 << 10;

/// What a preview may hold on top of the image path, reserved with it:
/// the decoder's state (PNG: two rows of an 8192-px RGBA image, zlib's
/// window, a 64 KiB read buffer; JPEG: its tables and one MCU row of DC
/// samples, or up to 2 MiB of whole DC planes for a progressive frame
/// scanned component by component), the output, a blocking thread, and
/// the one block its slices may keep from the pool.
pub const RESERVED_BYTES: u64 = 4 << 20;

/// Slices of a block handed to the decoder at a time: the decoder holds
/// at most one in hand and one queued.
const SLICE: usize = 64 << 10;

/// RGB pixels, row by row, and their width and height.
type Pixels = (Vec<u8>, u32, u32);

/// The preview: JPEG bytes and their size in pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Feeds one image's bytes to its preview decoder.
pub struct Previewer {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<Option<Preview>>,
}

impl Previewer {
    /// A previewer for an image of this format, or `None` when the format
    /// cannot be previewed within the memory it is allowed.
    pub fn start(format: ImageFormat) -> Option<Self> {
        let decode: fn(ChannelReader) -> Option<Pixels> = match format {
            ImageFormat::Png => png_preview,
            ImageFormat::Jpeg => jpeg::preview,
            _ => return None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let task = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            decode(reader).and_then(|(rgb, w, h)| encode(&rgb, w, h))
        });
        Some(Self { tx: Some(tx), task })
    }

    /// The next bytes of the image. Waits while the decoder is behind, so
    /// it never holds more than a slice or two; a decoder that gave up
    /// (bad data) just stops taking them.
    pub async fn feed(&mut self, block: &Bytes) {
        let Some(tx) = &self.tx else { return };
        let mut at = 0;
        while at < block.len() {
            let end = (at + SLICE).min(block.len());
            if tx.send(block.slice(at..end)).await.is_err() {
                self.tx = None;
                return;
            }
            at = end;
        }
    }

    /// The preview, once every byte was fed.
    pub async fn finish(mut self) -> Option<Preview> {
        self.tx.take();
        self.task.await.ok().flatten()
    }
}

/// The decoder's side of the channel, as a `Read`.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let rest = self.cur.split_off(n);
        self.cur = rest;
        Ok(n)
    }
}

/// The preview's size for an image of `w` x `h`.
fn target(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h).max(1);
    if long <= MAX_SIDE {
        return (w.max(1), h.max(1));
    }
    let scale =
        |v: u32| ((u64::from(v) * u64::from(MAX_SIDE)).div_ceil(u64::from(long)) as u32).max(1);
    (scale(w), scale(h))
}

/// Box-filters rows of RGB pixels down to the preview's size, one output
/// row of sums at a time.
struct Shrink {
    w: u32,
    h: u32,
    ow: u32,
    oh: u32,
    sums: Vec<u32>,
    count: Vec<u32>,
    row_out: u32,
    out: Vec<u8>,
}

impl Shrink {
    fn new(w: u32, h: u32) -> Self {
        let (ow, oh) = target(w, h);
        Self {
            w,
            h,
            ow,
            oh,
            sums: vec![0; ow as usize * 3],
            count: vec![0; ow as usize],
            row_out: 0,
            out: Vec::with_capacity((ow * oh * 3) as usize),
        }
    }

    /// Input row `y`, as RGB triples (`bpp` bytes a pixel, the first three
    /// read).
    fn row(&mut self, y: u32, px: &[u8], bpp: usize) {
        let oy = (u64::from(y) * u64::from(self.oh) / u64::from(self.h)) as u32;
        while self.row_out < oy {
            self.emit();
        }
        for x in 0..self.w as usize {
            let Some(p) = px.get(x * bpp..x * bpp + bpp) else {
                break;
            };
            let ox = x * self.ow as usize / self.w as usize;
            let (r, g, b) = if bpp >= 3 {
                (p[0], p[1], p[2])
            } else {
                (p[0], p[0], p[0])
            };
            self.sums[ox * 3] += u32::from(r);
            self.sums[ox * 3 + 1] += u32::from(g);
            self.sums[ox * 3 + 2] += u32::from(b);
            self.count[ox] += 1;
        }
    }

    fn emit(&mut self) {
        for ox in 0..self.ow as usize {
            let n = self.count[ox].max(1);
            for c in 0..3 {
                self.out.push((self.sums[ox * 3 + c] / n) as u8);
            }
        }
        self.sums.iter_mut().for_each(|s| *s = 0);
        self.count.iter_mut().for_each(|c| *c = 0);
        self.row_out += 1;
    }

    fn finish(mut self) -> Pixels {
        while self.row_out < self.oh {
            self.emit();
        }
        (self.out, self.ow, self.oh)
    }
}

fn png_preview(r: ChannelReader) -> Option<Pixels> {
    let mut dec = png::Decoder::new(std::io::BufReader::with_capacity(SLICE, r));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    dec.set_ignore_text_chunk(true);
    let mut reader = dec.read_info().ok()?;
    let info = reader.info();
    if info.interlaced {
        return None;
    }
    let (w, h) = (info.width, info.height);
    let bpp = reader.output_color_type().0.samples();
    let mut shrink = Shrink::new(w, h);
    let mut y = 0;
    while let Ok(Some(row)) = reader.next_row() {
        shrink.row(y, row.data(), bpp);
        y += 1;
    }
    (y == h).then(|| shrink.finish())
}

/// JPEG at the best quality that fits `MAX_BYTES`.
fn encode(rgb: &[u8], w: u32, h: u32) -> Option<Preview> {
    for quality in [80, 65, 50, 35, 20] {
        let mut out = Vec::with_capacity(16 << 10);
        let enc = jpeg_encoder::Encoder::new(&mut out, quality);
        enc.encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .ok()?;
        if out.len() <= MAX_BYTES {
            return Some(Preview {
                jpeg: out,
                width: w,
                height: h,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::images::{self, Format};

    async fn preview_of(bytes: &[u8], format: ImageFormat, block: usize) -> Option<Preview> {
        let mut p = Previewer::start(format)?;
        for b in bytes.chunks(block) {
            p.feed(&Bytes::copy_from_slice(b)).await;
        }
        p.finish().await
    }

    #[test]
    fn sizes_keep_the_shape_under_the_cap() {
        assert_eq!(target(5504, 3072), (256, 143));
        assert_eq!(target(3072, 5504), (143, 256));
        assert_eq!(target(100, 50), (100, 50));
        assert_eq!(target(8192, 1), (256, 1));
    }

    /// (width, height) from a JPEG's SOF0 segment.
    fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
        let mut i = 2;
        while i + 9 < b.len() {
            let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
            if b[i + 1] == 0xC0 {
                let h = u16::from_be_bytes([b[i + 5], b[i + 6]]);
                let w = u16::from_be_bytes([b[i + 7], b[i + 8]]);
                return Some((u32::from(w), u32::from(h)));
            }
            i += 2 + len;
        }
        None
    }

    #[tokio::test]
    async fn a_png_preview_is_a_small_jpeg_of_the_same_shape() {
        let s = images::synth(Format::Png, 3 << 20, 7);
        let p = preview_of(&s.bytes, ImageFormat::Png, 300_001)
            .await
            .expect("preview");
        assert!(p.width.max(p.height) <= MAX_SIDE);
        assert!(p.jpeg.len() <= MAX_BYTES, "{}", p.jpeg.len());
        let ratio = (p.width as f64 / p.height as f64) / (s.width as f64 / s.height as f64);
        assert!((0.95..1.05).contains(&ratio), "shape {ratio}");
        assert!(p.jpeg.starts_with(&[0xFF, 0xD8]) && p.jpeg.ends_with(&[0xFF, 0xD9]));
        assert_eq!(jpeg_size(&p.jpeg), Some((p.width, p.height)));
    }

    #[tokio::test]
    async fn a_jpeg_preview_comes_from_its_dc_terms_whatever_the_slicing() {
        // The fake's 4K JPEG: a mid-grey baseline frame behind megabytes
        // of metadata segments, fed in blocks that split markers.
        let s = images::synth(Format::Jpeg, 8_520_000, 11);
        let p = preview_of(&s.bytes, ImageFormat::Jpeg, 1_000_003)
            .await
            .expect("preview");
        assert_eq!(
            (p.width, p.height),
            target(s.width.div_ceil(8), s.height.div_ceil(8))
        );
        assert!(p.width.max(p.height) <= MAX_SIDE && p.jpeg.len() <= MAX_BYTES);
        assert_eq!(jpeg_size(&p.jpeg), Some((p.width, p.height)));
        // A real picture in tiny slices.
        let (w, h) = (2400u16, 1350u16);
        let rgb: Vec<u8> = (0..usize::from(w) * usize::from(h))
            .flat_map(|i| [(i % 251) as u8, (i / 97 % 256) as u8, 90])
            .collect();
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 85)
            .encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .expect("encode");
        let p = preview_of(&jpeg, ImageFormat::Jpeg, 4_093)
            .await
            .expect("preview");
        assert_eq!((p.width, p.height), target(300, 169));
    }

    #[test]
    fn a_detailed_preview_drops_quality_to_fit_the_cap() {
        // Noise is the worst case for JPEG: at quality 80 it is far over
        // 48 KiB, so the encoder steps down until it fits.
        let mut x = 0x1234_5678u32;
        let rgb: Vec<u8> = (0..256 * 256 * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut first = Vec::new();
        jpeg_encoder::Encoder::new(&mut first, 80)
            .encode(&rgb, 256, 256, jpeg_encoder::ColorType::Rgb)
            .expect("encode");
        assert!(first.len() > MAX_BYTES, "{}", first.len());
        let p = encode(&rgb, 256, 256).expect("fits at a lower quality");
        assert!(p.jpeg.len() <= MAX_BYTES);
        assert_eq!((p.width, p.height), (256, 256));
    }

    #[tokio::test]
    async fn what_cannot_be_previewed_cheaply_gets_none() {
        assert!(Previewer::start(ImageFormat::Webp).is_none());
        let junk = b"\x89PNG\r\n\x1a\nnot really a png".to_vec();
        assert!(preview_of(&junk, ImageFormat::Png, 7).await.is_none());
        // A PNG cut short gives no preview rather than half a picture.
        let s = images::synth(Format::Png, 1 << 20, 3);
        let cut = &s.bytes[..s.bytes.len() / 2];
        assert!(preview_of(cut, ImageFormat::Png, 65_536).await.is_none());
    }
}
