//! Finding the parts of a DICOM file and checking every declared length before dicom-rs sees
//! the bytes.
//!
//! dicom-parser allocates (and zero-fills) a value's declared length before reading it, so a
//! 300-byte file whose element claims 4 GB would make it allocate 4 GB. [`walk`] follows the
//! same element structure the parser will (explicit or implicit VR, either byte order,
//! sequences and items of defined or undefined length, encapsulated fragments) and refuses any
//! length that runs past the end of the bytes. Deflated data sets are inflated here, with a
//! cap, so that a small "zip bomb" cannot grow without bound either.

use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// The most bytes a deflated data set may inflate to (the pixel limit for one 16-bit frame
/// with room to spare, and far above any real deflated file).
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Explicit VR Little Endian: the meta group's encoding, and what deflate wraps.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian: the default for a bare data set.
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Big Endian (retired, still found in archives).
pub const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";

/// Where a file's parts are.
#[derive(Debug)]
pub struct Layout {
    /// Byte offset where the data set (after the meta group) starts.
    pub dataset: usize,
    /// The transfer syntax UID of the data set (from the meta group, or guessed for a bare
    /// data set or a meta group without one).
    pub transfer_syntax: String,
    /// Whether the data set's elements are in explicit VR. Usually what the transfer syntax
    /// says; some writers declare explicit VR and write implicit VR, which pydicom accepts, so
    /// the first element decides.
    pub explicit: bool,
}

/// Whether these bytes look like DICOM: the `DICM` marker at byte 128 (the standard file
/// format) or at byte 0 (a file whose preamble was stripped), or a bare data set starting
/// with a group 0008 element (no meta group at all). PNG, JPEG, BMP, TIFF and WebP all start
/// with other bytes.
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
        || bytes.starts_with(b"DICM")
        || bare_dataset(bytes).is_some()
}

/// The transfer syntax a bare data set (no meta group) seems to use: its first element must
/// be in group 0008 (little endian), followed by either a valid explicit VR or an implicit
/// length that fits in the file.
fn bare_dataset(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 16 || bytes[0..2] != [0x08, 0x00] {
        return None;
    }
    sniff(bytes)
}

/// A VR spelled in explicit-VR encoding, with whether its length field is 32-bit.
fn explicit_vr(two: &[u8]) -> Option<(VR, bool)> {
    let text = std::str::from_utf8(two).ok()?;
    let vr: VR = text.parse().ok()?;
    let long = matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    );
    Some((vr, long))
}

/// Finds the meta group (checking its lengths) and the data set's transfer syntax.
pub fn layout(bytes: &[u8]) -> Result<Layout, String> {
    let magic = if bytes.get(128..132) == Some(b"DICM") {
        Some(128)
    } else if bytes.starts_with(b"DICM") {
        Some(0)
    } else {
        None
    };
    let Some(magic) = magic else {
        let ts = bare_dataset(bytes).ok_or("not a DICOM file (no DICM marker)")?;
        return Ok(Layout {
            dataset: 0,
            transfer_syntax: ts.to_string(),
            explicit: ts == EXPLICIT_LE,
        });
    };
    // The meta group: explicit VR little endian elements of group 0002.
    let mut pos = magic + 4;
    let mut transfer_syntax = None;
    while pos + 8 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let (_, long) = explicit_vr(&bytes[pos + 4..pos + 6])
            .ok_or_else(|| format!("the file meta group has an invalid VR at byte {pos}"))?;
        let (header, len) = if long {
            if pos + 12 > bytes.len() {
                break;
            }
            (12, le32(&bytes[pos + 8..pos + 12]))
        } else {
            (
                8,
                u32::from(u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]])),
            )
        };
        let end = checked_end(bytes.len(), pos + header, len, Tag(group, element))?;
        if element == 0x0010 {
            let text = String::from_utf8_lossy(&bytes[pos + header..end]);
            transfer_syntax = Some(text.trim_end_matches(['\0', ' ']).trim().to_string());
        }
        pos = end;
    }
    let data = &bytes[pos..];
    // Without a Transfer Syntax UID, guess from the data set as for a bare one.
    let transfer_syntax = match transfer_syntax.filter(|t| !t.is_empty()) {
        Some(ts) => ts,
        None => sniff(data)
            .ok_or("the file meta group has no Transfer Syntax UID (0002,0010)")?
            .to_string(),
    };
    let mut explicit = transfer_syntax != IMPLICIT_LE;
    if explicit
        && transfer_syntax != EXPLICIT_BE
        && transfer_syntax != DEFLATED_LE
        && sniff(data) == Some(IMPLICIT_LE)
    {
        explicit = false;
    }
    Ok(Layout {
        dataset: pos,
        transfer_syntax,
        explicit,
    })
}

