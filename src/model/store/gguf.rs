//! The quantized cache (issue 6): a checkpoint's bf16 safetensors shards converted once to a
//! GGUF file, which later loads read back instead of the shards.
//!
//! - **Key.** One file per checkpoint *slot* and quantization: the slot is the Hugging Face
//!   repo when the checkpoint is a hub snapshot (`…/models--org--name/snapshots/<rev>/`), else
//!   the checkpoint's canonical path. The file records the source's full identity (revision
//!   or path, config.json hash, each shard's name and blob or size+mtime): when that changes
//!   (a new revision, a re-downloaded shard) the file is rebuilt in place, so stale copies
//!   never pile up.
//! - **Streaming conversion.** Tensors are converted one after another, each in row chunks
//!   read with positioned reads (never the whole f32 model, nor a whole f32 tensor: the 7B's
//!   embedding table would be 2.2 GB), quantized in parallel on every core, and written in
//!   order to a temporary file that is renamed over the cache file only once complete.
//! - **Validation.** A file whose header does not parse, whose metadata (format version,
//!   quantization, source identity) differs, whose size differs from what its tensor table
//!   implies (truncated, or grown), or one of whose tensors' bytes no longer hash to the
//!   checksum recorded when it was written (`huatuo.checksums`: XXH3-64 per tensor) is
//!   rebuilt, never loaded. The checksums are checked right after writing, at every load
//!   and by `huatuo verify`: about 16 GB/s on a 2-core CPU with the pages in memory
//!   (`examples/gguf_checksum.rs`: 0.23-0.26 s for a synthetic 4 GB file), so about 0.5 s
//!   for the 7B's 8 GB of q8_0; from a cold disk the read dominates, and the load reads
//!   those pages anyway.
//! - **Reading.** The file is memory-mapped; on a CPU the blocks the kernels read as they
//!   are stay in its pages ([`read`]).
//!
//! - **Partial files.** A conversion writes `<file>.tmp-<pid>-<nanos>` (0.7–8 GB) and
//!   renames it when done. This process removes its own on exit, including after Ctrl-C
//!   ([`Partial`]); one left by a killed process (`kill -9`, a crash, power loss) is
//!   removed by the next [`ensure`] in the same folder once its writer is gone, so it
//!   never lingers nor counts against the free-space check.
//!
//! The conversion itself is [`super::gguf_write`].

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use candle_core::quantized::gguf_file;
use candle_core::Device;
use sha2::{Digest, Sha256};

use super::gguf_write;
use super::mapped::MappedFile;
use super::quant::{ConvertProgress, WeightLayout};
use super::weights::TensorMap;
use crate::model::checkpoint::Checkpoint;
use crate::model::linear::QWeight;
use crate::model::ModelError;
use crate::protocol::Quant;

/// Bumped whenever the file layout or the tensor-type policy changes, which invalidates
/// every cache file.
pub const FORMAT_VERSION: u32 = 2;
/// The metadata key of the per-tensor checksums (an array of u64, in tensor-table order).
pub(crate) const CHECKSUMS_KEY: &str = "huatuo.checksums";
pub(crate) const ALIGNMENT: u64 = 32;

/// What [`ensure`] found or did.
#[derive(Debug, Clone)]
pub struct CacheFile {
    pub path: PathBuf,
    /// The source identity recorded in (and checked against) the file.
    pub identity: String,
    /// Whether this call wrote the file.
    pub converted: bool,
    /// Why an existing file was not reused.
    pub rebuilt_because: Option<String>,
}

