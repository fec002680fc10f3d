//! One frame's stored samples, whatever the transfer syntax.
//!
//! Native (uncompressed, deflated) pixel data is sliced here. Encapsulated data goes to a
//! codec: dicom-pixeldata for RLE, JPEG (jpeg-decoder) and JPEG 2000 (openjp2);
//! `pure_jpegls` for JPEG-LS; libjpeg-turbo-rs for 12-bit DCT JPEG, which jpeg-decoder does
//! not decode. Before any codec runs, the codestream's own header is checked against Rows and
//! Columns, so no decoder allocates more than the frame we agreed to.

use std::borrow::Cow;

use dicom_core::value::Value;
use dicom_core::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

use super::meta::Attrs;

/// How a transfer syntax stores its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Uncompressed (or deflated as a whole data set).
    Native,
    /// RLE Lossless.
    Rle,
    /// JPEG baseline, extended, lossless.
    Jpeg,
    /// JPEG-LS lossless and near-lossless.
    JpegLs,
    /// JPEG 2000 lossless and lossy.
    Jpeg2000,
}

/// The codec of a transfer syntax UID, `None` when we cannot decode it.
pub(crate) fn codec(uid: &str) -> Option<Codec> {
    Some(match uid {
        "1.2.840.10008.1.2"
        | "1.2.840.10008.1.2.1"
        | "1.2.840.10008.1.2.1.99"
        | "1.2.840.10008.1.2.2" => Codec::Native,
        "1.2.840.10008.1.2.5" => Codec::Rle,
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => Codec::Jpeg,
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => Codec::JpegLs,
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => Codec::Jpeg2000,
        _ => return None,
    })
}

/// One decoded frame: stored samples as little-endian bytes, `bits_allocated` wide, plus the
/// colour model the bytes are in now (a JPEG or JPEG 2000 decoder has already turned YCbCr
/// into RGB).
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub bytes: Cow<'a, [u8]>,
    /// For BitsAllocated 1: the bit offset of the frame's first sample in `bytes`.
    pub bit_offset: u64,
    pub photometric: Cow<'a, str>,
}

/// Bytes one frame takes in native encoding (BitsAllocated 1: rounded up to whole bytes;
/// YBR_FULL_422: two samples per pixel).
pub(crate) fn native_frame_bits(a: &Attrs) -> u64 {
    let pixels = u64::from(a.rows) * u64::from(a.columns);
    let samples = if a.photometric == "YBR_FULL_422" && a.samples == 3 {
        2
    } else {
        u64::from(a.samples)
    };
    pixels * samples * u64::from(a.bits_allocated)
}

/// Little-endian bytes of a native pixel data value (dicom-rs keeps OW as 16-bit numbers in
/// the machine's order).
fn le_bytes(p: &PrimitiveValue) -> Cow<'_, [u8]> {
    match p {
        PrimitiveValue::U8(v) => Cow::Borrowed(&v[..]),
        PrimitiveValue::U16(v) if cfg!(target_endian = "big") => {
            Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        PrimitiveValue::I16(v) if cfg!(target_endian = "big") => {
            Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        other => other.to_bytes(),
    }
}

/// The native pixel data of the whole file, checked to hold every frame. In explicit VR big
/// endian, 32-bit samples are whole big-endian words (as pydicom and DCMTK read them), while
/// dicom-rs hands OW over as 16-bit words: those pairs are joined again.
pub(crate) fn native_data<'a>(
    obj: &'a DefaultDicomObject,
    a: &Attrs,
    big_endian: bool,
) -> Result<Cow<'a, [u8]>, String> {
    let elem = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?;
    let Value::Primitive(p) = elem.value() else {
        return Err(
            "the pixel data is encapsulated although the transfer syntax is uncompressed".into(),
        );
    };
    let data = match p {
        PrimitiveValue::U16(words) if big_endian && a.bits_allocated == 32 => Cow::Owned(
            words
                .chunks_exact(2)
                .flat_map(|w| ((u32::from(w[0]) << 16) | u32::from(w[1])).to_le_bytes())
                .collect(),
        ),
        _ => le_bytes(p),
    };
    let needed_bits = native_frame_bits(a) * u64::from(a.frames);
    let needed = needed_bits.div_ceil(8);
    if (data.len() as u64) < needed {
        return Err(format!(
            "the pixel data is truncated: {} bytes where {} frame{} of {}x{} need {needed}",
            data.len(),
            a.frames,
            if a.frames == 1 { "" } else { "s" },
            a.columns,
            a.rows
        ));
    }
    Ok(data)
}