/// The little-endian encoding the first element of a data set is in: explicit VR when its
/// bytes 4-5 spell a VR, implicit when its 32-bit length fits.
fn sniff(data: &[u8]) -> Option<&'static str> {
    if data.len() < 8 {
        return None;
    }
    if explicit_vr(&data[4..6]).is_some() {
        return Some(EXPLICIT_LE);
    }
    let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    (u64::from(len) + 8 <= data.len() as u64).then_some(IMPLICIT_LE)
}

/// Inflates a deflated data set, refusing to produce more than [`MAX_INFLATED_BYTES`].
pub fn inflate(deflated: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the deflated data set is corrupt ({e})"))?;
    if out.len() as u64 > MAX_INFLATED_BYTES {
        return Err(format!(
            "the deflated data set inflates to more than {} MiB",
            MAX_INFLATED_BYTES >> 20
        ));
    }
    Ok(out)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `start + len` if that stays within `total`; otherwise the truncation message.
fn checked_end(total: usize, start: usize, len: u32, tag: Tag) -> Result<usize, String> {
    let remain = total.saturating_sub(start);
    if len as usize > remain {
        return Err(format!(
            "the file is truncated or corrupt: element ({:04X},{:04X}) declares {len} bytes \
             but only {remain} remain",
            tag.0, tag.1
        ));
    }
    Ok(start + len as usize)
}

/// One open sequence, item or encapsulated pixel data while walking.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// A sequence; `end` when its length is defined; `implicit` when it is an explicit-VR
    /// UN element of undefined length, whose content is implicit VR little endian
    /// (PS3.5 6.2.2).
    Seq { end: Option<usize>, implicit: bool },
    /// An item of a sequence.
    Item { end: Option<usize> },
    /// Encapsulated pixel data (or another undefined-length non-sequence value): its items are
    /// opaque fragments.
    Fragments,
}

