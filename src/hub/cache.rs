//! The on-disk cache, exactly as Python's `huggingface_hub` lays it out (`file_download.py`):
//!
//! ```text
//! <cache>/models--org--name/
//!     blobs/<etag>                 file contents, named by the hub's ETag (sha256 for LFS files)
//!     blobs/<etag>.incomplete      a download in progress, resumed from its length
//!     snapshots/<commit>/<path>    relative symlinks to ../../blobs/<etag> (deeper for vit/…)
//!     refs/<revision>              the commit a branch or tag pointed to
//! <cache>/.locks/models--org--name/<etag>.lock   flock'd while a blob is being written
//! ```
//!
//! Nothing here touches the network. A snapshot entry is only ever created for a finished,
//! verified blob, so whatever a snapshot holds can be loaded.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{integrity, manifest};
use super::{HubError, Resolved};

/// True for a full 40-hex-digit git commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub repo: String,
    pub cache_dir: PathBuf,
    /// `<cache>/models--org--name`.
    pub root: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> Self {
        Self {
            repo: repo.to_string(),
            cache_dir: cache_dir.to_path_buf(),
            root: cache_dir.join(folder_name(repo)),
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// Where a download of `etag` accumulates until it is verified (huggingface_hub's name).
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn lock_file(&self, etag: &str) -> PathBuf {
        self.locks_dir().join(format!("{etag}.lock"))
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.cache_dir.join(".locks").join(folder_name(&self.repo))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// `snapshots/<commit>/<file>`, with `/` in `file` as path separators.
    pub fn pointer(&self, commit: &str, file: &str) -> PathBuf {
        file.split('/')
            .fold(self.snapshot(commit), |p, part| p.join(part))
    }

    /// The commit `revision` points to: itself for a commit id, else `refs/<revision>`.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let text = fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let sha = text.trim().to_string();
        (!sha.is_empty()).then_some(sha)
    }

    /// Records that `revision` points to `commit` (not for a commit id itself, as Python does).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        if fs::read_to_string(&path).is_ok_and(|t| t == commit) {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, commit).map_err(|e| HubError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, e))
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink (a copy where
    /// symlinks are not allowed), replacing whatever was there.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.pointer(commit, file);
        let dir = pointer.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let depth = file.split('/').count() + 1; // <file's dirs> + <commit> + snapshots
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if fs::symlink_metadata(&pointer).is_ok() {
            fs::remove_file(&pointer).map_err(|e| HubError::io(&pointer, e))?;
        }
        symlink_or_copy(&target, &self.blob(etag), &pointer).map_err(|e| HubError::io(&pointer, e))
    }

    /// The snapshot of `revision` if the cache holds every file it needs; no network.
    pub fn resolve_offline(&self, revision: &str) -> Result<Resolved, HubError> {
        let not_cached = || HubError::NotCached {
            repo: self.repo.clone(),
            revision: revision.to_string(),
            cache: self.cache_dir.clone(),
        };
        let commit = self.read_ref(revision).ok_or_else(not_cached)?;
        let dir = self.snapshot(&commit);
        if !dir.is_dir() {
            return Err(not_cached());
        }
        let missing = manifest::missing_files(&dir);
        if !missing.is_empty() {
            return Err(HubError::Incomplete {
                repo: self.repo.clone(),
                revision: revision.to_string(),
                dir,
                missing,
            });
        }
        let damaged = integrity::quick_check(self, &commit);
        if !damaged.is_empty() {
            return Err(HubError::Damaged {
                repo: self.repo.clone(),
                revision: revision.to_string(),
                dir,
                files: damaged,
            });
        }
        Ok(Resolved {
            dir,
            repo: Some(self.repo.clone()),
            revision: Some(commit),
        })
    }
}

/// `models--org--name`.
pub fn folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

#[cfg(unix)]
fn symlink_or_copy(target: &Path, _blob: &Path, pointer: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, pointer)
}

#[cfg(windows)]
fn symlink_or_copy(target: &Path, blob: &Path, pointer: &Path) -> io::Result<()> {
    // Symlinks need developer mode on Windows; huggingface_hub then copies too.
    std::os::windows::fs::symlink_file(target, pointer)
        .or_else(|_| fs::copy(blob, pointer).map(|_| ()))
}

#[cfg(not(any(unix, windows)))]
fn symlink_or_copy(_target: &Path, blob: &Path, pointer: &Path) -> io::Result<()> {
    fs::copy(blob, pointer).map(|_| ())
}

/// One repository found in the cache, as `huatuo list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CachedModel {
    pub repo: String,
    pub path: PathBuf,
    /// `refs/main`'s commit, else the newest snapshot's.
    pub revision: Option<String>,
    /// Every ref (`main`, tags, …) and its commit.
    pub refs: BTreeMap<String, String>,
    pub snapshots: Vec<String>,
    /// Finished blobs, in bytes.
    pub size_bytes: u64,
    /// Bytes of unfinished downloads (`.incomplete`).
    pub partial_bytes: u64,
    /// The snapshot of `revision` holds every file inference needs, none of them damaged.
    pub complete: bool,
    /// What that snapshot lacks.
    pub missing: Vec<String>,
    /// Its files whose size differs from the hub's (truncated) or that `huatuo verify`
    /// found damaged, each with what is wrong; `huatuo pull` downloads them again.
    pub damaged: Vec<String>,
    /// Its config.json describes a LLaVA checkpoint (what huatuo runs).
    pub is_llava: bool,
}

