//! The attributes rendering needs, and the only metadata we ever show.
//!
//! [`strip`] runs right after parsing and drops every element that is not on a short allow
//! list (the image pixel module of group 0028, Modality, Body Part Examined, Slice Thickness,
//! the pixel data, the functional groups). What is not in memory cannot leak through a
//! message, a log line or a `Debug` print. The functional group sequences (which carry frame
//! dates) are read into [`Attrs`] and then dropped too.

use std::fmt;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use super::window::VoiFunction;

/// Safe technical metadata of a DICOM image: nothing here can identify a patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SafeMeta {
    /// Modality (CT, MR, CR, DX, US, ...), when it is a plain code.
    pub modality: Option<String>,
    /// Body Part Examined, when it is a plain code.
    pub body_part: Option<String>,
    /// Rows (height in pixels).
    pub rows: u32,
    /// Columns (width in pixels).
    pub columns: u32,
    /// Number of frames (1 for a single image).
    pub frames: u32,
    /// Pixel Spacing (row spacing, column spacing) in mm.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// Slice Thickness in mm.
    pub slice_thickness_mm: Option<f64>,
    /// Photometric Interpretation as stored (MONOCHROME2, RGB, YBR_FULL_422, ...).
    pub photometric: String,
    /// The transfer syntax's name.
    pub transfer_syntax: String,
    /// Burned In Annotation (0028,0301) is YES.
    pub burned_in_annotation: bool,
}

impl SafeMeta {
    /// Whether the image is greyscale (a window applies).
    pub fn is_greyscale(&self) -> bool {
        matches!(self.photometric.as_str(), "MONOCHROME1" | "MONOCHROME2")
    }

    /// One-line warnings to show with the image: text burned into the pixels (patient name,
    /// dates) that the model will read too. Ultrasound, secondary capture and "other" images
    /// often carry such text even when the flag is absent.
    pub fn warnings(&self) -> Vec<String> {
        let modality = self.modality.as_deref().unwrap_or("");
        let mut out = Vec::new();
        if self.burned_in_annotation {
            out.push(
                "this DICOM image is marked as having text burned into its pixels \
                 (Burned In Annotation = YES), which may identify the patient; the model sees it"
                    .to_string(),
            );
        } else if matches!(modality, "US" | "SC" | "OT") {
            out.push(format!(
                "{modality} images often have text burned into their pixels, which may identify \
                 the patient; the model sees it"
            ));
        }
        out
    }
}

impl fmt::Display for SafeMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let what = [self.modality.as_deref(), self.body_part.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !what.is_empty() {
            parts.push(what);
        }
        parts.push(format!("{}x{}", self.columns, self.rows));
        parts.push(format!(
            "{} frame{}",
            self.frames,
            if self.frames == 1 { "" } else { "s" }
        ));
        parts.push(self.photometric.clone());
        if let Some([r, c]) = self.pixel_spacing_mm {
            parts.push(format!("pixel spacing {r}x{c} mm"));
        }
        if let Some(t) = self.slice_thickness_mm {
            parts.push(format!("slice {t} mm"));
        }
        parts.push(self.transfer_syntax.clone());
        f.write_str(&parts.join(", "))
    }
}

/// A window stored in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FileVoi {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

/// A modality rescale: `v = stored * slope + intercept`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rescale {
    pub slope: f64,
    pub intercept: f64,
}

/// Rescale and window of one functional group item.
#[derive(Debug, Clone, Copy, Default)]
struct Groups {
    rescale: Option<Rescale>,
    voi: Option<FileVoi>,
}

/// What rendering needs from the data set, read once.
#[derive(Debug, Clone)]
pub(crate) struct Attrs {
    pub rows: u32,
    pub columns: u32,
    pub samples: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    pub planar: bool,
    pub photometric: String,
    pub frames: u32,
    rescale: Option<Rescale>,
    voi: Option<FileVoi>,
    shared: Groups,
    per_frame: Vec<Groups>,
}

impl Attrs {
    /// The rescale for frame `index` (0-based): the data set's own Rescale Slope and
    /// Intercept when both are present, else the frame's functional group, else the shared
    /// one.
    pub fn rescale(&self, index: u32) -> Option<Rescale> {
        self.rescale
            .or_else(|| self.per_frame.get(index as usize).and_then(|g| g.rescale))
            .or(self.shared.rescale)
    }

    /// The file's window for frame `index`, in the same order of precedence.
    pub fn voi(&self, index: u32) -> Option<FileVoi> {
        self.voi
            .or_else(|| self.per_frame.get(index as usize).and_then(|g| g.voi))
            .or(self.shared.voi)
    }
}

/// Tags kept in memory after parsing: the image pixel module, palette and VOI/modality LUT
/// attributes (group 0028, less its free-text Image Presentation Comments), and a few safe
/// descriptors. Everything else is dropped.
fn keep(tag: Tag) -> bool {
    (tag.0 == 0x0028 && tag != Tag(0x0028, 0x4000))
        || tag == tags::MODALITY
        || tag == tags::BODY_PART_EXAMINED
        || tag == tags::SLICE_THICKNESS
        || tag == tags::PIXEL_DATA
}

