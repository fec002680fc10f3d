//! The `huatuo` binary as scripts see it: stdout carries the answer alone, errors are one line
//! on stderr naming the file, exit codes are 0 and 2.

use assert_cmd::Command;
use serde_json::Value;

use crate::util::{fixture, tiny_checkpoint, tiny_copy};

fn huatuo() -> Command {
    Command::cargo_bin("huatuo").expect("binary")
}

pub fn reference_answer(family: &str) -> String {
    let json = std::fs::read_to_string(fixture(&format!("parity/{family}.json"))).expect("fixture");
    let meta: Value = serde_json::from_str(&json).expect("json");
    meta["ask"]["answer"].as_str().expect("answer").to_string()
}

fn ask_args(model: &std::path::Path) -> Vec<String> {
    vec![
        "ask".into(),
        "--model".into(),
        model.display().to_string(),
        "--image".into(),
        fixture("images/cell.png").display().to_string(),
        "--temperature".into(),
        "0".into(),
        "--max-new-tokens".into(),
        "24".into(),
        "--dtype".into(),
        "f32".into(),
        "What does the picture show?".into(),
    ]
}

#[test]
fn ask_prints_the_reference_greedy_answer() {
    for family in ["qwen2", "yi"] {
        let out = huatuo()
            .args(ask_args(tiny_checkpoint(family)))
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{family}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = reference_answer(family);
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let expected_out = if expected.is_empty() {
            String::new()
        } else {
            format!("{expected}\n")
        };
        assert_eq!(stdout, expected_out, "{family}");
    }
}

#[test]
fn missing_image_is_one_line_naming_it() {
    let out = huatuo()
        .args(["ask", "--model"])
        .arg(tiny_checkpoint("qwen2"))
        .args(["--image", "/nonexistent/xray.png", "hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/xray.png"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Issue 20: no path printed twice, no cause said twice, and what is wrong with the input is
/// found before any model is looked for (these run with no model anywhere: a download would
/// fail on the network instead).
#[test]
fn errors_name_each_path_once_and_come_before_the_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let junk = tmp.path().join("notes.png");
    std::fs::write(&junk, b"these are notes, not a picture").expect("write");
    let empty = tmp.path().join("empty-model");
    std::fs::create_dir(&empty).expect("dir");
    let home = tmp.path().join("home");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = crate::util::huatuo(&home)
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let dir = tmp.path().as_os_str().to_owned();
    let cases: Vec<(Vec<std::ffi::OsString>, std::path::PathBuf, &str)> = vec![
        (
            vec![os("ask"), os("-i"), dir.clone(), os("hi")],
            tmp.path().to_path_buf(),
            "it is a directory (give an image file in it)",
        ),
        (
            vec![os("ask"), os("-i"), junk.clone().into(), os("hi")],
            junk.clone(),
            "not a recognised image format",
        ),
        (
            vec![os("ask"), os("--model"), empty.clone().into(), os("hi")],
            empty.clone(),
            "is not a checkpoint directory: it has no config.json",
        ),
        (
            vec![
                os("render"),
                dir.clone(),
                os("-o"),
                tmp.path().join("o.png").into(),
            ],
            tmp.path().to_path_buf(),
            "it is a directory",
        ),
    ];
    for (args, path, says) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let err = run(&args);
        assert!(err.contains(says), "{args:?}: {err}");
        let path = path.display().to_string();
        assert_eq!(
            err.matches(&*path).count(),
            1,
            "{args:?} names {path} once: {err}"
        );
        assert!(!err.contains("huggingface"), "before any download: {err}");
        let parts: Vec<&str> = err.trim_end().split(": ").collect();
        let mut seen = std::collections::HashSet::new();
        assert!(
            parts.iter().all(|p| seen.insert(*p)),
            "no cause said twice: {err}"
        );
    }
}

/// Issue 21: `HUATUO_KERNELS` chooses the kernel set; every set this CPU runs gives the
/// reference's greedy answer with q8_0 weights (the scalar set hands the products to candle's
/// kernels), a set the CPU lacks or an unknown name is one line and exit 2, and `info` says
/// which set runs.
#[test]
fn every_kernel_set_answers_and_a_missing_one_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut answers = Vec::new();
    for set in huatuo::kernels::Isa::available() {
        let out = crate::util::huatuo(tmp.path())
            .env("HUATUO_KERNELS", set.name())
            .args(["ask", "--model"])
            .arg(tiny_checkpoint("qwen2"))
            .args([
                "--quant",
                "q8_0",
                "--temperature",
                "0",
                "--max-new-tokens",
                "12",
            ])
            .args(["--image"])
            .arg(fixture("images/cell.png"))
            .arg("What does the picture show?")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{set}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        answers.push((set, String::from_utf8(out.stdout).expect("utf-8")));
        let info = crate::util::huatuo(tmp.path())
            .env("HUATUO_KERNELS", set.name())
            .args(["info", "--json"])
            .output()
            .expect("run");
        let v: Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(v["kernels"], set.name());
    }
    eprintln!(
        "kernel sets run: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().all(|a| a.1 == answers[0].1),
        "the same greedy answer on every set: {answers:?}"
    );
    let bad = crate::util::huatuo(tmp.path())
        .env("HUATUO_KERNELS", "avx9")
        .args(["info"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("scalar, avx2 or avx512") && err.lines().count() == 1,
        "{err}"
    );
    if let Some(missing) = huatuo::kernels::Isa::ALL
        .into_iter()
        .find(|s| !s.supported())
    {
        let out = crate::util::huatuo(tmp.path())
            .env("HUATUO_KERNELS", missing.name())
            .args(["info"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("this CPU lacks"));
    }
}

#[test]
fn corrupt_image_is_one_line_naming_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("scan.png");
    let png = std::fs::read(fixture("images/cell.png")).expect("png");
    std::fs::write(&bad, &png[..png.len() / 3]).expect("write");
    let out = huatuo()
        .args(["ask", "--model"])
        .arg(tiny_checkpoint("qwen2"))
        .arg("--image")
        .arg(&bad)
        .arg("hi")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("scan.png"), "{err}");
}