/// The cache file for `ckpt` at `quant` in `cache_dir`, converting the shards first when it
/// is missing, stale or damaged. `progress` is called after each converted chunk group.
pub fn ensure(
    ckpt: &Checkpoint,
    quant: Quant,
    cache_dir: &Path,
    progress: &dyn Fn(ConvertProgress),
) -> Result<CacheFile, ModelError> {
    if quant.ggml().is_none() {
        return Err(ModelError::BadConfig {
            path: ckpt.dir.clone(),
            reason: "quantized cache requested without a quantization".into(),
        });
    }
    remove_dead_partials(cache_dir);
    let identity = source_identity(ckpt)?;
    let path = cache_path(ckpt, quant, cache_dir);
    let rebuilt_because = match check(&path, quant, &identity) {
        Ok(()) => {
            return Ok(CacheFile {
                path,
                identity,
                converted: false,
                rebuilt_because: None,
            })
        }
        Err(Stale::Missing(_)) => None,
        Err(Stale::Reason(r)) => Some(r),
    };
    gguf_write::convert(ckpt, quant, &identity, &path, progress)?;
    // Read back what was written: a disk or filesystem that returns other bytes than it
    // was given is caught now, not by a wrong answer later.
    if let Err(Stale::Reason(r) | Stale::Missing(r)) = check(&path, quant, &identity) {
        return Err(ModelError::BadConfig {
            path: path.clone(),
            reason: format!("the quantized cache file just written reads back damaged: {r}"),
        });
    }
    Ok(CacheFile {
        path,
        identity,
        converted: true,
        rebuilt_because,
    })
}

/// `<cache_dir>/<label>-<hash of the slot>.<quant>.gguf`.
pub fn cache_path(ckpt: &Checkpoint, quant: Quant, cache_dir: &Path) -> PathBuf {
    let dir = ckpt.dir.canonicalize().unwrap_or_else(|_| ckpt.dir.clone());
    let (label, slot) = match hub_snapshot(&dir) {
        Some((repo, _)) => (repo.replace('/', "--"), format!("hub:{repo}")),
        None => (
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
            format!("dir:{}", dir.display()),
        ),
    };
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache_dir.join(format!(
        "{}.{}.gguf",
        file_stem(&label, &slot),
        quant.name()
    ))
}

/// `<label>-<hash of the slot>`, where `label` is already made of safe characters.
fn file_stem(label: &str, slot: &str) -> String {
    let hash = hex(&Sha256::digest(slot.as_bytes()))[..12].to_string();
    format!("{label}-{hash}")
}

/// The cache files of hub repo `repo` in `cache_dir`, one per quantization converted
/// (what `huatuo verify` checks besides the repo's own files).
pub fn hub_cache_files(cache_dir: &Path, repo: &str) -> Vec<PathBuf> {
    let stem = file_stem(&repo.replace('/', "--"), &format!("hub:{repo}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(&stem)
                    .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".gguf"))
            })
        })
        .collect();
    files.sort();
    files
}

/// `(org/name, revision)` of a Hugging Face cache snapshot directory.
fn hub_snapshot(dir: &Path) -> Option<(String, String)> {
    let rev = dir.file_name()?.to_str()?.to_string();
    let snapshots = dir.parent()?;
    if snapshots.file_name()?.to_str()? != "snapshots" {
        return None;
    }
    let repo = snapshots.parent()?.file_name()?.to_str()?;
    let repo = repo.strip_prefix("models--")?.replacen("--", "/", 1);
    Some((repo, rev))
}

