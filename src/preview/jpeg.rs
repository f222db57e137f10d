//! JPEG previews from the DC terms alone. The first coefficient of each
//! 8x8 block is eight times the block's mean, so the DC terms of a frame
//! are the image at 1/8 scale: enough for a preview of at most 256 px of
//! anything up to 2048 px, and a box filter does the rest. The decoder
//! reads the stream once through a small buffer, Huffman-decodes every
//! coefficient of a sequential scan (it must, to find the next block) but
//! keeps only the DC, one MCU row at a time, and hands each row of the
//! 1/8-scale image to the shrinking filter. Its state is the tables, one
//! MCU row of DC samples per component and the filter's one output row:
//! a few hundred KiB for the widest frame, whatever the timing.
//!
//! Progressive frames need only their first DC scans; the decoder stops
//! after them. When those scans are interleaved (libjpeg's default) they
//! stream like a sequential frame; when each component has a scan of its
//! own, the DC planes are held whole, one byte per block, up to
//! [`MAX_PLANE_BYTES`] (a 6K x 6K image), and larger frames get no
//! preview. Not previewed at all: arithmetic coding, lossless and
//! hierarchical frames, 12-bit samples, CMYK; a cut or corrupt stream gives
//! no preview rather than half a picture.

use std::io::Read;

use super::{Pixels, Shrink};

/// Most bytes the whole-frame DC planes of a frame whose components have
/// scans of their own may take: one byte per 8x8 block per component.
const MAX_PLANE_BYTES: usize = 2 << 20;

/// Bytes read from the source at a time.
const READ_BUF: usize = 16 << 10;

/// The preview's pixels (RGB), width and height, or `None` when the
/// stream is not a JPEG this decoder handles.
pub(super) fn preview<R: Read>(r: R) -> Option<Pixels> {
    let mut d = Decoder {
        bits: Bits::new(r),
        quant: [0; 4],
        dc: Default::default(),
        ac: Default::default(),
        restart: 0,
        adobe: None,
        frame: None,
    };
    if d.bits.src.byte()? != 0xFF || d.bits.src.byte()? != 0xD8 {
        return None;
    }
    let mut marker = d.bits.src.next_marker()?;
    loop {
        marker = match marker {
            0xC0..=0xC2 => {
                let seg = d.bits.src.segment()?;
                d.frame(&seg, marker == 0xC2)?;
                d.bits.src.next_marker()?
            }
            // Lossless, hierarchical and arithmetic-coded frames.
            0xC3 | 0xC5..=0xC7 | 0xC8..=0xCB | 0xCD..=0xCF => return None,
            0xC4 => {
                let seg = d.bits.src.segment()?;
                d.tables(&seg)?;
                d.bits.src.next_marker()?
            }
            0xDB => {
                let seg = d.bits.src.segment()?;
                d.quant(&seg)?;
                d.bits.src.next_marker()?
            }
            0xDD => {
                let seg = d.bits.src.segment()?;
                d.restart = u16::from_be_bytes([*seg.first()?, *seg.get(1)?]);
                d.bits.src.next_marker()?
            }
            0xEE => {
                let seg = d.bits.src.segment()?;
                if seg.len() >= 12 && seg.starts_with(b"Adobe") {
                    d.adobe = Some(seg[11]);
                }
                d.bits.src.next_marker()?
            }
            0xDA => {
                let seg = d.bits.src.segment()?;
                match d.scan(&seg)? {
                    Next::Marker(m) => m,
                    Next::Done(out) => return Some(out),
                }
            }
            // A restart marker between segments carries nothing.
            0xD0..=0xD7 | 0x01 => d.bits.src.next_marker()?,
            0xD8 | 0xD9 => return None,
            _ => {
                d.bits.src.skip_segment()?;
                d.bits.src.next_marker()?
            }
        };
    }
}

/// A component of the frame.
struct Comp {
    id: u8,
    /// Sampling factors.
    h: usize,
    v: usize,
    /// Quantisation table.
    tq: usize,
    /// Blocks per row of its plane, padded to whole MCUs.
    stride: usize,
    /// Blocks it really has (what a scan of it alone covers).
    blocks_w: usize,
    blocks_h: usize,
    /// Its DC planes: one MCU row of blocks, or the whole frame.
    plane: Vec<u8>,
    /// Its DC terms are in (whole-frame planes).
    done: bool,
}

