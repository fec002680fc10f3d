//! End to end: the real `huatuo chat` binary in a real terminal (tmux), on tiny checkpoints:
//! attach an image with /image, ask, see the streamed answer on the screen (the reference's
//! greedy answer), swap to a 34B-family checkpoint with /model, ask again (the conversation
//! kept), /save, /quit; the saved session holds both turns. `.ci/run` installs tmux.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use huatuo::engine::Pipeline;
use huatuo::protocol::{DType as ModelDType, DevicePref, Exchange};
use huatuo::text::py_strip;
use serde_json::Value;

use crate::util::{fixture, greedy, tiny_checkpoint};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, env: &[(&str, String)]) -> Self {
        Self::start_sized(command, env, 100, 32)
    }

    fn start_sized(command: &str, env: &[(&str, String)], cols: u16, rows: u16) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = format!("huatuo-e2e-{}-{n}", std::process::id());
        let mut tmux = Command::new("tmux");
        tmux.args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
        for (k, v) in env {
            tmux.args(["-e", &format!("{k}={v}")]);
        }
        let status = tmux
            .arg(command)
            .status()
            .expect("tmux is needed for this test (apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        Self { socket }
    }

    fn send(&self, keys: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "e2e", "-l", keys])
            .status()
            .expect("send-keys");
        assert!(status.success());
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "e2e", "Enter"])
            .status()
            .expect("send-keys");
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "e2e"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `pred` holds for the screen, or fails showing the last screen.
    #[track_caller]
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "e2e"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Text without any whitespace, so answers wrapped across screen lines can be searched.
fn squeezed(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The two answers computed in-process with the same engine code: (first turn's text, its
/// history text, second turn's text on the yi checkpoint with the first turn as history).
fn expected_answers(image: &Path, first_q: &str, second_q: &str) -> (String, String, String) {
    let q =
        Pipeline::load(tiny_checkpoint("qwen2"), DevicePref::Cpu, ModelDType::F32).expect("qwen2");
    let (ids, first_user) = q.prompt_ids(&[], first_q, 1).expect("ids");
    let pixels = q.load_images(&[image.to_path_buf()]).expect("image");
    let first = q
        .generate(&ids, &pixels, &greedy(24), |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("generate");
    drop(q);
    let y = Pipeline::load(tiny_checkpoint("yi"), DevicePref::Cpu, ModelDType::F32).expect("yi");
    let history = [Exchange {
        user: first_user,
        answer: first.raw.clone(),
    }];
    let (ids, _) = y.prompt_ids(&history, second_q, 0).expect("ids");
    let second = y
        .generate(&ids, &pixels, &greedy(24), |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("generate");
    (first.text, first.raw, second.text)
}

#[test]
fn chat_in_a_real_terminal_swaps_models_and_saves() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let qwen = tiny_checkpoint("qwen2");
    let yi = tiny_checkpoint("yi");
    let image = fixture("images/cell.png");
    let command = format!(
        "'{}' chat --model '{}' --temperature 0 --max-new-tokens 24 --dtype f32",
        bin.display(),
        qwen.display()
    );
    let env = [
        (
            "HUATUO_DATA_DIR",
            home.path().join("data").display().to_string(),
        ),
        (
            "HUATUO_CONFIG_DIR",
            home.path().join("config").display().to_string(),
        ),
        (
            "HF_HUB_CACHE",
            home.path().join("hub").display().to_string(),
        ),
        ("TERM", "xterm-256color".to_string()),
    ];
    let (first, first_raw, second) = expected_answers(
        &image,
        "What does the picture show?",
        "Is there anything abnormal?",
    );
    let parity: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("parity/qwen2.json")).expect("fixture"),
    )
    .expect("json");
    assert_eq!(
        first,
        parity["ask"]["answer"].as_str().expect("answer"),
        "the reference answer"
    );
    assert!(first.chars().count() > 20 && second.chars().count() > 20);

    let tmux = Tmux::start(&command, &env);
    tmux.wait_for("the model to load", |s| s.contains("Model ready"));
    tmux.send(&format!("/image {}", image.display()));
    tmux.wait_for("the attachment", |s| s.contains("cell.png"));
    tmux.send("What does the picture show?");
    // The streamed answer on the screen is the reference's greedy answer.
    tmux.wait_for("the whole first answer", |s| {
        squeezed(s).contains(&squeezed(&first))
    });

    tmux.send(&format!("/model {}", yi.display()));
    tmux.wait_for("the swap", |s| s.contains("(llama, f32"));
    tmux.send("Is there anything abnormal?");
    tmux.wait_for("the whole second answer", |s| {
        squeezed(s).contains(&squeezed(&second))
    });

    let session_file = home.path().join("data/sessions/e2e.json");
    tmux.send("/save e2e");
    tmux.wait_for("the save", |s| s.contains("Saved session e2e"));
    tmux.send("/quit");
    let start = Instant::now();
    while tmux.alive() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tmux.alive(), "/quit ends the program");

    let session: Value =
        serde_json::from_str(&std::fs::read_to_string(&session_file).expect("saved session"))
            .expect("valid JSON");
    let turns = session["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 2, "{session:#}");
    assert_eq!(turns[0]["answer"], first_raw.as_str());
    assert_eq!(py_strip(turns[1]["answer"].as_str().expect("a2")), second);
    assert_eq!(turns[0]["images"][0]["path"], image.display().to_string());
}

/// `ask` on a terminal draws each attached image before the answer (half blocks here), and
/// nothing the terminal answers to a capability query leaks onto the screen.
#[test]
fn ask_on_a_terminal_shows_the_images_first() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let command = format!(
        "'{}' ask --model '{}' --temperature 0 --max-new-tokens 8 --dtype f32 -i '{}' 'What is it?'; sleep 60",
        bin.display(),
        tiny_checkpoint("qwen2").display(),
        fixture("images/cell.png").display(),
    );
    let env = [
        (
            "HUATUO_DATA_DIR",
            home.path().join("data").display().to_string(),
        ),
        (
            "HUATUO_CONFIG_DIR",
            home.path().join("config").display().to_string(),
        ),
        ("TERM", "xterm-256color".to_string()),
    ];
    let tmux = Tmux::start(&command, &env);
    let screen = tmux.wait_for("the image label", |s| s.contains("[img1] cell.png"));
    let label = screen.find("[img1]").expect("label");
    assert!(
        screen[..label].contains('▄'),
        "half blocks drawn before the label:\n{screen}"
    );
    assert!(
        !screen.contains("^["),
        "no escape sequence echoed:\n{screen}"
    );
}

/// Issue 14, acceptance 2: the chat saves every conversation by itself. A question, then
/// `/quit` without `/save`: `huatuo sessions` lists the conversation with its turn and
/// question, and `huatuo chat --continue` shows it again. `/save x` there renames it, and the
/// next turn is written to x, which then holds both turns.
#[test]
fn chat_saves_by_itself_and_continues() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let chat = |extra: &str| {
        format!(
            "'{}' chat --model '{}' --temperature 0 --max-new-tokens 8 --dtype f32 {extra}",
            bin.display(),
            tiny_checkpoint("qwen2").display()
        )
    };
    let env = [
        (
            "HUATUO_DATA_DIR",
            home.path().join("data").display().to_string(),
        ),
        (
            "HUATUO_CONFIG_DIR",
            home.path().join("config").display().to_string(),
        ),
        (
            "HF_HUB_CACHE",
            home.path().join("hub").display().to_string(),
        ),
        ("TERM", "xterm-256color".to_string()),
    ];
    let quit = |tmux: &Tmux| {
        tmux.send("/quit");
        let start = Instant::now();
        while tmux.alive() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!tmux.alive(), "/quit ends the program");
    };

    let tmux = Tmux::start(&chat(""), &env);
    tmux.wait_for("the model to load", |s| s.contains("Model ready"));
    tmux.send("Which organ is this?");
    tmux.wait_for("the answer", |s| s.contains("tok/s"));
    quit(&tmux);
    drop(tmux);

    let sessions = Command::new(&bin)
        .arg("sessions")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("sessions");
    assert!(sessions.status.success());
    let listing = String::from_utf8_lossy(&sessions.stdout);
    let row = listing
        .lines()
        .find(|l| l.starts_with("chat-"))
        .unwrap_or_else(|| panic!("the conversation is listed:\n{listing}"));
    assert!(row.contains("Which organ is this?"), "{row}");
    let dated = row.split_whitespace().next().expect("name").to_string();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[3], "1", "one turn: {row}");

    let tmux = Tmux::start(&chat("--continue"), &env);
    tmux.wait_for("the earlier turn", |s| {
        s.contains("Which organ is this?") && s.contains(&format!("Continuing session {dated}"))
    });
    tmux.wait_for("the model to load", |s| s.contains("Model ready"));
    tmux.send("/save x");
    tmux.wait_for("the save", |s| s.contains("Saved session x"));
    tmux.send("And its size?");
    tmux.wait_for("the second answer", |s| s.contains("tok/s"));
    quit(&tmux);

    let sessions = home.path().join("data/sessions");
    let x: Value =
        serde_json::from_str(&std::fs::read_to_string(sessions.join("x.json")).expect("x saved"))
            .expect("json");
    let turns = x["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 2, "{x:#}");
    assert_eq!(turns[0]["text"], "Which organ is this?");
    assert_eq!(turns[1]["text"], "And its size?");
    assert!(
        !sessions.join(format!("{dated}.json")).exists(),
        "/save x renamed the dated session"
    );
}

/// Issue 15, finding 2, on a real terminal: an image named with a screen clear and a title
/// change is captioned escaped by `ask`, and `sessions show` prints the question with escape
/// sequences escaped; nothing clears the screen.
#[test]
fn untrusted_names_and_text_are_escaped_on_a_terminal() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let image = home.path().join("x\u{1b}[2J\u{1b}]0;owned\u{7}.png");
    std::fs::copy(fixture("images/cell.png"), &image).expect("copy");
    let script = home.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "echo BEFORE; '{bin}' ask --model '{model}' --temperature 0 --max-new-tokens 4 --dtype f32 --session evil -i \"$(printf 'x\\033[2J\\033]0;owned\\007.png')\" \"$(printf 'Is \\033[2J it?')\"; '{bin}' sessions show evil; echo AFTER; sleep 60",
            bin = bin.display(),
            model = tiny_checkpoint("qwen2").display(),
        ),
    )
    .expect("script");
    let command = format!("cd '{}' && sh run.sh", home.path().display());
    let env = [
        (
            "HUATUO_DATA_DIR",
            home.path().join("data").display().to_string(),
        ),
        (
            "HUATUO_CONFIG_DIR",
            home.path().join("config").display().to_string(),
        ),
        ("TERM", "xterm-256color".to_string()),
    ];
    let tmux = Tmux::start(&command, &env);
    let screen = tmux.wait_for("both commands", |s| s.contains("AFTER"));
    assert!(
        screen.contains("[img1] x\\x1b[2J\\x1b]0;owned\\x07.png"),
        "the caption is escaped:\n{screen}"
    );
    assert!(
        screen.contains("Is \\x1b[2J it?"),
        "the question is escaped:\n{screen}"
    );
}