/// Everything that, when it changes, makes a cache file stale: the hub repo and revision
/// (or the canonical path), the config.json bytes, the tensor-type policy version, and for
/// each shard its name and either its blob (hub snapshots link to content-addressed blobs)
/// or its size and modification time.
pub fn source_identity(ckpt: &Checkpoint) -> Result<String, ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    let dir = ckpt.dir.canonicalize().map_err(io(&ckpt.dir))?;
    let mut id = format!("huatuo-quant v{FORMAT_VERSION}\n");
    match hub_snapshot(&dir) {
        Some((repo, rev)) => id.push_str(&format!("hub {repo} @ {rev}\n")),
        None => id.push_str(&format!("dir {}\n", dir.display())),
    }
    let config = ckpt.dir.join("config.json");
    let bytes = std::fs::read(&config).map_err(io(&config))?;
    id.push_str(&format!("config.json {}\n", hex(&Sha256::digest(&bytes))));
    for shard in &ckpt.shards {
        let name = shard
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = std::fs::metadata(shard).map_err(io(shard))?;
        match std::fs::read_link(shard) {
            Ok(target) => id.push_str(&format!(
                "shard {name} -> {} ({} bytes)\n",
                target.display(),
                meta.len()
            )),
            Err(_) => {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                id.push_str(&format!(
                    "shard {name} {} bytes mtime {mtime}\n",
                    meta.len()
                ));
            }
        }
    }
    Ok(id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a cache file cannot be used as it is.
enum Stale {
    Missing(String),
    Reason(String),
}

/// Checks the header, the metadata and the size of a cache file.
fn check(path: &Path, quant: Quant, identity: &str) -> Result<(), Stale> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Stale::Missing("it does not exist".into()))
        }
        Err(e) => return Err(Stale::Reason(format!("cannot open it: {e}"))),
    };
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| Stale::Reason(format!("its header is damaged: {e}")))?;
    let text = |key: &str| match content.metadata.get(key) {
        Some(gguf_file::Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    match content.metadata.get("huatuo.format") {
        Some(gguf_file::Value::U32(v)) if *v == FORMAT_VERSION => {}
        _ => {
            return Err(Stale::Reason(
                "it was written by another huatuo version".into(),
            ))
        }
    }
    if text("huatuo.quant") != Some(quant.name()) {
        return Err(Stale::Reason("it holds another quantization".into()));
    }
    if text("huatuo.source") != Some(identity) {
        return Err(Stale::Reason(
            "the checkpoint changed since it was written (revision, shards or config)".into(),
        ));
    }
    check_data(path, &file, &content).map_err(Stale::Reason)
}

/// Checks a cache file on its own (no checkpoint at hand, for `huatuo verify`): its header,
/// its format version, its size and every tensor's checksum. `Err` says what is wrong.
pub fn verify_file(path: &Path) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| format!("its header is damaged: {e}"))?;
    match content.metadata.get("huatuo.format") {
        Some(gguf_file::Value::U32(v)) if *v == FORMAT_VERSION => {}
        _ => return Err("it was written by another huatuo version (it will be rebuilt)".into()),
    }
    check_data(path, &file, &content)
}

/// The size a file's tensor table implies, then each tensor's checksum.
fn check_data(path: &Path, file: &File, content: &gguf_file::Content) -> Result<(), String> {
    let expected = expected_len(content)?;
    let actual = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?
        .len();
    if actual != expected {
        return Err(format!(
            "it is {actual} bytes but its tensor table implies {expected} (truncated or damaged)"
        ));
    }
    let sums: Vec<u64> = match content.metadata.get(CHECKSUMS_KEY) {
        Some(gguf_file::Value::Array(values)) => values
            .iter()
            .map(|v| match v {
                gguf_file::Value::U64(x) => Some(*x),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or("its tensor checksums are damaged")?,
        _ => return Err("it has no tensor checksums".into()),
    };
    // Table order is offset order: the writer lays the tensors out as listed.
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    if sums.len() != infos.len() {
        return Err(format!(
            "it lists {} tensor checksums for {} tensors",
            sums.len(),
            infos.len()
        ));
    }
    let ranges: Vec<(&str, std::ops::Range<usize>, u64)> = infos
        .iter()
        .zip(&sums)
        .map(|((name, info), sum)| {
            let size = info.shape.elem_count() / info.ggml_dtype.block_size()
                * info.ggml_dtype.type_size();
            let start = (content.tensor_data_offset + info.offset) as usize;
            (name.as_str(), start..start + size, *sum)
        })
        .collect();
    let map = MappedFile::open(path, false).map_err(|e| format!("cannot map it: {e}"))?;
    match first_mismatch(map.bytes(), &ranges) {
        None => Ok(()),
        Some(name) => Err(format!(
            "the bytes of tensor {name} do not match their checksum (damaged on disk)"
        )),
    }
}

/// The checksum of a tensor's bytes recorded in a cache file: XXH3-64, a non-cryptographic
/// hash (the file is our own cache, guarded against damage, not against an attacker) that
/// runs at memory speed, so checking the 7B's 8 GB costs well under a second on two cores
/// once the pages are in memory (see `examples/gguf_checksum.rs`).
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The name of the first tensor (by `ranges` order among those checked) whose bytes do not
/// hash to its checksum, hashing on every core; ranges outside `bytes` count as mismatches.
pub fn first_mismatch<'a>(
    bytes: &[u8],
    ranges: &[(&'a str, std::ops::Range<usize>, u64)],
) -> Option<&'a str> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let bad = Mutex::new(None::<usize>);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads.min(ranges.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, range, sum)) = ranges.get(i) else {
                    break;
                };
                let ok = bytes
                    .get(range.clone())
                    .is_some_and(|b| checksum(b) == *sum);
                if !ok {
                    let mut bad = bad.lock().unwrap_or_else(PoisonError::into_inner);
                    *bad = Some(bad.map_or(i, |b| b.min(i)));
                }
            });
        }
    });
    let first = bad.into_inner().unwrap_or_else(PoisonError::into_inner);
    first.map(|i| ranges[i].0)
}

