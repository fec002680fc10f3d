//! Records which commit huatuo is built from, for the reproducibility record (issue 14,
//! `src/provenance.rs`): sets `HUATUO_GIT_COMMIT` to `git rev-parse HEAD`, plus `-dirty` when
//! `git status --porcelain` lists anything, but only when this crate is the top of a git
//! checkout. Otherwise (no git binary, a tarball, a crates.io or vendored build inside some
//! other repository) it sets nothing, and it never fails the build: every error means "no
//! commit".
//!
//! Reruns are kept cheap and correct: the script watches the files git changes when `HEAD`
//! moves or the index changes (`HEAD`, the branch it points to, `packed-refs`, `logs/HEAD`,
//! `index`, found with `git rev-parse --git-path` so that linked worktrees work), plus the
//! sources that make up the binary (`src/`, `build.rs`, `Cargo.toml`, `Cargo.lock`): an edit
//! there recompiles the crate anyway, and rerunning lets `-dirty` follow it. Edits elsewhere
//! (tests/, docs) do not rerun it, so `-dirty` can miss those until the next rebuild; they are
//! not in the binary. `git status` runs with `--no-optional-locks` so that it never rewrites
//! the index it is watching (which would rebuild on every `cargo build`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return;
    };
    if let Some(commit) = git_commit(&manifest_dir) {
        println!("cargo::rustc-env=HUATUO_GIT_COMMIT={commit}");
    }
}

/// The commit (with `-dirty`), when `dir` is the top of a git work tree; registers the files
/// whose changes should rerun this script.
fn git_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    // A crate vendored into (or packaged inside the target/ of) another repository is not
    // built from a checkout of itself: the outer repository's commit would be a lie.
    if !same_dir(Path::new(&top), dir) {
        return None;
    }
    // Registered before HEAD is read, so that a repository's first commit is picked up too.
    let mut watched: Vec<PathBuf> = ["HEAD", "index", "packed-refs", "logs/HEAD"]
        .iter()
        .filter_map(|p| git_path(dir, p))
        .collect();
    // The branch HEAD points to (none when detached), as a loose ref; a packed one is covered
    // by packed-refs, and the commit that unpacks it also appends to logs/HEAD.
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git_path(dir, &branch));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    // A path that does not exist would make cargo rerun the script on every build.
    for source in ["src", "Cargo.toml", "Cargo.lock"] {
        if dir.join(source).exists() {
            println!("cargo::rerun-if-changed={source}");
        }
    }
    let head = git(dir, &["rev-parse", "--verify", "-q", "HEAD"])?;
    // A status that cannot be read counts as dirty: never claim a clean build unchecked.
    let clean =
        git(dir, &["--no-optional-locks", "status", "--porcelain"]).is_some_and(|s| s.is_empty());
    Some(if clean { head } else { format!("{head}-dirty") })
}

/// The trimmed stdout of a successful `git -C dir args…`, else `None` (no git, not a repo,
/// any failure). Variables a git hook may have set are dropped, so git finds the repository
/// from `dir` as it would in a shell.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Where git keeps `name` (`HEAD`, `index`, `refs/heads/main`, …) for the work tree at `dir`:
/// in a linked worktree, `HEAD` and `index` are in its own git dir and refs in the common one.
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(dir, &["rev-parse", "--git-path", name])?);
    Some(if p.is_absolute() { p } else { dir.join(p) })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