struct Frame {
    progressive: bool,
    comps: Vec<Comp>,
    hmax: usize,
    vmax: usize,
    mcus_w: usize,
    mcus_h: usize,
    /// Size of the 1/8-scale image.
    dc_w: usize,
    dc_h: usize,
    /// Planes hold the whole frame (components scanned apart).
    whole: bool,
    shrink: Option<Shrink>,
    rows_out: usize,
    rgb: bool,
}

enum Next {
    Marker(u8),
    Done(Pixels),
}

struct Decoder<R> {
    bits: Bits<R>,
    /// DC quantiser of each table.
    quant: [u16; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart: u16,
    /// The Adobe segment's colour transform.
    adobe: Option<u8>,
    frame: Option<Frame>,
}

impl<R: Read> Decoder<R> {
    fn frame(&mut self, seg: &[u8], progressive: bool) -> Option<()> {
        if self.frame.is_some() || seg.len() < 6 || seg[0] != 8 {
            return None;
        }
        let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
        let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
        let n = usize::from(seg[5]);
        if width == 0 || height == 0 || !(n == 1 || n == 3) || seg.len() < 6 + 3 * n {
            return None;
        }
        let mut comps = Vec::with_capacity(n);
        for c in seg[6..6 + 3 * n].chunks(3) {
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return None;
            }
            // One component is scanned alone, block by block, whatever
            // its factors say.
            let (h, v) = if n == 1 { (1, 1) } else { (h, v) };
            comps.push(Comp {
                id: c[0],
                h,
                v,
                tq: usize::from(c[2]),
                stride: 0,
                blocks_w: 0,
                blocks_h: 0,
                plane: Vec::new(),
                done: false,
            });
        }
        let hmax = comps.iter().map(|c| c.h).max()?;
        let vmax = comps.iter().map(|c| c.v).max()?;
        let (mcus_w, mcus_h) = (width.div_ceil(8 * hmax), height.div_ceil(8 * vmax));
        for c in &mut comps {
            c.stride = mcus_w * c.h;
            c.blocks_w = (width * c.h).div_ceil(hmax).div_ceil(8);
            c.blocks_h = (height * c.v).div_ceil(vmax).div_ceil(8);
        }
        let ids: Vec<u8> = comps.iter().map(|c| c.id).collect();
        let rgb = n == 3 && (self.adobe == Some(0) || ids == b"RGB");
        self.frame = Some(Frame {
            progressive,
            comps,
            hmax,
            vmax,
            mcus_w,
            mcus_h,
            dc_w: width.div_ceil(8),
            dc_h: height.div_ceil(8),
            whole: false,
            shrink: None,
            rows_out: 0,
            rgb,
        });
        Some(())
    }

    fn tables(&mut self, mut seg: &[u8]) -> Option<()> {
        while !seg.is_empty() {
            let (class, id) = (seg[0] >> 4, usize::from(seg[0] & 15));
            let counts: [u8; 16] = seg.get(1..17)?.try_into().ok()?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let values = seg.get(17..17 + total)?;
            let table = Huffman::new(&counts, values)?;
            match (class, id) {
                (0, 0..=3) => self.dc[id] = Some(table),
                (1, 0..=3) => self.ac[id] = Some(table),
                _ => return None,
            }
            seg = &seg[17 + total..];
        }
        Some(())
    }

