//! Noticing damage to a cached snapshot after its download (issue 15): a blob truncated or
//! overwritten on disk, which the download-time SHA-256 check can no longer see.
//!
//! - **Sizes, cheaply.** Every blob huatuo downloads or links has the size the hub announced
//!   for it recorded in `models--org--name/huatuo-blobs.json` (a file huggingface_hub ignores:
//!   it only reads `blobs/`, `refs/` and `snapshots/`). `list`, `pull` and every load compare
//!   each snapshot file's blob with it, a `stat` per file; a safetensors shard without a record
//!   (downloaded by Python) is checked against the length its own header implies.
//! - **Contents, on request.** [`verify_snapshot`] (`huatuo verify`) re-hashes every LFS file
//!   against its blob name, which is its SHA-256 on the hub; other files (small JSON, named by
//!   their git blob id) are checked by size. A damaged blob is marked in the record, so that
//!   loads refuse it and `pull` downloads it again (`pull` re-downloads every file this
//!   module reports, then clears the mark).
//!
//! Nothing here touches the network.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{manifest, HubError, Progress, RepoCache};

/// The record's file name, in the repo's cache folder.
const RECORD: &str = "huatuo-blobs.json";

/// What is known about one blob.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct BlobRecord {
    /// Bytes, as the hub announced them.
    pub size: u64,
    /// Why `huatuo verify` found it damaged; cleared when it is downloaded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// Every blob record of a repo, by blob name.
pub(crate) type Records = BTreeMap<String, BlobRecord>;

fn record_path(cache: &RepoCache) -> PathBuf {
    cache.root.join(RECORD)
}

/// The repo's records; none when the file is missing or unreadable (every check then falls
/// back to what the files say about themselves).
pub(crate) fn load(cache: &RepoCache) -> Records {
    fs::read(record_path(cache))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Replaces the record file (through a temporary file, so a crash never leaves half of it).
fn save(cache: &RepoCache, records: &Records) -> Result<(), HubError> {
    let path = record_path(cache);
    let tmp = cache
        .root
        .join(format!("{RECORD}.tmp-{}", std::process::id()));
    let text =
        serde_json::to_vec_pretty(records).map_err(|e| HubError::io(&path, io::Error::other(e)))?;
    fs::write(&tmp, text).map_err(|e| HubError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, e))
}

/// Records the size the hub announced for `etag` (and that it is not damaged).
pub(crate) fn record_size(cache: &RepoCache, etag: &str, size: u64) -> Result<(), HubError> {
    let mut records = load(cache);
    let new = BlobRecord {
        size,
        damaged: None,
    };
    if records.get(etag) == Some(&new) {
        return Ok(());
    }
    records.insert(etag.to_string(), new);
    save(cache, &records)
}

/// The blob a snapshot file links to (`None` for a copy, where symlinks are not allowed).
pub(crate) fn blob_of(cache: &RepoCache, commit: &str, file: &str) -> Option<String> {
    let target = fs::read_link(cache.pointer(commit, file)).ok()?;
    let name = target.file_name()?.to_str()?.to_string();
    cache.blob(&name).is_file().then_some(name)
}

/// Every file of a snapshot inference uses, as far as its config and index say.
pub(crate) fn snapshot_files(snapshot: &Path) -> Vec<String> {
    let mut files: Vec<String> = manifest::SMALL_FILES
        .iter()
        .filter(|f| snapshot.join(f).exists())
        .map(|f| f.to_string())
        .collect();
    if let Ok(weights) = manifest::weight_files(snapshot) {
        files.extend(weights);
    }
    files
}

/// What is wrong with one cached file, found without reading its contents.
pub(crate) fn quick_problem(
    cache: &RepoCache,
    records: &Records,
    commit: &str,
    file: &str,
) -> Option<String> {
    let pointer = cache.pointer(commit, file);
    let actual = fs::metadata(&pointer).ok()?.len();
    let record = blob_of(cache, commit, file).and_then(|b| records.get(&b));
    if let Some(record) = record {
        if let Some(why) = &record.damaged {
            return Some(why.clone());
        }
        return (actual != record.size).then(|| size_problem(actual, record.size));
    }
    if file.ends_with(".safetensors") {
        if let Some(implied) = safetensors_len(&pointer) {
            return (actual != implied).then(|| size_problem(actual, implied));
        }
    }
    None
}

fn size_problem(actual: u64, expected: u64) -> String {
    if actual < expected {
        format!("truncated: {actual} of {expected} bytes")
    } else {
        format!("{actual} bytes where the hub has {expected}")
    }
}

/// The length a safetensors file's header implies (8 + header + the end of its data).
fn safetensors_len(path: &Path) -> Option<u64> {
    let mut file = fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).ok()?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    let end = map
        .values()
        .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    Some(8 + n + end)
}