/// The file length a GGUF header implies: data start + the padded end of the last tensor.
pub(crate) fn expected_len(content: &gguf_file::Content) -> Result<u64, String> {
    let mut end = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        if !elems.is_multiple_of(block) {
            return Err(format!("tensor {name} does not fill whole blocks"));
        }
        let size = (elems / block * info.ggml_dtype.type_size()) as u64;
        let tensor_end = content.tensor_data_offset + info.offset + size;
        end = end.max(tensor_end.div_ceil(ALIGNMENT) * ALIGNMENT);
    }
    Ok(end)
}

/// How a failed read of the cache file at `path` is reported.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ModelError + Copy + Sync + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a cache file at `path` whose contents do not make tensors is reported.
fn damaged(path: &Path) -> impl Fn(candle_core::Error) -> ModelError + Copy + Sync + '_ {
    move |e| ModelError::BadConfig {
        path: path.to_path_buf(),
        reason: format!("damaged quantized cache: {e} (delete it to rebuild)"),
    }
}

/// Loads a cache file checked by [`ensure`] as tensors on `device`, q4_K matrices
/// interleaved as they are read for [`WeightLayout::Repacked`].
///
/// The file is memory-mapped. On a CPU, blocks the kernels read as they are (q8_0, and the
/// k-quants that are not interleaved) stay in the file's pages: nothing is copied, a warm
/// reload costs no time, and the pages are shared with the page cache (`mapped.rs`).
/// Interleaved q4_K matrices are made from the mapped bytes on every core
/// (`Q4kX8::pack`), after which those pages are let go; small tensors (norms, biases) are
/// copied.
pub(crate) fn read(
    path: &Path,
    device: &Device,
    layout: WeightLayout,
) -> Result<TensorMap, ModelError> {
    let (io, bad) = (io_error(path), damaged(path));
    let content = gguf_file::Content::read(&mut File::open(path).map_err(io)?).map_err(bad)?;
    // In file order, so that the pages are touched nearly sequentially.
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let interleave = layout == WeightLayout::Repacked;
    // Pages are mapped up front where the file is used in place (see `MappedFile::open`).
    let copies = !device.is_cpu()
        || infos.iter().any(|(_, info)| {
            interleave && QWeight::interleaves(info.ggml_dtype, info.shape.dims(), device)
        });
    let file = MappedFile::open(path, !copies).map_err(io)?;
    let mut map = HashMap::with_capacity(infos.len());
    for (name, info) in infos {
        let dtype = info.ggml_dtype;
        let dims = info.shape.dims();
        let size = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        let start = usize::try_from(content.tensor_data_offset + info.offset)
            .map_err(|e| bad(candle_core::Error::Msg(format!("tensor {name}: {e}"))))?;
        let range = start..start + size;
        let w = QWeight::from_mapped(dtype, dims, &file, range.clone(), device, interleave)
            .map_err(bad)?;
        if !w.is_in_place() {
            // Copied or interleaved: the mapped pages are not needed any more.
            file.release(range);
        }
        map.insert(name.clone(), w);
    }
    Ok(TensorMap(map))
}

/// Partial cache files this process is writing, removed by [`remove_partial_files`].
static WRITING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A partial cache file (`<target>.tmp-<pid>-<nanos>`) being written by this process: the
/// name says whose it is, so [`remove_dead_partials`] can tell a live writer's file from a
/// killed one's. Dropping it deletes the file unless it was renamed into place; exiting
/// the process (returning from `main`, `process::exit` after Ctrl-C) deletes it too.
pub(crate) struct Partial {
    path: PathBuf,
}