/// Frame `index` (0-based) of native pixel data.
pub(crate) fn native_frame<'a>(data: &'a [u8], a: &'a Attrs, index: u32) -> Frame<'a> {
    let bits = native_frame_bits(a);
    let start_bit = bits * u64::from(index);
    let (bytes, bit_offset) = if a.bits_allocated == 1 {
        let first = (start_bit / 8) as usize;
        let last = (start_bit + bits).div_ceil(8) as usize;
        (&data[first..last], start_bit % 8)
    } else {
        let first = (start_bit / 8) as usize;
        (&data[first..first + (bits / 8) as usize], 0)
    };
    Frame {
        bytes: Cow::Borrowed(bytes),
        bit_offset,
        photometric: Cow::Borrowed(&a.photometric),
    }
}

/// Checks, before anything is decoded, that the pixel data can hold the declared Number of
/// Frames: native data must be long enough for all of them, encapsulated data needs at least
/// one fragment per frame. So the frame count we report is one the file backs.
pub(crate) fn check_frames(
    obj: &DefaultDicomObject,
    a: &Attrs,
    codec: Codec,
    big_endian: bool,
) -> Result<(), String> {
    if codec == Codec::Native {
        return native_data(obj, a, big_endian).map(|_| ());
    }
    let (frags, _) = fragments(obj)?;
    if frags.len() < a.frames as usize {
        return Err(format!(
            "the pixel data is truncated: {} fragment(s) cannot hold {} frames",
            frags.len(),
            a.frames
        ));
    }
    Ok(())
}

/// The fragments of an encapsulated pixel data element.
fn fragments(obj: &DefaultDicomObject) -> Result<(&[Vec<u8>], &[u32]), String> {
    let elem = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?;
    match elem.value() {
        Value::PixelSequence(seq) => Ok((seq.fragments(), seq.offset_table())),
        _ => Err(
            "the pixel data is not encapsulated although the transfer syntax is compressed".into(),
        ),
    }
}

/// The codestream of frame `index`: its fragment when there is one per frame, all fragments
/// for a single frame, else the fragments the Basic Offset Table assigns to it.
pub(crate) fn frame_codestream<'a>(
    obj: &'a DefaultDicomObject,
    frames: u32,
    index: u32,
) -> Result<Cow<'a, [u8]>, String> {
    let (frags, offsets) = fragments(obj)?;
    let frames = frames as usize;
    let i = index as usize;
    if frags.is_empty() {
        return Err("the pixel data has no fragments".into());
    }
    if frags.len() == frames {
        return Ok(Cow::Borrowed(&frags[i]));
    }
    if frames == 1 {
        return Ok(Cow::Owned(frags.concat()));
    }
    if frags.len() < frames {
        return Err(format!(
            "{} fragments cannot hold {frames} frames",
            frags.len()
        ));
    }
    if offsets.len() != frames {
        return Err(format!(
            "{} fragments for {frames} frames and no usable Basic Offset Table",
            frags.len()
        ));
    }
    let (start, end) = (
        u64::from(offsets[i]),
        offsets.get(i + 1).map_or(u64::MAX, |&o| u64::from(o)),
    );
    let mut at = 0u64;
    let mut out = Vec::new();
    for f in frags {
        if at >= start && at < end {
            out.extend_from_slice(f);
        }
        at += 8 + f.len() as u64;
    }
    if out.is_empty() {
        return Err(format!(
            "the Basic Offset Table points frame {} at no fragment",
            i + 1
        ));
    }
    Ok(Cow::Owned(out))
}