/// Issue 20, acceptance 2: `/compare` in a real terminal on the 7B-like and the 34B-like
/// tiny checkpoints shows both answers, each exactly that checkpoint's reference answer
/// (tests/fixtures/parity/*.json, greedy, 24 tokens), and the chat goes on with its model.
#[test]
fn compare_shows_each_models_reference_answer() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let (qwen, yi) = (tiny_checkpoint("qwen2"), tiny_checkpoint("yi"));
    let image = fixture("images/cell.png");
    let command = format!(
        "'{}' chat --model '{}' --temperature 0 --max-new-tokens 24 --dtype f32",
        bin.display(),
        qwen.display()
    );
    let env = [
        (
            "HUATUO_DATA_DIR",
            home.path().join("data").display().to_string(),
        ),
        (
            "HUATUO_CONFIG_DIR",
            home.path().join("config").display().to_string(),
        ),
        (
            "HUATUO_CACHE_DIR",
            home.path().join("cache").display().to_string(),
        ),
        (
            "HF_HUB_CACHE",
            home.path().join("hub").display().to_string(),
        ),
        ("TERM", "xterm-256color".to_string()),
    ];
    let reference = |family: &str| -> String {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("parity/{family}.json"))).expect("fx"),
        )
        .expect("json");
        v["ask"]["answer"].as_str().expect("answer").to_string()
    };
    let tmux = Tmux::start(&command, &env);
    tmux.wait_for("the model to load", |s| s.contains("Model ready"));
    tmux.send(&format!("/image {}", image.display()));
    tmux.wait_for("the attachment", |s| s.contains("cell.png"));
    tmux.send("What does the picture show?");
    tmux.wait_for("the first answer", |s| {
        squeezed(s).contains(&squeezed(&reference("qwen2")))
    });
    tmux.send(&format!("/compare {} {}", qwen.display(), yi.display()));
    tmux.wait_for("the comparison", |s| {
        s.contains("Compared; the conversation goes on")
    });
    let out = home.path().join("compare.md");
    tmux.send(&format!("/export {}", out.display()));
    tmux.wait_for("the export", |s| s.contains("Exported to"));
    let md = std::fs::read_to_string(&out).expect("exported");
    for (checkpoint, family) in [(qwen, "qwen2"), (yi, "yi")] {
        let section = format!("### {}\n\n{}\n", checkpoint.display(), reference(family));
        assert!(md.contains(&section), "{family}: {md}");
    }
    tmux.send("/quit");
}