#[test]
fn missing_checkpoint_file_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tiny_copy("qwen2", tmp.path());
    let shard = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("model-00001"))
        .expect("first shard");
    std::fs::remove_file(dir.join(&shard)).expect("rm");
    let out = huatuo()
        .args(["ask", "--model"])
        .arg(&dir)
        .arg("hi")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&shard), "{err}");
}

#[test]
fn truncated_shard_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tiny_copy("yi", tmp.path());
    let shard = dir.join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).expect("shard");
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).expect("truncate");
    let out = huatuo()
        .args(["ask", "--model"])
        .arg(&dir)
        .arg("hi")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");
}

#[test]
fn unknown_model_type_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tiny_copy("qwen2", tmp.path());
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).expect("config");
    std::fs::write(&cfg_path, text.replace("llava_qwen2", "llava_mistral")).expect("write");
    let out = huatuo()
        .args(["ask", "--model"])
        .arg(&dir)
        .arg("hi")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("llava_mistral") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn bad_flag_value_exits_2() {
    let out = huatuo()
        .args(["ask", "--model", "x", "--dtype", "f64", "hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// `huatuo bench --json` on a checkpoint: one JSON object with every field the issue asks for
/// (load, image encode, prefill at the given depth, 64 decode steps, both turns' time to
/// first token, peak RSS), the second turn reusing the first's positions.
#[test]
fn bench_json_reports_every_measurement() {
    let out = huatuo()
        .args(["bench", "--model"])
        .arg(tiny_checkpoint("qwen2"))
        .args([
            "--quant",
            "none",
            "--depth",
            "32",
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "load_s",
        "image_encode_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "first_turn_ttft_ms",
        "second_turn_ttft_ms",
        "second_turn_uncached_ttft_ms",
    ] {
        let v = r[key].as_f64().unwrap_or(f64::NAN);
        assert!(v > 0.0 && v.is_finite(), "{key}: {}", r[key]);
    }
    assert_eq!(r["quant"], "none");
    assert_eq!(r["kv_cache"], "f32");
    assert_eq!(r["threads"], 1);
    assert_eq!(r["prefill_tokens"], 32);
    assert_eq!(r["decode_tokens"], 64);
    assert!(r["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
    let (all, new) = (
        r["second_turn_positions"].as_u64().expect("positions"),
        r["second_turn_new_positions"].as_u64().expect("new"),
    );
    assert!(0 < new && new < all, "{new} of {all} positions prefilled");
}

/// A depth past the model's context is refused before anything runs, naming the flag.
#[test]
fn bench_refuses_a_depth_past_the_context() {
    let out = huatuo()
        .args(["bench", "--model"])
        .arg(tiny_checkpoint("qwen2"))
        .args(["--quant", "none", "--depth", "100000"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--depth") && err.contains("context"), "{err}");
}

/// Issue 20: a negative sampling value is told its valid range, not "unexpected argument".
#[test]
fn negative_sampling_values_say_the_valid_range() {
    let home = tempfile::tempdir().expect("tmp");
    for (flag, says) in [
        ("--temperature", "temperature must be >= 0, got -1"),
        ("--top-p", "top-p must be in (0, 1], got -1"),
        (
            "--repetition-penalty",
            "repetition-penalty must be > 0, got -1",
        ),
        ("--top-k", "\"-1\" is not a whole number of 0 or more"),
        (
            "--max-new-tokens",
            "\"-1\" is not a whole number of 0 or more",
        ),
    ] {
        let out = crate::util::huatuo(home.path())
            .args(["ask", flag, "-1", "hello"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag}: {stderr}");
        assert!(!stderr.contains("unexpected argument"), "{flag}: {stderr}");
    }
}
