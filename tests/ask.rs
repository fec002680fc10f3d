//! `huatuo ask` as scripts and pipelines use it (issue 4): prompts from stdin and arguments,
//! plain piped output, `--json`, exit codes 0 / 2 / 130, closed pipes, and `--session`
//! conversations that answer exactly what the reference's multi-turn `chat()` answers.

use std::io::Read;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{fixture, greedy_args, huatuo, tiny_checkpoint};

/// The binary with huatuo's own directories in a temp dir, no colour, no config.
fn chat_reference(family: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("chat/{family}.json"))).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn stdin_and_arguments_make_one_prompt() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_checkpoint("qwen2");
    // The same prompt given three ways gives the same greedy answer.
    let both = huatuo(home.path())
        .args(greedy_args(model, 8))
        .arg("Summarise:")
        .write_stdin("The report says: no fracture.\n")
        .output()
        .expect("run");
    assert!(
        both.status.success(),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    let joined = huatuo(home.path())
        .args(greedy_args(model, 8))
        .arg("Summarise:\nThe report says: no fracture.")
        .output()
        .expect("run");
    let dash = huatuo(home.path())
        .args(greedy_args(model, 8))
        .arg("-")
        .write_stdin("Summarise:\nThe report says: no fracture.")
        .output()
        .expect("run");
    assert_eq!(both.stdout, joined.stdout);
    assert_eq!(dash.stdout, joined.stdout);
    let other = huatuo(home.path())
        .args(greedy_args(model, 8))
        .arg("Summarise:")
        .output()
        .expect("run");
    assert_ne!(
        other.stdout, joined.stdout,
        "stdin really was part of the prompt"
    );
}

#[test]
fn an_empty_prompt_is_refused() {
    let home = tempfile::tempdir().expect("tmp");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 8))
        .write_stdin("   \n")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no prompt"));
}

#[test]
fn piped_stdout_is_plain_text() {
    let home = tempfile::tempdir().expect("tmp");
    for family in ["qwen2", "yi"] {
        let out = huatuo(home.path())
            .args(greedy_args(tiny_checkpoint(family), 64))
            .args(["--image", &fixture("images/cell.png").display().to_string()])
            .arg("Describe every detail.")
            .env("CLICOLOR_FORCE", "1")
            .output()
            .expect("run");
        assert!(out.status.success());
        assert!(!out.stdout.is_empty());
        let bad: Vec<u8> = out
            .stdout
            .iter()
            .copied()
            .filter(|&b| b < 0x20 && b != b'\n' && b != b'\t')
            .collect();
        assert!(
            bad.is_empty(),
            "{family}: control bytes {bad:?} in piped stdout"
        );
    }
}

