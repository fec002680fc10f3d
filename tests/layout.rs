//! The dependency directions of the source tree (issue 13), checked by reading the source: a
//! new `use` that points the wrong way fails here, not in a later review.
//!
//! - `protocol` and `text` import nothing of huatuo, candle or clap, so a remote engine can
//!   speak the protocol with no model code in sight;
//! - `model` imports nothing from `chat`, `tui`, `cmd`, `hub` or `engine`;
//! - the TUI imports nothing from `model`;
//! - clap appears in `cli.rs` (and the `cmd` modules that parse the default chat arguments),
//!   nowhere in the core;
//! - only the conversation core (`chat/conversation.rs`) applies the reference's text rules
//!   (`sanitize_user_text`, `with_image_placeholders`), which `chat/template.rs` defines.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/<dir>` (or the file `src/<dir>.rs`), with its text up to its
/// unit tests.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    let file = root.join(format!("{dir}.rs"));
    if file.is_file() {
        stack.push(file);
    }
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for entry in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.push((p, code));
        }
    }
    assert!(!out.is_empty(), "no sources under src/{dir}");
    out
}

/// The lines of `dir`'s sources (comments excluded) that contain any of `needles`.
fn offending(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for (path, code) in sources(dir) {
        for (i, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            if needles.iter().any(|n| line.contains(n)) {
                hits.push(format!("{}:{}: {line}", path.display(), i + 1));
            }
        }
    }
    hits
}

#[test]
fn protocol_and_text_are_plain() {
    for dir in ["protocol", "text"] {
        // (`super::` inside protocol/ is protocol itself.)
        let hits = offending(dir, &["crate::", "candle", "clap", "super::super"]);
        assert!(
            hits.is_empty(),
            "{dir} must import nothing of huatuo: {hits:#?}"
        );
    }
}

#[test]
fn model_imports_no_front_end_chat_hub_or_engine() {
    let hits = offending(
        "model",
        &[
            "crate::chat",
            "crate::tui",
            "crate::cmd",
            "crate::hub",
            "crate::engine",
        ],
    );
    assert!(hits.is_empty(), "{hits:#?}");
}

/// Issue 21: the kernels are a leaf (no model, chat, engine…), and no operation's files borrow
/// from another operation's: shared pieces are `kernels::pool` and `kernels::rows`.
#[test]
fn kernels_are_a_leaf_and_keep_to_their_own_files() {
    let hits = offending(
        "kernels",
        &[
            "crate::model",
            "crate::chat",
            "crate::tui",
            "crate::cmd",
            "crate::hub",
            "crate::engine",
            "crate::config",
            "std::env::var",
        ],
    );
    assert!(hits.is_empty(), "{hits:#?}");
    let ops: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels"))
        .expect("src/kernels")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(ops.contains(&"q8_0".to_string()), "{ops:?}");
    for op in &ops {
        let others: Vec<String> = ops
            .iter()
            .filter(|o| *o != op)
            .flat_map(|o| [format!("kernels::{o}"), format!("super::super::{o}")])
            .collect();
        let needles: Vec<&str> = others.iter().map(String::as_str).collect();
        let hits = offending(&format!("kernels/{op}"), &needles);
        assert!(
            hits.is_empty(),
            "{op} borrows from another kernel: {hits:#?}"
        );
    }
}

#[test]
fn tui_imports_no_model() {
    let hits = offending("tui", &["crate::model", "candle"]);
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn clap_stays_at_the_edge() {
    for dir in [
        "protocol", "model", "engine", "chat", "hub", "tui", "term", "config",
    ] {
        let hits = offending(dir, &["clap"]);
        assert!(hits.is_empty(), "{dir}: {hits:#?}");
    }
    let hits = offending("cli", &["crate::cmd"]);
    assert!(hits.is_empty(), "cli must not import cmd: {hits:#?}");
}

#[test]
fn only_the_conversation_core_applies_the_turn_rules() {
    let mut callers = Vec::new();
    for dir in ["chat", "engine", "cmd", "tui", "model", "hub"] {
        for (path, code) in sources(dir) {
            let calls = ["sanitize_user_text(", "with_image_placeholders("]
                .iter()
                .any(|f| {
                    code.lines().any(|l| {
                        let l = l.trim_start();
                        l.contains(f) && !l.starts_with("//") && !l.starts_with("pub fn")
                    })
                });
            if calls {
                callers.push(
                    path.file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    assert_eq!(callers, ["conversation.rs"]);
}

#[test]
fn the_hub_never_draws() {
    let hits = offending("hub", &["indicatif", "eprint", "println!", "print!("]);
    assert!(hits.is_empty(), "{hits:#?}");
}
