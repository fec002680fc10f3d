//! Model names to checkpoint directories: the Hugging Face hub client and its on-disk cache.
//!
//! `7b`, `34b`, `org/name` or a directory ([`parse_model_ref`]) become a snapshot directory
//! ([`resolve`]) in the cache layout that Python's `huggingface_hub` writes and reads
//! (`models--org--name/{blobs,snapshots/<commit>,refs}`, located by `HF_HUB_CACHE` / `HF_HOME`),
//! so a model fetched by either tool is used by the other without a new download. Only the
//! files inference needs are fetched ([`manifest`]); downloads resume with HTTP Range after a
//! dropped connection or a killed process, retry transient errors, and every LFS file is checked
//! against its SHA-256 before it enters the cache. [`memory`] estimates whether a model fits.
//!
//! This module never prints: progress goes through [`Progress`], failures are [`HubError`]s.
//! [`HubOptions::from_env`] is the only reader of the `HF_*` environment variables.

mod api;
mod cache;
mod download;
mod error;
mod integrity;
pub mod manifest;
pub mod memory;
mod progress;
#[cfg(feature = "test-support")]
pub mod stand_in;

use std::path::{Path, PathBuf};

pub use cache::{is_commit_hash, list_cached, remove_cached, CachedModel, RepoCache};
pub use error::HubError;
pub use integrity::{verify_snapshot, FileCheck};
pub use progress::{FnProgress, NoProgress, Progress};

/// The 7B model's repository.
pub const REPO_7B: &str = "FreedomIntelligence/HuatuoGPT-Vision-7B";
/// The 34B model's repository.
pub const REPO_34B: &str = "FreedomIntelligence/HuatuoGPT-Vision-34B";
/// The hub, when `HF_ENDPOINT` does not name a mirror.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the hub and its cache.
#[derive(Clone)]
pub struct HubOptions {
    /// `HF_ENDPOINT` (a mirror), else `https://huggingface.co`; no trailing slash.
    pub endpoint: String,
    /// `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else the token file huggingface_hub writes
    /// (`HF_TOKEN_PATH`, else `$HF_HOME/token`). Sent only to the endpoint, never printed.
    pub token: Option<String>,
    /// `HF_HUB_CACHE` (or `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `--offline` or `HF_HUB_OFFLINE=1`: use the cache only.
    pub offline: bool,
    /// A branch, tag or commit; `None` is `main`.
    pub revision: Option<String>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("revision", &self.revision)
            .finish()
    }
}

impl HubOptions {
    /// Reads the environment the way huggingface_hub does (its `constants.py`).
    pub fn from_env() -> Self {
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        Self::from_lookup(|name| std::env::var(name).ok(), home)
    }

    /// [`HubOptions::from_env`] over any variable lookup, so the precedence can be tested.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let home = home.unwrap_or_else(|| PathBuf::from("."));
        let expand = |v: String| expand_tilde(&v, &home);
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(expand)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .and_then(|t| clean_token(&t))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .and_then(|t| clean_token(&t))
            });
        let truthy = |name: &str| {
            var(name).is_some_and(|v| {
                matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
            })
        };
        Self {
            endpoint: var("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token,
            cache_dir,
            offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE"),
            revision: None,
        }
    }
}

/// huggingface_hub's `_clean_token`: no line breaks, no surrounding blanks, empty is none.
fn clean_token(token: &str) -> Option<String> {
    let t = token.replace(['\r', '\n'], "");
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Refuses a token no HTTP header can carry (a control character, e.g. a stray escape pasted
/// with it): sent, it fails every attempt with a bare network error ("could not reach …"),
/// which sends the user looking at the network instead of the token.
fn check_token(token: Option<&str>) -> Result<(), HubError> {
    let Some(token) = token else { return Ok(()) };
    match token.chars().position(char::is_control) {
        None => Ok(()),
        Some(i) => Err(HubError::InvalidToken {
            source_name: "HF_TOKEN, HUGGING_FACE_HUB_TOKEN or the token file",
            position: i + 1,
        }),
    }
}

fn expand_tilde(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix('~') {
        Some("") => home.to_path_buf(),
        Some(rest) if rest.starts_with('/') || rest.starts_with('\\') => home.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

/// What the user named as a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A checkpoint directory on disk.
    Local(PathBuf),
    /// A hub repository, `org/name`.
    Repo { repo: String },
}

/// `7b` / `34b` (any case) are the HuatuoGPT-Vision repos (a directory named `7b` is `./7b`);
/// an existing path, or one starting with `.`, `/` or `~`, is a directory; `org/name` is a
/// repo; anything else is taken as a directory (which then does not exist, and says so).
pub fn parse_model_ref(s: &str) -> ModelRef {
    match s.to_ascii_lowercase().as_str() {
        "7b" => {
            return ModelRef::Repo {
                repo: REPO_7B.to_string(),
            }
        }
        "34b" => {
            return ModelRef::Repo {
                repo: REPO_34B.to_string(),
            }
        }
        _ => {}
    }
    let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    let path = match &home {
        Some(h) => expand_tilde(s, h),
        None => PathBuf::from(s),
    };
    let looks_like_path = s.starts_with(['.', '/', '~']) || s.contains('\\') || s.contains(':');
    if path.exists() || looks_like_path || !is_valid_repo_id(s) {
        ModelRef::Local(path)
    } else {
        ModelRef::Repo {
            repo: s.to_string(),
        }
    }
}

/// `org/name` with the hub's allowed characters (letters, digits, `-`, `_`, `.`), no `--` or
/// `..`, neither part starting or ending with `-` or `.`.
pub fn is_valid_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    [org, name].iter().all(|p| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.contains("--")
            && !p.contains("..")
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    })
}

/// The short name users type for `repo` (`7b`, `34b`), else the repo id itself.
pub fn short_name(repo: &str) -> &str {
    if repo == REPO_7B {
        "7b"
    } else if repo == REPO_34B {
        "34b"
    } else {
        repo
    }
}

/// A model ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The checkpoint directory (for a hub model, its snapshot directory).
    pub dir: PathBuf,
    /// The hub repo, for a hub model.
    pub repo: Option<String>,
    /// The commit sha of the snapshot, for a hub model.
    pub revision: Option<String>,
}

