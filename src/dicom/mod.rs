//! DICOM input (issue 16): detection, decoding, windowing and the metadata we may show.
//!
//! [`open`] reads a file into a [`DicomImage`]; [`DicomImage::render`] turns one frame into
//! the 8-bit RGB image the model sees, with the window of [`ImageOptions`] (or the file's, or
//! the frame's min-max); [`render_file`] does both. The rendering rules are issue 16's,
//! byte for byte (see `render.rs` and scripts/reference/dicom.py, which computes the test
//! fixtures from the same formulas).
//!
//! Privacy: a DICOM file carries the patient's name, ID, birth date, institution, physicians,
//! dates and free text. Right after parsing, every element outside a short allow list is
//! dropped from memory (`meta::strip`); [`SafeMeta`] holds the only fields we ever show, and
//! [`DicomError`] messages never quote a tag's value. Nothing here prints or logs.
//!
//! Robustness: every declared length is checked against the file before dicom-rs parses it
//! (`scan.rs`), frames larger than [`MAX_FRAME_PIXELS`] are refused before any allocation,
//! only the asked frame is decoded, and dicom-rs and the codecs run under `catch_unwind`
//! (`guard.rs`), so malformed input gives an error naming the file, never a panic.
//!
//! Transfer syntaxes: implicit and explicit VR little endian, explicit VR big endian,
//! deflated explicit VR little endian, RLE lossless, JPEG baseline (8-bit), extended
//! (8/12-bit), lossless (process 14, SV1), JPEG-LS lossless and near-lossless (greyscale),
//! JPEG 2000 lossless and lossy. All decoders are pure Rust.

mod error;
pub mod guard;
mod meta;
mod pixels;
mod render;
mod scan;
mod window;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use dicom_core::value::Value;
use dicom_core::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use error::DicomError;
pub use meta::SafeMeta;
pub use scan::is_dicom;
pub use window::{AppliedWindow, VoiFunction, Window, WindowParseError, WindowSource, PRESETS};

use meta::Attrs;
use pixels::Codec;
use render::{Lut, SampleFormat};

/// The most pixels one frame may have: twice Pillow's `MAX_IMAGE_PIXELS`, the limit every
/// other image format gets (src/model/preprocess).
pub const MAX_FRAME_PIXELS: u64 = 2 * 89_478_485;

/// The most bytes one decoded frame may take.
pub const MAX_FRAME_BYTES: u64 = 1 << 30;

/// What to show of a DICOM file: which frame, through which window. Plain data, saved with
/// sessions; the default is frame 1 with the file's window (or min-max).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageOptions {
    /// The window (greyscale only); `None`: the file's, else min-max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The frame, 1-based; `None`: frame 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
}

impl ImageOptions {
    /// No window and no frame given.
    pub fn is_default(&self) -> bool {
        self.window.is_none() && self.frame.is_none()
    }
}

/// A parsed DICOM image, stripped of everything but what rendering needs.
pub struct DicomImage {
    path: PathBuf,
    obj: DefaultDicomObject,
    attrs: Attrs,
    meta: SafeMeta,
    codec: Codec,
    big_endian: bool,
    palette: Option<[Lut; 3]>,
}

impl fmt::Debug for DicomImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DicomImage")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// One rendered frame and what was done to it.
#[derive(Debug, Clone)]
pub struct Rendering {
    /// The 8-bit RGB image (Columns × Rows).
    pub image: RgbImage,
    /// The window applied (greyscale images only).
    pub window: Option<AppliedWindow>,
    /// The frame shown, 1-based.
    pub frame: u32,
    /// The file's safe metadata (its frame count included).
    pub meta: SafeMeta,
}