    fn quant(&mut self, mut seg: &[u8]) -> Option<()> {
        while !seg.is_empty() {
            let (precision, id) = (seg[0] >> 4, usize::from(seg[0] & 15));
            if id > 3 {
                return None;
            }
            let len = match precision {
                0 => {
                    self.quant[id] = u16::from(*seg.get(1)?);
                    65
                }
                1 => {
                    self.quant[id] = u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]);
                    129
                }
                _ => return None,
            };
            seg = seg.get(len..)?;
        }
        Some(())
    }

    /// Decodes a scan's DC terms into the planes (or skips a scan that
    /// carries none the preview needs), and says what follows it.
    fn scan(&mut self, seg: &[u8]) -> Option<Next> {
        let Decoder {
            bits,
            quant,
            dc,
            ac,
            restart,
            frame,
            ..
        } = self;
        let f = frame.as_mut()?;
        let n = usize::from(*seg.first()?);
        if n == 0 || n > f.comps.len() || seg.len() < 4 + 2 * n {
            return None;
        }
        let (ss, ah, al) = (seg[1 + 2 * n], seg[3 + 2 * n] >> 4, seg[3 + 2 * n] & 15);
        // A progressive frame's AC and refinement scans add nothing at 1/8.
        if f.progressive && (ss != 0 || ah != 0) {
            return bits.skip_scan().map(Next::Marker);
        }
        // Per member: its component, DC table, AC table (sequential), quantiser.
        let mut members: Vec<(usize, Huffman, Option<Huffman>, i64)> = Vec::with_capacity(n);
        for c in seg[1..1 + 2 * n].chunks(2) {
            let i = f.comps.iter().position(|k| k.id == c[0])?;
            if members.iter().any(|m| m.0 == i) {
                return None;
            }
            let d = dc.get(usize::from(c[1] >> 4))?.clone()?;
            let a = match f.progressive {
                true => None,
                false => Some(ac.get(usize::from(c[1] & 15))?.clone()?),
            };
            members.push((i, d, a, i64::from(quant[f.comps[i].tq])));
        }
        if f.shrink.is_none() {
            // The first scan settles the layout: all components at once
            // streams MCU row by MCU row, one at a time holds them whole.
            f.whole = n < f.comps.len();
            let rows = |c: &Comp| if f.whole { f.mcus_h * c.v } else { c.v };
            let sizes: Vec<usize> = f.comps.iter().map(|c| c.stride * rows(c)).collect();
            if f.whole && sizes.iter().sum::<usize>() > MAX_PLANE_BYTES {
                return None;
            }
            for (c, len) in f.comps.iter_mut().zip(sizes) {
                c.plane = vec![128; len];
            }
            f.shrink = Some(Shrink::new(f.dc_w as u32, f.dc_h as u32));
        } else if !f.whole {
            return None;
        }
        let put = |f: &mut Frame, m: &(usize, Huffman, Option<Huffman>, i64), row, col, v: i32| {
            let c = &mut f.comps[m.0];
            let coef = i64::from(v) << al.min(15);
            let sample = (128 + ((coef * m.3 + 4) >> 3)).clamp(0, 255) as u8;
            if let Some(p) = c.plane.get_mut(row * c.stride + col) {
                *p = sample;
            }
        };
        let mut pred = vec![0i32; n];
        let mut interval = Interval::new(usize::from(*restart));
        if n == 1 {
            // A scan of one component goes block by block over the blocks
            // it really has.
            let m = &members[0];
            let (bw, bh) = (f.comps[m.0].blocks_w, f.comps[m.0].blocks_h);
            for by in 0..bh {
                for bx in 0..bw {
                    interval.next(bits, &mut pred)?;
                    pred[0] = pred[0].wrapping_add(bits.block(&m.1, m.2.as_ref())?);
                    put(f, m, if f.whole { by } else { 0 }, bx, pred[0]);
                }
                if !f.whole {
                    f.emit_band(by)?;
                }
            }
        } else {
            for my in 0..f.mcus_h {
                for mx in 0..f.mcus_w {
                    interval.next(bits, &mut pred)?;
                    for (k, m) in members.iter().enumerate() {
                        let (h, v) = (f.comps[m.0].h, f.comps[m.0].v);
                        for y in 0..v {
                            for x in 0..h {
                                pred[k] = pred[k].wrapping_add(bits.block(&m.1, m.2.as_ref())?);
                                let row = if f.whole { my * v + y } else { y };
                                put(f, m, row, mx * h + x, pred[k]);
                            }
                        }
                    }
                }
                if !f.whole {
                    f.emit_band(my)?;
                }
            }
        }
        if bits.overran() {
            return None;
        }
        if !f.whole {
            return f.finish().map(Next::Done);
        }
        for m in &members {
            f.comps[m.0].done = true;
        }
        if f.comps.iter().all(|c| c.done) {
            for y in 0..f.dc_h {
                f.emit_row(y, 0)?;
            }
            return f.finish().map(Next::Done);
        }
        bits.end_scan().map(Next::Marker)
    }
}

/// Counts MCUs to the next restart marker.
struct Interval {
    every: usize,
    since: usize,
}

impl Interval {
    fn new(every: usize) -> Self {
        Self { every, since: 0 }
    }

