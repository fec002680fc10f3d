//! `huatuo eval` (issue 19) on a small evaluation set in the authors' format
//! (tests/fixtures/eval/data.json), against fixtures computed by
//! scripts/reference/eval_check.py: the reference's greedy answers (cli.py `inference()`),
//! and the authors' scorer (scripts/reference/eval_scorer.py, a port of their scorer.py).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{fixture, huatuo, tiny_checkpoint};

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn eval_args(family: &str, out: &Path) -> Vec<String> {
    vec![
        "eval".into(),
        "--data".into(),
        fixture("eval/data.json").display().to_string(),
        "--model".into(),
        tiny_checkpoint(family).display().to_string(),
        "--temperature".into(),
        "0".into(),
        "--max-new-tokens".into(),
        "16".into(),
        "--dtype".into(),
        "f32".into(),
        "--output".into(),
        out.display().to_string(),
    ]
}

/// The authors' counts: `{name: {correct, total}}` with subsets as `subset:NAME`.
fn check_scores(summary: &Value, scores: &Value) {
    for (key, want) in scores.as_object().expect("scores") {
        let got = if key == "total" {
            &summary["total"]
        } else if let Some(subset) = key.strip_prefix("subset:") {
            &summary["subsets"][subset]
        } else {
            &summary["datasets"][key]
        };
        assert_eq!(got["correct"], want["correct"], "{key}");
        assert_eq!(got["total"], want["total"], "{key}");
        let (c, t) = (
            want["correct"].as_f64().expect("c"),
            want["total"].as_f64().expect("t"),
        );
        let accuracy = got["accuracy"].as_f64().expect("accuracy");
        assert!((accuracy - 100.0 * c / t).abs() < 1e-3, "{key}: {accuracy}");
    }
    let datasets = summary["datasets"].as_object().expect("datasets").len();
    let subsets = summary["subsets"].as_object().expect("subsets").len();
    assert_eq!(datasets + subsets + 1, scores.as_object().expect("s").len());
}

/// Acceptance 1: each item's answer is the reference's greedy answer to the authors' prompt
/// with the item's readable images (the unreadable one left out and reported); `pred` and
/// `correct` are the authors' scorer's; the summary counts as theirs.
#[test]
fn eval_answers_and_scores_like_the_reference() {
    for family in ["qwen2", "yi"] {
        let reference = read_json(&fixture(&format!("eval/reference_{family}.json")));
        let home = tempfile::tempdir().expect("tmp");
        let out = home.path().join("run");
        let result = huatuo(home.path())
            .args(eval_args(family, &out))
            .output()
            .expect("eval");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "{stderr}");
        assert!(
            stderr.contains("1 image could not be read; its item was answered without it"),
            "{stderr}"
        );
        let results = lines(&out.join("results.jsonl"));
        let items = reference["items"].as_array().expect("items");
        assert_eq!(
            results.len(),
            items.len(),
            "open and option-less items are skipped"
        );
        for (line, want) in results.iter().zip(items) {
            assert_eq!(line["index"], want["index"]);
            let what = format!("{family} item {}", want["index"]);
            assert_eq!(line["model_output"], want["model_output"], "{what}");
            assert_eq!(line["pred"], want["pred"], "{what}");
            assert_eq!(line["gold"], want["gold"], "{what}");
            assert_eq!(line["correct"], want["correct"], "{what}");
            assert_eq!(
                line["image_errors"].as_array().expect("errors").len() as u64,
                want["image_errors"].as_u64().expect("n"),
                "{what}"
            );
            assert!(line["prompt"]
                .as_str()
                .expect("prompt")
                .ends_with("\nAnswer with the option's letter from the given choices directly."));
            assert!(line["options"].is_array(), "options as a list");
            assert!(line["seconds"].is_number() && line["generated_tokens"].as_u64() > Some(0));
        }
        let summary = read_json(&out.join("summary.json"));
        check_scores(&summary, &reference["scores"]);
        assert_eq!(summary["sampling"]["temperature"], 0.0);
        assert_eq!(summary["sampling"]["max_new_tokens"], 16);
        assert_eq!(summary["reproducible"], true);
        assert_eq!(summary["skipped"]["open"], 1);
        assert_eq!(summary["skipped"]["no_options"], 1);
        assert_eq!(summary["model"]["family"], family.replace("yi", "llama"));
        let lmms = read_json(&out.join("results.json"));
        assert!(lmms["results"]["SLAKE_test"]["acc,none"].is_number());
        let table = String::from_utf8_lossy(&result.stdout);
        assert!(
            table.contains("| SLAKE | 2 | 0.0 | 76.2 | 76.9 |"),
            "{table}"
        );
        assert!(table.contains("| **total** | 9 |"), "{table}");
    }
}