/// The SHA-256 of a file, computed here independently of huatuo's provenance code.
fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).expect("read");
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issue 14, acceptance 3: `ask --json` and `sessions show --json` carry the whole record of
/// an answer, checked against values known here: the checkpoint's files and their hashes,
/// the version, the seed and every sampling setting (floats at their shortest), the image's
/// hash with the turn it came from (a follow-up lists the earlier turn's image), tokens and
/// timings. An error under --json is a JSON object on stdout too.
#[test]
fn json_and_sessions_carry_the_reproducibility_record() {
    let home = tempfile::tempdir().expect("tmp");
    let checkpoint = tiny_checkpoint("qwen2");
    let image = fixture("images/cell.png");
    let ask = |extra: &[&str], question: &str| {
        let out = huatuo(home.path())
            .arg("ask")
            .arg("--model")
            .arg(checkpoint)
            .args(["--max-new-tokens", "6", "--dtype", "f32"])
            .args([
                "--session",
                "rec",
                "--json",
                "--seed",
                "7",
                "--top-p",
                "0.9",
            ])
            .args(["--temperature", "0.5"])
            .args(extra)
            .arg(question)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        (
            serde_json::from_str::<Value>(&text).expect("one JSON object"),
            text,
        )
    };
    let (first, text) = ask(&["--image", &image.display().to_string()], "What is it?");
    let (second, _) = ask(&[], "Anything abnormal?");

    // Floats as typed, not as f32 widened to f64.
    assert!(text.contains("\"temperature\": 0.5,"), "{text}");
    assert!(text.contains("\"top_p\": 0.9,"), "{text}");
    assert!(text.contains("\"repetition_penalty\": 1.2,"), "{text}");
    for v in [&first, &second] {
        assert_eq!(v["engine"]["name"], "huatuo");
        assert_eq!(v["engine"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["model"]["source"], checkpoint.display().to_string());
        assert_eq!(
            v["model"]["path"],
            std::fs::canonicalize(checkpoint)
                .expect("canonical")
                .display()
                .to_string()
        );
        assert_eq!(v["model"]["family"], "qwen2");
        assert!(v["model"]["repo"].is_null() && v["model"]["quant_file"].is_null());
        assert_eq!(
            (v["dtype"].as_str(), v["device"].as_str()),
            (Some("f32"), Some("cpu"))
        );
        assert_eq!(v["quantization"], "none");
        let s = &v["sampling"];
        assert_eq!(
            (s["seed"].as_u64(), s["top_k"].as_u64()),
            (Some(7), Some(50))
        );
        assert_eq!(s["max_new_tokens"].as_u64(), Some(6));
        for key in [
            "prompt_text",
            "prompt_images",
            "prompt_total",
            "generated",
            "context_length",
            "reused_positions",
            "images_encoded",
        ] {
            assert!(v["tokens"][key].is_u64(), "tokens.{key}: {v:#}");
        }
        for key in [
            "image_encode_ms",
            "time_to_first_token_ms",
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
        ] {
            assert!(v["timings"][key].is_number(), "timings.{key}");
        }
        // Every file of the checkpoint, each with its true hash and size.
        let files = v["model"]["files"].as_array().expect("files");
        let names: Vec<&str> = files
            .iter()
            .map(|f| f["name"].as_str().expect("name"))
            .collect();
        for needed in [
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
        ] {
            assert!(names.contains(&needed), "{names:?}");
        }
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(".safetensors") && !n.contains('/')),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.starts_with("vit/")), "{names:?}");
        for f in files {
            let path = checkpoint.join(f["name"].as_str().expect("name"));
            assert_eq!(f["sha256"], sha256_of(&path), "{path:?}");
            assert_eq!(
                f["size"].as_u64(),
                Some(std::fs::metadata(&path).expect("meta").len())
            );
        }
        // The image of turn 1, in both turns' prompts.
        let images = v["images"].as_array().expect("images");
        assert_eq!(images.len(), 1, "{v:#}");
        assert_eq!(images[0]["sha256"], sha256_of(&image));
        assert_eq!(images[0]["turn"].as_u64(), Some(1));
        assert_eq!(images[0]["path"], image.display().to_string());
        assert_eq!(v["session"], "rec");
    }
    assert_eq!(first["tokens"]["images_encoded"].as_u64(), Some(1));

    // The session keeps each turn's record: the same as what --json printed.
    let show = huatuo(home.path())
        .args(["sessions", "show", "rec", "--json"])
        .output()
        .expect("run");
    assert!(show.status.success());
    let session: Value = serde_json::from_slice(&show.stdout).expect("json");
    let turns = session["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 2);
    for (turn, printed) in turns.iter().zip([&first, &second]) {
        let record = &turn["record"];
        for key in [
            "engine",
            "model",
            "dtype",
            "quantization",
            "device",
            "sampling",
            "images",
            "stop",
            "tokens",
            "timings",
        ] {
            assert_eq!(record[key], printed[key], "{key}");
        }
    }
    // The Markdown view has a footer per answer.
    let md = huatuo(home.path())
        .args(["sessions", "show", "rec"])
        .output()
        .expect("run");
    let md = String::from_utf8_lossy(&md.stdout);
    assert_eq!(md.matches("seed 7").count(), 2, "{md}");

    // A failure under --json: a JSON error object on stdout, the line on stderr, exit 2.
    let out = huatuo(home.path())
        .args(greedy_args(checkpoint, 6))
        .args(["--json", "--image", "/no/such/scan.png", "Hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(v["error"]["kind"], "bad_input");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("/no/such/scan.png"),
        "{v}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/scan.png"));
}

