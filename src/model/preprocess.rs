//! Image preprocessing for the CLIP tower, bit-exact with the official Python path
//! (huatuo-reference.md §2, cli.py `get_image_tensors`):
//!
//! 1. [`load_rgb`]: Pillow's `Image.open(path).convert('RGB')`, including Pillow's mode
//!    conversions (alpha dropped, palette looked up, 16-bit greyscale *clamped* to 255,
//!    16-bit colour reduced to its high byte, CMYK JPEG inverted then `cmyk2rgb`).
//!    JPEG is decoded by libjpeg-turbo's code (the `mozjpeg` crate, ISLOW IDCT, fancy
//!    upsampling), the decoder Pillow wheels ship, so the RGB bytes are identical; other
//!    formats go through the `image` crate.
//! 2. [`expand_to_square`]: llava's `expand2square`, pasting onto a square canvas of
//!    [`ProcessorConfig::background`] (`int(x * 255)` of `image_mean`).
//! 3. [`pixel_values`]: transformers' slow `CLIPImageProcessor.preprocess` driven by the
//!    checkpoint's `preprocessor_config.json`: shortest-edge resize with a port of Pillow's
//!    `ImagingResample` (bicubic, fixed point), center crop, rescale in float64 then cast to
//!    float32, normalize in float32, CHW.
//!
//! Only decoding touches the file system; nothing here prints.

use std::io::{BufRead, Cursor, Read};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader, Rgb, RgbImage};
use serde::Deserialize;

/// Pillow's `Image.MAX_IMAGE_PIXELS` (`1024 * 1024 * 1024 // 4 // 3`); Pillow refuses images
/// with more than twice as many pixels (`DecompressionBombError`), and so do we.
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// `PILImageResampling.BICUBIC`, the only filter the CLIP processors of HuatuoGPT-Vision use.
pub const RESAMPLE_BICUBIC: u32 = 3;

/// Everything that can go wrong while preparing an image (huatuo-reference.md §2). Each
/// message names the file (or the setting) and says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The path does not exist.
    #[error("image not found: {}", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, an I/O error).
    #[error("cannot read image {}: {source}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an image format we can decode.
    #[error(
        "unsupported image file {}: {reason}; convert it to PNG or JPEG \
         (PNG, JPEG, BMP, TIFF and WebP are read)",
        path.display()
    )]
    Unsupported {
        /// The path as given.
        path: PathBuf,
        /// What was detected.
        reason: String,
    },
    /// The format was recognised but decoding failed (corrupt or truncated file).
    #[error(
        "cannot decode image {}: {reason}; the file looks corrupt or truncated, \
         re-export it as PNG or JPEG",
        path.display()
    )]
    Corrupt {
        /// The path as given.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// More pixels than Pillow agrees to open.
    #[error(
        "image {} is too large: {width}x{height} pixels is more than {limit} \
         (Pillow's decompression-bomb limit); downscale it first",
        path.display()
    )]
    TooLarge {
        /// The path as given.
        path: PathBuf,
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// The largest pixel count accepted.
        limit: u64,
    },
    /// `preprocessor_config.json` is missing, unreadable or holds values we cannot honour.
    #[error(
        "bad image preprocessor config {}: {reason}; expected a CLIP \
         preprocessor_config.json (vit/clip_vit_large_patch14_336/ in the checkpoint)",
        path.display()
    )]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`ProcessorConfig`] built in code holds values we cannot honour.
    #[error("unsupported image preprocessor settings: {reason}")]
    Settings {
        /// What is wrong.
        reason: String,
    },
    /// An image with zero width or height was passed to [`pixel_values`].
    #[error("image has no pixels ({width}x{height}); nothing to preprocess")]
    EmptyImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

// ---------------------------------------------------------------------------------------------
// preprocessor_config.json
// ---------------------------------------------------------------------------------------------

/// The resize target of `CLIPImageProcessor` (`size` in preprocessor_config.json).
///
/// transformers' `get_size_dict(size, default_to_square=False)` turns a bare integer into
/// `{"shortest_edge": n}` and a two-element list into `{"height": h, "width": w}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub enum ResizeTarget {
    /// Scale so that the shorter side becomes `n`, the longer one `int(n * long / short)`.
    ShortestEdge(u32),
    /// Resize to exactly this many rows and columns.
    Exact {
        /// Output rows.
        height: u32,
        /// Output columns.
        width: u32,
    },
}