/// Acceptance 2: `--score` on an eval.py output file gives the authors' numbers.
#[test]
fn score_gives_the_authors_numbers() {
    let expected = read_json(&fixture("eval/evalpy_scores.json"));
    let home = tempfile::tempdir().expect("tmp");
    let out = home.path().join("scored");
    let result = huatuo(home.path())
        .args(["eval", "--score"])
        .arg(fixture("eval/evalpy_output.json"))
        .arg("--output")
        .arg(&out)
        .output()
        .expect("score");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    check_scores(&read_json(&out.join("summary.json")), &expected["scores"]);
    let scored = lines(&out.join("results.jsonl"));
    let preds: Vec<&Value> = scored.iter().map(|l| &l["pred"]).collect();
    let want: Vec<&Value> = expected["preds"]
        .as_array()
        .expect("preds")
        .iter()
        .collect();
    assert_eq!(preds, want);
    let correct: Vec<&Value> = scored.iter().map(|l| &l["correct"]).collect();
    let want: Vec<&Value> = expected["correct"].as_array().expect("c").iter().collect();
    assert_eq!(correct, want);
    assert!(String::from_utf8_lossy(&result.stdout).contains("| **total** | 11 | 45.5 |"));
}

/// Without the timings, which differ from run to run.
fn without_timings(lines: Vec<Value>) -> Vec<Value> {
    lines
        .into_iter()
        .map(|mut l| {
            l.as_object_mut().expect("object").remove("seconds");
            l
        })
        .collect()
}

/// Acceptance 3: a run stopped after a few items (Ctrl-C), then one killed mid-line, and the
/// reruns finish with the results of an uninterrupted run: no item twice, none lost.
#[test]
fn an_interrupted_run_resumes_to_the_same_results() {
    let home = tempfile::tempdir().expect("tmp");
    let whole = home.path().join("whole");
    let ok = huatuo(home.path())
        .args(eval_args("qwen2", &whole))
        .output()
        .expect("eval");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let resumed = home.path().join("resumed");
    let mut child = Process::new(assert_cmd::cargo::cargo_bin("huatuo"))
        .args(eval_args("qwen2", &resumed))
        .env("HUATUO_CONFIG_DIR", home.path().join("config"))
        .env("HUATUO_DATA_DIR", home.path().join("data"))
        .env("HUATUO_CACHE_DIR", home.path().join("cache"))
        .env("HUATUO_TEST_TOKEN_DELAY_MS", "40")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let results = resumed.join("results.jsonl");
    let start = Instant::now();
    loop {
        let done = std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    Process::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    for line in BufReader::new(child.stderr.take().expect("stderr")).lines() {
        stderr.push_str(&line.expect("line"));
        stderr.push('\n');
    }
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let partial = lines(&results);
    assert!((3..9).contains(&partial.len()), "{} lines", partial.len());
    assert!(!resumed.join("summary.json").exists());

    // A run killed while writing a line leaves half of it: the rerun drops it.
    let mut text = std::fs::read_to_string(&results).expect("read");
    text.push_str("{\"index\": 8, \"model_out");
    std::fs::write(&results, text).expect("write");

    // Other settings into the same folder are refused.
    let mut other = eval_args("qwen2", &resumed);
    let at = other.iter().position(|a| a == "16").expect("max");
    other[at] = "8".into();
    let refused = huatuo(home.path()).args(&other).output().expect("eval");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("other settings"));

    let rerun = huatuo(home.path())
        .args(eval_args("qwen2", &resumed))
        .output()
        .expect("eval");
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let a = without_timings(lines(&whole.join("results.jsonl")));
    let b = without_timings(lines(&resumed.join("results.jsonl")));
    assert_eq!(a, b);
    let indices: BTreeMap<u64, usize> = b.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l["index"].as_u64().expect("index")).or_default() += 1;
        m
    });
    assert!(indices.values().all(|&n| n == 1));
    assert_eq!(
        read_json(&whole.join("summary.json")),
        read_json(&resumed.join("summary.json"))
    );
    assert_eq!(
        std::fs::read(whole.join("results.json")).expect("a"),
        std::fs::read(resumed.join("results.json")).expect("b")
    );
    assert_eq!(rerun.stdout, ok.stdout);
}

#[test]
fn bad_eval_input_is_one_clear_line() {
    let home = tempfile::tempdir().expect("tmp");
    let data = home.path().join("data.json");
    std::fs::write(&data, "{\"not\": \"a list\"}").expect("write");
    let out = huatuo(home.path())
        .args(["eval", "--data"])
        .arg(&data)
        .output()
        .expect("eval");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the authors' evaluation data"));

    let out = huatuo(home.path())
        .args(eval_args("qwen2", &home.path().join("o")))
        .args(["--datasets", "NoSuchSet"])
        .output()
        .expect("eval");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NoSuchSet") && stderr.contains("SLAKE_test"),
        "{stderr}"
    );
}