    /// Before each MCU: past the restart marker when one is due, with the
    /// DC predictions reset.
    fn next<R: Read>(&mut self, bits: &mut Bits<R>, pred: &mut [i32]) -> Option<()> {
        if self.every == 0 {
            return Some(());
        }
        if self.since == self.every {
            bits.restart()?;
            pred.iter_mut().for_each(|p| *p = 0);
            self.since = 0;
        }
        self.since += 1;
        Some(())
    }
}

impl Frame {
    /// The rows of the 1/8-scale image that MCU row `band` covers, from
    /// the planes holding just that row.
    fn emit_band(&mut self, band: usize) -> Option<()> {
        let (y0, y1) = (band * self.vmax, ((band + 1) * self.vmax).min(self.dc_h));
        for y in y0..y1 {
            self.emit_row(y, band)?;
        }
        Some(())
    }

    /// Row `y` of the 1/8-scale image, as RGB, into the filter; the planes
    /// start at MCU row `band`.
    fn emit_row(&mut self, y: usize, band: usize) -> Option<()> {
        let mut px = Vec::with_capacity(self.dc_w * 3);
        let sample = |c: &Comp, x: usize| -> u8 {
            let row = y * c.v / self.vmax - band * c.v;
            let col = x * c.h / self.hmax;
            c.plane.get(row * c.stride + col).copied().unwrap_or(128)
        };
        for x in 0..self.dc_w {
            match self.comps.as_slice() {
                [g] => {
                    let l = sample(g, x);
                    px.extend_from_slice(&[l, l, l]);
                }
                [a, b, c] if self.rgb => {
                    px.extend_from_slice(&[sample(a, x), sample(b, x), sample(c, x)]);
                }
                [a, b, c] => px.extend_from_slice(&ycc(sample(a, x), sample(b, x), sample(c, x))),
                _ => return None,
            }
        }
        self.shrink.as_mut()?.row(y as u32, &px, 3);
        self.rows_out += 1;
        Some(())
    }

    fn finish(&mut self) -> Option<Pixels> {
        (self.rows_out == self.dc_h).then_some(())?;
        Some(self.shrink.take()?.finish())
    }
}

/// YCbCr (JFIF, full range) to RGB, in 16-bit fixed point.
fn ycc(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
    let r = y + ((91_881 * cr + 32_768) >> 16);
    let g = y - ((22_554 * cb + 46_802 * cr + 32_768) >> 16);
    let b = y + ((116_130 * cb + 32_768) >> 16);
    [
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    ]
}

/// A Huffman table: a 9-bit lookup for the short codes, the canonical
/// limits for the long ones.
#[derive(Clone)]
struct Huffman {
    /// `len << 8 | symbol` for every 9-bit prefix that starts a short
    /// code; 0 where the code is longer.
    fast: Box<[u16; 512]>,
    /// Largest code of each length (-1: none).
    max: [i32; 17],
    /// Index of a code's symbol minus the code, per length.
    delta: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: &[u8]) -> Option<Self> {
        let mut t = Huffman {
            fast: Box::new([0; 512]),
            max: [-1; 17],
            delta: [0; 17],
            values: values.to_vec(),
        };
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16 {
            let n = i32::from(counts[len - 1]);
            if n > 0 {
                t.delta[len] = k as i32 - code;
                for c in code..code + n {
                    if len <= 9 {
                        let shift = 9 - len;
                        let entry = ((len as u16) << 8) | u16::from(*values.get(k)?);
                        let first = (c as usize) << shift;
                        t.fast.get_mut(first..first + (1 << shift))?.fill(entry);
                    }
                    k += 1;
                }
                code += n;
                t.max[len] = code - 1;
            }
            if code > 1 << len {
                return None;
            }
            code <<= 1;
        }
        Some(t)
    }
}

/// The entropy-coded data as bits, MSB first, with byte stuffing undone
/// and the marker that ends it kept.
struct Bits<R> {
    src: Src<R>,
    acc: u64,
    /// Valid bits in `acc`, from the top.
    n: u32,
    /// The marker the data ran into; zeros are made up past it.
    marker: Option<u8>,
    /// Zero bytes made up since.
    made_up: u32,
}