/// Walks a data set (explicit or implicit VR, either byte order, not deflated) and checks that
/// no declared length runs past the end of `data`. Errors name the element by tag number only.
pub fn walk(data: &[u8], explicit: bool, big_endian: bool) -> Result<(), String> {
    let dict = StandardDataDictionary;
    let mut stack: Vec<Open> = Vec::new();
    let mut pos = 0usize;
    loop {
        // Close whatever defined-length containers end here.
        while let Some(Open::Seq { end: Some(e), .. } | Open::Item { end: Some(e) }) = stack.last()
        {
            if *e > pos {
                break;
            }
            stack.pop();
        }
        if pos + 8 > data.len() {
            return Ok(()); // the end (a few trailing bytes are the parser's business)
        }
        // Inside an undefined-length UN element everything is implicit VR little endian.
        let implicit_here = stack
            .iter()
            .any(|o| matches!(o, Open::Seq { implicit: true, .. }));
        let (explicit, big_endian) = if implicit_here {
            (false, false)
        } else {
            (explicit, big_endian)
        };
        let u16_at = |p: usize| {
            let b = [data[p], data[p + 1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_at = |p: usize| {
            let b = [data[p], data[p + 1], data[p + 2], data[p + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let tag = Tag(u16_at(pos), u16_at(pos + 2));
        if tag.0 == 0xFFFE {
            let len = u32_at(pos + 4);
            pos = item(&mut stack, data, pos, tag, len)?;
            continue;
        }
        let mut un_undefined = false;
        let (header, len, is_sequence) = if explicit {
            match explicit_vr(&data[pos + 4..pos + 6]) {
                Some((vr, true)) => {
                    if pos + 12 > data.len() {
                        return Err(format!(
                            "the file is truncated: element ({:04X},{:04X}) has no length",
                            tag.0, tag.1
                        ));
                    }
                    let len = u32_at(pos + 8);
                    un_undefined = vr == VR::UN && len == UNDEFINED;
                    (12, len, vr == VR::SQ)
                }
                Some((_, false)) => (8, u32::from(u16_at(pos + 6)), false),
                None => {
                    return Err(format!(
                        "the file is corrupt: element ({:04X},{:04X}) has an invalid VR",
                        tag.0, tag.1
                    ))
                }
            }
        } else {
            let sq = dict
                .by_tag(tag)
                .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)));
            (8, u32_at(pos + 4), sq)
        };
        if len == UNDEFINED {
            let pixel = tag == Tag(0x7FE0, 0x0010);
            stack.push(if pixel && !is_sequence {
                Open::Fragments
            } else {
                Open::Seq {
                    end: None,
                    implicit: un_undefined,
                }
            });
            pos += header;
            continue;
        }
        let end = checked_end(data.len(), pos + header, len, tag)?;
        if is_sequence {
            stack.push(Open::Seq {
                end: Some(end),
                implicit: false,
            });
            pos += header;
        } else {
            pos = end;
        }
    }
}

/// An item or delimiter tag (group FFFE) at `pos`: opens an item, skips a fragment, or closes
/// what the delimiter ends. Returns the next position.
fn item(
    stack: &mut Vec<Open>,
    data: &[u8],
    pos: usize,
    tag: Tag,
    len: u32,
) -> Result<usize, String> {
    Ok(match tag.1 {
        0xE000 if matches!(stack.last(), Some(Open::Fragments)) => {
            if len == UNDEFINED {
                return Err("the file is corrupt: a pixel data fragment has no length".into());
            }
            checked_end(data.len(), pos + 8, len, tag)?
        }
        0xE000 => {
            let end = if len == UNDEFINED {
                None
            } else {
                Some(checked_end(data.len(), pos + 8, len, tag)?)
            };
            stack.push(Open::Item { end });
            pos + 8
        }
        0xE00D => {
            if let Some(Open::Item { .. }) = stack.last() {
                stack.pop();
            }
            pos + 8
        }
        0xE0DD => {
            if let Some(Open::Item { .. }) = stack.last() {
                stack.pop();
            }
            if let Some(Open::Seq { .. } | Open::Fragments) = stack.last() {
                stack.pop();
            }
            pos + 8
        }
        _ => checked_end(
            data.len(),
            pos + 8,
            if len == UNDEFINED { 0 } else { len },
            tag,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit_element(tag: (u16, u16), vr: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(tag.0.to_le_bytes());
        out.extend(tag.1.to_le_bytes());
        out.extend(vr.as_bytes());
        if matches!(vr, "OB" | "OW" | "SQ" | "UN" | "UT") {
            out.extend([0, 0]);
            out.extend((value.len() as u32).to_le_bytes());
        } else {
            out.extend((value.len() as u16).to_le_bytes());
        }
        out.extend(value);
        out
    }

    #[test]
    fn detects_dicom_by_bytes() {
        let mut standard = vec![0u8; 132];
        standard[128..132].copy_from_slice(b"DICM");
        assert!(is_dicom(&standard));
        assert!(is_dicom(b"DICM\x02\x00\x00\x00"));
        let bare = explicit_element((0x0008, 0x0060), "CS", b"CT");
        let mut bare = bare.repeat(2);
        bare.extend([0; 8]);
        assert!(is_dicom(&bare));
        for other in [
            &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..],
            b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01",
            b"BM6\0\0\0\0\0\0\x006\0\0\0(\0",
            b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0",
            b"",
        ] {
            assert!(!is_dicom(other), "{other:?}");
        }
    }

    #[test]
    fn walk_refuses_lengths_past_the_end() {
        let mut data = explicit_element((0x0008, 0x0060), "CS", b"CT");
        data.extend(explicit_element((0x0009, 0x1010), "OB", &[1, 2, 3, 4]));
        assert_eq!(walk(&data, true, false), Ok(()));
        let at = data.len() - 8;
        data[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let err = walk(&data, true, false).expect_err("huge");
        assert!(
            err.contains("(0009,1010) declares 4294967280 bytes"),
            "{err}"
        );
    }

    #[test]
    fn walk_descends_into_sequences_and_skips_fragments() {
        // A defined-length sequence whose item holds an element claiming too much.
        let inner = explicit_element((0x0028, 0x1050), "DS", b"40");
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend((inner.len() as u32).to_le_bytes());
        item.extend(&inner);
        let seq = explicit_element((0x5200, 0x9229), "SQ", &item);
        assert_eq!(walk(&seq, true, false), Ok(()));
        let mut bad = seq.clone();
        let n = bad.len();
        bad[n - 4..n - 2].copy_from_slice(&0xFFF0u16.to_le_bytes()); // the DS's length field
        assert!(walk(&bad, true, false).is_err());
        // Encapsulated pixel data: fragments are skipped whatever their bytes look like.
        let mut px = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        for frag in [&[][..], &[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0x7F]] {
            px.extend([0xFE, 0xFF, 0x00, 0xE0]);
            px.extend((frag.len() as u32).to_le_bytes());
            px.extend(frag);
        }
        px.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(walk(&px, true, false), Ok(()));
    }

    #[test]
    fn inflate_is_capped() {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[7u8; 1000]).expect("deflate");
        let small = enc.finish().expect("deflate");
        assert_eq!(inflate(&small).expect("inflate").len(), 1000);
        assert!(inflate(b"\xff\xff\xff").is_err());
    }
}
