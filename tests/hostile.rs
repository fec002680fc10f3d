//! Hostile inputs and faults (issue 15): image bombs measured by the process's peak memory,
//! files that are not files, oversized settings and prompts, and broken numbers in a
//! checkpoint's configs. Each error is one line naming the thing once, then the cause.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::time::Duration;

use assert_cmd::Command;
use image::{Rgb, RgbImage};

use crate::util::{tiny_checkpoint, tiny_copy};

/// The binary with huatuo's own directories in a temp dir.
fn huatuo(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("huatuo").expect("binary");
    cmd.env("HUATUO_CONFIG_DIR", home.join("config"))
        .env("HUATUO_DATA_DIR", home.join("data"))
        .env("HF_HUB_CACHE", home.join("hub"))
        .env_remove("HUATUO_TEST_TOKEN_DELAY_MS")
        .timeout(Duration::from_secs(120));
    cmd
}

fn ask_args(model: &Path) -> Vec<String> {
    [
        "ask",
        "--model",
        &model.display().to_string(),
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
        "--dtype",
        "f32",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs huatuo with `args` under GNU time and returns its output and peak resident set
/// (VmHWM, `%M`) in KiB: the memory a bomb would blow up, not the time it takes.
fn peak_rss_kib(home: &Path, args: &[String]) -> (Output, u64) {
    let report = home.join("time.txt");
    let out = Process::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(assert_cmd::cargo::cargo_bin("huatuo"))
        .args(args)
        .env("HUATUO_CONFIG_DIR", home.join("config"))
        .env("HUATUO_DATA_DIR", home.join("data"))
        .env("HF_HUB_CACHE", home.join("hub"))
        .output()
        .expect("/usr/bin/time runs huatuo");
    let text = std::fs::read_to_string(&report).expect("time's report");
    // GNU time writes "Command exited with non-zero status N" before the format.
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {text:?}"));
    (out, kib)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `width`×`height` PNG of a gradient, tiny on disk whatever its shape.
fn long_png(dir: &Path, width: u32, height: u32) -> PathBuf {
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 251) as u8, (y % 241) as u8, 7])
    });
    let path = dir.join(format!("long_{width}x{height}.png"));
    img.save(&path).expect("png");
    path
}

/// The peak RSS allowed for preprocessing a tiny bomb: the binary and its allocator, with
/// room to spare, far below the 30 GB the padded square takes.
const BOMB_RSS_KIB: u64 = 300 * 1024;

#[test]
fn a_1x100000_png_renders_in_bounded_memory() {
    let home = tempfile::tempdir().expect("tmp");
    for (w, h) in [(1, 100_000), (100_000, 1)] {
        let png = long_png(home.path(), w, h);
        let out_png = home.path().join("out.png");
        let args = [
            "render".into(),
            png.display().to_string(),
            "-o".into(),
            out_png.display().to_string(),
        ];
        let (out, kib) = peak_rss_kib(home.path(), &args);
        assert!(out.status.success(), "{w}x{h}: {}", stderr(&out));
        assert!(kib < BOMB_RSS_KIB, "{w}x{h}: peak RSS {kib} KiB");
        let rendered = image::open(&out_png).expect("png").to_rgb8();
        assert_eq!(rendered.dimensions(), (336, 336));
        // Mostly padding: the corner is the background colour.
        assert_eq!(rendered.get_pixel(0, 0), &Rgb([122, 116, 104]));
    }
}

#[test]
fn a_1x100000_png_is_answered_in_bounded_memory() {
    let home = tempfile::tempdir().expect("tmp");
    let png = long_png(home.path(), 1, 100_000);
    let mut args = ask_args(tiny_checkpoint("qwen2"));
    args.extend(["-i".into(), png.display().to_string(), "Describe.".into()]);
    let (out, kib) = peak_rss_kib(home.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(kib < BOMB_RSS_KIB, "peak RSS {kib} KiB");
}

#[test]
fn a_huge_crop_size_is_refused_naming_the_file_and_key() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_copy("qwen2", home.path());
    let config = model.join("vit/clip_vit_large_patch14_336/preprocessor_config.json");
    let text = std::fs::read_to_string(&config).expect("config");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["crop_size"] = 100_000.into();
    std::fs::write(&config, json.to_string()).expect("write");
    let png = long_png(home.path(), 3, 5);
    let mut args = ask_args(&model);
    args.extend(["-i".into(), png.display().to_string(), "Describe.".into()]);
    let (out, kib) = peak_rss_kib(home.path(), &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("preprocessor_config.json") && err.contains("crop_size 100000"),
        "{err}"
    );
    assert!(kib < BOMB_RSS_KIB, "peak RSS {kib} KiB");
}