impl<R: Read> Bits<R> {
    fn new(r: R) -> Self {
        Self {
            src: Src {
                r,
                buf: vec![0; READ_BUF],
                at: 0,
                len: 0,
            },
            acc: 0,
            n: 0,
            marker: None,
            made_up: 0,
        }
    }

    fn fill(&mut self) {
        while self.n <= 56 {
            let b = match self.marker {
                Some(_) => {
                    self.made_up = self.made_up.saturating_add(1);
                    0
                }
                None => match self.src.byte() {
                    Some(0xFF) => match self.src.after_ff() {
                        Some(0) => 0xFF,
                        m => {
                            // The end of the source reads as EOI.
                            self.marker = Some(m.unwrap_or(0xD9));
                            self.made_up = 1;
                            0
                        }
                    },
                    Some(b) => b,
                    None => {
                        self.marker = Some(0xD9);
                        self.made_up = 1;
                        0
                    }
                },
            };
            self.acc |= u64::from(b) << (56 - self.n);
            self.n += 8;
        }
    }

    /// Some of the bits used were made up: the data was cut short.
    fn overran(&self) -> bool {
        self.made_up * 8 > self.n
    }

    fn take(&mut self, s: u32) -> u32 {
        if s == 0 {
            return 0;
        }
        self.fill();
        let v = (self.acc >> (64 - s)) as u32;
        self.acc <<= s;
        self.n -= s;
        v
    }

    fn symbol(&mut self, t: &Huffman) -> Option<u8> {
        self.fill();
        let e = t.fast[(self.acc >> 55) as usize];
        if e != 0 {
            self.take(u32::from(e >> 8));
            return Some(e as u8);
        }
        for len in 10..=16 {
            let code = (self.acc >> (64 - len)) as i32;
            if code <= t.max[len] {
                self.take(len as u32);
                return t.values.get((code + t.delta[len]) as usize).copied();
            }
        }
        None
    }

    /// One block: its DC difference; the AC terms (sequential scans) are
    /// read past.
    fn block(&mut self, dc: &Huffman, ac: Option<&Huffman>) -> Option<i32> {
        let s = u32::from(self.symbol(dc)?);
        if s > 15 {
            return None;
        }
        let v = self.take(s) as i32;
        let diff = if s > 0 && v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        };
        if let Some(ac) = ac {
            let mut k = 1;
            while k < 64 {
                let rs = self.symbol(ac)?;
                let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
                if size == 0 {
                    if run != 15 {
                        break;
                    }
                    k += 16;
                    continue;
                }
                k += run + 1;
                self.take(size);
            }
        }
        (!self.overran()).then_some(diff)
    }

    /// Past a restart marker: drops the bits left of the interval.
    fn restart(&mut self) -> Option<()> {
        if self.overran() {
            return None;
        }
        let m = match self.marker.take() {
            Some(m) => m,
            None => self.src.next_marker()?,
        };
        (0xD0..=0xD7).contains(&m).then_some(())?;
        self.acc = 0;
        self.n = 0;
        self.made_up = 0;
        Some(())
    }

    /// The marker after a scan decoded in full.
    fn end_scan(&mut self) -> Option<u8> {
        self.acc = 0;
        self.n = 0;
        self.made_up = 0;
        match self.marker.take() {
            Some(m) => Some(m),
            None => self.src.next_marker(),
        }
    }

    /// Reads past a scan the preview does not need, restart markers and
    /// all, to the marker after it.
    fn skip_scan(&mut self) -> Option<u8> {
        loop {
            let m = self.end_scan()?;
            if !(0xD0..=0xD7).contains(&m) {
                return Some(m);
            }
        }
    }
}

/// The source, read through a small buffer.
struct Src<R> {
    r: R,
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl<R: Read> Src<R> {
    fn byte(&mut self) -> Option<u8> {
        if self.at == self.len {
            self.len = loop {
                match self.r.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return None,
                }
            };
            self.at = 0;
            if self.len == 0 {
                return None;
            }
        }
        self.at += 1;
        Some(self.buf[self.at - 1])
    }

    /// What an 0xFF stands for: 0 for a stuffed 0xFF, else the marker
    /// (fill bytes skipped).
    fn after_ff(&mut self) -> Option<u8> {
        loop {
            match self.byte()? {
                0xFF => continue,
                b => return Some(b),
            }
        }
    }