/// What a codestream's own header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHeader {
    pub width: u32,
    pub height: u32,
    pub components: u32,
    /// Sample precision (JPEG family only; 0 for JPEG 2000).
    pub precision: u8,
    /// The SOF marker (JPEG family only).
    pub marker: u8,
    /// A JFIF (APP0) or Adobe (APP14) segment precedes the frame header: the stream says
    /// which colour model it is in.
    pub colour_marker: bool,
}

/// Reads the frame header of a JPEG / JPEG-LS codestream (SOFn or SOF55) or the SIZ segment
/// of a JPEG 2000 one.
pub(crate) fn stream_header(data: &[u8]) -> Option<StreamHeader> {
    if data.starts_with(&[0xFF, 0xD8]) {
        let mut pos = 2;
        let mut colour_marker = false;
        while pos + 4 <= data.len() {
            if data[pos] != 0xFF {
                return None;
            }
            let marker = data[pos + 1];
            if marker == 0xFF {
                pos += 1; // fill byte
                continue;
            }
            let len = usize::from(u16::from_be_bytes([data[pos + 2], data[pos + 3]]));
            let sof = matches!(marker, 0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC))
                || marker == 0xF7;
            if sof {
                let seg = data.get(pos + 4..pos + 2 + len)?;
                if seg.len() < 6 {
                    return None;
                }
                return Some(StreamHeader {
                    precision: seg[0],
                    height: u32::from(u16::from_be_bytes([seg[1], seg[2]])),
                    width: u32::from(u16::from_be_bytes([seg[3], seg[4]])),
                    components: u32::from(seg[5]),
                    marker,
                    colour_marker,
                });
            }
            let body = data
                .get(pos + 4..(pos + 2 + len).min(data.len()))
                .unwrap_or(&[]);
            // An Adobe segment counts only when it is whole (its transform flag is byte 11).
            colour_marker |= (marker == 0xE0 && body.starts_with(b"JFIF\0"))
                || (marker == 0xEE && body.starts_with(b"Adobe") && body.len() >= 12);
            if marker == 0xDA {
                return None;
            }
            pos += 2 + len;
        }
        return None;
    }
    // JPEG 2000: SOC then SIZ, possibly inside a JP2 wrapper.
    let at = data
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let siz = data.get(at + 4..at + 4 + 38)?;
    let be32 = |o: usize| u32::from_be_bytes([siz[o], siz[o + 1], siz[o + 2], siz[o + 3]]);
    let (xsiz, ysiz, xo, yo) = (be32(4), be32(8), be32(12), be32(16));
    Some(StreamHeader {
        width: xsiz.checked_sub(xo)?,
        height: ysiz.checked_sub(yo)?,
        components: u32::from(u16::from_be_bytes([siz[36], siz[37]])),
        precision: 0,
        marker: 0,
        colour_marker: false,
    })
}

