//! What an answer was computed with, for issue 14's reproducibility record: huatuo's version
//! and commit ([`build_info`]), and the SHA-256 of every file of the checkpoint that inference
//! reads ([`checkpoint_files`]) or of one file such as the quantized cache ([`file_hash`]).
//! Plain data and file reads only: no model, no terminal, no environment (the caller passes
//! the cache directory, `crate::config::Dirs::cache`).
//!
//! A digest comes from the cheapest source that is still the file's SHA-256:
//!
//! 1. **The hub's name for it.** A file whose real path (symlinks resolved) is
//!    `…/models--org--name/blobs/<64 hex>` is an LFS blob of a Hugging Face cache
//!    (`src/hub/cache.rs`), and its name *is* the SHA-256 of its content: the hub computed it on
//!    upload, and huatuo's downloader checks the bytes against it before the blob exists
//!    (`hub::download::verify`; blobs written by Python's `huggingface_hub` carry the same
//!    name). The file is not read, so it is the hub's verified hash, not a check of the disk.
//!    Small files are stored by git, and their blobs are named by git's SHA-1 (40 hex): those
//!    are hashed, they are a few kB.
//! 2. **The hash cache** `<cache dir>/hashes.json`: canonical path → size, mtime (ns) and
//!    SHA-256, reused while size and mtime are unchanged. A file modified less than
//!    [`RACY_SECS`] before it was hashed is not recorded (a write in the same timestamp tick
//!    could keep both; git's "racily clean" problem). The cache is written to a temporary
//!    file renamed over it, merged with what is on disk at that moment; a missing, corrupt or
//!    unwritable cache is treated as empty and never fails the caller.
//! 3. **Hashing** the file, streamed in 1 MiB reads.
//!
//! Cost, measured with `cargo test --lib provenance::tests::hashing_speed -- --ignored
//! --nocapture` (sha2 0.10 using the CPU's SHA extensions; dependencies are built at
//! opt-level 3 even in dev builds) on the 2-core Xeon VM this was written on, a 1 GiB file in
//! the page cache: 0.6 s of CPU (about 1.8 GB/s), 0.95-1.5 s of wall time (0.7-1.1 GB/s) on
//! the shared, loaded machine. So the 7B's 15 GB of shards would take 10-20 s from memory, and
//! as long as the disk needs to deliver them when cold. A hub snapshot costs nothing (its
//! shards are named by their hash), and a second call on a local directory or on the quantized
//! cache file costs one `stat` per file plus reading `hashes.json`: 30 us in that test.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hub::manifest;
use crate::model::checkpoint::vision_subdir;
pub use crate::protocol::FileHash;

/// Files modified this recently (seconds) are hashed but not recorded in the hash cache: some
/// filesystems keep whole-second (FAT: two-second) timestamps.
pub const RACY_SECS: u64 = 2;

/// The name of the hash cache inside the cache directory.
pub const HASH_CACHE_FILE: &str = "hashes.json";

/// Which huatuo computed an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// `Cargo.toml`'s version.
    pub version: &'static str,
    /// `git rev-parse HEAD` at build time, with `-dirty` when the work tree had changes; `None`
    /// when not built from a git checkout (see `build.rs`).
    pub git_commit: Option<&'static str>,
}

/// This binary's version and commit.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("HUATUO_GIT_COMMIT"),
    }
}

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("cannot hash {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid {path}: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
}

impl ProvenanceError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The hash of every file of the checkpoint in `dir` that inference reads, sorted by name:
/// config.json, generation_config.json and the tokenizer files when present, the shard index
/// and every shard it lists (or a lone model.safetensors), and the vision tower's
/// config.json and preprocessor_config.json (huatuo-reference.md §1.6, the files
/// `hub::manifest` downloads). `hash_cache` is the directory holding `hashes.json`; `None`
/// hashes every file that is not a hub blob.
pub fn checkpoint_files(
    dir: &Path,
    hash_cache: Option<&Path>,
) -> Result<Vec<FileHash>, ProvenanceError> {
    let names = checkpoint_file_names(dir)?;
    let mut cache = HashCache::load(hash_cache);
    let files = names
        .into_iter()
        .map(|name| {
            let path = name.split('/').fold(dir.to_path_buf(), |p, c| p.join(c));
            let (size, sha256) = hash(&path, &mut cache)?;
            Ok(FileHash { name, size, sha256 })
        })
        .collect::<Result<Vec<_>, _>>();
    cache.save();
    files
}

