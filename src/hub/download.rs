//! Fetching a snapshot into the cache: the small files first (config.json and the index say what
//! else is needed), then a free-space check, then the vision configs and the shards. Each file
//! is written to `blobs/<etag>.incomplete` under the same lock file huggingface_hub uses,
//! resumed with `Range` from whatever an earlier run (ours or Python's) left, hashed as it
//! arrives, checked against the LFS SHA-256, and only then renamed into `blobs/` and linked
//! from the snapshot. A file already in the snapshot, or a blob already in `blobs/` (from any
//! revision), is never downloaded again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::api::{Client, Failure, FileMeta, MAX_ATTEMPTS};
use super::{integrity, manifest};
use super::{HubError, HubOptions, Progress, RepoCache, Resolved};

/// Downloads what the cache lacks of `revision` and returns its snapshot. When the cache
/// already holds a complete snapshot of it (`cached`), the first request is not retried: the
/// caller falls back to the cache at once.
pub(crate) fn pull(
    cache: &RepoCache,
    opts: &HubOptions,
    revision: &str,
    cached: bool,
    progress: &mut dyn Progress,
) -> Result<Resolved, HubError> {
    let client = Client::new(opts);
    let attempts = if cached { 1 } else { MAX_ATTEMPTS };
    let info = client.repo_info(&cache.repo, revision, attempts)?;
    let commit = info.sha;
    cache.write_ref(revision, &commit)?;
    let snapshot = cache.snapshot(&commit);
    let not_a_checkpoint = |missing: Vec<String>| HubError::NotACheckpoint {
        repo: cache.repo.clone(),
        commit: commit.clone(),
        missing,
    };

    let mut missing: Vec<String> = manifest::REQUIRED
        .iter()
        .filter(|f| !info.files.contains(**f))
        .map(|f| f.to_string())
        .collect();
    if !info.files.contains(manifest::INDEX) && !info.files.contains("model.safetensors") {
        missing.push(manifest::INDEX.to_string());
    }
    if !missing.is_empty() {
        return Err(not_a_checkpoint(missing));
    }
    let mut puller = Puller {
        client: &client,
        cache,
        commit: &commit,
        progress,
    };
    puller.fetch_all(&manifest::small_files(&info.files))?;

    let weights =
        manifest::weight_files(&snapshot).map_err(|(file, detail)| HubError::BadFile {
            path: snapshot.join(file),
            detail,
        })?;
    let absent: Vec<String> = weights
        .iter()
        .filter(|f| !info.files.contains(*f))
        .cloned()
        .collect();
    if !absent.is_empty() {
        return Err(not_a_checkpoint(absent));
    }
    puller.fetch_all(&weights)?;
    cache.resolve_offline(&commit)
}

struct Puller<'a> {
    client: &'a Client,
    cache: &'a RepoCache,
    commit: &'a str,
    progress: &'a mut dyn Progress,
}