/// The center-crop size (`crop_size`): an integer means a square
/// (`get_size_dict(crop_size, default_to_square=True)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct CropSize {
    /// Output rows.
    pub height: u32,
    /// Output columns.
    pub width: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(u32),
    Pair([u32; 2]),
    Dict {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

impl TryFrom<SizeRepr> for ResizeTarget {
    type Error = String;

    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Int(n) => Ok(Self::ShortestEdge(n)),
            SizeRepr::Pair([height, width]) => Ok(Self::Exact { height, width }),
            SizeRepr::Dict {
                shortest_edge: Some(n),
                ..
            } => Ok(Self::ShortestEdge(n)),
            SizeRepr::Dict {
                height: Some(height),
                width: Some(width),
                ..
            } => Ok(Self::Exact { height, width }),
            SizeRepr::Dict { .. } => {
                Err("size must hold \"shortest_edge\" or \"height\" and \"width\"".into())
            }
        }
    }
}

impl TryFrom<SizeRepr> for CropSize {
    type Error = String;

    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Int(n) => Ok(Self {
                height: n,
                width: n,
            }),
            SizeRepr::Pair([height, width]) => Ok(Self { height, width }),
            SizeRepr::Dict {
                height: Some(height),
                width: Some(width),
                ..
            } => Ok(Self { height, width }),
            SizeRepr::Dict { .. } => Err("crop_size must hold \"height\" and \"width\"".into()),
        }
    }
}

/// A number or a list of numbers (`image_mean` / `image_std`); a number is used for every
/// channel, as transformers' `normalize` does.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x; 3],
        OneOrMany::Many(v) => v,
    })
}

