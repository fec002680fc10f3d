//! Helpers shared by the test suites: fixture paths and tiny checkpoints built once per test
//! process by the same generator the parity fixtures were computed from.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use huatuo::tiny::{write_checkpoint, TinySpec};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(rel)
}

/// The tiny checkpoint of `family` ("qwen2" seed 1, "yi" seed 2, as scripts/reference/model.py
/// uses), written once per test process under cargo's target tmp dir.
pub fn tiny_checkpoint(family: &str) -> &'static Path {
    static QWEN2: OnceLock<PathBuf> = OnceLock::new();
    static YI: OnceLock<PathBuf> = OnceLock::new();
    let (cell, spec, tok) = match family {
        "qwen2" => (&QWEN2, TinySpec::qwen2(1), "qwen2"),
        "yi" => (&YI, TinySpec::yi(2), "yi-tiny"),
        other => panic!("no tiny family {other}"),
    };
    cell.get_or_init(|| {
        let dir = process_dir(&format!("tiny-{family}"));
        write_checkpoint(&spec, &fixture(&format!("tokenizers/{tok}")), &dir)
            .expect("writing tiny checkpoint");
        dir
    })
}

/// An empty directory `<prefix>-<pid>` under cargo's target tmp dir for this test process.
///
/// Statics are never dropped, so a test process cannot delete what it wrote there; instead
/// each claim removes the `<prefix>-<pid>` directories of processes that no longer run (on
/// Linux, where `/proc` tells), so repeated test runs do not fill the disk (the k-quant
/// checkpoint is 165 MB).
pub fn process_dir(prefix: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let proc = Path::new("/proc/self");
    if proc.exists() {
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-'))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A fresh copy of a tiny checkpoint that a test may damage.
pub fn tiny_copy(family: &str, into: &Path) -> PathBuf {
    let src = tiny_checkpoint(family);
    let dst = into.join(format!("tiny-{family}"));
    copy_dir(src, &dst);
    dst
}

/// Copies a directory tree (fixtures into a test's own temporary folder).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}
