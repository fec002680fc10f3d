//! Image preprocessing parity (huatuo-reference.md §2) against fixtures written by
//! scripts/reference/pixels.py with Pillow + transformers' CLIPImageProcessor, plus error and
//! geometry checks.

use std::path::{Path, PathBuf};

use huatuo::model::preprocess::{
    center_crop, expand_to_square, load_rgb, pixel_values, preprocess_file, resize_and_crop,
    CropSize, PreprocessError, ProcessorConfig, ResizeTarget,
};
use image::{Rgb, RgbImage};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config() -> ProcessorConfig {
    ProcessorConfig::from_file(&fixtures().join("preprocessor_config.json")).expect("config")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// tests/fixtures/pixels.json, written by scripts/reference/pixels.py.
fn reference() -> &'static serde_json::Value {
    static REF: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("pixels.json"))
            .expect("tests/fixtures/pixels.json (run scripts/reference/pixels.py)");
        serde_json::from_str(&text).expect("pixels.json")
    })
}

#[track_caller]
fn check_stage(name: &str, stage: &str, width: u32, height: u32, bytes: &[u8]) {
    let want = &reference()["images"][name][stage];
    assert_eq!(
        (u64::from(width), u64::from(height)),
        (
            want["width"].as_u64().expect("width"),
            want["height"].as_u64().expect("height")
        ),
        "{name}: {stage} size"
    );
    assert_eq!(
        sha256_hex(bytes),
        want["sha256"].as_str().expect("sha256"),
        "{name}: {stage} bytes differ from Pillow's (dump them with `scripts/reference/pixels.py --dump DIR`)"
    );
}

/// Checks one image at every stage: Pillow's convert('RGB'), the uint8 image after
/// expand2square + resize + center crop (both byte for byte, by hash), and the normalised
/// float32 pixels (the reference's are `normalisation[c][resized]`, asserted by pixels.py).
fn check_image(name: &str) {
    let image_path = fixtures().join("images").join(name);
    assert!(
        reference()["images"].get(name).is_some(),
        "{name} is not in pixels.json: run scripts/reference/pixels.py"
    );
    let cfg = config();

    // Stage 1: decode.
    let rgb = load_rgb(&image_path).unwrap_or_else(|e| panic!("{e}"));
    check_stage(name, "rgb", rgb.width(), rgb.height(), rgb.as_raw());

    // Stage 2: expand2square + resize + center crop, uint8.
    let square = expand_to_square(&rgb, cfg.background());
    let resized = resize_and_crop(&square, &cfg).expect("resize");
    check_stage(
        name,
        "resized",
        resized.width(),
        resized.height(),
        resized.as_raw(),
    );

    // Stage 3: float32 pixels, CHW.
    let table: Vec<Vec<f32>> = reference()["normalisation"]
        .as_array()
        .expect("table")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("value") as f32)
                .collect()
        })
        .collect();
    let (w, h) = (resized.width() as usize, resized.height() as usize);
    let raw = resized.as_raw();
    let mut want = Vec::with_capacity(3 * w * h);
    for (c, row) in table.iter().enumerate() {
        want.extend((0..w * h).map(|i| row[raw[3 * i + c] as usize]));
    }
    let ours = pixel_values(&square, &cfg).expect("pixel_values");
    let end_to_end = preprocess_file(&image_path, &cfg).expect("preprocess_file");
    assert_eq!(
        ours, end_to_end,
        "{name}: preprocess_file != the three steps"
    );
    assert_eq!(ours.len(), want.len(), "{name}: pixel count");
    let max = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-5, "{name}: pixel_values max |diff| {max} > 1e-5");
}

macro_rules! parity_tests {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_image($file);
            }
        )*
        const PARITY_IMAGES: &[&str] = &[$($file),*];
    };
}

