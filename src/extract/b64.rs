//! Streaming base64 decoding into fixed-size blocks. The input is the inside
//! of one JSON string, delivered in whatever pieces the network produced; the
//! output is blocks of exactly `block_size` bytes (the last one shorter), each
//! handed to the hasher (see `hasher.rs`) as it is sealed. Nothing here buffers more than one block and a
//! three-character tail.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

use super::ExtractError;
use super::hasher::BlockHasher;
use crate::memory::pool::{BlockPool, PoolBuf};

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// How many trailing bytes of an image are kept for the completeness check.
pub const TAIL_KEEP: usize = 32;

pub struct B64Blocks {
    block_size: usize,
    max_bytes: u64,
    /// Characters left over from the previous piece (fewer than four).
    quad: [u8; 4],
    quad_len: usize,
    pool: BlockPool,
    block: Option<PoolBuf>,
    filled: usize,
    hasher: Option<BlockHasher>,
    total: u64,
    padded: bool,
    tail: Vec<u8>,
    blocks_sealed: u32,
}

/// What the decoder hands out: a sealed block of image bytes.
pub struct Sealed {
    pub data: Bytes,
    pub index: u32,
}

/// Totals once the string has ended.
pub struct Finished {
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub tail: Vec<u8>,
}

impl B64Blocks {
    pub fn new(pool: BlockPool, max_bytes: u64, hash: bool) -> Self {
        Self {
            hasher: hash.then(BlockHasher::new),
            block_size: pool.block_size(),
            pool,
            max_bytes,
            quad: [0; 4],
            quad_len: 0,
            block: None,
            filled: 0,
            total: 0,
            padded: false,
            tail: Vec::with_capacity(TAIL_KEEP),
            blocks_sealed: 0,
        }
    }

    /// Decode a piece of the string. Sealed blocks are pushed to `out`.
    pub fn push(&mut self, mut s: &[u8], out: &mut Vec<Sealed>) -> Result<(), ExtractError> {
        if s.is_empty() {
            return Ok(());
        }
        // Complete a quad carried over from the previous piece.
        if self.quad_len > 0 {
            while self.quad_len < 4 && !s.is_empty() {
                let c = s[0];
                s = &s[1..];
                if is_ws(c) {
                    continue;
                }
                self.quad[self.quad_len] = std_alphabet(c);
                self.quad_len += 1;
            }
            if self.quad_len < 4 {
                return Ok(());
            }
            let quad = self.quad;
            self.quad_len = 0;
            self.decode_aligned(&quad, out).map_err(|(_, e)| e)?;
        }
        let whole = s.len() / 4 * 4;
        let (body, rest) = s.split_at(whole);
        if let Err((done, e)) = self.decode_aligned(body, out) {
            // The fast path rejects whitespace and url-safe characters; clean
            // what is left of this piece and try once more before failing.
            let left = &s[done..];
            if left.iter().any(|&c| is_ws(c) || c == b'-' || c == b'_') {
                let clean: Vec<u8> = left
                    .iter()
                    .filter(|&&c| !is_ws(c))
                    .map(|&c| std_alphabet(c))
                    .collect();
                return self.push_clean(&clean, out);
            }
            return Err(e);
        }
        for &c in rest {
            if !is_ws(c) {
                self.quad[self.quad_len] = std_alphabet(c);
                self.quad_len += 1;
            }
        }
        Ok(())
    }

    fn push_clean(&mut self, s: &[u8], out: &mut Vec<Sealed>) -> Result<(), ExtractError> {
        let whole = s.len() / 4 * 4;
        self.decode_aligned(&s[..whole], out).map_err(|(_, e)| e)?;
        for &c in &s[whole..] {
            self.quad[self.quad_len] = c;
            self.quad_len += 1;
        }
        Ok(())
    }

