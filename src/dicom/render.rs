//! Stored samples to 8-bit RGB, exactly as issue 16 words it (and as
//! scripts/reference/dicom.py computes the expected images).
//!
//! Greyscale: (1) `v = stored` (signed when PixelRepresentation is 1, masked to BitsStored),
//! `v = v * slope + intercept` when the file has both; (2) the window: the user's, else the
//! file's first WindowCenter/WindowWidth with its VOI LUT Function, else the frame's min..max
//! as LINEAR_EXACT; (3) `y` in [0, 1] by PS3.3 C.11.2.1.2; (4) `byte = floor(y * 65535) >> 8`;
//! (5) MONOCHROME1 inverted; grey to RGB. All arithmetic is f64, in the same order as the
//! numpy reference, so the bytes match exactly.
//!
//! dicom-pixeldata has its own windowing, but it computes min-max from the unsigned reading
//! of signed data (nearly black images) and has no PALETTE COLOR: we use it for decoding only.

use image::{Rgb, RgbImage};

use super::meta::{FileVoi, Rescale};
use super::pixels::Frame;
use super::window::{AppliedWindow, VoiFunction, Window, WindowSource};

/// How to read stored values out of a frame's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SampleFormat {
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
}

impl SampleFormat {
    /// Stored value `i` (counted in samples) of `frame`: masked to BitsStored and sign-extended
    /// when signed.
    #[inline]
    fn read(&self, frame: &Frame, i: usize) -> i64 {
        let b = &frame.bytes;
        let raw: u64 = match self.bits_allocated {
            1 => {
                let bit = frame.bit_offset + i as u64;
                u64::from((b[(bit / 8) as usize] >> (bit % 8)) & 1)
            }
            8 => u64::from(b[i]),
            16 => u64::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
            _ => u64::from(u32::from_le_bytes([
                b[4 * i],
                b[4 * i + 1],
                b[4 * i + 2],
                b[4 * i + 3],
            ])),
        };
        let bits = u32::from(self.bits_stored.clamp(1, self.bits_allocated.max(1)));
        let masked = raw & ((1u64 << bits) - 1);
        if self.signed && masked >> (bits - 1) & 1 == 1 {
            masked as i64 - (1i64 << bits)
        } else {
            masked as i64
        }
    }
}

/// `y` in [0, 1] for value `v` (PS3.3 C.11.2.1.2).
#[inline]
fn voi(v: f64, c: f64, w: f64, function: VoiFunction) -> f64 {
    match function {
        VoiFunction::Linear => {
            let (c, w) = (c - 0.5, w - 1.0);
            if v <= c - w / 2.0 {
                0.0
            } else if v > c + w / 2.0 {
                1.0
            } else {
                (v - c) / w + 0.5
            }
        }
        VoiFunction::LinearExact => ((v - c) / w + 0.5).clamp(0.0, 1.0),
        VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (v - c) / w).exp()),
    }
}

/// Step (4): `floor(y * 65535) >> 8`.
#[inline]
fn to_byte(y: f64) -> u8 {
    ((y * 65535.0).floor() as i64 >> 8).clamp(0, 255) as u8
}

