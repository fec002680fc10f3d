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
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tiny-{family}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_checkpoint(&spec, &fixture(&format!("tokenizers/{tok}")), &dir)
            .expect("writing tiny checkpoint");
        dir
    })
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