    /// Decode a run whose length is a multiple of four, straight into the
    /// current block, sealing blocks as they fill.
    fn decode_aligned(
        &mut self,
        s: &[u8],
        out: &mut Vec<Sealed>,
    ) -> Result<(), (usize, ExtractError)> {
        let mut done = 0;
        while done < s.len() {
            let rest = &s[done..];
            let step = self.decode_step(rest, out).map_err(|e| (done, e))?;
            done += step;
        }
        Ok(())
    }

    /// Decode as much of `s` as fits the current block; returns how much of
    /// the input was used.
    fn decode_step(&mut self, s: &[u8], out: &mut Vec<Sealed>) -> Result<usize, ExtractError> {
        {
            if self.padded {
                return Err(ExtractError::InvalidBase64("data after padding"));
            }
            self.ensure_block();
            let room = self.block_size - self.filled;
            if room >= 3 {
                // Whole quads whose output surely fits in the room left.
                let take = (room / 3 * 4).min(s.len());
                let now = &s[..take];
                let filled = self.filled;
                let block = self
                    .block
                    .as_mut()
                    .ok_or(ExtractError::Syntax("no block"))?;
                let n = ENGINE
                    .decode_slice(now, &mut block[filled..])
                    .map_err(|_| ExtractError::InvalidBase64("invalid character in image data"))?;
                // Padding shortens the output: legal only at the very end.
                self.padded = n < take / 4 * 3;
                self.filled += n;
                self.add_total(n)?;
                if self.filled == self.block_size {
                    self.seal(out);
                }
                Ok(take)
            } else {
                // One quad straddles two blocks.
                let quad = &s[..4];
                let mut buf = [0u8; 3];
                let n = ENGINE
                    .decode_slice(quad, &mut buf)
                    .map_err(|_| ExtractError::InvalidBase64("invalid character in image data"))?;
                self.padded = n < 3;
                self.append_small(&buf[..n], out)?;
                Ok(4)
            }
        }
    }

    fn ensure_block(&mut self) {
        if self.block.is_none() {
            self.block = Some(self.pool.take());
            self.filled = 0;
        }
    }

    fn add_total(&mut self, n: usize) -> Result<(), ExtractError> {
        self.total += n as u64;
        if self.total > self.max_bytes {
            return Err(ExtractError::ImageTooLarge(self.max_bytes));
        }
        Ok(())
    }

    /// Copy a few decoded bytes, sealing the block if they cross its end.
    fn append_small(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<Sealed>,
    ) -> Result<(), ExtractError> {
        self.add_total(bytes.len())?;
        while !bytes.is_empty() {
            self.ensure_block();
            let k = bytes.len().min(self.block_size - self.filled);
            let filled = self.filled;
            if let Some(block) = self.block.as_mut() {
                block[filled..filled + k].copy_from_slice(&bytes[..k]);
            }
            self.filled += k;
            bytes = &bytes[k..];
            if self.filled == self.block_size {
                self.seal(out);
            }
        }
        Ok(())
    }

    fn seal(&mut self, out: &mut Vec<Sealed>) {
        if self.filled == 0 {
            return;
        }
        let Some(block) = self.block.take() else {
            return;
        };
        let data = block.freeze(self.filled);
        if let Some(h) = self.hasher.as_mut() {
            h.update(&data);
        }
        let keep = data.len().min(TAIL_KEEP);
        let tail_start = data.len() - keep;
        if keep == TAIL_KEEP {
            self.tail.clear();
        } else {
            let drop = (self.tail.len() + keep).saturating_sub(TAIL_KEEP);
            self.tail.drain(..drop);
        }
        self.tail.extend_from_slice(&data[tail_start..]);
        out.push(Sealed {
            data,
            index: self.blocks_sealed,
        });
        self.blocks_sealed += 1;
        self.filled = 0;
    }