/// A greyscale frame (`pixels` samples) to RGB, with the window it used.
#[allow(clippy::too_many_arguments)]
pub(crate) fn grey(
    frame: &Frame,
    format: SampleFormat,
    (width, height): (u32, u32),
    rescale: Option<Rescale>,
    file_voi: Option<FileVoi>,
    user: Option<Window>,
    monochrome1: bool,
) -> (RgbImage, AppliedWindow) {
    let pixels = width as usize * height as usize;
    let value = |i: usize| {
        let s = format.read(frame, i) as f64;
        match rescale {
            Some(r) => s * r.slope + r.intercept,
            None => s,
        }
    };
    let applied = if let Some(w) = user {
        AppliedWindow {
            center: w.center,
            width: w.width,
            function: VoiFunction::Linear,
            source: WindowSource::Option(w),
        }
    } else if let Some(f) = file_voi {
        AppliedWindow {
            center: f.center,
            width: f.width,
            function: f.function,
            source: WindowSource::File,
        }
    } else {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..pixels {
            let v = value(i);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        AppliedWindow {
            center: (lo + hi) / 2.0,
            width: hi - lo,
            function: VoiFunction::LinearExact,
            source: WindowSource::MinMax,
        }
    };
    let constant = applied.function == VoiFunction::LinearExact && applied.width == 0.0;
    let mut out = RgbImage::new(width, height);
    for (i, px) in out.as_mut().chunks_exact_mut(3).enumerate() {
        let y = if constant {
            0.0 // a constant frame renders black (white for MONOCHROME1)
        } else {
            voi(value(i), applied.center, applied.width, applied.function)
        };
        let byte = to_byte(y);
        px.fill(if monochrome1 { 255 - byte } else { byte });
    }
    (out, applied)
}

/// PS3.3 C.7.6.3.1.2 YBR_FULL to RGB with pydicom's coefficients, in f64, rounded half up
/// and clipped.
#[inline]
fn ybr_to_rgb(y: f64, cb: f64, cr: f64) -> [u8; 3] {
    let (cb, cr) = (cb - 128.0, cr - 128.0);
    let r = y + 1.402 * cr;
    let g = y + (-0.114 * 1.772 / 0.587) * cb + (-0.299 * 1.402 / 0.587) * cr;
    let b = y + 1.772 * cb;
    [r, g, b].map(|x| (x + 0.5).floor().clamp(0.0, 255.0) as u8)
}

/// A three-sample frame (RGB or YBR_FULL; either planar configuration; 8 or 16 bits, the
/// latter reduced to their top 8 stored bits) to RGB.
pub(crate) fn colour(
    frame: &Frame,
    format: SampleFormat,
    (width, height): (u32, u32),
    planar: bool,
) -> RgbImage {
    let pixels = width as usize * height as usize;
    let shift = format.bits_stored.saturating_sub(8);
    let ybr = frame.photometric == "YBR_FULL";
    let mut out = RgbImage::new(width, height);
    for (i, px) in out.as_mut().chunks_exact_mut(3).enumerate() {
        let sample = |c: usize| {
            let at = if planar { c * pixels + i } else { 3 * i + c };
            (format.read(frame, at) >> shift).clamp(0, 255) as u8
        };
        let (a, b, c) = (sample(0), sample(1), sample(2));
        px.copy_from_slice(&if ybr {
            ybr_to_rgb(f64::from(a), f64::from(b), f64::from(c))
        } else {
            [a, b, c]
        });
    }
    out
}

/// Native YBR_FULL_422 (8-bit): each pair of pixels is stored as `Y1 Y2 Cb Cr`.
pub(crate) fn ybr_422(frame: &Frame, (width, height): (u32, u32)) -> RgbImage {
    let b = &frame.bytes;
    let mut out = RgbImage::new(width, height);
    for (i, px) in out.pixels_mut().enumerate() {
        let pair = 4 * (i / 2);
        let y = b[pair + i % 2];
        *px = Rgb(ybr_to_rgb(
            f64::from(y),
            f64::from(b[pair + 2]),
            f64::from(b[pair + 3]),
        ));
    }
    out
}

/// A palette colour lookup table (one channel).
#[derive(Debug, Clone)]
pub(crate) struct Lut {
    /// Entries already reduced to 8 bits.
    pub entries: Vec<u8>,
    /// The stored value mapped to the first entry.
    pub first: i64,
}

/// PALETTE COLOR: each stored value through the three LUTs (values below the first mapped
/// value take the first entry, values past the end the last).
pub(crate) fn palette(
    frame: &Frame,
    format: SampleFormat,
    (width, height): (u32, u32),
    luts: &[Lut; 3],
) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    for (i, px) in out.pixels_mut().enumerate() {
        let v = format.read(frame, i);
        *px = Rgb(std::array::from_fn(|c| {
            let lut = &luts[c];
            let k = (v - lut.first).clamp(0, lut.entries.len() as i64 - 1);
            lut.entries[k as usize]
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_follows_the_standard_at_its_edges() {
        // c = 40, w = 400: c' = 39.5, w' = 399; 0 at or below -160, 1 above 239.
        assert_eq!(voi(-160.0, 40.0, 400.0, VoiFunction::Linear), 0.0);
        assert!(voi(-159.9, 40.0, 400.0, VoiFunction::Linear) > 0.0);
        assert_eq!(voi(239.0, 40.0, 400.0, VoiFunction::Linear), 1.0);
        assert_eq!(voi(239.5, 40.0, 400.0, VoiFunction::Linear), 1.0);
        // w = 1 is a threshold at c - 0.5.
        assert_eq!(voi(39.5, 40.0, 1.0, VoiFunction::Linear), 0.0);
        assert_eq!(voi(39.6, 40.0, 1.0, VoiFunction::Linear), 1.0);
        assert_eq!(to_byte(1.0), 255);
        assert_eq!(to_byte(0.0), 0);
        assert_eq!(to_byte(0.5), 127);
    }

    #[test]
    fn signed_samples_are_sign_extended_from_bits_stored() {
        let bytes: Vec<u8> = [0x0FFFu16, 0x0800, 0x07FF, 0xF000 | 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let frame = Frame {
            bytes: bytes.into(),
            bit_offset: 0,
            photometric: "MONOCHROME2".into(),
        };
        let signed = SampleFormat {
            bits_allocated: 16,
            bits_stored: 12,
            signed: true,
        };
        let got: Vec<i64> = (0..4).map(|i| signed.read(&frame, i)).collect();
        assert_eq!(got, [-1, -2048, 2047, 1]);
        let unsigned = SampleFormat {
            signed: false,
            ..signed
        };
        let got: Vec<i64> = (0..4).map(|i| unsigned.read(&frame, i)).collect();
        assert_eq!(got, [4095, 2048, 2047, 1]);
    }

    #[test]
    fn ybr_grey_stays_grey() {
        assert_eq!(ybr_to_rgb(0.0, 128.0, 128.0), [0, 0, 0]);
        assert_eq!(ybr_to_rgb(255.0, 128.0, 128.0), [255, 255, 255]);
        assert_eq!(ybr_to_rgb(100.0, 128.0, 128.0), [100, 100, 100]);
    }
}