    /// The next marker, past anything that is not one.
    fn next_marker(&mut self) -> Option<u8> {
        loop {
            if self.byte()? == 0xFF {
                match self.after_ff()? {
                    0 => continue,
                    m => return Some(m),
                }
            }
        }
    }

    fn length(&mut self) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes([self.byte()?, self.byte()?]));
        len.checked_sub(2)
    }

    /// A marker segment's payload (at most 64 KiB).
    fn segment(&mut self) -> Option<Vec<u8>> {
        let len = self.length()?;
        (0..len).map(|_| self.byte()).collect()
    }

    fn skip_segment(&mut self) -> Option<()> {
        for _ in 0..self.length()? {
            self.byte()?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

    /// A picture with something in it: four coloured quadrants under a
    /// horizontal ramp, so position and colour both show.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let ramp = (x * 255 / w.max(1)) as u8;
                let c = match (x < w / 2, y < h / 2) {
                    (true, true) => [220, 30, 30],
                    (false, true) => [30, 200, 40],
                    (true, false) => [40, 40, 210],
                    (false, false) => [ramp, ramp, ramp],
                };
                px.extend_from_slice(&c);
            }
        }
        px
    }

    /// The picture shrunk straight from its pixels, for comparison.
    fn reference(px: &[u8], w: usize, h: usize) -> Pixels {
        let mut s = Shrink::new(w.div_ceil(8) as u32, h.div_ceil(8) as u32);
        // The mean of each 8x8 block is what the DC terms carry.
        let (bw, bh) = (w.div_ceil(8), h.div_ceil(8));
        for by in 0..bh {
            let mut row = Vec::with_capacity(bw * 3);
            for bx in 0..bw {
                let mut sum = [0u32; 3];
                let mut n = 0;
                for y in by * 8..(by * 8 + 8).min(h) {
                    for x in bx * 8..(bx * 8 + 8).min(w) {
                        for c in 0..3 {
                            sum[c] += u32::from(px[(y * w + x) * 3 + c]);
                        }
                        n += 1;
                    }
                }
                row.extend(sum.iter().map(|s| (s / n) as u8));
            }
            s.row(by as u32, &row, 3);
        }
        s.finish()
    }

    fn encode(
        px: &[u8],
        w: usize,
        h: usize,
        set: impl FnOnce(&mut Encoder<&mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out, 90);
        set(&mut e);
        e.encode(px, w as u16, h as u16, ColorType::Rgb)
            .expect("encode");
        out
    }

    /// Mean absolute difference per channel between two previews of the
    /// same size.
    fn distance(a: &Pixels, b: &Pixels) -> f64 {
        assert_eq!((a.1, a.2), (b.1, b.2), "sizes differ");
        let sum: u64 =
            a.0.iter()
                .zip(&b.0)
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum();
        sum as f64 / a.0.len() as f64
    }

    #[test]
    fn sequential_frames_in_every_common_layout_preview_what_they_show() {
        let (w, h) = (1000, 601);
        let px = picture(w, h);
        let want = reference(&px, w, h);
        assert_eq!((want.1, want.2), (125, 76));
        let layouts: [(&str, SamplingFactor, u16); 5] = [
            ("4:4:4", SamplingFactor::F_1_1, 0),
            ("4:2:0", SamplingFactor::F_2_2, 0),
            ("4:2:2", SamplingFactor::F_2_1, 0),
            ("4:4:0", SamplingFactor::F_1_2, 0),
            ("4:2:0 with restarts every 7 MCUs", SamplingFactor::F_2_2, 7),
        ];
        for (name, sampling, restart) in layouts {
            let jpeg = encode(&px, w, h, |e| {
                e.set_sampling_factor(sampling);
                if restart > 0 {
                    e.set_restart_interval(restart);
                }
            });
            let got = preview(jpeg.as_slice()).unwrap_or_else(|| panic!("{name}: no preview"));
            let d = distance(&got, &want);
            assert!(d < 6.0, "{name}: {d}");
        }
    }

    #[test]
    fn grey_and_progressive_frames_preview_too() {
        let (w, h) = (640, 480);
        let px = picture(w, h);
        let want = reference(&px, w, h);
        // jpeg-encoder writes one DC scan per component: the planes are held.
        let jpeg = encode(&px, w, h, |e| e.set_progressive(true));
        let got = preview(jpeg.as_slice()).expect("progressive preview");
        assert!(distance(&got, &want) < 6.0);

        let grey: Vec<u8> = px.chunks(3).map(|p| p[1]).collect();
        let mut jpeg = Vec::new();
        Encoder::new(&mut jpeg, 90)
            .encode(&grey, w as u16, h as u16, ColorType::Luma)
            .expect("encode");
        let got = preview(jpeg.as_slice()).expect("grey preview");
        let want_grey: Vec<u8> = want.0.chunks(3).flat_map(|p| [p[1]; 3]).collect();
        assert!(distance(&got, &(want_grey, want.1, want.2)) < 6.0);
    }

    /// The colour at the middle of each quadrant of a 200 x 120 preview.
    fn quadrants(p: &Pixels) -> Vec<[u8; 3]> {
        assert_eq!((p.1, p.2), (25, 15));
        [(6, 3), (18, 3), (6, 11), (18, 11)]
            .iter()
            .map(|&(x, y)| {
                let i = (y * 25 + x) * 3;
                [p.0[i], p.0[i + 1], p.0[i + 2]]
            })
            .collect()
    }

    #[test]
    fn libjpeg_progressive_and_adobe_rgb_frames_preview_too() {
        // scripts/make_jpeg_fixtures.py: libjpeg's progressive script starts
        // with all DC terms interleaved at half precision (Al = 1); the
        // decoder stops after that scan.
        let want = [[220, 30, 30], [30, 200, 40], [40, 40, 210], [240, 240, 240]];
        for (name, bytes) in [
            (
                "progressive",
                &include_bytes!("testdata/progressive-420.jpg")[..],
            ),
            ("rgb", &include_bytes!("testdata/rgb-444.jpg")[..]),
        ] {
            let got = quadrants(&preview(bytes).unwrap_or_else(|| panic!("{name}")));
            for (g, w) in got.iter().zip(&want) {
                let far = g.iter().zip(w).any(|(a, b)| a.abs_diff(*b) > 6);
                assert!(!far, "{name}: {got:?}");
            }
        }
    }

    #[test]
    fn a_cut_or_damaged_stream_gives_no_preview() {
        let (w, h) = (512, 512);
        let px = picture(w, h);
        let jpeg = encode(&px, w, h, |_| {});
        assert!(preview(jpeg.as_slice()).is_some());
        for cut in [jpeg.len() / 3, jpeg.len() - 200] {
            assert!(preview(&jpeg[..cut]).is_none(), "cut at {cut}");
        }
        // Arithmetic coding, CMYK, 12-bit: not this decoder's.
        let sof = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("SOF0");
        for (at, byte) in [(sof + 1, 0xC9), (sof + 4, 12), (sof + 9, 4)] {
            let mut other = jpeg.clone();
            other[at] = byte;
            assert!(preview(other.as_slice()).is_none(), "byte {at} = {byte}");
        }
        // Junk after a valid start, and no start at all.
        assert!(preview(&b"\xFF\xD8\xFF\xC4\x00"[..]).is_none());
        assert!(preview(&b"GIF89a"[..]).is_none());
        // Noise in the entropy-coded data never panics.
        let sos = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xDA])
            .expect("SOS");
        let mut x = 0x9E37_79B9u32;
        for round in 0..50 {
            let mut bad = jpeg.clone();
            for _ in 0..=round {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = sos + 20 + (x as usize % (bad.len() - sos - 22));
                bad[at] = (x >> 8) as u8;
            }
            let _ = preview(bad.as_slice());
        }
    }

    #[test]
    fn huffman_tables_that_cannot_be_codes_are_refused() {
        // Three codes of length 1 do not exist.
        let mut counts = [0u8; 16];
        counts[0] = 3;
        assert!(Huffman::new(&counts, &[1, 2, 3]).is_none());
        // Too few symbols for the counts.
        counts[0] = 2;
        assert!(Huffman::new(&counts, &[1]).is_none());
        assert!(Huffman::new(&counts, &[1, 2]).is_some());
    }

    #[test]
    fn colours_convert_as_jfif_says() {
        assert_eq!(ycc(128, 128, 128), [128, 128, 128]);
        assert_eq!(ycc(76, 85, 255), [254, 0, 0]);
        assert_eq!(ycc(255, 128, 128), [255, 255, 255]);
    }
}
