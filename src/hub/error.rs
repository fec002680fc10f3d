//! Errors of the hub client. Every message names the repository (and file) and says what to do
//! next; none ever contains the token or a signed download URL.

use std::path::PathBuf;

use super::format_bytes;

/// Why a model could not be resolved, downloaded or checked.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the download of {repo} was cancelled at {file} (what arrived is kept: it resumes next time)")]
    Cancelled { repo: String, file: String },

    #[error(
        "model directory {} does not exist (give --model 7b, 34b, a hub repo id such as \
         org/name, or a checkpoint directory)",
        path.display()
    )]
    LocalNotFound { path: PathBuf },

    #[error(
        "{} is not a checkpoint directory: it has no config.json (give --model 7b, 34b, a hub \
         repo id such as org/name, or the folder a checkpoint was downloaded to)",
        path.display()
    )]
    LocalNotCheckpoint { path: PathBuf },

    #[error("`{revision}` is not a valid revision (a branch, tag or commit id)")]
    BadRevision { revision: String },

    #[error(
        "the Hugging Face token ({source_name}) is invalid: it contains a control character \
         (at character {position}); copy it again from https://huggingface.co/settings/tokens \
         (a token is printable text such as hf_…)"
    )]
    InvalidToken {
        /// Where the token came from (`HF_TOKEN` or the token file), never the token.
        source_name: &'static str,
        /// 1-based position of the first bad character.
        position: usize,
    },

    #[error("`{id}` is not a valid hub repo id (expected org/name, e.g. FreedomIntelligence/HuatuoGPT-Vision-7B)")]
    BadRepoId { id: String },

    #[error(
        "{repo} (revision {revision}) is not in the cache at {}; run `huatuo pull {}` with \
         network access (without --offline, with HF_HUB_OFFLINE unset)",
        cache.display(),
        pull_args(repo, revision)
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
    },

    #[error(
        "{repo} (revision {revision}) is incomplete in the cache at {}: missing {}; run \
         `huatuo pull {}` with network access (without --offline, with HF_HUB_OFFLINE unset) to \
         fetch them",
        dir.display(),
        missing.join(", "),
        pull_args(repo, revision)
    )]
    Incomplete {
        repo: String,
        /// What the user asked for (the snapshot folder `dir` is named by its commit).
        revision: String,
        dir: PathBuf,
        missing: Vec<String>,
    },

    #[error(
        "{repo} (revision {revision}) is damaged in the cache at {}: {}; run `huatuo pull {}` \
         to download the damaged files again",
        dir.display(),
        files.iter().map(|(f, why)| format!("{f} ({why})")).collect::<Vec<_>>().join(", "),
        pull_args(repo, revision)
    )]
    Damaged {
        repo: String,
        revision: String,
        dir: PathBuf,
        /// Each damaged file and what is wrong with it.
        files: Vec<(String, String)>,
    },

    #[error(
        "the hub refused access to {repo} (HTTP {status}{}): {}",
        if *token_sent { ", with a token" } else { ", without a token" },
        if *token_sent {
            "check that HF_TOKEN (or the token file) holds a token with read access to it, and \
             accept the model's terms on its page if it is gated"
        } else {
            "set HF_TOKEN to a token with read access (https://huggingface.co/settings/tokens), \
             and accept the model's terms on its page if it is gated"
        }
    )]
    Unauthorized {
        repo: String,
        status: u16,
        token_sent: bool,
    },

    #[error("{what} was not found on {endpoint} (HTTP 404){}", hint_404(what))]
    NotFound { what: String, endpoint: String },

    #[error(
        "{repo} at {commit} has no {}, which huatuo needs: it does not look like a \
         HuatuoGPT-Vision checkpoint",
        missing.join(", ")
    )]
    NotACheckpoint {
        repo: String,
        commit: String,
        missing: Vec<String>,
    },

    #[error(
        "could not reach {what} after {attempts} attempts ({cause}); check the network, a proxy \
         (HTTPS_PROXY) or HF_ENDPOINT, or use --offline if the model is already cached"
    )]
    Network {
        what: String,
        attempts: u32,
        cause: String,
    },

    #[error("{what}: the server answered HTTP {status}{}", if *attempts > 1 { format!(" ({attempts} attempts)") } else { String::new() })]
    Http {
        what: String,
        status: u16,
        attempts: u32,
    },

    #[error("{what}: unexpected answer from the hub: {detail}")]
    BadResponse { what: String, detail: String },

    #[error(
        "{repo}/{file}: the downloaded bytes do not match the hub's SHA-256 (expected {expected}, \
         got {actual}); the bad download was deleted and nothing was added to the cache. Run the \
         command again; if it repeats, the server (HF_ENDPOINT or the hub) is serving corrupt data"
    )]
    ChecksumMismatch {
        repo: String,
        file: String,
        expected: String,
        actual: String,
    },

    #[error(
        "{repo}/{file}: the server sent more than the {expected} bytes the hub announced; the \
         bad download was deleted. Run the command again"
    )]
    SizeMismatch {
        repo: String,
        file: String,
        expected: u64,
    },

    #[error(
        "not enough disk space for {repo}: {} still to download into {}, but only {} is free \
         there; free some space, or point HF_HUB_CACHE at a disk with room",
        format_bytes(*needed),
        dir.display(),
        format_bytes(*available)
    )]
    DiskFull {
        repo: String,
        needed: u64,
        available: u64,
        dir: PathBuf,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid {}: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },
}

/// What to type to fetch `repo` at `revision`: `7b`, `34b` or the repo id, with `--revision`
/// unless it is `main`.
fn pull_args(repo: &str, revision: &str) -> String {
    let name = super::short_name(repo);
    if revision == "main" {
        name.to_string()
    } else {
        format!("{name} --revision {revision}")
    }
}

fn hint_404(what: &str) -> &'static str {
    if what.contains("revision") {
        ": check the repo id and --revision (a private or gated repo also answers 404 without \
         a token: set HF_TOKEN)"
    } else {
        ": check the repo id (a private or gated repo also answers 404 without a token: set \
         HF_TOKEN)"
    }
}

impl HubError {
    /// An [`HubError::Io`] naming `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the hub could not be reached or failed on its side, so that a complete cached
    /// snapshot may be used instead (as huggingface_hub does); not for answers such as 401/404.
    pub fn allows_cache_fallback(&self) -> bool {
        matches!(self, Self::Network { .. } | Self::Http { .. })
    }
}
