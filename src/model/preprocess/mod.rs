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
//! DICOM files go through [`crate::dicom`] in step 1 (issue 16): [`load_rgb_with`] and
//! [`preprocess_file_with`] take its [`ImageOptions`] (frame, window).
//!
//! Only decoding touches the file system; nothing here prints.

mod config;
mod decode;
mod padded;
mod resample;

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

pub use crate::dicom::ImageOptions;
pub use config::{CropSize, ProcessorConfig, ResizeTarget};
pub use decode::{load_rgb, load_rgb_bytes, load_rgb_with, read_file, sniff};
pub use resample::pillow_resize_bicubic;

/// Pillow's `Image.MAX_IMAGE_PIXELS` (`1024 * 1024 * 1024 // 4 // 3`); Pillow refuses images
/// with more than twice as many pixels (`DecompressionBombError`), and so do we.
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// The largest `size` / `crop_size` side a preprocessor config may ask for (CLIP's is 336):
/// the model input is at most this many pixels a side, so its memory is bounded too.
pub const MAX_OUTPUT_SIDE: u32 = 4096;

/// The largest image file read, as `chat::images::MAX_IMAGE_BYTES` (a 16-bit 4k × 4k DICOM
/// is 32 MB).
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// The most memory one decoded image may take: the decoder's pixels plus their RGB copy.
/// Within it, an image of any aspect ratio is preprocessed exactly, since the padded square
/// of `expand2square` is never built ([`model_input`]).
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

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
    /// A directory, a FIFO or a device such as /dev/zero: never read as an image.
    #[error(
        "cannot read image {}: {}",
        path.display(),
        if *directory { "it is a directory (give an image file in it)" } else { "not a regular file (a device, pipe or socket is never read)" }
    )]
    NotAFile {
        /// The path as given.
        path: PathBuf,
        /// A directory, rather than a device or pipe.
        directory: bool,
    },
    /// The file exists but could not be read (permissions, an I/O error).
    #[error("cannot read image {}: {source}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file larger than huatuo reads ([`MAX_IMAGE_BYTES`]).
    #[error("image {}: {size} bytes is more than huatuo reads ({limit} bytes)", path.display())]
    FileTooLarge {
        /// The path as given.
        path: PathBuf,
        /// The file's size.
        size: u64,
        /// The largest size read.
        limit: u64,
    },
    /// Within the pixel limit, but its decoded pixels would take more than
    /// [`MAX_DECODED_BYTES`] (a 16-bit colour image, say).
    #[error(
        "image {}: {width}x{height} pixels would take {bytes} bytes once decoded, more than \
         huatuo's {limit}; downscale it or convert it to 8-bit RGB first",
        path.display()
    )]
    TooMuchMemory {
        /// The path as given.
        path: PathBuf,
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// Decoder buffer plus RGB copy.
        bytes: u64,
        /// [`MAX_DECODED_BYTES`].
        limit: u64,
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
    /// A DICOM file that could not be read or rendered (issue 16); its message names the file.
    #[error(transparent)]
    Dicom(#[from] crate::dicom::DicomError),
    /// An image with zero width or height was passed to [`pixel_values`].
    #[error("image has no pixels ({width}x{height}); nothing to preprocess")]
    EmptyImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

impl PreprocessError {
    /// Whether the message names the image file (every error from reading or decoding one
    /// does), so that a caller adding the path would say it twice.
    pub fn names_file(&self) -> bool {
        !matches!(
            self,
            Self::Config { .. } | Self::Settings { .. } | Self::EmptyImage { .. }
        )
    }
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
    let dst: &mut [u8] = out.as_mut();
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
pub(super) fn resize_output_hw(width: u32, height: u32, size: ResizeTarget) -> (u32, u32) {
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
    Ok(normalize(&resize_and_crop(img, cfg)?, cfg))
}

/// The rescale and normalize steps of [`pixel_values`] on its resized and cropped image.
fn normalize(img: &RgbImage, cfg: &ProcessorConfig) -> Vec<f32> {
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
    out
}

/// [`load_rgb`], [`expand_to_square`] with [`ProcessorConfig::background`], then
/// [`pixel_values`]: one image file to CHW float32 (huatuo-reference.md §2 steps 1-3).
pub fn preprocess_file(path: &Path, cfg: &ProcessorConfig) -> Result<Vec<f32>, PreprocessError> {
    preprocess_file_with(path, cfg, &ImageOptions::default())
}

/// [`preprocess_file`] with the DICOM frame and window of `opts` (see [`load_rgb_with`]).
pub fn preprocess_file_with(
    path: &Path,
    cfg: &ProcessorConfig,
    opts: &ImageOptions,
) -> Result<Vec<f32>, PreprocessError> {
    let rgb = load_rgb_with(path, opts)?;
    Ok(normalize(&model_input(&rgb, cfg)?, cfg))
}

/// [`preprocess_file_with`] on a file already read (`bytes`, from `path`): what the engine
/// uses after hashing the bytes, so each file is read once.
pub fn preprocess_bytes(
    path: &Path,
    bytes: &[u8],
    cfg: &ProcessorConfig,
    opts: &ImageOptions,
) -> Result<Vec<f32>, PreprocessError> {
    let rgb = load_rgb_bytes(path, bytes, opts)?;
    Ok(normalize(&model_input(&rgb, cfg)?, cfg))
}

/// The uint8 RGB image the model's normaliser receives: [`expand_to_square`] with the
/// config's background, then [`resize_and_crop`] (336×336 for HuatuoGPT-Vision). What
/// `huatuo render` writes.
///
/// The padded square is never built, so memory stays proportional to the image and the
/// output whatever the aspect ratio (a 1×100000 image would pad to 30 GB), and the bytes
/// are those of `resize_and_crop(&expand_to_square(img, ..), cfg)`: the resize is computed
/// by `padded.rs`; without `do_resize`, a crop of a large square is cut from it directly, and
/// a config that keeps the whole square is refused once it is more than
/// [`MAX_OUTPUT_SIDE`] a side.
pub fn model_input(img: &RgbImage, cfg: &ProcessorConfig) -> Result<RgbImage, PreprocessError> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(PreprocessError::EmptyImage {
            width: w,
            height: h,
        });
    }
    cfg.validate()
        .map_err(|reason| PreprocessError::Settings { reason })?;
    let side = w.max(h);
    let background = cfg.background();
    if side <= MAX_OUTPUT_SIDE {
        // Small enough to build: the reference's own steps.
        return resize_and_crop(&expand_to_square(img, background), cfg);
    }
    let out = if cfg.do_resize {
        let (oh, ow) = resize_output_hw(side, side, cfg.size);
        padded::resize_square_padded(img, background, ow, oh)
    } else if cfg.do_center_crop {
        // The crop (at most MAX_OUTPUT_SIDE) lies inside the square: cut it out directly.
        let (ch, cw) = (cfg.crop_size.height, cfg.crop_size.width);
        return Ok(padded::square_region(
            img,
            background,
            (side - cw) / 2,
            (side - ch) / 2,
            cw,
            ch,
        ));
    } else {
        return Err(PreprocessError::Settings {
            reason: format!(
                "without do_resize or do_center_crop the model input is the whole padded \
                 {side}x{side} image, more than {MAX_OUTPUT_SIDE} pixels a side"
            ),
        });
    };
    Ok(if cfg.do_center_crop {
        center_crop(&out, cfg.crop_size.height, cfg.crop_size.width)
    } else {
        out
    })
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