impl Rendering {
    /// One line for stderr or a caption: the metadata, the frame and the window, e.g.
    /// `CT CHEST, 512x512, 1 frame, MONOCHROME2, pixel spacing 0.7x0.7 mm, Explicit VR Little
    /// Endian; frame 1 of 1; window 40,400 (from the file)`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}; frame {} of {}",
            self.meta, self.frame, self.meta.frames
        );
        if let Some(w) = &self.window {
            out.push_str(&format!("; window {w}"));
        }
        out
    }
}

/// Reads and parses a DICOM file (see [`from_bytes`]).
pub fn open(path: &Path) -> Result<DicomImage, DicomError> {
    let bytes = std::fs::read(path).map_err(|source| DicomError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(path, &bytes)
}

/// [`open`] then [`DicomImage::render`].
pub fn render_file(path: &Path, opts: &ImageOptions) -> Result<Rendering, DicomError> {
    open(path)?.render(opts)
}

/// The name of a transfer syntax UID, or "unknown transfer syntax".
fn syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry.get(uid).map_or_else(
        || "unknown transfer syntax".to_string(),
        |ts| ts.name().to_string(),
    )
}

/// Parses a DICOM file's bytes (`path` only names it in errors): checks every declared length,
/// parses with dicom-rs under the panic guard, strips identifying elements, and checks that
/// the image is one we can render, all before any pixel is decoded.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<DicomImage, DicomError> {
    let invalid = |reason: String| DicomError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let layout = scan::layout(bytes).map_err(invalid)?;
    let uid = layout.transfer_syntax.clone();
    let unsupported_syntax = || DicomError::UnsupportedSyntax {
        path: path.to_path_buf(),
        uid: uid.clone(),
        name: syntax_name(&uid),
    };
    let Some(ts) = TransferSyntaxRegistry.get(&uid) else {
        return Err(unsupported_syntax());
    };
    let deflated = uid == scan::DEFLATED_LE;
    let dataset: Cow<[u8]> = if deflated {
        Cow::Owned(scan::inflate(&bytes[layout.dataset..]).map_err(invalid)?)
    } else {
        Cow::Borrowed(&bytes[layout.dataset..])
    };
    let big_endian = uid == scan::EXPLICIT_BE;
    scan::walk(&dataset, layout.explicit, big_endian).map_err(invalid)?;
    // How the data set is encoded (deflate is undone above; some files declare explicit VR
    // and use implicit VR).
    let encoding = if !layout.explicit {
        scan::IMPLICIT_LE
    } else if deflated {
        scan::EXPLICIT_LE
    } else {
        uid.as_str()
    };
    let dataset_ts = TransferSyntaxRegistry.get(encoding).unwrap_or(ts);
    let parsed = guard::catch(|| -> Result<DefaultDicomObject, String> {
        let obj = InMemDicomObject::read_dataset_with_ts(&dataset[..], dataset_ts)
            .map_err(|_| "the data set could not be parsed (corrupt or truncated)".to_string())?;
        // Only the transfer syntax of the meta group matters from here on (it picks the
        // codec); the SOP UIDs are placeholders unless the data set has its own.
        obj.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uid.as_str())
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                .media_storage_sop_instance_uid("2.25.0"),
        )
        .map_err(|_| "the data set has no usable meta information".to_string())
    });
    let mut obj = match parsed {
        Ok(Ok(obj)) => obj,
        Ok(Err(reason)) => return Err(invalid(reason)),
        Err(()) => {
            return Err(invalid(
                "the DICOM parser crashed on this file (it is malformed)".into(),
            ))
        }
    };
    drop(dataset);
    let (attrs, meta) = meta::strip(&mut obj, syntax_name(&uid));
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(DicomError::NoPixelData {
            path: path.to_path_buf(),
            modality: meta.modality.clone().unwrap_or_else(|| "unknown".into()),
        });
    }
    let codec = pixels::codec(&uid).ok_or_else(unsupported_syntax)?;
    check_image(path, &attrs, codec)?;
    pixels::check_frames(&obj, &attrs, codec, big_endian).map_err(invalid)?;
    let palette = if attrs.photometric == "PALETTE COLOR" {
        Some(
            palette_luts(&obj).map_err(|reason| DicomError::Unsupported {
                path: path.to_path_buf(),
                reason,
            })?,
        )
    } else {
        None
    };
    Ok(DicomImage {
        path: path.to_path_buf(),
        obj,
        attrs,
        meta,
        codec,
        big_endian,
        palette,
    })
}