/// The fields of `preprocessor_config.json` that `CLIPImageProcessor` uses
/// (huatuo-reference.md §2 step 3). Missing fields take `CLIPImageProcessor.__init__`'s
/// defaults; unknown fields (`feature_extractor_type`, `image_processor_type`, ...) are
/// ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProcessorConfig {
    /// Resize before cropping (default true).
    #[serde(default = "yes")]
    pub do_resize: bool,
    /// Resize target (default shortest edge 224).
    #[serde(default = "default_size")]
    pub size: ResizeTarget,
    /// PIL resampling filter number; only 3 (BICUBIC) is supported.
    #[serde(default = "default_resample")]
    pub resample: u32,
    /// Center-crop after resizing (default true).
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    /// Crop size (default 224×224).
    #[serde(default = "default_crop")]
    pub crop_size: CropSize,
    /// Multiply by `rescale_factor` (default true).
    #[serde(default = "yes")]
    pub do_rescale: bool,
    /// Default 1/255.
    #[serde(default = "default_rescale_factor")]
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std` (default true).
    #[serde(default = "yes")]
    pub do_normalize: bool,
    /// Per-channel mean (default OpenAI CLIP's).
    #[serde(default = "clip_mean", deserialize_with = "one_or_many")]
    pub image_mean: Vec<f64>,
    /// Per-channel standard deviation (default OpenAI CLIP's).
    #[serde(default = "clip_std", deserialize_with = "one_or_many")]
    pub image_std: Vec<f64>,
    /// Convert to RGB first (default true; our images are RGB already).
    #[serde(default = "yes")]
    pub do_convert_rgb: bool,
}

fn yes() -> bool {
    true
}
fn default_size() -> ResizeTarget {
    ResizeTarget::ShortestEdge(224)
}
fn default_resample() -> u32 {
    RESAMPLE_BICUBIC
}
fn default_crop() -> CropSize {
    CropSize {
        height: 224,
        width: 224,
    }
}
fn default_rescale_factor() -> f64 {
    1.0 / 255.0
}
fn clip_mean() -> Vec<f64> {
    vec![0.48145466, 0.4578275, 0.40821073]
}
fn clip_std() -> Vec<f64> {
    vec![0.26862954, 0.26130258, 0.27577711]
}

impl ProcessorConfig {
    /// Reads and checks a `preprocessor_config.json` (huatuo-reference.md §2 step 3).
    pub fn from_file(path: &Path) -> Result<Self, PreprocessError> {
        let bad = |reason: String| PreprocessError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad("file not found".into()),
            _ => bad(e.to_string()),
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// The expand2square fill colour: `tuple(int(x * 255) for x in image_mean)`
    /// (cli.py:227, truncation; `(122, 116, 104)` for CLIP). Values outside 0..=255 saturate.
    pub fn background(&self) -> [u8; 3] {
        let mut out = [0u8; 3];
        for (o, m) in out.iter_mut().zip(&self.image_mean) {
            // `as u8` truncates toward zero like Python's int(), and saturates.
            *o = (m * 255.0) as u8;
        }
        out
    }

    /// (height, width) of [`pixel_values`]' output for an input of `width`×`height`.
    pub fn output_hw(&self, width: u32, height: u32) -> (u32, u32) {
        if self.do_center_crop {
            return (self.crop_size.height, self.crop_size.width);
        }
        if self.do_resize {
            return resize_output_hw(width, height, self.size);
        }
        (height, width)
    }

    fn validate(&self) -> Result<(), String> {
        if self.do_resize {
            if self.resample != RESAMPLE_BICUBIC {
                return Err(format!(
                    "resample = {} is not supported, only 3 (BICUBIC) is",
                    self.resample
                ));
            }
            match self.size {
                ResizeTarget::ShortestEdge(0)
                | ResizeTarget::Exact { height: 0, .. }
                | ResizeTarget::Exact { width: 0, .. } => {
                    return Err("size must be positive".into());
                }
                _ => {}
            }
        }
        if self.do_center_crop && (self.crop_size.height == 0 || self.crop_size.width == 0) {
            return Err("crop_size must be positive".into());
        }
        if self.do_rescale && !self.rescale_factor.is_finite() {
            return Err("rescale_factor must be a finite number".into());
        }
        if self.do_normalize {
            if self.image_mean.len() != 3 || self.image_std.len() != 3 {
                return Err(format!(
                    "image_mean and image_std need 3 values (RGB), got {} and {}",
                    self.image_mean.len(),
                    self.image_std.len()
                ));
            }
            if self.image_std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return Err("image_std values must be finite and non-zero".into());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Loading: Pillow's Image.open(path).convert('RGB')
// ---------------------------------------------------------------------------------------------

/// Decodes an image file to 8-bit RGB exactly as Pillow's `Image.open(path).convert('RGB')`
/// does (huatuo-reference.md §2 step 1, cli.py:208).
///
/// The format is detected from the file's bytes, as Pillow does. Pillow's mode rules:
/// L/LA/1 replicate the grey value; RGBA/LA/palette drop alpha (palette via lookup);
/// 16-bit greyscale PNG opens as `I;16`, whose conversion *clamps* each sample to 255;
/// 16-bit grey+alpha and colour PNGs keep the high byte of each sample; CMYK JPEGs are
/// taken as Adobe-inverted and converted with Pillow's `cmyk2rgb`. EXIF orientation and
/// ICC profiles are ignored, as Pillow's `open` ignores them. Bit-exact parity is tested
/// for PNG and JPEG (tests/preprocess.rs); BMP/TIFF/WebP use the same rules, untested.
pub fn load_rgb(path: &Path) -> Result<RgbImage, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PreprocessError::NotFound {
            path: path.to_path_buf(),
        },
        _ => PreprocessError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let format = image::guess_format(&bytes).map_err(|_| PreprocessError::Unsupported {
        path: path.to_path_buf(),
        reason: describe_unknown(&bytes),
    })?;
    match format {
        ImageFormat::Jpeg => decode_jpeg(path, &bytes),
        ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::WebP => {
            decode_other(path, &bytes, format)
        }
        other => Err(PreprocessError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{other:?} images are not supported"),
        }),
    }
}

fn describe_unknown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".into();
    }
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "not a recognised image format (first bytes: {})",
        head.join(" ")
    )
}

fn check_size(path: &Path, width: u64, height: u64) -> Result<(), PreprocessError> {
    let limit = 2 * PILLOW_MAX_IMAGE_PIXELS;
    if width * height > limit {
        return Err(PreprocessError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit,
        });
    }
    if width == 0 || height == 0 {
        return Err(PreprocessError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("the header says {width}x{height} pixels"),
        });
    }
    Ok(())
}

/// PNG, BMP, TIFF, WebP through the `image` crate, then Pillow's mode conversion.
fn decode_other(
    path: &Path,
    bytes: &[u8],
    format: ImageFormat,
) -> Result<RgbImage, PreprocessError> {
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Unsupported(u) => PreprocessError::Unsupported {
            path: path.to_path_buf(),
            reason: u.to_string(),
        },
        other => PreprocessError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    };
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(corrupt)?;
    check_size(path, u64::from(w), u64::from(h))?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits(); // bounded by check_size, like Pillow
    let decoded = reader.decode().map_err(corrupt)?;
    // A 16-bit greyscale PNG with a tRNS chunk comes out of the png crate as grey+alpha,
    // but Pillow opens it as I;16 (alpha ignored) and clamps: tell the two apart by IHDR.
    let png_grey16 = format == ImageFormat::Png
        && bytes.len() > 25
        && bytes[24] == 16 // IHDR bit depth
        && bytes[25] == 0; // IHDR colour type: greyscale
    pillow_rgb(decoded, png_grey16).ok_or_else(|| PreprocessError::Unsupported {
        path: path.to_path_buf(),
        reason: "floating-point samples".into(),
    })
}

/// Pillow's `convert('RGB')` for each pixel layout the `image` crate produces
/// (Pillow src/libImaging/Convert.c and the PNG raw modes of PngImagePlugin.py).
fn pillow_rgb(img: DynamicImage, png_grey16: bool) -> Option<RgbImage> {
    fn map<P: image::Pixel>(
        src: &image::ImageBuffer<P, Vec<P::Subpixel>>,
        f: impl Fn(&[P::Subpixel]) -> [u8; 3],
    ) -> RgbImage {
        let mut out = RgbImage::new(src.width(), src.height());
        for (o, p) in out.pixels_mut().zip(src.pixels()) {
            *o = Rgb(f(p.channels()));
        }
        out
    }
    // I;16 -> RGB: `I16_RGB` clamps each sample to 255.
    let clamp = |v: u16| v.min(255) as u8;
    // "RGB;16B", "RGBA;16B", "LA;16B" raw modes unpack the most significant byte.
    let high = |v: u16| (v >> 8) as u8;
    Some(match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma8(i) => map(&i, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(i) => map(&i, |p| [p[0]; 3]),
        DynamicImage::ImageRgba8(i) => map(&i, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma16(i) => map(&i, |p| [clamp(p[0]); 3]),
        DynamicImage::ImageLumaA16(i) if png_grey16 => map(&i, |p| [clamp(p[0]); 3]),
        DynamicImage::ImageLumaA16(i) => map(&i, |p| [high(p[0]); 3]),
        DynamicImage::ImageRgb16(i) => map(&i, |p| [high(p[0]), high(p[1]), high(p[2])]),
        DynamicImage::ImageRgba16(i) => map(&i, |p| [high(p[0]), high(p[1]), high(p[2])]),
        _ => return None,
    })
}

/// A `BufRead` over the file's bytes that remembers whether the decoder asked for data
/// past the end: libjpeg then fakes an EOI marker and carries on with grey blocks, where
/// Pillow raises "image file is truncated".
struct EofWatch<'a> {
    data: &'a [u8],
    hit_eof: &'a std::cell::Cell<bool>,
}

impl Read for EofWatch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof.set(true);
        }
        Ok(n)
    }
}

impl BufRead for EofWatch<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.data.is_empty() {
            self.hit_eof.set(true);
        }
        Ok(self.data)
    }
    fn consume(&mut self, amt: usize) {
        self.data = &self.data[amt.min(self.data.len())..];
    }
}

/// Why a JPEG decode stopped.
enum JpegFailure {
    TooLarge(u64, u64),
    Other(String),
}

/// JPEG through libjpeg-turbo's decoder (mozjpeg crate, built from C source), with the
/// settings Pillow's JpegDecode.c leaves at libjpeg's defaults: ISLOW IDCT, fancy
/// upsampling. 1 component: L; 3: RGB (libjpeg's YCbCr->RGB); 4: CMYK/YCCK decoded to CMYK,
/// read as Adobe-inverted "CMYK;I" (JpegImagePlugin.py), then Pillow's `cmyk2rgb`.
fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    let corrupt = |reason: String| PreprocessError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let hit_eof = std::cell::Cell::new(false);
    let io = |e: std::io::Error| JpegFailure::Other(e.to_string());
    // libjpeg reports fatal errors by unwinding (mozjpeg's error manager uses
    // `resume_unwind`, so no panic message is printed); catch them here.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<(u32, u32, Vec<u8>), JpegFailure> {
            let reader = EofWatch {
                data: bytes,
                hit_eof: &hit_eof,
            };
            let dec = mozjpeg::Decompress::builder()
                .from_reader(reader)
                .map_err(io)?;
            let (w, h) = dec.size();
            if (w as u64) * (h as u64) > 2 * PILLOW_MAX_IMAGE_PIXELS {
                return Err(JpegFailure::TooLarge(w as u64, h as u64));
            }
            let components = dec.components().len();
            let mut started = match components {
                1 | 3 => dec.rgb().map_err(io)?,
                4 => dec
                    .to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)
                    .map_err(io)?,
                n => {
                    return Err(JpegFailure::Other(format!(
                        "JPEG with {n} colour components"
                    )))
                }
            };
            let mut samples = started.read_scanlines::<u8>().map_err(io)?;
            // Read on to the EOI marker: Pillow also calls a file without one truncated.
            started.finish().map_err(io)?;
            if components == 4 {
                samples = samples
                    .chunks_exact(4)
                    .flat_map(pillow_cmyk_inverted_to_rgb)
                    .collect();
            }
            Ok((w as u32, h as u32, samples))
        },
    ));
    let (w, h, rgb) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(JpegFailure::TooLarge(width, height))) => {
            return Err(PreprocessError::TooLarge {
                path: path.to_path_buf(),
                width,
                height,
                limit: 2 * PILLOW_MAX_IMAGE_PIXELS,
            })
        }
        Ok(Err(JpegFailure::Other(reason))) => return Err(corrupt(reason)),
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            return Err(corrupt(reason));
        }
    };
    if hit_eof.get() {
        return Err(corrupt(
            "image file is truncated (the JPEG data ends early)".into(),
        ));
    }
    check_size(path, u64::from(w), u64::from(h))?;
    RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| corrupt("decoder returned fewer pixels than the header says".into()))
}

/// Unpacks "CMYK;I" (every sample inverted) and applies Pillow's Convert.c `cmyk2rgb`:
/// `nk = 255 - k; out = CLIP8(nk - MULDIV255(c, nk))`.
fn pillow_cmyk_inverted_to_rgb(px: &[u8]) -> [u8; 3] {
    let muldiv255 = |a: i32, b: i32| {
        let tmp = a * b + 128;
        ((tmp >> 8) + tmp) >> 8
    };
    let [c, m, y, k] = [px[0], px[1], px[2], px[3]].map(|v| 255 - i32::from(v));
    let nk = 255 - k;
    [c, m, y].map(|v| (nk - muldiv255(v, nk)).clamp(0, 255) as u8)
}

// ---------------------------------------------------------------------------------------------
// expand2square
// ---------------------------------------------------------------------------------------------

/// llava's `expand2square` (cli.py:215-226, huatuo-reference.md §2 step 2): a square image
/// is returned unchanged; otherwise the image is pasted on a `max(w, h)`-sided canvas of
/// `background`, at `(0, (w - h) / 2)` when wider or `((h - w) / 2, 0)` when taller
/// (integer floor offsets).
pub fn expand_to_square(img: &RgbImage, background: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, Rgb(background));
    let (x0, y0) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    let (row_in, row_out) = (w as usize * 3, side as usize * 3);
    let dst = out.as_mut();
    for (y, src) in img.as_raw().chunks_exact(row_in).enumerate() {
        let start = (y + y0 as usize) * row_out + x0 as usize * 3;
        dst[start..start + row_in].copy_from_slice(src);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// CLIPImageProcessor
// ---------------------------------------------------------------------------------------------

/// transformers' `get_resize_output_image_size(default_to_square=False)`: (height, width).
fn resize_output_hw(width: u32, height: u32, size: ResizeTarget) -> (u32, u32) {
    match size {
        ResizeTarget::Exact { height, width } => (height, width),
        ResizeTarget::ShortestEdge(n) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // Python: int(n * long / short): exact integer product, correctly rounded true
            // division, truncation. u64 -> f64 is exact below 2^53.
            let new_long = ((u64::from(n) * u64::from(long)) as f64 / f64::from(short)) as u32;
            if width <= height {
                (new_long, n)
            } else {
                (n, new_long)
            }
        }
    }
}

/// The uint8 image `CLIPImageProcessor` hands to rescale/normalize: resize (if `do_resize`)
/// then center crop (if `do_center_crop`), huatuo-reference.md §2 steps 3a-3b.
pub fn resize_and_crop(img: &RgbImage, cfg: &ProcessorConfig) -> Result<RgbImage, PreprocessError> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(PreprocessError::EmptyImage {
            width: w,
            height: h,
        });
    }
    cfg.validate()
        .map_err(|reason| PreprocessError::Settings { reason })?;
    let mut out = if cfg.do_resize {
        let (oh, ow) = resize_output_hw(w, h, cfg.size);
        if oh == 0 || ow == 0 {
            return Err(PreprocessError::Settings {
                reason: format!("resizing {w}x{h} would give {ow}x{oh} pixels"),
            });
        }
        pillow_resize_bicubic(img, ow, oh)
    } else {
        img.clone()
    };
    if cfg.do_center_crop {
        out = center_crop(&out, cfg.crop_size.height, cfg.crop_size.width);
    }
    Ok(out)
}

/// `CLIPImageProcessor.preprocess` on one RGB image (huatuo-reference.md §2 step 3): resize,
/// center crop, `rescale` (uint8 → float64 × `rescale_factor` → float32), `normalize`
/// (`(x - mean) / std` in float32, mean and std cast to float32), channels first.
/// Returns `3 × H × W` values, `(H, W)` = [`ProcessorConfig::output_hw`] (336×336 for
/// HuatuoGPT-Vision). Call it on the output of [`expand_to_square`].
pub fn pixel_values(img: &RgbImage, cfg: &ProcessorConfig) -> Result<Vec<f32>, PreprocessError> {
    let img = resize_and_crop(img, cfg)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut out = vec![0f32; 3 * plane];
    let mean: Vec<f32> = cfg.image_mean.iter().map(|&m| m as f32).collect();
    let std: Vec<f32> = cfg.image_std.iter().map(|&s| s as f32).collect();
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            let mut v = if cfg.do_rescale {
                (f64::from(px[c]) * cfg.rescale_factor) as f32
            } else {
                f32::from(px[c])
            };
            if cfg.do_normalize {
                v = (v - mean[c]) / std[c];
            }
            out[c * plane + i] = v;
        }
    }
    Ok(out)
}

/// [`load_rgb`], [`expand_to_square`] with [`ProcessorConfig::background`], then
/// [`pixel_values`]: one image file to CHW float32 (huatuo-reference.md §2 steps 1-3).
pub fn preprocess_file(path: &Path, cfg: &ProcessorConfig) -> Result<Vec<f32>, PreprocessError> {
    let rgb = load_rgb(path)?;
    let square = expand_to_square(&rgb, cfg.background());
    pixel_values(&square, cfg)
}

/// transformers' `center_crop` on a channels-last uint8 image: crop
/// `((h - ch) // 2, (w - cw) // 2)` (floor division); where the crop leaves the image, the
/// image is first centred on a zero canvas (`ceil` padding), as transformers does.
pub fn center_crop(img: &RgbImage, crop_h: u32, crop_w: u32) -> RgbImage {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let (ch, cw) = (i64::from(crop_h), i64::from(crop_w));
    let mut top = (h - ch).div_euclid(2);
    let mut left = (w - cw).div_euclid(2);
    if top >= 0 && left >= 0 && top + ch <= h && left + cw <= w {
        return image::imageops::crop_imm(img, left as u32, top as u32, crop_w, crop_h).to_image();
    }
    let (new_h, new_w) = (ch.max(h), cw.max(w));
    let top_pad = (new_h - h + 1) / 2; // ceil((new_h - h) / 2), non-negative
    let left_pad = (new_w - w + 1) / 2;
    let mut canvas = RgbImage::new(new_w as u32, new_h as u32);
    image::imageops::replace(&mut canvas, img, left_pad, top_pad);
    top += top_pad;
    left += left_pad;
    let (y0, y1) = (top.max(0), (top + ch).min(new_h));
    let (x0, x1) = (left.max(0), (left + cw).min(new_w));
    image::imageops::crop_imm(
        &canvas,
        x0 as u32,
        y0 as u32,
        (x1 - x0) as u32,
        (y1 - y0) as u32,
    )
    .to_image()
}

// ---------------------------------------------------------------------------------------------
// Pillow's ImagingResample (src/libImaging/Resample.c), 8 bits per channel, BICUBIC
// ---------------------------------------------------------------------------------------------

/// Resample.c: "8 bits for result. Filter can have negative areas. In one cases the sum of
/// the coefficients will be negative, in the other it will be more than 1.0. That is why we
/// need two extra bits for overflow and int type."
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resample.c `bicubic_filter` (a = -0.5), support 2.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}
const BICUBIC_SUPPORT: f64 = 2.0;