impl Puller<'_> {
    /// Links what is already in `blobs/`, checks the free space for the rest, downloads it.
    fn fetch_all(&mut self, files: &[String]) -> Result<(), HubError> {
        let mut plan: Vec<(&str, FileMeta)> = Vec::new();
        let records = integrity::load(self.cache);
        for file in files {
            if self.cache.pointer(self.commit, file).exists() {
                if integrity::quick_problem(self.cache, &records, self.commit, file).is_none() {
                    continue;
                }
                // Truncated, grown, or found damaged by `huatuo verify`: fetch it again.
                integrity::discard(self.cache, self.commit, file)?;
            }
            let meta = self.client.file_meta(&self.cache.repo, self.commit, file)?;
            let blob = self.cache.blob(&meta.etag);
            if blob.is_file() {
                let len = fs::metadata(&blob).map(|m| m.len()).ok();
                let marked = records.get(&meta.etag).is_some_and(|r| r.damaged.is_some());
                if len == Some(meta.size) && !marked {
                    integrity::record_size(self.cache, &meta.etag, meta.size)?;
                    self.cache.link(self.commit, file, &meta.etag)?;
                    continue;
                }
                integrity::discard_blob(self.cache, &meta.etag)?;
            }
            plan.push((file, meta));
        }
        if plan.is_empty() {
            return Ok(());
        }
        let needed = plan
            .iter()
            .map(|(_, m)| {
                let have = fs::metadata(self.cache.incomplete(&m.etag)).map_or(0, |x| x.len());
                m.size.saturating_sub(have)
            })
            .sum();
        check_disk_space(self.cache, needed)?;
        for (file, meta) in plan {
            self.fetch(file, meta)?;
        }
        Ok(())
    }

    /// Downloads one file into `blobs/` and links it from the snapshot.
    fn fetch(&mut self, file: &str, meta: FileMeta) -> Result<(), HubError> {
        let blobs = self.cache.root.join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let _lock = lock(&self.cache.lock_file(&meta.etag))?;
        let blob = self.cache.blob(&meta.etag);
        if !blob.is_file() {
            let incomplete = self.cache.incomplete(&meta.etag);
            match self.download(file, &meta, &incomplete) {
                Ok(()) => {
                    fs::rename(&incomplete, &blob).map_err(|e| HubError::io(&blob, e))?;
                    integrity::record_size(self.cache, &meta.etag, meta.size)?;
                }
                Err(e) => {
                    if matches!(
                        e,
                        HubError::ChecksumMismatch { .. } | HubError::SizeMismatch { .. }
                    ) {
                        let _ = fs::remove_file(&incomplete);
                    }
                    return Err(e);
                }
            }
        }
        self.cache.link(self.commit, file, &meta.etag)?;
        self.progress.finish(file);
        Ok(())
    }

    /// Fills `incomplete` up to `meta.size`, resuming and retrying, then verifies it.
    fn download(&mut self, file: &str, meta: &FileMeta, incomplete: &Path) -> Result<(), HubError> {
        let io_err = |e| HubError::io(incomplete, e);
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(incomplete)
            .map_err(io_err)?;
        let mut have = out.metadata().map_err(io_err)?.len();
        if have > meta.size {
            out.set_len(0).map_err(io_err)?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        if have > 0 {
            hash_prefix(&mut out, have, &mut hasher).map_err(io_err)?;
        }
        out.seek(SeekFrom::Start(have)).map_err(io_err)?;
        self.progress.start(file, meta.size, have);

        let mut location = meta.location.clone();
        let mut refreshed = false;
        let mut attempt = 1;
        let mut buf = vec![0u8; 1 << 20];
        while have < meta.size {
            let before = have;
            let failure = match self.client.open(&location, have) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if have > 0 && status == 200 {
                        // The server ignored Range: start over rather than append a whole copy.
                        out.set_len(0).map_err(io_err)?;
                        out.seek(SeekFrom::Start(0)).map_err(io_err)?;
                        hasher = Sha256::new();
                        have = 0;
                        self.progress.start(file, meta.size, 0);
                    } else if status == 206 && !range_starts_at(&resp, have) {
                        return Err(HubError::BadResponse {
                            what: format!("{}/{file}", self.cache.repo),
                            detail: format!("the server did not resume at byte {have}"),
                        });
                    }
                    let mut body = resp.into_body().into_reader();
                    match copy_body(
                        &mut body,
                        &mut out,
                        &mut hasher,
                        &mut buf,
                        &mut have,
                        meta.size,
                        &mut *self.progress,
                    ) {
                        Ok(true) => None,
                        Ok(false) => Some(Failure::net(
                            "the connection closed before the end of the file",
                        )),
                        Err(CopyError::Disk(e)) => return Err(io_err(e)),
                        Err(CopyError::TooLong) => {
                            return Err(HubError::SizeMismatch {
                                repo: self.cache.repo.clone(),
                                file: file.to_string(),
                                expected: meta.size,
                            })
                        }
                        Err(CopyError::Net(e)) => Some(Failure::net(e.to_string())),
                        // What arrived stays, for the next attempt to resume.
                        Err(CopyError::Cancelled) => {
                            return Err(HubError::Cancelled {
                                repo: self.cache.repo.clone(),
                                file: file.to_string(),
                            })
                        }
                    }
                }
                Err(f) => Some(f),
            };
            let Some(failure) = failure else { continue };
            if have > before {
                attempt = 1; // progress was made: this is a new run of attempts
            }
            let expired = matches!(
                failure,
                Failure::Status {
                    status: 401 | 403 | 404 | 410,
                    ..
                }
            );
            if expired && !refreshed {
                // A signed CDN URL can expire during a long download: ask the hub again.
                refreshed = true;
                location = self
                    .client
                    .file_meta(&self.cache.repo, self.commit, file)?
                    .location;
                continue;
            }
            if !failure.retryable() || attempt >= MAX_ATTEMPTS {
                let what = format!("{}/{file}", self.cache.repo);
                return Err(self
                    .client
                    .error(&self.cache.repo, &what, (failure, attempt)));
            }
            if have == before {
                std::thread::sleep(failure.backoff(attempt));
            }
            attempt += 1;
        }
        out.sync_all().map_err(io_err)?;
        drop(out);
        verify(&self.cache.repo, file, meta, hasher)
    }
}

