//! DICOM input (issue 16): every fixture of tests/fixtures/dicom/ renders to the bytes
//! scripts/reference/dicom.py computed from the formulas; bad files are one error
//! naming the file; `huatuo render` writes exactly the model's input; and no identifying
//! value leaves the file.

use std::path::{Path, PathBuf};

use huatuo::dicom::{self, DicomError, ImageOptions, VoiFunction, Window, WindowSource};
use huatuo::model::preprocess::{self, ProcessorConfig};
use image::RgbImage;
use serde_json::Value;

use crate::util::{fixture, huatuo, tiny_checkpoint};

fn dcm(name: &str) -> PathBuf {
    fixture(&format!("dicom/{name}"))
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(dcm("cases.json")).expect("cases.json");
    let doc: Value = serde_json::from_str(&text).expect("json");
    doc["cases"].as_array().expect("cases").clone()
}

fn options(case: &Value) -> ImageOptions {
    ImageOptions {
        window: case["window"]
            .as_str()
            .map(|w| w.parse::<Window>().expect("window")),
        frame: case["frame"].as_u64().map(|f| f as u32),
    }
}

fn expected_image(case: &Value) -> RgbImage {
    let path = dcm(case["expected"].as_str().expect("expected"));
    image::open(&path).expect("expected png").to_rgb8()
}

/// The largest per-channel difference, and how many bytes differ.
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, usize) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0, 0), |(max, n), (x, y)| {
            let d = x.abs_diff(*y);
            (max.max(d), n + usize::from(d > 0))
        })
}