/// Every `models--*` folder of the cache, sorted by repo id.
pub fn list_cached(cache_dir: &Path) -> Result<Vec<CachedModel>, HubError> {
    let entries = match fs::read_dir(cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HubError::io(cache_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        let Some((org, model)) = rest.split_once("--") else {
            continue;
        };
        if !entry.path().is_dir() {
            continue;
        }
        out.push(describe(&RepoCache::new(
            cache_dir,
            &format!("{org}/{model}"),
        )));
    }
    out.sort_by(|a, b| a.repo.cmp(&b.repo));
    Ok(out)
}

fn describe(cache: &RepoCache) -> CachedModel {
    let mut refs = BTreeMap::new();
    collect_refs(&cache.root.join("refs"), "", &mut refs);
    let mut snapshots: Vec<(std::time::SystemTime, String)> =
        fs::read_dir(cache.root.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (t, e.file_name().to_string_lossy().into_owned())
            })
            .collect();
    snapshots.sort();
    let (mut size_bytes, mut partial_bytes) = (0, 0);
    for e in fs::read_dir(cache.root.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        if e.file_name().to_string_lossy().ends_with(".incomplete") {
            partial_bytes += len;
        } else {
            size_bytes += len;
        }
    }
    let revision = refs
        .get("main")
        .cloned()
        .filter(|c| cache.snapshot(c).is_dir())
        .or_else(|| snapshots.last().map(|(_, s)| s.clone()));
    let (missing, damaged, is_llava) = match &revision {
        Some(c) => {
            let dir = cache.snapshot(c);
            let damaged = integrity::quick_check(cache, c)
                .into_iter()
                .map(|(f, why)| format!("{f} ({why})"))
                .collect();
            (
                manifest::missing_files(&dir),
                damaged,
                manifest::is_llava(&dir),
            )
        }
        None => (vec!["config.json".to_string()], Vec::new(), false),
    };
    CachedModel {
        repo: cache.repo.clone(),
        path: cache.root.clone(),
        revision,
        refs,
        snapshots: snapshots.into_iter().map(|(_, s)| s).collect(),
        size_bytes,
        partial_bytes,
        complete: missing.is_empty() && damaged.is_empty(),
        missing,
        damaged,
        is_llava,
    }
}

fn collect_refs(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            collect_refs(&e.path(), &format!("{name}/"), out);
        } else if let Ok(sha) = fs::read_to_string(e.path()) {
            out.insert(name, sha.trim().to_string());
        }
    }
}

/// Deletes a repository's cache folder and its lock folder; returns the bytes freed. Refuses
/// while another process (huatuo or Python) holds one of its download locks.
pub fn remove_cached(cache_dir: &Path, repo: &str) -> Result<Option<u64>, HubError> {
    let cache = RepoCache::new(cache_dir, repo);
    if !cache.root.is_dir() {
        return Ok(None);
    }
    for e in fs::read_dir(cache.locks_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(file) = fs::OpenOptions::new().write(true).open(e.path()) else {
            continue;
        };
        if let Err(fs4::TryLockError::WouldBlock) = fs4::FileExt::try_lock(&file) {
            return Err(HubError::io(
                e.path(),
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{repo} is being downloaded by another process; try again when it is done"
                    ),
                ),
            ));
        }
    }
    let freed = describe(&cache);
    fs::remove_dir_all(&cache.root).map_err(|e| HubError::io(&cache.root, e))?;
    let _ = fs::remove_dir_all(cache.locks_dir());
    Ok(Some(freed.size_bytes + freed.partial_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names() {
        let c = RepoCache::new(Path::new("/c"), "org/name");
        assert_eq!(c.root, Path::new("/c/models--org--name"));
        assert_eq!(
            c.incomplete("ab"),
            Path::new("/c/models--org--name/blobs/ab.incomplete")
        );
        assert_eq!(
            c.lock_file("ab"),
            Path::new("/c/.locks/models--org--name/ab.lock")
        );
        assert_eq!(
            c.pointer("s", "vit/x/config.json"),
            Path::new("/c/models--org--name/snapshots/s/vit/x/config.json")
        );
        assert!(is_commit_hash("34dfcdbb7728ff38da865839f342b88c4cf6ef39"));
        assert!(!is_commit_hash("main"));
    }

    #[cfg(unix)]
    #[test]
    fn relative_links_like_python() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = RepoCache::new(dir.path(), "org/name");
        fs::create_dir_all(c.root.join("blobs")).expect("mkdir");
        fs::write(c.blob("e1"), b"x").expect("write");
        c.link("abc", "config.json", "e1").expect("link");
        c.link("abc", "vit/clip/config.json", "e1").expect("link");
        assert_eq!(
            fs::read_link(c.pointer("abc", "config.json")).expect("readlink"),
            Path::new("../../blobs/e1")
        );
        assert_eq!(
            fs::read_link(c.pointer("abc", "vit/clip/config.json")).expect("readlink"),
            Path::new("../../../../blobs/e1")
        );
        assert_eq!(
            fs::read(c.pointer("abc", "vit/clip/config.json")).expect("read"),
            b"x"
        );
        c.write_ref("main", "abc").expect("ref");
        assert_eq!(c.read_ref("main").as_deref(), Some("abc"));
    }
}