/// Fixed-point taps for one axis: for output index `i`, source `[start_i, start_i + len_i)`
/// weighted by `k[i * ksize ..][..len_i]`.
struct Taps {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    k: Vec<i32>,
}

/// Resample.c `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn precompute_coeffs(in_size: u32, out_size: u32) -> Taps {
    // box[] is float in C; in0 = 0, in1 = in_size (exact in f32 for any real image).
    let in0 = 0.0f64;
    let in1 = f64::from(in_size as f32);
    let scale = (in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut k = vec![0i32; out_size as usize * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // (int) casts truncate toward zero, as Rust's `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
        let xmax = xmax.max(0) as usize;
        let mut ww = 0.0f64;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for (x, wx) in w.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { wx / ww } else { *wx };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            k[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin as usize, xmax));
    }
    Taps { ksize, bounds, k }
}

/// Resample.c `clip8`: `clip8_lookups[in >> PRECISION_BITS]`, i.e. clamp to 0..=255.
fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow `Image.resize((width, height), Image.BICUBIC)` on an RGB image, byte for byte:
/// Resample.c `ImagingResampleInner` — vertical taps first (to know the rows needed), a
/// horizontal pass into a temporary image (only if the width changes), then a vertical pass
/// (only if the height changes), each rounding `(sum + 2^21) >> 22` and clamping to u8.
/// An unchanged size is a copy (Image.resize returns `self.copy()`).
pub fn pillow_resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    if [in_w, in_h, width, height].contains(&0) {
        return RgbImage::new(width, height);
    }
    let need_horizontal = width != in_w;
    let need_vertical = height != in_h;
    let mut vert = precompute_coeffs(in_h, height);
    let ybox_first = vert.bounds[0].0;
    let last = vert.bounds[vert.bounds.len() - 1];
    let ybox_last = last.0 + last.1;

    let mut current: std::borrow::Cow<'_, RgbImage> = std::borrow::Cow::Borrowed(img);
    if need_horizontal {
        let horiz = precompute_coeffs(in_w, width);
        for b in &mut vert.bounds {
            b.0 -= ybox_first;
        }
        let rows = ybox_last - ybox_first;
        let mut tmp = RgbImage::new(width, rows as u32);
        let src = img.as_raw();
        let src_row = in_w as usize * 3;
        let dst_row = width as usize * 3;
        let dst = tmp.as_mut();
        for yy in 0..rows {
            let line = &src[(yy + ybox_first) * src_row..][..src_row];
            for (xx, &(xmin, xlen)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.k[xx * horiz.ksize..][..xlen];
                let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &line[(x + xmin) * 3..][..3];
                    for c in 0..3 {
                        ss[c] += i64::from(p[c]) * i64::from(kx);
                    }
                }
                let o = &mut dst[yy * dst_row + xx * 3..][..3];
                for c in 0..3 {
                    o[c] = clip8(ss[c]);
                }
            }
        }
        current = std::borrow::Cow::Owned(tmp);
    }
    if !need_vertical {
        return current.into_owned();
    }
    let src_img = current.as_ref();
    let row = src_img.width() as usize * 3;
    let src = src_img.as_raw();
    let mut out = RgbImage::new(src_img.width(), height);
    // Same sums as Resample.c's per-pixel loop, accumulated a whole row at a time.
    let mut acc = vec![0i64; row];
    for (yy, (out_row, &(ymin, ylen))) in out
        .as_mut()
        .chunks_exact_mut(row)
        .zip(&vert.bounds)
        .enumerate()
    {
        acc.fill(1i64 << (PRECISION_BITS - 1));
        for (y, &ky) in vert.k[yy * vert.ksize..][..ylen].iter().enumerate() {
            let line = &src[(y + ymin) * row..][..row];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i64::from(p) * i64::from(ky);
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}