/// The hash of one file (the quantized cache of `model::gguf`, several GB), through the same
/// sources as [`checkpoint_files`]; `name` is the file's name.
pub fn file_hash(path: &Path, hash_cache: Option<&Path>) -> Result<FileHash, ProvenanceError> {
    let mut cache = HashCache::load(hash_cache);
    let result = hash(path, &mut cache);
    cache.save();
    let (size, sha256) = result?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(FileHash { name, size, sha256 })
}

/// The relative names of the files [`checkpoint_files`] hashes. Missing optional files are
/// left out; the index's shards and the vision configs must exist (the model cannot load
/// without them), which the hashing then reports.
fn checkpoint_file_names(dir: &Path) -> Result<Vec<String>, ProvenanceError> {
    let config_path = dir.join("config.json");
    let config = read_json(&config_path)?;
    let vision = vision_subdir(
        config
            .get("mm_vision_tower")
            .and_then(serde_json::Value::as_str),
    );
    let mut names: Vec<String> = manifest::SMALL_FILES
        .iter()
        .filter(|f| **f == "config.json" || dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    let index_path = dir.join(manifest::INDEX);
    if index_path.is_file() {
        let shards = manifest::shards(&read_json(&index_path)?).map_err(|reason| {
            ProvenanceError::BadCheckpoint {
                path: index_path.clone(),
                reason,
            }
        })?;
        names.extend(shards);
    } else {
        names.push("model.safetensors".to_string());
    }
    names.push(format!("{vision}/config.json"));
    names.push(format!("{vision}/preprocessor_config.json"));
    names.sort();
    names.dedup();
    Ok(names)
}

fn read_json(path: &Path) -> Result<serde_json::Value, ProvenanceError> {
    let text = fs::read_to_string(path).map_err(ProvenanceError::io(path))?;
    serde_json::from_str(&text).map_err(|e| ProvenanceError::BadCheckpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `(size, sha256)` of the file at `path`, from the cheapest source (see the module docs).
fn hash(path: &Path, cache: &mut HashCache) -> Result<(u64, String), ProvenanceError> {
    let err = ProvenanceError::io;
    let real = fs::canonicalize(path).map_err(err(path))?;
    let meta = fs::metadata(&real).map_err(err(path))?;
    if !meta.is_file() {
        return Err(err(path)(io::Error::other("not a regular file")));
    }
    if let Some(sha256) = hub_blob_sha256(&real) {
        return Ok((meta.len(), sha256));
    }
    let key = real.to_string_lossy().into_owned();
    let stamp = Stamp::of(&meta);
    if let Some(sha256) = stamp.and_then(|s| cache.get(&key, s)) {
        return Ok((meta.len(), sha256));
    }
    let (size, sha256) = sha256_file(&real).map_err(err(path))?;
    // Record only what was hashed from a file that did not change meanwhile and is not racy.
    let after = fs::metadata(&real).ok().and_then(|m| Stamp::of(&m));
    if let Some(s) = stamp.filter(|s| Some(*s) == after && s.size == size && !s.is_racy()) {
        cache.insert(key, s, sha256.clone());
    }
    Ok((size, sha256))
}

/// The SHA-256 a Hugging Face cache blob is named by: `real` is `…/models--*/blobs/<64 hex>`.
fn hub_blob_sha256(real: &Path) -> Option<String> {
    let name = real.file_name()?.to_str()?;
    let blobs = real.parent()?;
    let repo = blobs.parent()?.file_name()?.to_str()?;
    let is_sha256 = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    (is_sha256 && blobs.file_name()? == "blobs" && repo.starts_with("models--"))
        .then(|| name.to_ascii_lowercase())
}

/// Streams `path` through SHA-256 in 1 MiB reads: `(bytes read, lowercase hex digest)`.
fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What identifies a file's version for the hash cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: u64,
}

impl Stamp {
    /// `None` when the filesystem gives no usable modification time: such files are never
    /// cached.
    fn of(meta: &fs::Metadata) -> Option<Self> {
        let since_epoch = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Self {
            size: meta.len(),
            mtime_ns: u64::try_from(since_epoch.as_nanos()).ok()?,
        })
    }

    /// Modified within [`RACY_SECS`] of now (or in the future): a later write could keep the
    /// same size and timestamp.
    fn is_racy(&self) -> bool {
        let mtime = UNIX_EPOCH + Duration::from_nanos(self.mtime_ns);
        SystemTime::now()
            .duration_since(mtime)
            .map_or(true, |age| age < Duration::from_secs(RACY_SECS))
    }
}

/// One entry of `hashes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

/// `hashes.json`: `{"version": 1, "files": {canonical path: entry}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    files: BTreeMap<String, CacheEntry>,
}