enum CopyError {
    Net(io::Error),
    Disk(io::Error),
    TooLong,
    Cancelled,
}

/// Copies a response body into the file; `Ok(true)` when the file is complete.
#[allow(clippy::too_many_arguments)]
fn copy_body(
    body: &mut impl Read,
    out: &mut File,
    hasher: &mut Sha256,
    buf: &mut [u8],
    have: &mut u64,
    size: u64,
    progress: &mut dyn Progress,
) -> Result<bool, CopyError> {
    loop {
        let n = match body.read(buf) {
            Ok(0) => return Ok(*have == size),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Net(e)),
        };
        if *have + n as u64 > size {
            return Err(CopyError::TooLong);
        }
        out.write_all(&buf[..n]).map_err(CopyError::Disk)?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        progress.advance(n as u64);
        if progress.cancelled() {
            return Err(CopyError::Cancelled);
        }
    }
}

fn range_starts_at(resp: &ureq::http::Response<ureq::Body>, offset: u64) -> bool {
    resp.headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|start| start == offset)
}

fn hash_prefix(file: &mut File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let copied = io::copy(&mut file.take(len), &mut HashWriter(hasher))?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the partial download shrank while being read",
        ));
    }
    Ok(())
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// LFS files are named by their SHA-256: the bytes must hash to it. (Other files are named by
/// their git blob id, which is only checked by size.)
fn verify(repo: &str, file: &str, meta: &FileMeta, hasher: Sha256) -> Result<(), HubError> {
    let is_sha256 = meta.etag.len() == 64 && meta.etag.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_sha256 {
        return Ok(());
    }
    let actual = hex(&hasher.finalize());
    if actual.eq_ignore_ascii_case(&meta.etag) {
        Ok(())
    } else {
        Err(HubError::ChecksumMismatch {
            repo: repo.to_string(),
            file: file.to_string(),
            expected: meta.etag.clone(),
            actual,
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes huggingface_hub's lock for one blob (`.locks/models--…/<etag>.lock`, flock), waiting
/// while another process holds it. Filesystems without locks proceed unlocked, as Python's
/// `WeakFileLock` does.
pub(crate) fn lock(path: &Path) -> Result<File, HubError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| HubError::io(path, e))?;
    loop {
        match fs4::FileExt::try_lock(&file) {
            Ok(()) | Err(fs4::TryLockError::Error(_)) => return Ok(file),
            Err(fs4::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Refuses to start when the disk holding the cache has less than `needed` bytes free.
fn check_disk_space(cache: &RepoCache, needed: u64) -> Result<(), HubError> {
    let dir = cache.root.join("blobs");
    fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
    let Ok(available) = fs4::available_space(&dir) else {
        return Ok(()); // unknown: let the writes tell
    };
    check_space(&cache.repo, &dir, needed, available)
}

/// The comparison of [`check_disk_space`], on given numbers.
pub(crate) fn check_space(
    repo: &str,
    dir: &Path,
    needed: u64,
    available: u64,
) -> Result<(), HubError> {
    if needed > available {
        Err(HubError::DiskFull {
            repo: repo.to_string(),
            needed,
            available,
            dir: dir.to_path_buf(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_says_how_much_and_where() {
        let err = check_space(
            "FreedomIntelligence/HuatuoGPT-Vision-34B",
            Path::new("/cache/blobs"),
            69_000_000_000,
            10_000_000_000,
        )
        .expect_err("not enough");
        let msg = err.to_string();
        assert!(msg.contains("69.0 GB"), "{msg}");
        assert!(msg.contains("10.0 GB"), "{msg}");
        assert!(msg.contains("/cache/blobs"), "{msg}");
        assert!(msg.contains("HF_HUB_CACHE"), "{msg}");
        assert!(check_space("r", Path::new("/c"), 5, 5).is_ok());
    }
}
