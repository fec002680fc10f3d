//! Decoding image files to 8-bit RGB exactly as Pillow's `Image.open(path).convert('RGB')`.

use std::io::{BufRead, Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader, Rgb, RgbImage};

use super::{PreprocessError, MAX_DECODED_BYTES, MAX_IMAGE_BYTES, PILLOW_MAX_IMAGE_PIXELS};
use crate::dicom::{self, DicomError, ImageOptions};

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
///
/// DICOM files (recognised by their bytes, whatever the extension) are rendered by
/// [`crate::dicom`]: frame 1 through the file's window, else its min-max (issue 16).
pub fn load_rgb(path: &Path) -> Result<RgbImage, PreprocessError> {
    load_rgb_with(path, &ImageOptions::default())
}

/// [`load_rgb`] with the DICOM options of issue 16: the frame (1-based) and the window of a
/// DICOM image. Asking for a window, or a frame other than 1, of any other image is an error
/// naming the file; so is a window on a colour DICOM image.
pub fn load_rgb_with(path: &Path, opts: &ImageOptions) -> Result<RgbImage, PreprocessError> {
    load_rgb_bytes(path, &read_file(path)?, opts)
}

/// Reads an image file by the one rule huatuo has for them (the rule of
/// `chat::images::read_image`, which `model` may not import): regular files only, at most
/// [`MAX_IMAGE_BYTES`], so `/dev/zero` or a FIFO is an error at once instead of a read that
/// never ends. The file is looked at before it is opened, since opening a FIFO blocks.
pub fn read_file(path: &Path) -> Result<Vec<u8>, PreprocessError> {
    let read = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => PreprocessError::NotFound {
            path: path.to_path_buf(),
        },
        _ => PreprocessError::Read {
            path: path.to_path_buf(),
            source,
        },
    };
    let not_a_file = |meta: &std::fs::Metadata| PreprocessError::NotAFile {
        path: path.to_path_buf(),
        directory: meta.is_dir(),
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta));
    }
    let file = std::fs::File::open(path).map_err(read)?;
    // Checked again on the open file: the path may have changed in between.
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta));
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(PreprocessError::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_IMAGE_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(PreprocessError::FileTooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_IMAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Checks, from its first bytes, that the file at `path` is an image huatuo reads (DICOM, or a
/// format [`load_rgb_bytes`] decodes), without decoding it: so a question about a file that
/// is not an image is refused before a model is downloaded or loaded.
pub fn sniff(path: &Path, bytes: &[u8]) -> Result<(), PreprocessError> {
    if dicom::is_dicom(bytes) {
        return Ok(());
    }
    match image::guess_format(bytes) {
        Ok(
            ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::Bmp
            | ImageFormat::Tiff
            | ImageFormat::WebP,
        ) => Ok(()),
        Ok(other) => Err(PreprocessError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{other:?} images are not supported"),
        }),
        Err(_) => Err(PreprocessError::Unsupported {
            path: path.to_path_buf(),
            reason: describe_unknown(bytes),
        }),
    }
}

/// [`load_rgb_with`] on the bytes of the file at `path` (named in errors).
pub fn load_rgb_bytes(
    path: &Path,
    bytes: &[u8],
    opts: &ImageOptions,
) -> Result<RgbImage, PreprocessError> {
    if dicom::is_dicom(bytes) {
        return Ok(dicom::from_bytes(path, bytes)?.render(opts)?.image);
    }
    let not_dicom = |option| DicomError::NotDicom {
        path: path.to_path_buf(),
        option,
    };
    if opts.window.is_some() {
        return Err(not_dicom("window").into());
    }
    if opts.frame.is_some_and(|f| f != 1) {
        return Err(not_dicom("frame").into());
    }
    let format = image::guess_format(bytes).map_err(|_| PreprocessError::Unsupported {
        path: path.to_path_buf(),
        reason: describe_unknown(bytes),
    })?;
    match format {
        ImageFormat::Jpeg => decode_jpeg(path, bytes),
        ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::WebP => {
            decode_other(path, bytes, format)
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

/// Refuses an image whose decoder buffer (`decoded_per_pixel` bytes a pixel) plus its RGB
/// copy would take more than [`MAX_DECODED_BYTES`].
fn check_memory(
    path: &Path,
    width: u64,
    height: u64,
    decoded_per_pixel: u64,
) -> Result<(), PreprocessError> {
    let bytes = width * height * (decoded_per_pixel + 3);
    if bytes > MAX_DECODED_BYTES {
        return Err(PreprocessError::TooMuchMemory {
            path: path.to_path_buf(),
            width,
            height,
            bytes,
            limit: MAX_DECODED_BYTES,
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
    let decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(corrupt)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let per_pixel = u64::from(image::ImageDecoder::color_type(&decoder).bytes_per_pixel());
    drop(decoder);
    check_size(path, u64::from(w), u64::from(h))?;
    check_memory(path, u64::from(w), u64::from(h), per_pixel)?;
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
    TooMuchMemory(u64, u64, u64),
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
            let bytes = (w as u64) * (h as u64) * (components as u64 + 3);
            if bytes > MAX_DECODED_BYTES {
                return Err(JpegFailure::TooMuchMemory(w as u64, h as u64, bytes));
            }
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
        Ok(Err(JpegFailure::TooMuchMemory(width, height, bytes))) => {
            return Err(PreprocessError::TooMuchMemory {
                path: path.to_path_buf(),
                width,
                height,
                bytes,
                limit: MAX_DECODED_BYTES,
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