/// Reads [`Attrs`] and [`SafeMeta`] and strips the object down to the allow list.
pub(crate) fn strip(obj: &mut InMemDicomObject, transfer_syntax: String) -> (Attrs, SafeMeta) {
    let shared = obj
        .get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
        .map(groups)
        .unwrap_or_default();
    let per_frame: Vec<Groups> = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| items.iter().map(groups).collect())
        .unwrap_or_default();
    let measures = obj
        .get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
        .and_then(|item| first_item(item, tags::PIXEL_MEASURES_SEQUENCE));
    let shared_spacing = measures.and_then(spacing);
    let shared_thickness = measures.and_then(thickness);
    obj.retain(|e| keep(e.header().tag));

    let uint = |tag: Tag| obj.get(tag).and_then(|e| e.to_int::<u32>().ok());
    let frames = obj
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<i64>().ok())
        .filter(|&n| n >= 1)
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let bits_allocated = uint(tags::BITS_ALLOCATED).unwrap_or(0) as u16;
    let photometric = code(obj.get(tags::PHOTOMETRIC_INTERPRETATION), 16).unwrap_or_default();
    let attrs = Attrs {
        rows: uint(tags::ROWS).unwrap_or(0),
        columns: uint(tags::COLUMNS).unwrap_or(0),
        samples: uint(tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        bits_allocated,
        bits_stored: uint(tags::BITS_STORED)
            .map(|b| b as u16)
            .filter(|&b| b >= 1 && b <= bits_allocated)
            .unwrap_or(bits_allocated),
        signed: uint(tags::PIXEL_REPRESENTATION) == Some(1),
        planar: uint(tags::PLANAR_CONFIGURATION) == Some(1),
        photometric: photometric.clone(),
        frames,
        rescale: rescale_of(obj),
        voi: voi_of(obj),
        shared,
        per_frame,
    };
    let meta = SafeMeta {
        modality: code(obj.get(tags::MODALITY), 16),
        body_part: code(obj.get(tags::BODY_PART_EXAMINED), 16),
        rows: attrs.rows,
        columns: attrs.columns,
        frames,
        pixel_spacing_mm: spacing(obj).or(shared_spacing),
        slice_thickness_mm: thickness(obj).or(shared_thickness),
        photometric,
        transfer_syntax,
        burned_in_annotation: code(obj.get(tags::BURNED_IN_ANNOTATION), 16).as_deref()
            == Some("YES"),
    };
    (attrs, meta)
}

/// A code string (CS) value, only if it is a plain code: uppercase letters, digits, space and
/// underscore, at most `max` characters. Anything else (a mistyped free-text value) is
/// dropped rather than shown.
fn code(elem: Option<&InMemElement>, max: usize) -> Option<String> {
    let text = elem?.to_str().ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    let plain = !text.is_empty()
        && text.len() <= max
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ' || c == '_');
    plain.then(|| text.to_string())
}

/// Pixel Spacing (row, column) in mm, when it is two finite numbers.
fn spacing(item: &InMemDicomObject) -> Option<[f64; 2]> {
    let v = item.get(tags::PIXEL_SPACING)?.to_multi_float64().ok()?;
    (v.len() == 2 && v.iter().all(|x| x.is_finite())).then(|| [v[0], v[1]])
}

/// Slice Thickness in mm, when it is a finite number.
fn thickness(item: &InMemDicomObject) -> Option<f64> {
    item.get(tags::SLICE_THICKNESS)?
        .to_float64()
        .ok()
        .filter(|t| t.is_finite())
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// Rescale Slope and Intercept of a data set or item, only when both are present.
fn rescale_of(obj: &InMemDicomObject) -> Option<Rescale> {
    let first = |tag: Tag| {
        obj.get(tag)
            .and_then(|e| e.to_multi_float64().ok())
            .and_then(|v| v.first().copied())
            .filter(|x| x.is_finite())
    };
    Some(Rescale {
        slope: first(tags::RESCALE_SLOPE)?,
        intercept: first(tags::RESCALE_INTERCEPT)?,
    })
}

/// The first Window Center/Width pair of a data set or item with its VOI LUT Function; a
/// width the function cannot use (below 1 for LINEAR, not positive otherwise) counts as no
/// window.
fn voi_of(obj: &InMemDicomObject) -> Option<FileVoi> {
    let first = |tag: Tag| {
        obj.get(tag)
            .and_then(|e| e.to_multi_float64().ok())
            .and_then(|v| v.first().copied())
            .filter(|x| x.is_finite())
    };
    let function = obj
        .get(tags::VOILUT_FUNCTION)
        .and_then(|e| e.to_str().ok())
        .map_or(VoiFunction::Linear, |s| VoiFunction::from_dicom(&s));
    let (center, width) = (first(tags::WINDOW_CENTER)?, first(tags::WINDOW_WIDTH)?);
    let usable = match function {
        VoiFunction::Linear => width >= 1.0,
        _ => width > 0.0,
    };
    usable.then_some(FileVoi {
        center,
        width,
        function,
    })
}

/// Rescale and window of one functional group item (Pixel Value Transformation and Frame VOI
/// LUT sequences).
fn groups(item: &InMemDicomObject) -> Groups {
    Groups {
        rescale: first_item(item, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).and_then(rescale_of),
        voi: first_item(item, tags::FRAME_VOILUT_SEQUENCE).and_then(voi_of),
    }
}