/// `-i /dev/zero` and a FIFO are refused at once, in one line, never read.
#[test]
fn images_that_are_not_regular_files_are_refused() {
    let home = tempfile::tempdir().expect("tmp");
    let fifo = home.path().join("pipe.png");
    let made = Process::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    for path in [Path::new("/dev/zero"), fifo.as_path()] {
        // The preprocessing's own reader (the engine's) looks before it opens.
        let err = huatuo::model::preprocess::read_file(path).expect_err("not a file");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read image {}: not a regular file (a device, pipe or socket is never read)",
                path.display()
            )
        );
        let out = huatuo(home.path())
            .arg("render")
            .arg(path)
            .arg("-o")
            .arg(home.path().join("out.png"))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let out = huatuo(home.path())
            .args(ask_args(tiny_checkpoint("qwen2")))
            .arg("-i")
            .arg(path)
            .arg("Describe.")
            .output()
            .expect("run");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(err.contains("not a regular file"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(
            err.matches(&*path.display().to_string()).count(),
            1,
            "the path once: {err}"
        );
        let out = huatuo(home.path())
            .arg("render")
            .arg(path)
            .arg("-o")
            .arg(home.path().join("out.png"))
            .output()
            .expect("run");
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "render {}: {err}",
            path.display()
        );
        assert!(err.contains("not a regular file"), "{err}");
    }
}

/// "image X: cannot decode image X" said the path twice.
#[test]
fn an_image_error_names_the_path_once() {
    let home = tempfile::tempdir().expect("tmp");
    let broken = home.path().join("broken.png");
    let png = std::fs::read(long_png(home.path(), 40, 30)).expect("png");
    std::fs::write(&broken, &png[..png.len() / 2]).expect("write");
    let out = huatuo(home.path())
        .args(ask_args(tiny_checkpoint("qwen2")))
        .arg("-i")
        .arg(&broken)
        .arg("Describe.")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("broken.png").count(), 1, "{err}");
}

/// A copy of the tiny checkpoint with `edit` applied to its config.json.
fn edited_config(home: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let model = tiny_copy("qwen2", home);
    let path = model.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
    edit(&mut json);
    std::fs::write(&path, json.to_string()).expect("write");
    model
}

#[test]
fn a_negative_rope_theta_is_refused_naming_the_file_and_key() {
    let home = tempfile::tempdir().expect("tmp");
    let model = edited_config(home.path(), |c| c["rope_theta"] = (-1.0).into());
    let out = huatuo(home.path())
        .args(ask_args(&model))
        .arg("Hello")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        out.stdout.is_empty(),
        "no answer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("config.json") && err.contains("rope_theta -1"),
        "{err}"
    );
}

/// NaN in the logits (here from NaN weights) stops generation with an error naming the
/// model, instead of answering `!!!!` with exit 0.
#[test]
fn nan_logits_stop_generation_naming_the_model() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_copy("qwen2", home.path());
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    let name = "model.norm.weight";
    let shard = model.join(index["weight_map"][name].as_str().expect("final norm"));
    let mut tensors =
        candle_core::safetensors::load(&shard, &candle_core::Device::Cpu).expect("load");
    let norm = &tensors[name];
    let nan = (norm.ones_like().expect("ones") * f64::NAN).expect("nan");
    tensors.insert(name.to_string(), nan);
    candle_core::safetensors::save(&tensors, &shard).expect("save");
    let out = huatuo(home.path())
        .args(ask_args(&model))
        .arg("Hello")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        out.stdout.is_empty(),
        "no answer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(&*model.display().to_string()) && err.contains("not finite"),
        "{err}"
    );
}

#[test]
fn wrong_types_in_generation_config_are_errors() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_copy("qwen2", home.path());
    std::fs::write(model.join("generation_config.json"), r#"{"top_k": "many"}"#).expect("write");
    let out = huatuo(home.path())
        .args(ask_args(&model))
        .arg("Hello")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("generation_config.json") && err.contains("top_k"),
        "{err}"
    );
}

/// 16 MB on stdin reached 1.9 GB while being tokenized: now it is refused after reading
/// 4 MiB + 1 bytes, and a prompt the engine's bound refuses is never tokenized.
#[test]
fn huge_prompts_are_refused_before_tokenizing() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_checkpoint("qwen2");
    let big = home.path().join("big.txt");
    std::fs::write(&big, "word ".repeat((16 << 20) / 5)).expect("write");
    let report = home.path().join("time.txt");
    let out = Process::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(assert_cmd::cargo::cargo_bin("huatuo"))
        .args(ask_args(model))
        .arg("-")
        .stdin(std::fs::File::open(&big).expect("open"))
        .env("HUATUO_CONFIG_DIR", home.path().join("config"))
        .env("HUATUO_DATA_DIR", home.path().join("data"))
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bytes"), "{err}");
    let text = std::fs::read_to_string(&report).expect("report");
    let kib: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("rss");
    assert!(kib < BOMB_RSS_KIB, "peak RSS {kib} KiB");

    // Under ask's bound, over the tiny model's: the engine says how long and the limit.
    let out = huatuo(home.path())
        .args(ask_args(model))
        .arg("-")
        .write_stdin("word ".repeat(600_000))
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the text is 2999999 bytes") && err.contains("context window"),
        "{err}"
    );
}