parity_tests! {
    parity_bilevel_png => "bilevel_37x29.png",
    parity_cell_grey_png => "cell.png",
    parity_grey16_trns_png => "gray16_trns_48x61.png",
    parity_hubble_jpeg => "hubble_deep_field.jpg",
    parity_jpeg_420 => "jpeg420_97x61.jpg",
    parity_jpeg_422 => "jpeg422_64x47.jpg",
    parity_jpeg_444 => "jpeg444_80x120.jpg",
    parity_jpeg_cmyk => "jpeg_cmyk_40x30.jpg",
    parity_jpeg_grey => "jpeg_gray_45x45.jpg",
    parity_jpeg_progressive => "jpeg_progressive_123x77.jpg",
    parity_la_png => "la_33x48.png",
    parity_la16_png => "la16_26x19.png",
    parity_large_png => "large_500x700.png",
    parity_palette_png => "palette_30x90.png",
    parity_single_pixel_png => "pixel_1x1.png",
    parity_rgb16_png => "rgb16_41x24.png",
    parity_rgba_png => "rgba_64x40.png",
    parity_wide_no_resample_png => "wide_336x200.png",
}

#[test]
fn every_fixture_image_is_checked() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures().join("images"))
        .expect("images dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = PARITY_IMAGES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "add new fixture images to parity_tests!");
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

#[test]
fn config_reads_the_clip_336_file() {
    let cfg = config();
    assert_eq!(cfg.size, ResizeTarget::ShortestEdge(336));
    assert_eq!(
        cfg.crop_size,
        CropSize {
            height: 336,
            width: 336
        }
    );
    assert_eq!(cfg.resample, 3);
    assert!(cfg.do_resize && cfg.do_center_crop && cfg.do_rescale && cfg.do_normalize);
    assert_eq!(cfg.rescale_factor, 1.0 / 255.0);
    assert_eq!(cfg.image_mean, [0.48145466, 0.4578275, 0.40821073]);
    assert_eq!(cfg.image_std, [0.26862954, 0.26130258, 0.27577711]);
    assert_eq!(cfg.background(), [122, 116, 104]);
    assert_eq!(cfg.output_hw(1000, 872), (336, 336));
}

#[test]
fn config_accepts_dict_and_int_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("preprocessor_config.json");
    std::fs::write(
        &path,
        r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 200, "width": 100},
            "image_mean": 0.5, "image_std": [0.5, 0.5, 0.5], "do_center_crop": false}"#,
    )
    .expect("write");
    let cfg = ProcessorConfig::from_file(&path).expect("config");
    assert_eq!(cfg.size, ResizeTarget::ShortestEdge(224));
    assert_eq!(
        cfg.crop_size,
        CropSize {
            height: 200,
            width: 100
        }
    );
    assert_eq!(cfg.image_mean, [0.5; 3]);
    assert_eq!(cfg.background(), [127; 3]);
    // Shortest edge 224 of a 300x100 image: 100 -> 224, 300 -> int(224 * 300 / 100) = 672.
    assert_eq!(cfg.output_hw(300, 100), (224, 672));
    let img = RgbImage::from_pixel(300, 100, Rgb([255, 0, 128]));
    let px = pixel_values(&img, &cfg).expect("pixels");
    assert_eq!(px.len(), 3 * 224 * 672);
    assert!(
        (px[0] - 1.0).abs() < 1e-6,
        "(1 - 0.5) / 0.5 = 1, got {}",
        px[0]
    );

    std::fs::write(&path, r#"{"size": [10, 20], "crop_size": 8}"#).expect("write");
    let cfg = ProcessorConfig::from_file(&path).expect("config");
    assert_eq!(
        cfg.size,
        ResizeTarget::Exact {
            height: 10,
            width: 20
        }
    );
    assert_eq!(cfg.output_hw(5, 5), (8, 8));
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.json");
    let err = ProcessorConfig::from_file(&missing).expect_err("missing");
    assert!(matches!(err, PreprocessError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.json"), "{err}");

    let path = dir.path().join("preprocessor_config.json");
    std::fs::write(&path, r#"{"resample": 2}"#).expect("write");
    let err = ProcessorConfig::from_file(&path).expect_err("bilinear");
    let msg = err.to_string();
    assert!(
        msg.contains("preprocessor_config.json") && msg.contains("resample"),
        "{msg}"
    );

    std::fs::write(&path, r#"{"image_mean": [0.5, 0.5]}"#).expect("write");
    let msg = ProcessorConfig::from_file(&path)
        .expect_err("two means")
        .to_string();
    assert!(msg.contains("image_mean"), "{msg}");

    std::fs::write(&path, "{ not json").expect("write");
    let err = ProcessorConfig::from_file(&path).expect_err("syntax");
    assert!(matches!(err, PreprocessError::Config { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Errors while loading
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_image_is_named() {
    let path = fixtures().join("images/does_not_exist.png");
    let err = load_rgb(&path).expect_err("missing");
    assert!(matches!(err, PreprocessError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("image not found: {}", path.display())
    );
    let err = preprocess_file(&path, &config()).expect_err("missing");
    assert!(err.to_string().contains("does_not_exist.png"), "{err}");
}

#[test]
fn truncated_png_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(fixtures().join("images/rgba_64x40.png")).expect("read");
    let path = dir.path().join("cut.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = load_rgb(&path).expect_err("truncated");
    assert!(matches!(err, PreprocessError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("cut.png") && msg.contains("corrupt"), "{msg}");
}

#[test]
fn truncated_jpeg_is_a_clear_error() {
    // Pillow raises "image file is truncated" for all of these, even when only the EOI marker
    // is missing; libjpeg alone would fake the EOI and pad with grey.
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["jpeg444_80x120.jpg", "jpeg_progressive_123x77.jpg"] {
        let bytes = std::fs::read(fixtures().join("images").join(name)).expect("read");
        let cuts = [
            bytes.len() / 2,
            bytes.len() - 100,
            400,
            bytes.len() - 2,
            bytes.len() - 1,
        ];
        for (i, cut) in cuts.into_iter().enumerate() {
            let path = dir.path().join(format!("cut{i}.jpg"));
            std::fs::write(&path, &bytes[..cut]).expect("write");
            let err = load_rgb(&path).expect_err("truncated");
            assert!(matches!(err, PreprocessError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains(&format!("cut{i}.jpg")), "{err}");
        }
    }
}

#[test]
fn corrupt_jpeg_header_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(fixtures().join("images/jpeg420_97x61.jpg")).expect("read");
    // Keep SOI + the first marker's 0xFF (so it is detected as JPEG, as Pillow's `_accept`
    // does), garble the rest of the header.
    for b in &mut bytes[3..200] {
        *b = 0x5a;
    }
    let path = dir.path().join("garbled.jpg");
    std::fs::write(&path, &bytes).expect("write");
    let err = load_rgb(&path).expect_err("garbled");
    assert!(matches!(err, PreprocessError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("garbled.jpg"), "{err}");
}

#[test]
fn non_images_are_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "this is not an image\n").expect("write");
    let err = load_rgb(&text).expect_err("text");
    assert!(
        matches!(err, PreprocessError::Unsupported { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("notes.png") && msg.contains("PNG or JPEG"),
        "{msg}"
    );

    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").expect("write");
    let msg = load_rgb(&empty).expect_err("empty").to_string();
    assert!(msg.contains("empty.jpg") && msg.contains("empty"), "{msg}");

    let err = load_rgb(dir.path()).expect_err("directory");
    assert!(
        matches!(
            err,
            PreprocessError::NotAFile {
                directory: true,
                ..
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------------------------

fn numbered(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 7]))
}

#[test]
fn expand_to_square_offsets() {
    let bg = [122, 116, 104];
    // Square: unchanged.
    let sq = numbered(3, 3);
    assert_eq!(expand_to_square(&sq, bg), sq);

    // Wider: rows pasted at y = (w - h) // 2.
    for (w, h) in [(3, 1), (4, 1), (5, 2), (6, 3)] {
        let out = expand_to_square(&numbered(w, h), bg);
        assert_eq!(out.dimensions(), (w, w));
        let y0 = (w - h) / 2;
        for y in 0..w {
            for x in 0..w {
                let want = if (y0..y0 + h).contains(&y) {
                    Rgb([x as u8, (y - y0) as u8, 7])
                } else {
                    Rgb(bg)
                };
                assert_eq!(*out.get_pixel(x, y), want, "{w}x{h} at ({x},{y})");
            }
        }
    }

    // Taller: columns pasted at x = (h - w) // 2.
    for (w, h) in [(1, 2), (1, 4), (2, 5), (3, 6)] {
        let out = expand_to_square(&numbered(w, h), bg);
        assert_eq!(out.dimensions(), (h, h));
        let x0 = (h - w) / 2;
        for y in 0..h {
            for x in 0..h {
                let want = if (x0..x0 + w).contains(&x) {
                    Rgb([(x - x0) as u8, y as u8, 7])
                } else {
                    Rgb(bg)
                };
                assert_eq!(*out.get_pixel(x, y), want, "{w}x{h} at ({x},{y})");
            }
        }
    }
}

#[test]
fn center_crop_pads_like_transformers() {
    // Inside: offset (h - ch) // 2, (w - cw) // 2.
    let out = center_crop(&numbered(5, 4), 2, 3);
    assert_eq!(out.dimensions(), (3, 2));
    assert_eq!(*out.get_pixel(0, 0), Rgb([1, 1, 7]));

    // Too small: centred on zeros with ceil padding (3 -> 4: one zero row/column first).
    let out = center_crop(&numbered(3, 2), 4, 4);
    assert_eq!(out.dimensions(), (4, 4));
    assert_eq!(*out.get_pixel(0, 0), Rgb([0, 0, 0]));
    assert_eq!(*out.get_pixel(1, 1), Rgb([0, 0, 7]));
    assert_eq!(*out.get_pixel(3, 2), Rgb([2, 1, 7]));
    assert_eq!(*out.get_pixel(3, 3), Rgb([0, 0, 0]));
}

#[test]
fn resize_keeps_aspect_then_crops() {
    let cfg = config();
    // 672x336 -> shortest edge 336 -> 672x336 already: no resampling; crop the middle.
    let img = numbered(672, 336);
    let out = resize_and_crop(&img, &cfg).expect("resize");
    assert_eq!(out.dimensions(), (336, 336));
    assert_eq!(*out.get_pixel(0, 0), Rgb([168, 0, 7]));
    // Empty images are refused, not divided by zero.
    let err = pixel_values(&RgbImage::new(0, 5), &cfg).expect_err("empty");
    assert!(matches!(err, PreprocessError::EmptyImage { .. }), "{err:?}");
}

/// Past `MAX_OUTPUT_SIDE` the square is never built (issue 15); the bytes stay those of
/// building it and resizing, for tall and wide images.
#[test]
fn long_images_give_the_bytes_of_padding_then_resizing() {
    let cfg = config();
    for (w, h) in [(3, 4500), (4500, 2)] {
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 + y) as u8, (y * 3) as u8, (x ^ y) as u8])
        });
        let want = resize_and_crop(&expand_to_square(&img, cfg.background()), &cfg).expect("old");
        let got = huatuo::model::preprocess::model_input(&img, &cfg).expect("new");
        assert!(got == want, "{w}x{h}: streaming resize differs");
    }
}

#[test]
fn oversized_sizes_are_refused_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("preprocessor_config.json");
    for (json, key) in [
        (r#"{"crop_size": 100000, "size": 336}"#, "crop_size 100000"),
        (
            r#"{"crop_size": 336, "size": {"shortest_edge": 70000}}"#,
            "size 70000",
        ),
    ] {
        std::fs::write(&path, json).expect("write");
        let err = ProcessorConfig::from_file(&path)
            .expect_err(json)
            .to_string();
        assert!(
            err.contains("preprocessor_config.json") && err.contains(key),
            "{err}"
        );
    }
}