impl Tmux {
    fn command(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Issue 20: `/copy` inside tmux reaches tmux's paste buffer whatever `set-clipboard` says
/// (OSC 52 when it is `on`, `tmux load-buffer` when it is `external` or `off`), says which,
/// and never claims the system clipboard when tmux kept it from there.
#[test]
fn copy_inside_tmux_lands_in_its_buffer_and_says_how() {
    let home = tempfile::tempdir().expect("tmp");
    let bin = assert_cmd::cargo::cargo_bin("huatuo");
    let command = format!(
        "'{}' chat --model '{}' --temperature 0 --max-new-tokens 24 --dtype f32",
        bin.display(),
        tiny_checkpoint("qwen2").display()
    );
    let env = [
        (
            "HUATUO_DATA_DIR",
            home.path().join("data").display().to_string(),
        ),
        (
            "HUATUO_CONFIG_DIR",
            home.path().join("config").display().to_string(),
        ),
        (
            "HUATUO_CACHE_DIR",
            home.path().join("cache").display().to_string(),
        ),
        ("TERM", "xterm-256color".to_string()),
        // No display: no wl-copy/xclip route, whatever is installed.
        ("DISPLAY", String::new()),
        ("WAYLAND_DISPLAY", String::new()),
    ];
    let tmux = Tmux::start(&command, &env);
    tmux.wait_for("the model to load", |s| s.contains("Model ready"));
    tmux.send("Hello?");
    tmux.wait_for("the answer", |s| s.contains("tok/s"));
    for (setting, says) in [
        (
            "off",
            "set-clipboard is off, so the system clipboard was not reached",
        ),
        (
            "external",
            "which tmux hands on to the terminal's clipboard",
        ),
        ("on", "through tmux with OSC 52"),
    ] {
        tmux.command(&["set-option", "-g", "set-clipboard", setting]);
        tmux.command(&["delete-buffer"]);
        tmux.send("/copy");
        tmux.wait_for(says, |s| squeezed(s).contains(&squeezed(says)));
        let start = Instant::now();
        let buffer = loop {
            let b = tmux.command(&["show-buffer"]);
            if !b.trim().is_empty() || start.elapsed() > Duration::from_secs(10) {
                break b;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(buffer.chars().count() > 10, "{setting}: buffer {buffer:?}");
        let start_of_answer: String = squeezed(&buffer).chars().take(12).collect();
        assert!(
            squeezed(&tmux.screen()).contains(&start_of_answer),
            "{setting}: the buffer holds the answer: {buffer:?}"
        );
        // A question of its own each time: once it shows, /clear has been done, and the
        // speed in the status line is this answer's.
        let question = format!("Hello after {setting}?");
        tmux.send("/clear");
        tmux.send(&question);
        tmux.wait_for("the answer", |s| {
            s.contains(&question) && s.contains("tok/s")
        });
    }
    tmux.send("/quit");
}

/// Issue 20, acceptance 1: `/view 1` in a real terminal fills most of the screen with the
/// image and Tab toggles to the model's 336×336 input; thumbnails grow with the window.
#[test]
fn view_fills_the_terminal_and_thumbnails_grow_with_it() {
    // The rows from the first to the last that draw half blocks (uniform cells are spaces
    // with a background colour, so rows inside a picture may have none).
    let picture_rows = |screen: &str| {
        let rows: Vec<usize> = screen
            .lines()
            .enumerate()
            .filter(|(_, l)| l.chars().filter(|c| matches!(c, '▀' | '▄' | '█')).count() >= 2)
            .map(|(i, _)| i)
            .collect();
        match (rows.first(), rows.last()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        }
    };
    let mut thumbnails = Vec::new();
    for (cols, rows) in [(100u16, 32u16), (240, 72)] {
        let home = tempfile::tempdir().expect("tmp");
        let bin = assert_cmd::cargo::cargo_bin("huatuo");
        let command = format!(
            "'{}' chat --model '{}' --temperature 0 --max-new-tokens 8 --dtype f32 --image '{}'",
            bin.display(),
            tiny_checkpoint("qwen2").display(),
            fixture("images/cell.png").display()
        );
        let env = [
            (
                "HUATUO_DATA_DIR",
                home.path().join("data").display().to_string(),
            ),
            (
                "HUATUO_CONFIG_DIR",
                home.path().join("config").display().to_string(),
            ),
            (
                "HUATUO_CACHE_DIR",
                home.path().join("cache").display().to_string(),
            ),
            ("TERM", "xterm-256color".to_string()),
        ];
        let tmux = Tmux::start_sized(&command, &env, cols, rows);
        tmux.wait_for("the model to load", |s| s.contains("Model ready"));
        tmux.send("What does the picture show?");
        tmux.wait_for("the answer", |s| s.contains("tok/s"));
        thumbnails.push(picture_rows(&tmux.screen()));
        if cols == 100 {
            tmux.send("/view 1");
            let screen = tmux.wait_for("the viewer", |s| s.contains("original 550×660"));
            let shown = picture_rows(&screen);
            assert!(
                shown * 10 >= usize::from(rows) * 6,
                "the picture takes most of the {rows} rows: {shown}\n{screen}"
            );
            tmux.send_key("Tab");
            tmux.wait_for("the model's input", |s| {
                s.contains("what the model sees: 336×336")
            });
            tmux.send_key("Escape");
            tmux.wait_for("the chat", |s| s.contains("Message"));
        }
        tmux.send("/quit");
    }
    assert!(
        thumbnails[1] > thumbnails[0],
        "a bigger window, a bigger thumbnail: {thumbnails:?}"
    );
}

impl Tmux {
    fn send_key(&self, key: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "e2e", key])
            .status()
            .expect("send-keys");
        assert!(status.success());
    }
}
