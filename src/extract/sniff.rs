//! What the bytes really are. Gemini's declared mime type can lie (JPEG
//! labelled `image/png`), so blobs are named and typed by their magic bytes.
//! Pure functions over byte slices; no I/O.

/// Image formats the server can recognise from their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
    Gif,
    Heic,
}

impl ImageFormat {
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Heic => "image/heic",
        }
    }

    /// The format a MIME type names, for types `mime` returns.
    pub fn from_mime(mime: &str) -> Option<Self> {
        [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Webp,
            ImageFormat::Gif,
            ImageFormat::Heic,
        ]
        .into_iter()
        .find(|f| f.mime() == mime)
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Heic => "heic",
        }
    }
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The last 12 bytes of every complete PNG: a zero-length IEND chunk and its CRC.
const PNG_IEND: &[u8] = b"\x00\x00\x00\x00IEND\xaeB`\x82";

/// Recognise the format from the first bytes (16 are enough).
pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(PNG_MAGIC) {
        Some(ImageFormat::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(ImageFormat::Webp)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if head.len() >= 12
        && &head[4..8] == b"ftyp"
        && matches!(
            &head[8..12],
            b"heic" | b"heix" | b"hevc" | b"heim" | b"heis" | b"mif1" | b"msf1"
        )
    {
        Some(ImageFormat::Heic)
    } else {
        None
    }
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | (u32::from(s[1]) << 8) | (u32::from(s[2]) << 16))
}

/// Width and height from the image header, when it lies within `head`.
/// JPEG's frame header can follow large metadata segments, so callers pass
/// the whole first block (megabytes), not just a few bytes.
pub fn dimensions(format: ImageFormat, head: &[u8]) -> Option<(u32, u32)> {
    match format {
        ImageFormat::Png => {
            if head.get(12..16)? != b"IHDR" {
                return None;
            }
            Some((be32(head, 16)?, be32(head, 20)?))
        }
        ImageFormat::Gif => Some((le16(head, 6)?, le16(head, 8)?)),
        ImageFormat::Webp => webp_dimensions(head),
        ImageFormat::Jpeg => jpeg_dimensions(head),
        ImageFormat::Heic => None,
    }
}

fn webp_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    match b.get(12..16)? {
        b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
        b"VP8L" => {
            let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8 " => Some((le16(b, 26)? & 0x3FFF, le16(b, 28)? & 0x3FFF)),
        _ => None,
    }
}

fn jpeg_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        // Markers may be preceded by fill bytes (0xFF).
        while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            0xD9 | 0xDA => return None,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let h = be16(b, i + 5)?;
                let w = be16(b, i + 7)?;
                return Some((w, h));
            }
            _ => {
                let len = be16(b, i + 2)? as usize;
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
    }
}

/// Does the image end the way a complete file of its format ends? A cheap
/// guard against a stream cut at a clean boundary: the JSON may close, yet
/// the bytes inside may not be a whole image.
pub fn looks_complete(format: ImageFormat, head: &[u8], tail: &[u8], total_len: u64) -> bool {
    match format {
        ImageFormat::Png => tail.ends_with(PNG_IEND),
        // Some encoders pad after EOI; allow a little slack.
        ImageFormat::Jpeg => {
            let t = &tail[tail.len().saturating_sub(32)..];
            t.windows(2).any(|w| w == [0xFF, 0xD9])
        }
        ImageFormat::Gif => tail.last() == Some(&0x3B),
        ImageFormat::Webp => le32(head, 4).is_some_and(|n| u64::from(n) + 8 == total_len),
        ImageFormat::Heic => total_len > 12,
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_head(w: u32, h: u32) -> Vec<u8> {
        let mut v = PNG_MAGIC.to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0]);
        v
    }

    #[test]
    fn png_is_recognised_with_size() {
        let head = png_head(1344, 768);
        assert_eq!(sniff(&head), Some(ImageFormat::Png));
        assert_eq!(dimensions(ImageFormat::Png, &head), Some((1344, 768)));
    }

    #[test]
    fn jpeg_frame_header_found_after_metadata_segments() {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        v.extend_from_slice(&[0u8; 14]);
        // A large APP1 segment before the frame header.
        v.extend_from_slice(&[0xFF, 0xE1, 0xFF, 0xFF]);
        v.extend(std::iter::repeat_n(7u8, 0xFFFD));
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x03, 0x00, 0x05, 0x60]);
        assert_eq!(sniff(&v), Some(ImageFormat::Jpeg));
        assert_eq!(dimensions(ImageFormat::Jpeg, &v), Some((0x560, 0x300)));
    }

    #[test]
    fn webp_gif_heic_and_unknown() {
        let mut webp = b"RIFF\x20\x00\x00\x00WEBPVP8X".to_vec();
        webp.extend_from_slice(&[0u8; 8]);
        webp.extend_from_slice(&[0xFF, 0x03, 0x00, 0xFF, 0x01, 0x00]);
        assert_eq!(sniff(&webp), Some(ImageFormat::Webp));
        assert_eq!(dimensions(ImageFormat::Webp, &webp), Some((1024, 512)));
        let gif = b"GIF89a\x00\x04\x00\x02";
        assert_eq!(sniff(gif), Some(ImageFormat::Gif));
        assert_eq!(dimensions(ImageFormat::Gif, gif), Some((1024, 512)));
        assert_eq!(
            sniff(b"\x00\x00\x00\x18ftypheic\x00\x00"),
            Some(ImageFormat::Heic)
        );
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn completeness_checks() {
        let mut png = png_head(1, 1);
        assert!(!looks_complete(
            ImageFormat::Png,
            &png,
            &png,
            png.len() as u64
        ));
        png.extend_from_slice(PNG_IEND);
        assert!(looks_complete(
            ImageFormat::Png,
            &png,
            &png,
            png.len() as u64
        ));
        assert!(looks_complete(ImageFormat::Jpeg, &[], &[1, 0xFF, 0xD9], 3));
        assert!(!looks_complete(ImageFormat::Jpeg, &[], &[1, 0xFF, 0xD8], 3));
        let webp = b"RIFF\x04\x00\x00\x00WEBP";
        assert!(looks_complete(ImageFormat::Webp, webp, webp, 12));
        assert!(!looks_complete(ImageFormat::Webp, webp, webp, 13));
    }

    #[test]
    fn truncated_headers_do_not_panic() {
        for n in 0..40 {
            let head = png_head(5, 5);
            let cut = &head[..n.min(head.len())];
            let _ = dimensions(ImageFormat::Png, cut);
            let _ = dimensions(ImageFormat::Jpeg, cut);
            let _ = dimensions(ImageFormat::Webp, cut);
            let _ = dimensions(ImageFormat::Gif, cut);
        }
    }
}