/// Turns a model reference into a checkpoint directory, downloading whatever the cache lacks
/// (nothing that is already there). Offline, it only checks the cache and names what is
/// missing. When the hub cannot be reached or answers with a server error, a complete cached
/// snapshot of the revision is used instead, as huggingface_hub does (without retrying first).
pub fn resolve(
    model: &ModelRef,
    opts: &HubOptions,
    progress: &mut dyn Progress,
) -> Result<Resolved, HubError> {
    let repo = match model {
        ModelRef::Local(path) => {
            if !path.is_dir() {
                return Err(HubError::LocalNotFound { path: path.clone() });
            }
            if !path.join("config.json").is_file() {
                return Err(HubError::LocalNotCheckpoint { path: path.clone() });
            }
            return Ok(Resolved {
                dir: path.clone(),
                repo: None,
                revision: None,
            });
        }
        ModelRef::Repo { repo } => repo,
    };
    if !is_valid_repo_id(repo) {
        return Err(HubError::BadRepoId { id: repo.clone() });
    }
    let cache = RepoCache::new(&opts.cache_dir, repo);
    let revision = opts.revision.as_deref().unwrap_or("main");
    if !manifest::is_safe_path(revision) {
        return Err(HubError::BadRevision {
            revision: revision.to_string(),
        });
    }
    let cached = cache.resolve_offline(revision);
    if opts.offline {
        return cached;
    }
    check_token(opts.token.as_deref())?;
    match download::pull(&cache, opts, revision, cached.is_ok(), progress) {
        Err(e) if e.allows_cache_fallback() => cached.map_err(|_| e),
        other => other,
    }
}

/// Bytes in decimal units, as the hub shows sizes ("15.2 GB").
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_refs() {
        let repo = |r: &str| ModelRef::Repo {
            repo: r.to_string(),
        };
        assert_eq!(parse_model_ref("7b"), repo(REPO_7B));
        assert_eq!(parse_model_ref("7B"), repo(REPO_7B));
        assert_eq!(parse_model_ref("34b"), repo(REPO_34B));
        assert_eq!(parse_model_ref("org/name"), repo("org/name"));
        assert_eq!(parse_model_ref("Qwen/Qwen2-0.5B"), repo("Qwen/Qwen2-0.5B"));
        for local in [
            "./7b",
            "/abs/dir",
            "../x/y",
            "no-slash-here",
            "a/b/c",
            "a--b/c",
        ] {
            assert!(
                matches!(parse_model_ref(local), ModelRef::Local(_)),
                "{local} should be a path"
            );
        }
        let tmp = std::env::temp_dir();
        assert_eq!(
            parse_model_ref(tmp.to_str().expect("utf-8 temp dir")),
            ModelRef::Local(tmp.clone())
        );
    }

    #[test]
    fn env_precedence() {
        let home = PathBuf::from("/home/u");
        let opts = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            HubOptions::from_lookup(
                |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
                Some(home.clone()),
            )
        };
        let d = opts(&[]);
        assert_eq!(d.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(d.endpoint, DEFAULT_ENDPOINT);
        assert!(!d.offline);
        assert_eq!(
            opts(&[("XDG_CACHE_HOME", "/x")]).cache_dir,
            PathBuf::from("/x/huggingface/hub")
        );
        assert_eq!(
            opts(&[("HF_HOME", "~/hf"), ("XDG_CACHE_HOME", "/x")]).cache_dir,
            PathBuf::from("/home/u/hf/hub")
        );
        assert_eq!(
            opts(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")]).cache_dir,
            PathBuf::from("/c")
        );
        assert_eq!(
            opts(&[("HUGGINGFACE_HUB_CACHE", "/legacy")]).cache_dir,
            PathBuf::from("/legacy")
        );
        let o = opts(&[
            ("HF_ENDPOINT", "https://hf-mirror.com/"),
            ("HF_TOKEN", " hf_abc\n"),
            ("HF_HUB_OFFLINE", "yes"),
        ]);
        assert_eq!(o.endpoint, "https://hf-mirror.com");
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert!(o.offline);
        assert!(
            !format!("{o:?}").contains("hf_abc"),
            "Debug must hide the token"
        );
        assert!(!opts(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), "hf_from_file\n").expect("write");
        let hf_home = dir.path().to_str().expect("utf-8").to_string();
        let o = HubOptions::from_lookup(|name| (name == "HF_HOME").then(|| hf_home.clone()), None);
        assert_eq!(o.token.as_deref(), Some("hf_from_file"));
        assert_eq!(o.cache_dir, dir.path().join("hub"));
    }

    #[test]
    fn repo_ids_and_sizes() {
        assert!(is_valid_repo_id(REPO_34B));
        assert!(!is_valid_repo_id("org/"));
        assert!(!is_valid_repo_id("-org/name"));
        assert!(!is_valid_repo_id("org/na me"));
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(69_000_000_000), "69.0 GB");
        assert_eq!(short_name(REPO_7B), "7b");
    }
}