#[test]
fn every_fixture_renders_to_the_reference_bytes() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 40, "only {} cases", all.len());
    for case in &all {
        let name = case["name"].as_str().expect("name");
        let file = dcm(case["file"].as_str().expect("file"));
        let tolerance = case["tolerance"].as_u64().expect("tolerance") as u8;
        let rendering = match dicom::render_file(&file, &options(case)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let want = expected_image(case);
        if rendering.image.dimensions() != want.dimensions() {
            failures.push(format!(
                "{name}: size {:?} != {:?}",
                rendering.image.dimensions(),
                want.dimensions()
            ));
            continue;
        }
        let (max, count) = diff(&rendering.image, &want);
        if max > tolerance {
            failures.push(format!(
                "{name}: {count} bytes differ, by up to {max} (tolerance {tolerance})"
            ));
        }
        assert_eq!(
            rendering.meta.frames as u64,
            case["frames"].as_u64().expect("frames"),
            "{name}"
        );
        assert_eq!(
            rendering.frame as u64,
            case["frame"].as_u64().expect("frame"),
            "{name}"
        );
        match (&rendering.window, case["applied"].as_object()) {
            (None, None) => {}
            (Some(w), Some(a)) => {
                let source = match w.source {
                    WindowSource::Option(_) => "option",
                    WindowSource::File => "file",
                    WindowSource::MinMax => "min-max",
                };
                let function = match w.function {
                    VoiFunction::Linear => "LINEAR",
                    VoiFunction::LinearExact => "LINEAR_EXACT",
                    VoiFunction::Sigmoid => "SIGMOID",
                };
                let want = (
                    a["center"].as_f64(),
                    a["width"].as_f64(),
                    a["function"].as_str(),
                    a["source"].as_str(),
                );
                let got = (Some(w.center), Some(w.width), Some(function), Some(source));
                if got != want {
                    failures.push(format!("{name}: window {got:?} != {want:?}"));
                }
            }
            (got, want) => failures.push(format!(
                "{name}: window {got:?} but the reference says {want:?}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

fn case(name: &str) -> Value {
    cases()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

#[test]
fn signed_data_without_a_window_is_not_black() {
    // dicom-pixeldata's own min-max reads signed samples as unsigned: the image comes out
    // nearly black. Ours spans the whole range.
    let r =
        dicom::render_file(&dcm("signed_minmax.dcm"), &ImageOptions::default()).expect("render");
    let grey: Vec<u8> = r.image.as_raw().iter().step_by(3).copied().collect();
    let mean = grey.iter().map(|&g| f64::from(g)).sum::<f64>() / grey.len() as f64;
    assert!((100.0..160.0).contains(&mean), "mean grey {mean}");
    assert_eq!(grey.iter().min(), Some(&0));
    assert_eq!(grey.iter().max(), Some(&255));
    let w = r.window.expect("window");
    assert_eq!(
        (w.center, w.width, w.source),
        (250.0, 2500.0, WindowSource::MinMax)
    );
}

#[test]
fn dicom_is_recognised_by_its_bytes_whatever_the_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let want = expected_image(&case("ct_explicit_le"));
    for name in ["IM000001", "scan.png", "scan.dcm"] {
        let path = tmp.path().join(name);
        std::fs::copy(dcm("ct_explicit_le.dcm"), &path).expect("copy");
        assert!(dicom::is_dicom(&std::fs::read(&path).expect("read")));
        // Every image path of the program goes through load_rgb.
        assert_eq!(preprocess::load_rgb(&path).expect(name), want, "{name}");
    }
    let lung = ImageOptions {
        window: Some("lung".parse().expect("lung")),
        frame: None,
    };
    let got = preprocess::load_rgb_with(&tmp.path().join("IM000001"), &lung).expect("lung");
    assert_eq!(got, expected_image(&case("ct_window_lung")));
    let png = std::fs::read(fixture("images/cell.png")).expect("png");
    assert!(!dicom::is_dicom(&png));
    // A window or another frame of a PNG is refused, naming the file.
    let err = preprocess::load_rgb_with(&fixture("images/cell.png"), &lung).expect_err("png");
    assert!(
        err.to_string().contains("cell.png is not a DICOM file"),
        "{err}"
    );
    let frame2 = ImageOptions {
        window: None,
        frame: Some(2),
    };
    assert!(preprocess::load_rgb_with(&fixture("images/cell.png"), &frame2).is_err());
    // Frame 1 of a PNG is the PNG.
    let frame1 = ImageOptions {
        window: None,
        frame: Some(1),
    };
    let cell = preprocess::load_rgb(&fixture("images/cell.png")).expect("cell");
    assert_eq!(
        preprocess::load_rgb_with(&fixture("images/cell.png"), &frame1).expect("cell"),
        cell
    );
}

#[test]
fn frames_are_counted_and_checked() {
    let image = dicom::open(&dcm("multiframe.dcm")).expect("open");
    assert_eq!(image.frames(), 3);
    assert_eq!(image.meta().frames, 3);
    for frame in [0, 4, 100] {
        let err = image
            .render(&ImageOptions {
                window: None,
                frame: Some(frame),
            })
            .expect_err("out of range");
        assert!(
            matches!(err, DicomError::FrameOutOfRange { frames: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("multiframe.dcm") && msg.contains("has 3 frames"),
            "{msg}"
        );
    }
    let single = dicom::open(&dcm("ct_explicit_le.dcm")).expect("open");
    let err = single
        .render(&ImageOptions {
            window: None,
            frame: Some(2),
        })
        .expect_err("one frame");
    assert!(err.to_string().contains("has 1 frame;"), "{err}");
}

/// The error a fixture gives, checked to be one line naming the file.
fn error_of(path: &Path, opts: &ImageOptions) -> DicomError {
    let err = dicom::render_file(path, opts).expect_err("must fail");
    let msg = err.to_string();
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(msg.contains(&name), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
    err
}

#[test]
fn bad_files_are_one_error_naming_the_file() {
    let none = ImageOptions::default();
    let err = error_of(&dcm("rtplan.dcm"), &none);
    assert!(matches!(err, DicomError::NoPixelData { .. }), "{err:?}");
    assert!(err.to_string().contains("RTPLAN"), "{err}");
    let err = error_of(&dcm("unsupported_mpeg4.dcm"), &none);
    assert!(
        matches!(err, DicomError::UnsupportedSyntax { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("1.2.840.10008.1.2.4.102") && err.to_string().contains("MPEG-4"),
        "{err}"
    );
    for file in ["absurd_size.dcm", "absurd_size_j2k.dcm"] {
        let err = error_of(&dcm(file), &none);
        assert!(
            matches!(err, DicomError::TooLarge { .. }),
            "{file}: {err:?}"
        );
    }
    let err = error_of(&dcm("huge_length.dcm"), &none);
    assert!(
        err.to_string()
            .contains("(0009,1010) declares 4294967280 bytes"),
        "{err}"
    );
    let lung = ImageOptions {
        window: Some("lung".parse().expect("lung")),
        frame: None,
    };
    for file in [
        "rgb_planar0.dcm",
        "palette.dcm",
        "ybr_full.dcm",
        "ybr_jpeg_baseline.dcm",
    ] {
        let err = error_of(&dcm(file), &lung);
        assert!(
            matches!(err, DicomError::WindowOnColour { .. }),
            "{file}: {err:?}"
        );
    }
    // Truncated files: cut inside the header, inside the pixel data, inside a fragment.
    let tmp = tempfile::tempdir().expect("tmp");
    for (file, cut) in [
        ("ct_explicit_le.dcm", 1500),
        ("ct_explicit_le.dcm", 200),
        ("ct_jpeg_ls.dcm", 900),
        ("ct_j2k.dcm", 700),
    ] {
        let bytes = std::fs::read(dcm(file)).expect("read");
        let path = tmp.path().join(format!("cut{cut}_{file}"));
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let err = error_of(&path, &none);
        assert!(
            err.to_string().contains("truncated"),
            "{file} cut at {cut}: {err}"
        );
    }
    // A file that is not there, and an empty one.
    let err = error_of(&tmp.path().join("missing.dcm"), &none);
    assert!(matches!(err, DicomError::Read { .. }), "{err:?}");
}

/// Every prefix and many one-byte corruptions of every fixture: an error or an image, never a
/// panic, never a stray message (dicom-rs has known panics on malformed input).
#[test]
fn damaged_files_never_panic() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixture("dicom")).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "dcm") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let step = (bytes.len() / 60).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let damaged = [bytes[..cut].to_vec(), {
                let mut b = bytes.clone();
                b[cut] ^= 0xA5;
                b
            }];
            for data in damaged {
                if let Ok(image) = dicom::from_bytes(&path, &data) {
                    for frame in 1..=image.frames().min(2) {
                        let _ = image.render(&ImageOptions {
                            window: None,
                            frame: Some(frame),
                        });
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn safe_metadata_and_warnings() {
    let image = dicom::open(&dcm("ct_explicit_le.dcm")).expect("open");
    let m = image.meta();
    assert_eq!(m.modality.as_deref(), Some("CT"));
    assert_eq!(m.body_part.as_deref(), Some("CHEST"));
    assert_eq!((m.columns, m.rows, m.frames), (32, 24, 1));
    assert_eq!(m.pixel_spacing_mm, Some([0.75, 0.75]));
    assert_eq!(m.slice_thickness_mm, Some(5.0));
    assert_eq!(m.photometric, "MONOCHROME2");
    assert!(m.warnings().is_empty());
    let r = image.render(&ImageOptions::default()).expect("render");
    assert_eq!(
        r.summary(),
        "CT CHEST, 32x24, 1 frame, MONOCHROME2, pixel spacing 0.75x0.75 mm, slice 5 mm, \
         Explicit VR Little Endian; frame 1 of 1; window 40,400 (from the file)"
    );
    // An enhanced multi-frame file keeps its spacing in the shared functional group.
    let enhanced = dicom::open(&dcm("enhanced_multiframe.dcm")).expect("open");
    assert_eq!(enhanced.meta().pixel_spacing_mm, Some([0.5, 0.5]));
    assert_eq!(enhanced.meta().slice_thickness_mm, Some(1.25));
    assert_eq!(enhanced.frames(), 2);
    let us = dicom::open(&dcm("rgb_planar0.dcm")).expect("open");
    assert_eq!(us.meta().warnings().len(), 1);
    assert!(
        us.meta().warnings()[0].starts_with("US images"),
        "{:?}",
        us.meta().warnings()
    );
    let burned = dicom::open(&dcm("identifying.dcm")).expect("open");
    assert!(burned.meta().warnings()[0].contains("Burned In Annotation = YES"));
}

/// `huatuo render` output, decoded.
fn render_cli(home: &Path, file: &Path, extra: &[&str]) -> (RgbImage, String) {
    let out_png = home.join("out.png");
    let out = huatuo(home)
        .arg("render")
        .arg(file)
        .arg("-o")
        .arg(&out_png)
        .args(extra)
        .output()
        .expect("run");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(out.status.success(), "{}: {stderr}", file.display());
    assert!(out.stdout.is_empty());
    (image::open(&out_png).expect("png").to_rgb8(), stderr)
}

#[test]
fn render_writes_the_model_input() {
    let home = tempfile::tempdir().expect("tmp");
    let cfg = ProcessorConfig::clip_vit_large_336();
    for (name, extra) in [
        ("ct_explicit_le", &[][..]),
        ("ct_window_lung", &["--window", "lung"][..]),
        ("ct_window_explicit", &["--window", "300,1200"][..]),
        ("multiframe_2", &["--frame", "2"][..]),
        ("rgb_planar1", &[][..]),
        ("palette", &[][..]),
        ("ybr_full_422", &[][..]),
    ] {
        let c = case(name);
        let file = dcm(c["file"].as_str().expect("file"));
        let want = expected_image(&c);
        let (got, stderr) = render_cli(home.path(), &file, extra);
        assert_eq!(got.dimensions(), (336, 336), "{name}");
        assert_eq!(
            got,
            preprocess::model_input(&want, &cfg).expect("resize"),
            "{name}"
        );
        let frames = c["frames"].as_u64().expect("frames");
        assert!(stderr.contains(&format!("of {frames}")), "{name}: {stderr}");
        let (original, _) = render_cli(home.path(), &file, &[extra, &["--original"]].concat());
        assert_eq!(original, want, "{name} --original");
    }
    let (_, stderr) = render_cli(
        home.path(),
        &dcm("ct_explicit_le.dcm"),
        &["--window", "lung"],
    );
    assert!(stderr.contains("window lung (-600,1500)"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn render_of_a_png_is_the_reference_preprocessing() {
    // tests/fixtures/pixels.json holds the SHA-256 of the uint8 image the Python reference
    // normalises (after expand2square and the CLIP resize and crop).
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(fixture("pixels.json")).expect("pixels.json");
    let pixels: Value = serde_json::from_str(&text).expect("json");
    let home = tempfile::tempdir().expect("tmp");
    for name in ["cell.png", "wide_336x200.png", "jpeg444_80x120.jpg"] {
        let (got, stderr) = render_cli(home.path(), &fixture(&format!("images/{name}")), &[]);
        assert!(stderr.is_empty(), "{stderr}");
        let entry = &pixels["images"][name]["resized"];
        let sha: String = Sha256::digest(got.as_raw())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            Some(sha.as_str()),
            entry["sha256"].as_str(),
            "{name}: {entry}"
        );
    }
}

#[test]
fn render_errors_are_one_line_and_exit_2() {
    let home = tempfile::tempdir().expect("tmp");
    let out_png = home.path().join("out.png");
    for (file, extra, needle) in [
        (dcm("multiframe.dcm"), vec!["--frame", "4"], "has 3 frames"),
        (
            dcm("rgb_planar0.dcm"),
            vec!["--window", "lung"],
            "colour image",
        ),
        (dcm("rtplan.dcm"), vec![], "holds no image"),
        (
            dcm("unsupported_mpeg4.dcm"),
            vec![],
            "unsupported transfer syntax",
        ),
        (dcm("absurd_size.dcm"), vec![], "too large"),
        (
            fixture("images/cell.png"),
            vec!["--window", "40,400"],
            "not a DICOM file",
        ),
        (home.path().join("missing.dcm"), vec![], "missing.dcm"),
    ] {
        let out = huatuo(home.path())
            .arg("render")
            .arg(&file)
            .arg("-o")
            .arg(&out_png)
            .args(&extra)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let err = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(out.stdout.is_empty());
        assert!(!out_png.exists());
    }
    let out = huatuo(home.path())
        .args(["render", "x.dcm", "-o", "y.png", "--window", "wide"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lung (-600,1500)"));
}

/// Identifying values of tests/fixtures/dicom/identifying.dcm (made up), whole and in parts.
fn identifying() -> Vec<String> {
    let text = std::fs::read_to_string(dcm("identifying.json")).expect("identifying.json");
    let doc: Value = serde_json::from_str(&text).expect("json");
    let mut all: Vec<String> = ["values", "parts"]
        .iter()
        .flat_map(|k| doc[k].as_array().expect("list").iter())
        .map(|v| v.as_str().expect("str").to_string())
        .collect();
    all.sort();
    all.dedup();
    assert!(all.len() > 25);
    all
}

#[track_caller]
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).to_lowercase();
    for value in identifying() {
        assert!(
            !text.contains(&value.to_lowercase()),
            "{what} contains {value:?}"
        );
    }
}

#[test]
fn identifying_values_never_leave_the_file() {
    let file = dcm("identifying.dcm");
    let raw = std::fs::read(&file).expect("read");
    // The file does hold them (the test would prove nothing otherwise).
    let raw_text = String::from_utf8_lossy(&raw);
    for value in identifying() {
        assert!(raw_text.contains(&value), "fixture lacks {value}");
    }
    // The library: metadata, Debug prints, summaries, JSON.
    let image = dicom::open(&file).expect("open");
    let r = image.render(&ImageOptions::default()).expect("render");
    assert_clean("Debug of the image", format!("{image:?}").as_bytes());
    assert_clean(
        "SafeMeta",
        format!("{:?} {} {}", r.meta, r.meta, r.summary()).as_bytes(),
    );
    assert_clean(
        "SafeMeta JSON",
        serde_json::to_string(&r.meta).expect("json").as_bytes(),
    );
    assert_clean("warnings", r.meta.warnings().join(" ").as_bytes());
    // Errors on damaged copies (cut anywhere, including inside the names).
    for cut in (0..raw.len()).step_by(7) {
        if let Err(e) =
            dicom::from_bytes(&file, &raw[..cut]).and_then(|i| i.render(&ImageOptions::default()))
        {
            assert_clean("an error", format!("{e} {e:?}").as_bytes());
        }
    }
    // The binary: render (and its errors) print and write none of them.
    let home = tempfile::tempdir().expect("tmp");
    for extra in [
        &[][..],
        &["--original"],
        &["--window", "bone"],
        &["--frame", "9"],
    ] {
        let out_png = home.path().join("id.png");
        let out = huatuo(home.path())
            .arg("render")
            .arg(&file)
            .arg("-o")
            .arg(&out_png)
            .args(extra)
            .output()
            .expect("run");
        assert_clean("render stdout", &out.stdout);
        assert_clean("render stderr", &out.stderr);
        if out_png.exists() {
            assert_clean("the PNG", &std::fs::read(&out_png).expect("png"));
        }
    }
    // ask: streamed answer, --json, a saved session and its Markdown export.
    let model = tiny_checkpoint("qwen2");
    for json in [false, true] {
        let mut cmd = huatuo(home.path());
        cmd.args(["ask", "--model"])
            .arg(model)
            .args([
                "--temperature",
                "0",
                "--max-new-tokens",
                "6",
                "--dtype",
                "f32",
                "--session",
                "privacy",
            ])
            .arg("--image")
            .arg(&file);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.arg("Describe the scan.").output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_clean("ask stdout", &out.stdout);
        assert_clean("ask stderr", &out.stderr);
    }
    let show = huatuo(home.path())
        .args(["sessions", "show", "privacy"])
        .output()
        .expect("run");
    assert!(show.status.success());
    assert_clean("the Markdown export", &show.stdout);
    let mut written = 0;
    let original = std::fs::read(&file).expect("the DICOM file");
    for entry in walk(home.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        // The session's own copy of the scan (sessions/images/<sha256>/) is the file itself,
        // byte for byte, kept so the conversation stays about it: not a leak of its tags.
        if entry.components().any(|c| c.as_os_str() == "images") && bytes == original {
            continue;
        }
        assert_clean(&entry.display().to_string(), &bytes);
        written += 1;
    }
    assert!(written >= 2, "{written}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn ask_about_a_dicom_answers_as_about_its_png_rendering() {
    // The PNG path is bit-exact with the reference (tests/preprocess.rs, tests/cli.rs), so the
    // same answer on the rendering's PNG is the reference answer for the DICOM file.
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_checkpoint("qwen2");
    let png = home.path().join("ct.png");
    let rendered =
        dicom::render_file(&dcm("ct_explicit_le.dcm"), &ImageOptions::default()).expect("render");
    rendered.image.save(&png).expect("save");
    let answer = |image: &Path| {
        let out = huatuo(home.path())
            .args(["ask", "--model"])
            .arg(model)
            .args([
                "--temperature",
                "0",
                "--max-new-tokens",
                "12",
                "--dtype",
                "f32",
                "--image",
            ])
            .arg(image)
            .arg("What does the picture show?")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    assert_eq!(answer(&dcm("ct_explicit_le.dcm")), answer(&png));
}

/// Issue 16, acceptance 2: `ask -i file.dcm --window lung` answers what the reference answers
/// on the PNG rendering of the file through the lung window; two windows of the same slice in
/// one question (`PATH@WINDOW`) are two different images, each as its PNG; the window and
/// frame are kept in the session and its record.
#[test]
fn ask_with_a_window_answers_as_about_that_rendering() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_checkpoint("qwen2");
    let file = dcm("ct_explicit_le.dcm");
    let png_of = |window: &str| {
        let png = home.path().join(format!("ct-{window}.png"));
        let opts = ImageOptions {
            window: Some(window.parse().expect("window")),
            frame: None,
        };
        dicom::render_file(&file, &opts)
            .expect("render")
            .image
            .save(&png)
            .expect("save");
        png
    };
    let ask = |args: &[&std::ffi::OsStr]| {
        let out = huatuo(home.path())
            .args(["ask", "--model"])
            .arg(model)
            .args([
                "--temperature",
                "0",
                "--max-new-tokens",
                "12",
                "--dtype",
                "f32",
            ])
            .args(args)
            .arg("What does the picture show?")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).expect("utf-8"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (lung_png, mediastinum_png) = (png_of("lung"), png_of("mediastinum"));
    let (dicom_lung, stderr) = ask(&[
        "-i".as_ref(),
        file.as_os_str(),
        "--window".as_ref(),
        "lung".as_ref(),
    ]);
    let (png_lung, _) = ask(&["-i".as_ref(), lung_png.as_os_str()]);
    assert_eq!(dicom_lung, png_lung);
    assert!(
        stderr.contains("frame 1 of 1") && stderr.contains("window lung"),
        "{stderr}"
    );

    let both = format!("{}@mediastinum", file.display());
    let lung = format!("{}@lung", file.display());
    let (two_windows, _) = ask(&[
        "-i".as_ref(),
        lung.as_ref(),
        "-i".as_ref(),
        both.as_ref(),
        "--session".as_ref(),
        "windows".as_ref(),
        "--json".as_ref(),
    ]);
    let (two_pngs, _) = ask(&[
        "-i".as_ref(),
        lung_png.as_os_str(),
        "-i".as_ref(),
        mediastinum_png.as_os_str(),
        "--json".as_ref(),
    ]);
    let a: serde_json::Value = serde_json::from_str(&two_windows).expect("json");
    let b: serde_json::Value = serde_json::from_str(&two_pngs).expect("json");
    assert_eq!(a["answer"], b["answer"]);
    assert_eq!(
        a["tokens"]["images_encoded"].as_u64(),
        Some(2),
        "two images, not one cached"
    );
    assert_eq!(a["images"][0]["window"], "lung");
    assert_eq!(a["images"][1]["window"], "mediastinum");
    let session: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("data/sessions/windows.json")).expect("saved"),
    )
    .expect("json");
    assert_eq!(session["turns"][0]["images"][1]["window"], "mediastinum");
}

#[test]
fn render_uses_the_checkpoints_preprocessor_settings() {
    // `huatuo render` has no checkpoint; its built-in settings are the CLIP-336 file's.
    let file = ProcessorConfig::from_file(&fixture("preprocessor_config.json")).expect("config");
    assert_eq!(ProcessorConfig::clip_vit_large_336(), file);
}