const CACHE_VERSION: u32 = 1;

/// The hash cache of one call: what `hashes.json` held when it started, and what this call
/// hashed, to be merged into the file by [`HashCache::save`].
struct HashCache {
    path: Option<PathBuf>,
    known: BTreeMap<String, CacheEntry>,
    new: BTreeMap<String, CacheEntry>,
}

impl HashCache {
    fn load(dir: Option<&Path>) -> Self {
        let path = dir.map(|d| d.join(HASH_CACHE_FILE));
        let known = path.as_deref().map(read_cache).unwrap_or_default();
        Self {
            path,
            known,
            new: BTreeMap::new(),
        }
    }

    fn get(&self, key: &str, stamp: Stamp) -> Option<String> {
        self.known
            .get(key)
            .filter(|e| e.size == stamp.size && e.mtime_ns == stamp.mtime_ns)
            .map(|e| e.sha256.clone())
    }

    fn insert(&mut self, key: String, stamp: Stamp, sha256: String) {
        let entry = CacheEntry {
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            sha256,
        };
        self.known.insert(key.clone(), entry.clone());
        self.new.insert(key, entry);
    }

    /// Merges this call's hashes into the file as it is now (another process may have written
    /// it meanwhile), drops entries of files that no longer exist, and replaces the file
    /// atomically. Best effort: a cache that cannot be written only costs a rehash next time.
    fn save(self) {
        let Some(path) = self.path.filter(|_| !self.new.is_empty()) else {
            return;
        };
        let mut files = read_cache(&path);
        files.extend(self.new);
        files.retain(|p, _| Path::new(p).exists());
        let file = CacheFile {
            version: CACHE_VERSION,
            files,
        };
        let _ = write_atomically(&path, &file);
    }
}

/// The entries of the cache file at `path`; empty when it is missing, unreadable, corrupt
/// (a crash cannot leave it half-written, but a person can) or of another version.
fn read_cache(path: &Path) -> BTreeMap<String, CacheEntry> {
    fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
        .filter(|c| c.version == CACHE_VERSION)
        .map(|c| c.files)
        .unwrap_or_default()
}