/// Refuses layouts we do not render and sizes we do not allocate.
fn check_image(path: &Path, a: &Attrs, codec: Codec) -> Result<(), DicomError> {
    let unsupported = |reason: String| {
        Err(DicomError::Unsupported {
            path: path.to_path_buf(),
            reason,
        })
    };
    if a.rows == 0 || a.columns == 0 {
        return Err(DicomError::Invalid {
            path: path.to_path_buf(),
            reason: format!("the image is {}x{} pixels", a.columns, a.rows),
        });
    }
    let pixels = u64::from(a.rows) * u64::from(a.columns);
    let bytes = pixels * u64::from(a.samples) * u64::from(a.bits_allocated.div_ceil(8));
    if pixels > MAX_FRAME_PIXELS || bytes > MAX_FRAME_BYTES {
        return Err(DicomError::TooLarge {
            path: path.to_path_buf(),
            columns: a.columns.into(),
            rows: a.rows.into(),
            samples: a.samples.into(),
            limit: MAX_FRAME_PIXELS,
        });
    }
    let native = codec == Codec::Native;
    let bits_ok = match a.bits_allocated {
        1 => native && a.samples == 1,
        8 | 16 => true,
        32 => native,
        _ => false,
    };
    if !bits_ok {
        return unsupported(format!(
            "BitsAllocated {} with {} sample(s) per pixel in this transfer syntax",
            a.bits_allocated, a.samples
        ));
    }
    let pi = a.photometric.as_str();
    let layout_ok = match (a.samples, pi) {
        (1, "MONOCHROME1" | "MONOCHROME2") => true,
        (1, "PALETTE COLOR") => a.bits_allocated <= 16,
        (3, "RGB" | "YBR_FULL") => true,
        (3, "YBR_FULL_422") => !native || (a.bits_allocated == 8 && a.columns.is_multiple_of(2)),
        (3, "YBR_ICT" | "YBR_RCT" | "YBR_PARTIAL_422" | "YBR_PARTIAL_420") => {
            !native && codec != Codec::Rle
        }
        _ => false,
    };
    if !layout_ok {
        return unsupported(format!(
            "photometric interpretation {} with {} sample(s) per pixel and BitsAllocated {}",
            if pi.is_empty() { "(missing)" } else { pi },
            a.samples,
            a.bits_allocated
        ));
    }
    Ok(())
}