#[test]
fn json_has_every_field() {
    let home = tempfile::tempdir().expect("tmp");
    let image = fixture("images/cell.png");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 24))
        .args([
            "--image",
            &image.display().to_string(),
            "--json",
            "--seed",
            "7",
        ])
        .arg("What does the picture show?")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let answer = crate::cli::reference_answer("qwen2");
    assert_eq!(v["answer"], answer.as_str());
    for pointer in [
        "/stop",
        "/model/source",
        "/model/path",
        "/model/family",
        "/dtype",
        "/quantization",
        "/device",
        "/sampling/temperature",
        "/sampling/top_k",
        "/sampling/top_p",
        "/sampling/repetition_penalty",
        "/sampling/max_new_tokens",
        "/sampling/seed",
        "/images/0/path",
        "/images/0/sha256",
        "/tokens/prompt_text",
        "/tokens/prompt_images",
        "/tokens/generated",
        "/timings/time_to_first_token_ms",
        "/timings/prefill_tokens_per_s",
        "/timings/decode_tokens_per_s",
        "/timings/image_encode_ms",
    ] {
        assert!(
            v.pointer(pointer).is_some_and(|x| !x.is_null()),
            "missing {pointer} in {v:#}"
        );
    }
    assert_eq!(v["sampling"]["seed"], 7);
    assert_eq!(v["tokens"]["prompt_images"], 576);
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["images"][0]["sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let mut args = greedy_args(tiny_checkpoint("qwen2"), 256);
    args.push("Tell me everything.".into());
    let script = format!(
        "'{}' {} | head -c 1",
        bin.display(),
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Process::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .env("HUATUO_CONFIG_DIR", home.path().join("c"))
        .env("HUATUO_DATA_DIR", home.path().join("d"))
        .output()
        .expect("bash");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 1);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn too_many_images_and_bad_flags_exit_2() {
    let home = tempfile::tempdir().expect("tmp");
    let img = fixture("images/cell.png").display().to_string();
    let mut cmd = huatuo(home.path());
    cmd.args(greedy_args(tiny_checkpoint("qwen2"), 4));
    for _ in 0..6 {
        cmd.args(["--image", &img]);
    }
    let out = cmd.arg("hi").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 5"), "{err}");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--top-p", "1.5", "hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("top-p"));
}

#[test]
fn a_prompt_past_the_context_window_is_refused_with_counts() {
    let home = tempfile::tempdir().expect("tmp");
    let long = "lung ".repeat(5000);
    let img = fixture("images/cell.png").display().to_string();
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--image", &img])
        .arg(long)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4096") && err.contains("576"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Starts `ask` slowed down per token, waits until the answer has begun streaming, then
/// signals it. Returns (exit status, stdout).
fn interrupt_mid_answer(
    home: &Path,
    signal: &str,
    session: Option<&str>,
) -> (Option<i32>, Vec<u8>) {
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let mut args = greedy_args(tiny_checkpoint("qwen2"), 400);
    if let Some(s) = session {
        args.extend(["--session".into(), s.into()]);
    }
    args.push("Describe the image at length.".into());
    let mut child = Process::new(bin)
        .args(&args)
        .env("HUATUO_CONFIG_DIR", home.join("config"))
        .env("HUATUO_DATA_DIR", home.join("data"))
        .env("HUATUO_TEST_TOKEN_DELAY_MS", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while seen.len() < 8 && start.elapsed() < Duration::from_secs(60) {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    assert!(!seen.is_empty(), "the answer never started streaming");
    Process::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    seen.extend(rest);
    (status.code(), seen)
}

#[test]
fn ctrl_c_stops_at_once_with_130_and_keeps_the_partial_answer() {
    let home = tempfile::tempdir().expect("tmp");
    let (code, out) = interrupt_mid_answer(home.path(), "-INT", Some("interrupted"));
    assert_eq!(code, Some(130));
    assert!(!out.is_empty());
    let text = std::fs::read_to_string(home.path().join("data/sessions/interrupted.json"))
        .expect("session");
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    let turn = &v["turns"][0];
    assert_eq!(turn["interrupted"], true);
    let answer = turn["answer"].as_str().expect("answer");
    assert!(!answer.trim().is_empty(), "partial answer kept");
    let printed = String::from_utf8_lossy(&out);
    assert!(
        answer.trim().starts_with(printed.trim()) || printed.trim().starts_with(answer.trim()),
        "saved {answer:?} vs printed {printed:?}"
    );
}

#[test]
fn a_session_survives_kill_9_mid_answer() {
    let home = tempfile::tempdir().expect("tmp");
    let model = tiny_checkpoint("qwen2");
    // One complete turn first.
    let first = huatuo(home.path())
        .args(greedy_args(model, 8))
        .args(["--session", "case7", "First question."])
        .output()
        .expect("run");
    assert!(first.status.success());
    let before: Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("data/sessions/case7.json")).expect("read"),
    )
    .expect("json");
    let (code, _) = interrupt_mid_answer(home.path(), "-KILL", Some("case7"));
    assert_eq!(code, None, "killed by a signal");
    let after: Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("data/sessions/case7.json")).expect("read"),
    )
    .expect("the session file is still valid JSON");
    assert_eq!(
        after["turns"][0], before["turns"][0],
        "earlier turns intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(home.path().join("data/sessions"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "case7.json")
        .collect();
    // A temporary file may remain after kill -9, but it never replaces the session.
    for name in leftovers {
        assert!(name.starts_with('.'), "unexpected file {name}");
    }
}

/// Issue 14, acceptance 1: a session answers about the images it was asked about, whatever
/// happens to the files afterwards. Turn 1's scan is overwritten with another image before
/// turn 2 and deleted before turn 3: every turn still answers exactly as the reference's
/// three-turn `chat()` did with the original images (the stored copies are used). A stored
/// copy that was tampered with, while the original is gone, is refused with one line naming
/// the image.
#[test]
fn a_session_keeps_its_images_when_the_files_change() {
    for family in ["qwen2", "yi"] {
        let home = tempfile::tempdir().expect("tmp");
        let files = tempfile::tempdir().expect("tmp");
        let reference = chat_reference(family);
        let max_new = reference["params"]["max_new_tokens"].as_u64().expect("max") as u32;
        let copy_of = |name: &str| {
            let path = files.path().join(format!("scan-{name}"));
            std::fs::copy(fixture(&format!("images/{name}")), &path).expect("copy");
            path
        };
        let scan = copy_of("cell.png");
        let turns = reference["turns"].as_array().expect("turns");
        let ask = |turn: &Value, images: &[&Path]| {
            let mut cmd = huatuo(home.path());
            cmd.args(greedy_args(tiny_checkpoint(family), max_new));
            for image in images {
                cmd.arg("--image").arg(image);
            }
            cmd.args([
                "--session",
                "kept",
                "--",
                turn["user"].as_str().expect("user"),
            ])
            .output()
            .expect("run")
        };
        let expect = |out: &std::process::Output, turn: &Value, what: &str| {
            assert!(
                out.status.success(),
                "{family} {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let answer = turn["answer"].as_str().expect("answer");
            let expected = if answer.is_empty() {
                String::new()
            } else {
                format!("{answer}\n")
            };
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "{family} {what}"
            );
        };
        expect(&ask(&turns[0], &[&scan]), &turns[0], "turn 1");
        // Another scan at the same path: turn 2 is still about the first one.
        std::fs::copy(fixture("images/hubble_deep_field.jpg"), &scan).expect("overwrite");
        expect(&ask(&turns[1], &[]), &turns[1], "turn 2 after overwrite");
        // Gone: turn 3 still sees it.
        std::fs::remove_file(&scan).expect("rm");
        let second = copy_of("hubble_deep_field.jpg");
        expect(
            &ask(&turns[2], &[&second]),
            &turns[2],
            "turn 3 after delete",
        );

        // The stored copy of the first scan damaged, the original gone: refused.
        let store = home.path().join("data/sessions/images");
        let damaged = std::fs::read_dir(&store)
            .expect("store")
            .map(|e| e.expect("entry").path())
            .flat_map(|d| std::fs::read_dir(d).expect("entry dir"))
            .map(|e| e.expect("file").path())
            .find(|p| p.file_name().is_some_and(|n| n == "scan-cell.png"))
            .expect("the stored copy keeps the file name");
        std::fs::write(&damaged, b"not the scan").expect("tamper");
        let out = ask(&turns[1], &[]);
        assert_eq!(out.status.code(), Some(2), "{family}: tampered store");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("scan-cell.png") && err.contains("gone"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_three_turn_session_answers_like_the_reference_chat() {
    for family in ["qwen2", "yi"] {
        let home = tempfile::tempdir().expect("tmp");
        let reference = chat_reference(family);
        let max_new = reference["params"]["max_new_tokens"].as_u64().expect("max") as u32;
        for (i, turn) in reference["turns"]
            .as_array()
            .expect("turns")
            .iter()
            .enumerate()
        {
            let mut cmd = huatuo(home.path());
            cmd.args(greedy_args(tiny_checkpoint(family), max_new));
            for img in turn["images"].as_array().expect("images") {
                cmd.args([
                    "--image",
                    &fixture(&format!("images/{}", img.as_str().expect("name")))
                        .display()
                        .to_string(),
                ]);
            }
            let out = cmd
                .args([
                    "--session",
                    "three",
                    "--",
                    turn["user"].as_str().expect("user"),
                ])
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{family} turn {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let expected = turn["answer"].as_str().expect("answer");
            let expected = if expected.is_empty() {
                String::new()
            } else {
                format!("{expected}\n")
            };
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "{family} turn {}",
                i + 1
            );
        }
        let show = huatuo(home.path())
            .args(["sessions", "show", "three"])
            .output()
            .expect("run");
        assert!(show.status.success());
        let md = String::from_utf8_lossy(&show.stdout);
        assert!(
            md.contains("## Turn 3") && md.contains("[img2: hubble_deep_field.jpg]"),
            "{md}"
        );
        let list = huatuo(home.path())
            .args(["sessions", "list", "--json"])
            .output()
            .expect("run");
        let list: Value = serde_json::from_slice(&list.stdout).expect("json");
        assert_eq!(list[0]["name"], "three");
        assert_eq!(list[0]["turns"], 3);
        let rm = huatuo(home.path())
            .args(["sessions", "rm", "three"])
            .output()
            .expect("run");
        assert!(rm.status.success());
        let gone = huatuo(home.path())
            .args(["sessions", "show", "three"])
            .output()
            .expect("run");
        assert_eq!(gone.status.code(), Some(2));
    }
}

#[test]
fn stdin_is_never_waited_on_from_a_terminal_or_null() {
    let home = tempfile::tempdir().expect("tmp");
    // /dev/null is neither a pipe nor a file with content: the prompt is the arguments alone.
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let out = Process::new(bin)
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .arg("hello")
        .env("HUATUO_CONFIG_DIR", home.path().join("c"))
        .env("HUATUO_DATA_DIR", home.path().join("d"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}

#[test]
fn quantized_weights_are_converted_once_and_reported() {
    let home = tempfile::tempdir().expect("tmp");
    let run = || {
        huatuo(home.path())
            .env("HUATUO_CACHE_DIR", home.path().join("cache"))
            .args(greedy_args(tiny_checkpoint("qwen2"), 8))
            .args(["--quant", "q8_0", "--json", "What is it?"])
            .output()
            .expect("run")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let v: Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(v["quantization"], "q8_0");
    let files: Vec<_> = std::fs::read_dir(home.path().join("cache/quant"))
        .expect("the quantized cache directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let modified = std::fs::metadata(&files[0])
        .and_then(|m| m.modified())
        .expect("mtime");
    let second = run();
    assert!(second.status.success());
    let w: Value = serde_json::from_slice(&second.stdout).expect("json");
    assert_eq!(v["answer"], w["answer"], "same answer from the cached file");
    let again = std::fs::metadata(&files[0])
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(modified, again, "the cache file is reused, not rewritten");
}

/// Issue 20, acceptance 2: `ask --model A --model B` answers with each model in turn, each
/// exactly that checkpoint's reference answer, labelled; `--json` gives an array of reports.
#[test]
fn ask_compares_two_models() {
    let fx = |family: &str| -> Value {
        let text = std::fs::read_to_string(fixture(&format!("parity/{family}.json"))).expect("fx");
        serde_json::from_str(&text).expect("json")
    };
    let (qwen2, yi) = (fx("qwen2"), fx("yi"));
    let home = tempfile::tempdir().expect("tmp");
    let (a, b) = (tiny_checkpoint("qwen2"), tiny_checkpoint("yi"));
    let args = |json: bool| {
        let mut v: Vec<String> = vec!["ask".into()];
        for m in [a, b] {
            v.extend(["--model".into(), m.display().to_string()]);
        }
        v.extend(
            [
                "--temperature",
                "0",
                "--max-new-tokens",
                "24",
                "--dtype",
                "f32",
                "--image",
            ]
            .map(String::from),
        );
        v.push(fixture("images/cell.png").display().to_string());
        if json {
            v.push("--json".into());
        }
        v.push("What does the picture show?".into());
        v
    };
    let out = huatuo(home.path()).args(args(false)).output().expect("ask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "## {}\n{}\n\n## {}\n{}\n",
        a.display(),
        qwen2["ask"]["answer"].as_str().expect("answer"),
        b.display(),
        yi["ask"]["answer"].as_str().expect("answer")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    let out = huatuo(home.path()).args(args(true)).output().expect("ask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(reports.as_array().expect("array").len(), 2);
    assert_eq!(reports[0]["answer"], qwen2["ask"]["answer"]);
    assert_eq!(reports[1]["answer"], yi["ask"]["answer"]);
    assert_eq!(reports[0]["model"]["family"], "qwen2");
    assert_eq!(reports[1]["model"]["family"], "llama");

    // One conversation keeps one model; other commands take one --model.
    let out = huatuo(home.path())
        .args([
            "ask",
            "--model",
            "7b",
            "--model",
            "34b",
            "--session",
            "s",
            "hi",
        ])
        .output()
        .expect("ask");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --session"));
    let out = huatuo(home.path())
        .args(["export", "--model", "7b", "--model", "34b", "/tmp/x"])
        .output()
        .expect("export");
    assert_eq!(out.status.code(), Some(2));
}