impl Partial {
    pub(crate) fn new(target: &Path) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = target.with_extension(format!("tmp-{}-{nanos}", std::process::id()));
        install_exit_hook();
        writing().push(path.clone());
        Self { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        writing().retain(|p| p != &self.path);
        // Gone already when it was renamed into place.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn writing() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    WRITING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Deletes every partial cache file this process is writing. Runs at process exit (see
/// [`install_exit_hook`]); a conversion still running in another thread then writes into
/// an unlinked file until the process ends.
pub fn remove_partial_files() {
    for path in writing().drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// Registers [`remove_partial_files`] with the C library's `atexit`, once: it then runs
/// however the process exits normally — `main` returning after Ctrl-C (`ask` returns
/// `Interrupted`, the TUI quits), or `process::exit(130)` on a second Ctrl-C — where Rust
/// runs no destructors of other threads' values. (`kill -9` runs nothing:
/// [`remove_dead_partials`] cleans up after it.)
#[cfg(unix)]
#[allow(unsafe_code)]
fn install_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        remove_partial_files();
    }
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
    }
    ONCE.call_once(|| {
        // SAFETY: `atexit` only stores the pointer to a function that lives for the whole
        // program; `at_exit` takes no arguments, does not unwind (it only locks a mutex,
        // recovering from poisoning, and deletes files) and calls no `exit`.
        unsafe {
            atexit(at_exit);
        }
    });
}

#[cfg(not(unix))]
fn install_exit_hook() {}

/// `(pid, nanos)` of a partial cache file's name (`….tmp-<pid>-<nanos>`).
fn partial_writer(name: &str) -> Option<u32> {
    let (_, rest) = name.rsplit_once(".tmp-")?;
    let (pid, nanos) = rest.split_once('-')?;
    nanos.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether the process that named a partial file `path` after itself may still write it.
/// Our own pid counts only for files this process registered (in a container every run may
/// get the same pid). Elsewhere than Linux, where `/proc` may be missing, a file untouched
/// for a day is taken as abandoned.
fn writer_alive(pid: u32, path: &Path) -> bool {
    if pid == std::process::id() {
        return writing().iter().any(|p| p == path);
    }
    if cfg!(target_os = "linux") {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a < std::time::Duration::from_secs(24 * 3600))
}

/// Deletes the partial cache files in `dir` whose writer is gone (killed mid-conversion);
/// returns the bytes freed. Best effort: what cannot be listed or deleted stays.
pub fn remove_dead_partials(dir: &Path) -> u64 {
    let mut freed = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = partial_writer(&name) else {
            continue;
        };
        let path = entry.path();
        if writer_alive(pid, &path) {
            continue;
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(&path).is_ok() {
            freed += len;
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_snapshots_are_recognised() {
        let p =
            Path::new("/c/hub/models--FreedomIntelligence--HuatuoGPT-Vision-7B/snapshots/abc123");
        assert_eq!(
            hub_snapshot(p),
            Some((
                "FreedomIntelligence/HuatuoGPT-Vision-7B".to_string(),
                "abc123".to_string()
            ))
        );
        assert_eq!(hub_snapshot(Path::new("/models/HuatuoGPT-Vision-7B")), None);
    }

    #[test]
    fn partial_files_are_removed_at_exit_and_after_their_writer() {
        let dir = tempfile::tempdir().expect("tmp");
        let partial = Partial::new(&dir.path().join("m.q8_0.gguf"));
        std::fs::write(partial.path(), b"half").expect("write");
        let name = partial.path().file_name().expect("name").to_string_lossy();
        assert_eq!(partial_writer(&name), Some(std::process::id()));
        assert_eq!(remove_dead_partials(dir.path()), 0, "its writer is alive");
        assert!(partial.path().exists());
        // What the exit hook runs (after Ctrl-C, `main` returns or `process::exit`s).
        remove_partial_files();
        assert!(!partial.path().exists());
        // Our own pid on a file we did not register: a previous run's (containers reuse
        // pids), so it is dead.
        let stale = dir
            .path()
            .join(format!("m.q4k.tmp-{}-5", std::process::id()));
        std::fs::write(&stale, b"old").expect("write");
        assert_eq!(remove_dead_partials(dir.path()), 3);
        assert!(!stale.exists());
        assert_eq!(partial_writer("m.q4k.gguf"), None);
        assert_eq!(partial_writer("m.tmp-x-1"), None);
    }
}