/// Decodes frame `index` of encapsulated pixel data. Runs inside the panic guard.
pub(crate) fn decode_frame<'a>(
    obj: &'a DefaultDicomObject,
    a: &'a Attrs,
    codec: Codec,
    index: u32,
) -> Result<Frame<'a>, String> {
    let expected = u64::from(a.rows)
        * u64::from(a.columns)
        * u64::from(a.samples)
        * u64::from(a.bits_allocated.div_ceil(8));
    let converted = if a.samples == 3 {
        Cow::Borrowed("RGB")
    } else {
        Cow::Borrowed(a.photometric.as_str())
    };
    let mut photometric = converted;
    let bytes: Vec<u8> = match codec {
        Codec::Native => unreachable_native()?,
        Codec::Rle => {
            photometric = Cow::Borrowed(a.photometric.as_str()); // RLE stores the colour model as is
            pixeldata_frame(obj, index)?
        }
        Codec::Jpeg | Codec::JpegLs | Codec::Jpeg2000 => {
            let stream = frame_codestream(obj, a.frames, index)?;
            let head = stream_header(&stream)
                .ok_or("the frame holds no recognisable codestream header")?;
            if (head.width, head.height) != (a.columns, a.rows) || head.components > 4 {
                return Err(format!(
                    "the codestream is {}x{} with {} components but the file says {}x{}",
                    head.width, head.height, head.components, a.columns, a.rows
                ));
            }
            match codec {
                Codec::JpegLs => jpeg_ls(&stream, a)?,
                Codec::Jpeg if head.precision == 12 && matches!(head.marker, 0xC1 | 0xC2) => {
                    jpeg12(&stream, a)?
                }
                Codec::Jpeg
                    if a.samples == 3
                        && a.photometric == "RGB"
                        && !head.colour_marker
                        && head.marker != 0xC3 =>
                {
                    jpeg_as_stored(&stream)?
                }
                _ => pixeldata_frame(obj, index)?,
            }
        }
    };
    if bytes.len() as u64 != expected {
        return Err(format!(
            "the decoder returned {} bytes where {}x{} pixels need {expected}",
            bytes.len(),
            a.columns,
            a.rows
        ));
    }
    Ok(Frame {
        bytes: Cow::Owned(bytes),
        bit_offset: 0,
        photometric,
    })
}

fn unreachable_native() -> Result<Vec<u8>, String> {
    Err("native pixel data reached the codec path".into())
}

/// dicom-pixeldata's decoding of one frame, as raw little-endian samples.
fn pixeldata_frame(obj: &DefaultDicomObject, index: u32) -> Result<Vec<u8>, String> {
    let decoded = obj
        .decode_pixel_data_frame(index)
        .map_err(|e| codec_message(&e))?;
    Ok(decoded.into_data())
}

/// dicom-pixeldata's error, reduced to its codec's words (its messages are about the
/// bitstream and the image attributes, never about patient data, but we keep only the
/// innermost cause, which is the codec's).
fn codec_message(e: &dicom_pixeldata::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let text: String = text.chars().take(200).collect();
    format!("the codec failed ({text})")
}

/// JPEG-LS through pure_jpegls (greyscale only).
fn jpeg_ls(stream: &[u8], a: &Attrs) -> Result<Vec<u8>, String> {
    if a.samples != 1 {
        return Err("colour JPEG-LS is not supported (only greyscale JPEG-LS is decoded)".into());
    }
    let (values, _, _) =
        jpegls::decode(stream, a.columns, a.rows).map_err(|e| format!("JPEG-LS: {e}"))?;
    Ok(match a.bits_allocated {
        8 => values.iter().map(|&v| v as u8).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// 12-bit DCT JPEG (process 4) through libjpeg-turbo-rs.
fn jpeg12(stream: &[u8], a: &Attrs) -> Result<Vec<u8>, String> {
    if a.bits_allocated != 16 {
        return Err("12-bit JPEG data needs BitsAllocated 16".into());
    }
    let img =
        libjpeg_turbo_rs::decompress_12bit(stream).map_err(|e| format!("12-bit JPEG: {e}"))?;
    if img.num_components != usize::from(a.samples) {
        return Err(format!(
            "the JPEG has {} components, the file says {}",
            img.num_components, a.samples
        ));
    }
    Ok(img
        .data
        .iter()
        .flat_map(|&v| (v as u16).to_le_bytes())
        .collect())
}

/// A colour JPEG whose file says RGB and whose stream has neither a JFIF nor an Adobe segment
/// to say otherwise: its samples are RGB already (PS3.5 8.2.1), not YCbCr to convert, which is
/// what a JPEG decoder would assume (pydicom decodes these the same way).
fn jpeg_as_stored(stream: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = jpeg_decoder::Decoder::new(stream);
    // `RGB` interleaves the three planes as they are (`None` would leave each line planar).
    decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    decoder.set_max_decoding_buffer_size(super::MAX_FRAME_BYTES as usize);
    decoder.decode().map_err(|e| format!("JPEG: {e}"))
}
