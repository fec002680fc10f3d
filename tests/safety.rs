//! Issue 15, the findings about what reaches a terminal, sessions and paths: each test here
//! failed before the fix. Escape sequences in untrusted text are shown escaped on every path
//! to a terminal; two turns in one session at once wait for each other (or refuse with
//! --no-wait); a path that is not UTF-8 works; flags are checked before any download; a
//! session file's name is its identity, corrupt files are listed as such, and an absurdly
//! large one is refused before it is read.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::util::{fixture, greedy_args, huatuo, tiny_checkpoint};

/// Finding 2: a file name carrying a clipboard write (OSC 52) and a screen clear reaches the
/// error line on stderr and the session listing only escaped.
#[test]
fn escape_sequences_in_names_are_shown_escaped() {
    let home = tempfile::tempdir().expect("tmp");
    let evil = "scan\u{1b}]52;c;aGk=\u{7}\u{1b}[2J.png";
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .arg("--image")
        .arg(home.path().join(evil))
        .arg("Hi")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(
        err.contains("scan\\x1b]52;c;aGk=\\x07\\x1b[2J.png"),
        "{err}"
    );

    // A first question with escape sequences, listed by `huatuo sessions`.
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--session", "evil", "What \u{1b}]0;owned\u{7} is it?"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = huatuo(home.path()).arg("sessions").output().expect("run");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains('\u{1b}'), "{list:?}");
    assert!(list.contains("What \\x1b]0;owned\\x07 is it?"), "{list}");
}

/// Finding 4: two `ask --session same` at once both answer, one after the other: the session
/// holds both turns. With --no-wait the second refuses at once.
#[test]
fn two_turns_in_one_session_wait_for_each_other() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let spawn = |question: &str, extra: &[&str]| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("HUATUO_CONFIG_DIR", home.path().join("config"))
            .env("HUATUO_DATA_DIR", home.path().join("data"))
            .env("HUATUO_CACHE_DIR", home.path().join("cache"))
            .env("HF_HUB_CACHE", home.path().join("hub"))
            .env("HUATUO_TEST_TOKEN_DELAY_MS", "150")
            .args(greedy_args(tiny_checkpoint("qwen2"), 8))
            .args(["--session", "same"])
            .args(extra)
            .arg(question)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("spawn")
    };
    let first = spawn("First question?", &[]);
    // Let the first one take the session before the second asks.
    let lock = home.path().join("data/sessions/.same.lock");
    let start = std::time::Instant::now();
    while !lock.exists() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let refused = spawn("Impatient?", &["--no-wait"])
        .wait_with_output()
        .expect("wait");
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("session same is in use"), "{err}");
    let second = spawn("Second question?", &[]);
    let (first, second) = (
        first.wait_with_output().expect("wait"),
        second.wait_with_output().expect("wait"),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("waiting"));
    let show = huatuo(home.path())
        .args(["sessions", "show", "same", "--json"])
        .output()
        .expect("run");
    let session: Value = serde_json::from_slice(&show.stdout).expect("json");
    let texts: Vec<&str> = session["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .map(|t| t["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["First question?", "Second question?"]);
}

/// Finding 5: an image whose path is not UTF-8 works with --json and --session: the answer is
/// printed, the path shown lossily with a flag, the session saved and continued.
#[test]
fn a_path_that_is_not_utf8_works() {
    let home = tempfile::tempdir().expect("tmp");
    let name = OsStr::from_bytes(b"scan-\xff\xfe.png");
    let image: PathBuf = home.path().join(name);
    std::fs::copy(fixture("images/cell.png"), &image).expect("copy");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--json", "--session", "bytes"])
        .arg("--image")
        .arg(&image)
        .arg("What is it?")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["lossy_paths"], true);
    let shown = v["images"][0]["path"].as_str().expect("path");
    assert!(shown.ends_with("scan-\u{fffd}\u{fffd}.png"), "{shown}");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--session", "bytes", "And now?"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finding 8: a bad sampling flag is refused before any model is looked up or downloaded.
#[test]
fn flags_are_checked_before_any_download() {
    let home = tempfile::tempdir().expect("tmp");
    let out = huatuo(home.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args(["ask", "--model", "someone/not-cached", "--top-p", "0", "Hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("top-p must be in (0, 1]"), "{err}");
    assert!(
        !err.contains("someone/not-cached"),
        "nothing was resolved: {err}"
    );
}

/// Finding 9: a session's file name is its identity (an inner name that differs does not send
/// the turn elsewhere); corrupt files are listed as corrupt; a huge file is refused unread.
#[test]
fn sessions_are_their_files() {
    let home = tempfile::tempdir().expect("tmp");
    let dir = home.path().join("data/sessions");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let session = serde_json::json!({
        "version": 1, "name": "other", "created": 1, "updated": 1, "turns": []
    });
    std::fs::write(dir.join("mine.json"), session.to_string()).expect("write");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--session", "mine", "Hi"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("other.json").exists(),
        "the turn went to another file"
    );
    let mine: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mine.json")).expect("read"))
            .expect("json");
    assert_eq!(mine["turns"].as_array().expect("turns").len(), 1);
    assert_eq!(mine["name"], "mine");

    std::fs::write(dir.join("broken.json"), "{ not json").expect("write");
    let list = huatuo(home.path()).arg("sessions").output().expect("run");
    let list = String::from_utf8_lossy(&list.stdout);
    let row = list
        .lines()
        .find(|l| l.starts_with("broken"))
        .unwrap_or_else(|| panic!("the corrupt file is listed:\n{list}"));
    assert!(row.contains("corrupt"), "{row}");

    let huge = std::fs::File::create(dir.join("huge.json")).expect("create");
    huge.set_len(200 << 20).expect("a sparse 200 MB file");
    let out = huatuo(home.path())
        .args(greedy_args(tiny_checkpoint("qwen2"), 4))
        .args(["--session", "huge", "Hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than a session file can be"), "{err}");
}