/// The snapshot files of `commit` with what is wrong with them, from sizes and marks only.
pub(crate) fn quick_check(cache: &RepoCache, commit: &str) -> Vec<(String, String)> {
    let records = load(cache);
    snapshot_files(&cache.snapshot(commit))
        .into_iter()
        .filter_map(|f| {
            let why = quick_problem(cache, &records, commit, &f)?;
            Some((f, why))
        })
        .collect()
}

/// One file's result in [`verify_snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    pub file: String,
    pub bytes: u64,
    /// `None` when the file is intact; else what is wrong.
    pub problem: Option<String>,
    /// Whether its contents were hashed (LFS files) or only its size was checked.
    pub hashed: bool,
}

/// Re-reads every file of the snapshot of `revision`: LFS files are hashed against their
/// SHA-256, the others checked by size. Damaged blobs are marked in the record (so loads
/// refuse them and `pull` repairs them); intact ones lose any old mark.
pub fn verify_snapshot(
    cache: &RepoCache,
    revision: &str,
    progress: &mut dyn Progress,
) -> Result<(String, Vec<FileCheck>), HubError> {
    let not_cached = || HubError::NotCached {
        repo: cache.repo.clone(),
        revision: revision.to_string(),
        cache: cache.cache_dir.clone(),
    };
    let commit = cache.read_ref(revision).ok_or_else(not_cached)?;
    let snapshot = cache.snapshot(&commit);
    if !snapshot.is_dir() {
        return Err(not_cached());
    }
    let mut records = load(cache);
    let mut out = Vec::new();
    for file in snapshot_files(&snapshot) {
        let pointer = cache.pointer(&commit, &file);
        let Ok(meta) = fs::metadata(&pointer) else {
            out.push(FileCheck {
                file,
                bytes: 0,
                problem: Some("missing".into()),
                hashed: false,
            });
            continue;
        };
        let blob = blob_of(cache, &commit, &file);
        let sha = blob.as_deref().filter(|b| is_sha256(b));
        let mut problem = blob
            .as_ref()
            .and_then(|b| records.get(b))
            .filter(|r| r.size != meta.len())
            .map(|r| size_problem(meta.len(), r.size));
        if problem.is_none() && blob.as_ref().is_none_or(|b| !records.contains_key(b)) {
            problem = file
                .ends_with(".safetensors")
                .then(|| safetensors_len(&pointer))
                .flatten()
                .filter(|implied| *implied != meta.len())
                .map(|implied| size_problem(meta.len(), implied));
        }
        if problem.is_none() {
            if let Some(sha) = sha {
                progress.start(&file, meta.len(), 0);
                let actual =
                    hash_file(&pointer, progress).map_err(|e| HubError::io(&pointer, e))?;
                progress.finish(&file);
                if !actual.eq_ignore_ascii_case(sha) {
                    problem = Some(format!("its SHA-256 is {actual}, not the hub's {sha}"));
                }
            }
        }
        if let Some(b) = &blob {
            let mut record = records.get(b).cloned().unwrap_or(BlobRecord {
                size: meta.len(),
                damaged: None,
            });
            record.damaged = problem.clone();
            if problem.is_some() || records.contains_key(b) || sha.is_some() {
                records.insert(b.clone(), record);
            }
        }
        out.push(FileCheck {
            file,
            bytes: meta.len(),
            problem,
            hashed: sha.is_some(),
        });
    }
    save(cache, &records)?;
    Ok((commit, out))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hash_file(path: &Path, progress: &mut dyn Progress) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        progress.advance(n as u64);
    }
    Ok(super::download::hex(&hasher.finalize()))
}

/// Removes a damaged file from the snapshot and its blob from the cache, so that the
/// download that follows starts afresh.
pub(crate) fn discard(cache: &RepoCache, commit: &str, file: &str) -> Result<(), HubError> {
    if let Some(blob) = blob_of(cache, commit, file) {
        discard_blob(cache, &blob)?;
    }
    let pointer = cache.pointer(commit, file);
    match fs::remove_file(&pointer) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HubError::io(&pointer, e)),
    }
}

/// Deletes a damaged blob and its record, under the blob's download lock (another process
/// may be fetching the same blob).
pub(crate) fn discard_blob(cache: &RepoCache, blob: &str) -> Result<(), HubError> {
    let path = cache.blob(blob);
    let _lock = super::download::lock(&cache.lock_file(blob))?;
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(HubError::io(&path, e)),
    }
    let mut records = load(cache);
    if records.remove(blob).is_some() {
        save(cache, &records)?;
    }
    Ok(())
}