    /// The string closed: decode the last characters and seal the last block.
    pub fn finish(mut self, out: &mut Vec<Sealed>) -> Result<Finished, ExtractError> {
        if self.quad_len == 1 {
            return Err(ExtractError::InvalidBase64("dangling character at end"));
        }
        if self.quad_len > 1 {
            if self.padded {
                return Err(ExtractError::InvalidBase64("data after padding"));
            }
            let quad = self.quad;
            let n = self.quad_len;
            self.quad_len = 0;
            self.decode_aligned_tail(&quad[..n], out)?;
        }
        self.seal(out);
        Ok(Finished {
            bytes: self.total,
            sha256: self.hasher.map_or([0; 32], BlockHasher::finish),
            tail: self.tail,
        })
    }

    fn decode_aligned_tail(&mut self, s: &[u8], out: &mut Vec<Sealed>) -> Result<(), ExtractError> {
        let mut buf = [0u8; 3];
        let n = ENGINE
            .decode_slice(s, &mut buf)
            .map_err(|_| ExtractError::InvalidBase64("invalid character in image data"))?;
        self.append_small(&buf[..n], out)
    }
}

fn std_alphabet(c: u8) -> u8 {
    match c {
        b'-' => b'+',
        b'_' => b'/',
        c => c,
    }
}

fn is_ws(c: u8) -> bool {
    matches!(c, b'\r' | b'\n' | b' ' | b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use sha2::{Digest, Sha256};

    fn run(encoded: &[u8], cuts: &[usize], block: usize) -> (Vec<u8>, Vec<usize>) {
        let mut d = B64Blocks::new(BlockPool::new(block, 4), u64::MAX, true);
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts {
            d.push(&encoded[last..c], &mut out).expect("push");
            last = c;
        }
        d.push(&encoded[last..], &mut out).expect("push");
        let fin = d.finish(&mut out).expect("finish");
        let bytes: Vec<u8> = out.iter().flat_map(|s| s.data.iter().copied()).collect();
        assert_eq!(fin.bytes as usize, bytes.len());
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(fin.sha256, sha);
        (bytes, out.iter().map(|s| s.data.len()).collect())
    }

    #[test]
    fn blocks_are_exact_and_content_matches() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let enc = STANDARD.encode(&data);
        let (bytes, sizes) = run(enc.as_bytes(), &[1, 5, 6, 1000, 4097], 1024);
        assert_eq!(bytes, data);
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 1024));
    }

    #[test]
    fn unpadded_and_whitespace_and_urlsafe() {
        let data = b"hello world!?>";
        let enc = STANDARD.encode(data);
        let unpadded = enc.trim_end_matches('=');
        assert_eq!(run(unpadded.as_bytes(), &[3], 8).0, data);
        let wrapped = format!("{}\n{}", &enc[..8], &enc[8..]);
        assert_eq!(run(wrapped.as_bytes(), &[], 8).0, data);
        let urlsafe = base64::engine::general_purpose::URL_SAFE.encode(data);
        assert_eq!(run(urlsafe.as_bytes(), &[], 8).0, data);
    }

    #[test]
    fn invalid_and_oversized_input_fail() {
        let mut d = B64Blocks::new(BlockPool::new(16, 4), u64::MAX, true);
        let mut out = Vec::new();
        assert!(d.push(b"QUJD!!!!QUJD", &mut out).is_err());
        let mut d = B64Blocks::new(BlockPool::new(16, 4), 5, true);
        assert!(matches!(
            d.push(b"QUJDREVGR0g=", &mut out),
            Err(ExtractError::ImageTooLarge(5))
        ));
        let mut d = B64Blocks::new(BlockPool::new(16, 4), u64::MAX, true);
        assert!(d.push(b"QQ==QUJD", &mut out).is_err());
        let d = {
            let mut d = B64Blocks::new(BlockPool::new(16, 4), u64::MAX, true);
            d.push(b"QUJDR", &mut out).expect("push");
            d
        };
        assert!(d.finish(&mut out).is_err());
    }
}