/// Writes `value` as JSON to a temporary file beside `path` and renames it over `path`, so
/// that readers see the old file or the new one, never a part.
fn write_atomically(path: &Path, value: &CacheFile) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // Unique per process and call: concurrent writers never share a temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{HASH_CACHE_FILE}.{}.{n}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let written = fs::write(&tmp, json).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("abc"), from FIPS 180-2 (and `printf abc | sha256sum`).
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    /// `printf abd | sha256sum`.
    const ABD: &str = "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9";
    /// `printf abcd | sha256sum`.
    const ABCD: &str = "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589";

    const VIT: &str = "vit/clip_vit_large_patch14_336";

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, bytes).expect("write");
    }

    /// Sets `path`'s mtime an hour back, out of the racy window, and returns it.
    fn age(path: &Path) -> SystemTime {
        let t = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
        t
    }

    /// The files of a checkpoint with two shards, as `(name, content)`, plus files inference
    /// does not read (README.md, the tower's own weights), which must not be listed.
    fn layout() -> Vec<(String, Vec<u8>)> {
        let config = format!(r#"{{"model_type": "llava_qwen2", "mm_vision_tower": "./{VIT}"}}"#);
        let index = r#"{"weight_map": {"a": "model-00002-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
        [
            ("config.json", config.as_bytes()),
            ("tokenizer.json", b"{}"),
            ("generation_config.json", b"{}"),
            ("model.safetensors.index.json", index.as_bytes()),
            ("model-00001-of-00002.safetensors", b"abc"),
            ("model-00002-of-00002.safetensors", b"abcd"),
            (&format!("{VIT}/config.json"), b"{}"),
            (&format!("{VIT}/preprocessor_config.json"), b"{}"),
            (&format!("{VIT}/pytorch_model.bin"), b"tower"),
            ("README.md", b"readme"),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c.to_vec()))
        .collect()
    }

    const LISTED: [&str; 8] = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "vit/clip_vit_large_patch14_336/config.json",
        "vit/clip_vit_large_patch14_336/preprocessor_config.json",
    ];

    #[test]
    fn build_info_has_the_version_and_maybe_a_commit() {
        let info = build_info();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        // Set or not depending on how the crate was built: only its shape is checked.
        if let Some(commit) = info.git_commit {
            let sha = commit.strip_suffix("-dirty").unwrap_or(commit);
            assert!(
                [40, 64].contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{commit}"
            );
        }
    }

    #[test]
    fn local_directory_files_are_hashed_and_listed_by_relative_name() {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, content) in layout() {
            write(&dir.path().join(&name), &content);
        }
        let files = checkpoint_files(dir.path(), None).expect("hash");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, LISTED);
        let shard = |i: usize| &files[i];
        assert_eq!((shard(2).size, shard(2).sha256.as_str()), (3, ABC));
        assert_eq!((shard(3).size, shard(3).sha256.as_str()), (4, ABCD));
        assert!(files.iter().all(|f| f.sha256.len() == 64));
    }

    #[test]
    fn a_lone_model_safetensors_and_present_tokenizer_files_only() {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, content) in [
            ("config.json", &b"{}"[..]),
            ("model.safetensors", b"abc"),
            ("vocab.json", b"{}"),
            ("merges.txt", b""),
            ("vit/clip_vit_large_patch14_336/config.json", b"{}"),
            (
                "vit/clip_vit_large_patch14_336/preprocessor_config.json",
                b"{}",
            ),
        ] {
            write(&dir.path().join(name), content);
        }
        let files = checkpoint_files(dir.path(), None).expect("hash");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config.json",
                "merges.txt",
                "model.safetensors",
                "vit/clip_vit_large_patch14_336/config.json",
                "vit/clip_vit_large_patch14_336/preprocessor_config.json",
                "vocab.json",
            ]
        );
    }

    #[test]
    fn missing_or_unsafe_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = checkpoint_files(dir.path(), None).expect_err("no config");
        assert!(err.to_string().contains("config.json"), "{err}");
        for (name, content) in layout() {
            write(&dir.path().join(&name), &content);
        }
        fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).expect("rm");
        let err = checkpoint_files(dir.path(), None).expect_err("no shard");
        assert!(
            err.to_string().contains("model-00002-of-00002.safetensors"),
            "{err}"
        );
        write(
            &dir.path().join("model.safetensors.index.json"),
            br#"{"weight_map": {"a": "../../etc/passwd"}}"#,
        );
        let err = checkpoint_files(dir.path(), None).expect_err("unsafe");
        assert!(err.to_string().contains("unsafe shard path"), "{err}");
    }

    /// A Hugging Face cache in the layout of `hub::cache`: LFS files (the shards) as blobs
    /// named by a sha256, small files by a 40-hex git id, snapshot entries as relative links.
    #[cfg(unix)]
    #[test]
    fn hub_blobs_are_named_by_their_sha256_and_not_read() {
        let cache = tempfile::tempdir().expect("tmp");
        let repo = cache
            .path()
            .join("models--FreedomIntelligence--HuatuoGPT-Vision-7B");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = repo.join("snapshots").join(commit);
        // A shard's blob whose content is NOT what its name says: the name is reported all
        // the same, which proves the file is not read. The name is the hub's hash, verified
        // against the bytes when huatuo downloaded it.
        let lied = "f".repeat(64);
        for (name, content) in layout() {
            let lfs = name.ends_with(".safetensors");
            let digest = hex(&Sha256::digest(&content));
            let etag = match (lfs, name.starts_with("model-00002")) {
                (true, true) => lied.clone(),
                (true, false) => digest,
                (false, _) => digest[..40].to_string(),
            };
            write(&repo.join("blobs").join(&etag), &content);
            let pointer = snapshot.join(&name);
            fs::create_dir_all(pointer.parent().expect("parent")).expect("mkdir");
            let up = "../".repeat(name.split('/').count() + 1);
            std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &pointer).expect("link");
        }
        let files = checkpoint_files(&snapshot, None).expect("hash");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, LISTED);
        assert_eq!((files[2].size, files[2].sha256.as_str()), (3, ABC));
        assert_eq!(
            (files[3].size, files[3].sha256.as_str()),
            (4, lied.as_str())
        );
        // A git-named (40 hex) blob is hashed: its name is not a sha256.
        assert_eq!(files[0].sha256, hex(&Sha256::digest(&layout()[0].1)));
        // The same through file_hash, by the blob's own path too.
        let shard = file_hash(&snapshot.join("model-00002-of-00002.safetensors"), None);
        let shard = shard.expect("hash");
        assert_eq!(
            (shard.name.as_str(), shard.sha256.as_str()),
            ("model-00002-of-00002.safetensors", lied.as_str())
        );
        let blob = file_hash(&repo.join("blobs").join(&lied), None).expect("hash");
        assert_eq!(blob.sha256, lied);
    }

    #[test]
    fn the_hash_cache_is_used_while_size_and_mtime_are_unchanged() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cache = tmp.path().join("cache");
        let file = tmp.path().join("model.q4_k.gguf");
        write(&file, b"abc");
        let mtime = age(&file);
        let first = file_hash(&file, Some(&cache)).expect("hash");
        assert_eq!(
            (first.name.as_str(), first.size, first.sha256.as_str()),
            ("model.q4_k.gguf", 3, ABC)
        );
        let cached: CacheFile =
            serde_json::from_slice(&fs::read(cache.join(HASH_CACHE_FILE)).expect("written"))
                .expect("json");
        let key = file.canonicalize().expect("canonical");
        assert_eq!(cached.files[key.to_str().expect("utf-8")].sha256, ABC);

        // Same size and mtime, other bytes: the cached hash is returned (this is what makes a
        // second call free, and why only size and mtime are trusted).
        write(&file, b"abd");
        File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(mtime))
            .expect("restore mtime");
        assert_eq!(file_hash(&file, Some(&cache)).expect("hash").sha256, ABC);
        // Without the cache it is hashed.
        assert_eq!(file_hash(&file, None).expect("hash").sha256, ABD);

        // Another size: rehashed, and the cache updated.
        write(&file, b"abcd");
        age(&file);
        assert_eq!(file_hash(&file, Some(&cache)).expect("hash").sha256, ABCD);
        write(&file, b"abc!");
        File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(mtime + Duration::from_secs(1)))
            .expect("mtime");
        assert_eq!(
            file_hash(&file, Some(&cache)).expect("hash").sha256,
            hex(&Sha256::digest(b"abc!"))
        );
    }

    #[test]
    fn a_file_modified_just_now_is_not_cached() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("f");
        write(&file, b"abc");
        assert_eq!(
            file_hash(&file, Some(tmp.path())).expect("hash").sha256,
            ABC
        );
        // Rewritten within the same timestamp tick, size unchanged: still seen.
        write(&file, b"abd");
        assert_eq!(
            file_hash(&file, Some(tmp.path())).expect("hash").sha256,
            ABD
        );
        assert!(!tmp.path().join(HASH_CACHE_FILE).exists());
    }

    #[test]
    fn a_corrupt_or_unwritable_hash_cache_is_ignored() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("f");
        write(&file, b"abc");
        age(&file);
        let cache = tmp.path().join("cache");
        let cache_file = cache.join(HASH_CACHE_FILE);
        for corrupt in [&b"{\"version\": 1, \"files\": {"[..], b"\0\xff", b"[]", b""] {
            write(&cache_file, corrupt);
            assert_eq!(file_hash(&file, Some(&cache)).expect("hash").sha256, ABC);
            // Rewritten whole, with the entry.
            assert_eq!(read_cache(&cache_file).len(), 1);
        }
        // An entry of another format version is not trusted.
        let other = br#"{"version": 0, "files": {}}"#;
        write(&cache_file, other);
        assert!(read_cache(&cache_file).is_empty());
        // A cache "directory" that is a file: hashing still works.
        let not_a_dir = tmp.path().join("f");
        assert_eq!(
            file_hash(&file, Some(&not_a_dir)).expect("hash").sha256,
            ABC
        );
        assert_eq!(fs::read(&file).expect("read"), b"abc");
    }

    #[test]
    fn saving_merges_with_the_file_on_disk_and_drops_deleted_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b, gone) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("gone"),
        );
        for f in [&a, &b, &gone] {
            write(f, b"abc");
            age(f);
        }
        // Two callers that loaded the cache before either saved.
        let (mut one, mut two) = (
            HashCache::load(Some(tmp.path())),
            HashCache::load(Some(tmp.path())),
        );
        hash(&a, &mut one).expect("a");
        hash(&gone, &mut one).expect("gone");
        hash(&b, &mut two).expect("b");
        one.save();
        fs::remove_file(&gone).expect("rm");
        two.save();
        let files = read_cache(&tmp.path().join(HASH_CACHE_FILE));
        let keys: Vec<PathBuf> = files.keys().map(PathBuf::from).collect();
        let canonical = |p: &Path| p.canonicalize().expect("canonical");
        assert_eq!(keys, [canonical(&a), canonical(&b)]);
        let leftovers = fs::read_dir(tmp.path()).expect("ls").count();
        assert_eq!(leftovers, 3, "a, b and hashes.json, no temporary files");
    }

    /// Prints SHA-256 throughput on a 1 GiB file (the number in the module docs); no timing
    /// is asserted. `cargo test --release --lib provenance::tests::hashing_speed -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "writes 1 GiB; a measurement, not a check"]
    fn hashing_speed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("big");
        let chunk: Vec<u8> = (0..1u32 << 20)
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        {
            use std::io::Write;
            let mut f = io::BufWriter::new(File::create(&file).expect("create"));
            for _ in 0..1024 {
                f.write_all(&chunk).expect("write");
            }
        }
        age(&file);
        let start = std::time::Instant::now();
        let first = file_hash(&file, Some(tmp.path())).expect("hash");
        let hashing = start.elapsed();
        let start = std::time::Instant::now();
        let second = file_hash(&file, Some(tmp.path())).expect("hash");
        let cached = start.elapsed();
        assert_eq!(first, second);
        let mb_s = first.size as f64 / 1e6 / hashing.as_secs_f64();
        println!("1 GiB: hashed in {hashing:?} ({mb_s:.0} MB/s), from the cache in {cached:?}");
    }
}