/// The three palette LUTs, reduced to 8 bits (16-bit entries keep their high byte).
fn palette_luts(obj: &DefaultDicomObject) -> Result<[Lut; 3], String> {
    let channels = [
        (
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ];
    let mut luts = Vec::with_capacity(3);
    for (desc_tag, data_tag) in channels {
        let desc = obj
            .get(desc_tag)
            .and_then(|e| e.to_multi_int::<i64>().ok())
            .filter(|d| d.len() == 3)
            .ok_or("PALETTE COLOR without a usable palette descriptor")?;
        let n = if desc[0] == 0 {
            65536
        } else {
            desc[0].clamp(1, 65536) as usize
        };
        let data = obj
            .get(data_tag)
            .ok_or("segmented palette colour lookup tables are not supported")?;
        let Value::Primitive(p) = data.value() else {
            return Err("the palette lookup table data is not a plain value".into());
        };
        let words: Vec<u16> = match p {
            PrimitiveValue::U16(v) => v.to_vec(),
            PrimitiveValue::U8(b) if b.len() == n => b.iter().map(|&x| u16::from(x)).collect(),
            PrimitiveValue::U8(b) => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            _ => return Err("the palette lookup table data has an unexpected type".into()),
        };
        if words.len() != n {
            return Err(format!(
                "the palette lookup table has {} entries where its descriptor says {n}",
                words.len()
            ));
        }
        let entries = words
            .iter()
            .map(|&w| {
                if desc[2] > 8 {
                    (w >> 8) as u8
                } else {
                    (w & 0xFF) as u8
                }
            })
            .collect();
        luts.push(Lut {
            entries,
            first: desc[1],
        });
    }
    let [r, g, b]: [Lut; 3] = luts.try_into().map_err(|_| "palette".to_string())?;
    Ok([r, g, b])
}

impl DicomImage {
    /// The safe technical metadata.
    pub fn meta(&self) -> &SafeMeta {
        &self.meta
    }

    /// How many frames the file has.
    pub fn frames(&self) -> u32 {
        self.attrs.frames
    }

    /// Renders one frame (issue 16's rules): `opts.frame` (default 1) through `opts.window`
    /// (greyscale only; default the file's window, else min-max). Decodes that frame only.
    pub fn render(&self, opts: &ImageOptions) -> Result<Rendering, DicomError> {
        let path = || self.path.clone();
        let frames = self.attrs.frames;
        let frame = opts.frame.unwrap_or(1);
        if frame == 0 || frame > frames {
            return Err(DicomError::FrameOutOfRange {
                path: path(),
                frame,
                frames,
            });
        }
        if opts.window.is_some() && !self.meta.is_greyscale() {
            return Err(DicomError::WindowOnColour {
                path: path(),
                photometric: self.attrs.photometric.clone(),
            });
        }
        let index = frame - 1;
        let decode = |reason: String| DicomError::Decode {
            path: path(),
            frame,
            reason,
        };
        let result = guard::catch(
            || -> Result<(RgbImage, Option<AppliedWindow>), DicomError> {
                let native;
                let frame_data = if self.codec == Codec::Native {
                    native = pixels::native_data(&self.obj, &self.attrs, self.big_endian).map_err(
                        |reason| DicomError::Invalid {
                            path: path(),
                            reason,
                        },
                    )?;
                    pixels::native_frame(&native, &self.attrs, index)
                } else {
                    pixels::decode_frame(&self.obj, &self.attrs, self.codec, index)
                        .map_err(decode)?
                };
                Ok(self.to_rgb(&frame_data, index, opts.window))
            },
        );
        let (image, window) = match result {
            Ok(r) => r?,
            Err(()) => {
                return Err(decode(
                    "the decoder crashed on this data (malformed codestream)".into(),
                ))
            }
        };
        Ok(Rendering {
            image,
            window,
            frame,
            meta: self.meta.clone(),
        })
    }

    fn to_rgb(
        &self,
        frame: &pixels::Frame,
        index: u32,
        window: Option<Window>,
    ) -> (RgbImage, Option<AppliedWindow>) {
        let a = &self.attrs;
        let format = SampleFormat {
            bits_allocated: a.bits_allocated,
            bits_stored: a.bits_stored,
            signed: a.signed,
        };
        let size = (a.columns, a.rows);
        match (&self.palette, frame.photometric.as_ref()) {
            (Some(luts), _) => (render::palette(frame, format, size, luts), None),
            (None, "MONOCHROME1" | "MONOCHROME2") => {
                let mono1 = frame.photometric == "MONOCHROME1";
                let (img, applied) = render::grey(
                    frame,
                    format,
                    size,
                    a.rescale(index),
                    a.voi(index),
                    window,
                    mono1,
                );
                (img, Some(applied))
            }
            (None, "YBR_FULL_422") => (render::ybr_422(frame, size), None),
            (None, _) => (
                render::colour(frame, format, size, a.planar && self.codec == Codec::Native),
                None,
            ),
        }
    }
}
