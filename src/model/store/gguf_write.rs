//! Streaming conversion of a checkpoint's safetensors shards into a quantized GGUF cache file
//! ([`super::gguf`] decides when, and reads the result). Tensors are converted one after
//! another in row chunks read with positioned reads, each group of chunks quantized in
//! parallel (one worker per core) and written in order, so memory stays at a few chunks
//! whatever the model size; the file is written under a temporary name and renamed over the
//! cache file only once complete and synced, with a checksum of each tensor's bytes in its
//! header.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde::Deserialize;
use xxhash_rust::xxh3::Xxh3;

use super::gguf::{Partial, ALIGNMENT, CHECKSUMS_KEY, FORMAT_VERSION};
use super::quant::{tensor_type, ConvertProgress};
use super::weights::{check_extents, check_shape};
use crate::model::checkpoint::Checkpoint;
use crate::model::ModelError;
use crate::protocol::Quant;

/// f32 values converted per chunk (16 MB), per worker.
const CHUNK_ELEMS: usize = 4 << 20;

/// One tensor of a safetensors shard.
#[derive(Debug, Clone)]
struct SourceTensor {
    name: String,
    shard: usize,
    dtype: SourceDType,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the shard.
    start: u64,
    target: GgmlDType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceDType {
    Bf16,
    F16,
    F32,
}

impl SourceDType {
    fn size(self) -> usize {
        match self {
            Self::Bf16 | Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The tensors of every shard (in shard, then offset order), from the safetensors headers.
fn source_tensors(ckpt: &Checkpoint, quant: Quant) -> Result<Vec<SourceTensor>, ModelError> {
    let mut all = Vec::new();
    for (i, shard) in ckpt.shards.iter().enumerate() {
        let bad = |reason: String| ModelError::BadConfig {
            path: shard.clone(),
            reason,
        };
        let mut file = File::open(shard).map_err(|source| ModelError::Io {
            path: shard.clone(),
            source,
        })?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let header_len = u64::from_le_bytes(len);
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if header_len > 100 << 20 || 8 + header_len > file_len {
            return Err(bad(format!("implausible header length {header_len}")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| bad(format!("truncated header: {e}")))?;
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
        let mut tensors = Vec::new();
        let mut extents = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let e: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| bad(format!("bad header entry {name}: {e}")))?;
            extents.push((e.data_offsets.0, e.data_offsets.1, name.clone()));
            if !needed(ckpt, &name) {
                continue;
            }
            let dtype = match e.dtype.as_str() {
                "BF16" => SourceDType::Bf16,
                "F16" => SourceDType::F16,
                "F32" => SourceDType::F32,
                other => return Err(bad(format!("tensor {name} has unsupported dtype {other}"))),
            };
            let bytes = e.shape.iter().product::<usize>() * dtype.size();
            let (begin, end) = e.data_offsets;
            if end < begin || end - begin != bytes as u64 || 8 + header_len + end > file_len {
                return Err(bad(format!(
                    "tensor {name} lies outside the file (truncated?)"
                )));
            }
            let target = tensor_type(&name, &e.shape, quant);
            tensors.push(SourceTensor {
                name,
                shard: i,
                dtype,
                shape: e.shape,
                start: 8 + header_len + begin,
                target,
            });
        }
        check_extents(extents, file_len - 8 - header_len).map_err(bad)?;
        for t in &tensors {
            check_shape(ckpt, &t.name, &t.shape).map_err(bad)?;
        }
        tensors.sort_by_key(|t| t.start);
        all.extend(tensors);
    }
    Ok(all)
}

/// Whether the network reads this tensor: the vision tower's layers after the selected
/// hidden state and its `post_layernorm` are never used (huatuo-reference.md §1.3), nor
/// decoder layers past `num_hidden_layers` (a checkpoint cut down by its config.json, as
/// the benchmarks do with the full-size random 7B).
fn needed(ckpt: &Checkpoint, name: &str) -> bool {
    if let Some(layer) = name
        .strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
    {
        return layer < ckpt.config.num_hidden_layers;
    }
    let Some(rest) = name.strip_prefix("model.vision_tower.vision_tower.vision_model.") else {
        return true;
    };
    if rest.starts_with("post_layernorm") {
        return false;
    }
    let Some(layer) = rest
        .strip_prefix("encoder.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<i64>().ok())
    else {
        return true;
    };
    let states = ckpt.vision.num_hidden_layers as i64 + 1;
    let select = ckpt.config.mm_vision_select_layer;
    let index = if select < 0 { states + select } else { select };
    layer < index
}

fn ggml_type_id(dtype: GgmlDType) -> Result<u32, ModelError> {
    Ok(match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        other => {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "huatuo does not write {other:?} tensors"
            ))))
        }
    })
}

fn target_bytes(t: &SourceTensor) -> u64 {
    let elems: usize = t.shape.iter().product();
    (elems / t.target.block_size() * t.target.type_size()) as u64
}

/// Writes the cache file for `ckpt` through a temporary file renamed over `path`.
pub(crate) fn convert(
    ckpt: &Checkpoint,
    quant: Quant,
    identity: &str,
    path: &Path,
    progress: &dyn Fn(ConvertProgress),
) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ModelError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors = source_tensors(ckpt, quant)?;
    let data_bytes: u64 = tensors
        .iter()
        .map(|t| target_bytes(t).div_ceil(ALIGNMENT) * ALIGNMENT)
        .sum();
    if let Ok(free) = fs4::available_space(dir) {
        if free < data_bytes + (64 << 20) {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!(
                    "the quantized cache needs {data_bytes} bytes but only {free} are free there"
                )),
            });
        }
    }
    let tmp = Partial::new(path);
    write_file(ckpt, quant, identity, &tensors, tmp.path(), progress)?;
    std::fs::rename(tmp.path(), path).map_err(io(path))
}

fn write_file(
    ckpt: &Checkpoint,
    quant: Quant,
    identity: &str,
    tensors: &[SourceTensor],
    tmp: &Path,
    progress: &dyn Fn(ConvertProgress),
) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(8 << 20, file);
    let checksums_at = write_header(&mut w, quant, identity, tensors).map_err(io)?;
    let mut checksums = Vec::with_capacity(tensors.len());
    let shards = ckpt
        .shards
        .iter()
        .map(|p| {
            File::open(p).map_err(|source| ModelError::Io {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total_bytes: u64 = tensors
        .iter()
        .map(|t| (t.shape.iter().product::<usize>() * t.dtype.size()) as u64)
        .sum();
    let mut done_bytes = 0;
    for t in tensors {
        let shard = &shards[t.shard];
        let mut hashing = Hashing {
            inner: &mut w,
            hash: Xxh3::new(),
        };
        convert_tensor(t, shard, &mut hashing, &mut |n| {
            done_bytes += n;
            progress(ConvertProgress {
                done_bytes,
                total_bytes,
            });
        })
        .map_err(|e| match e {
            ConvertError::Io(source) => ModelError::Io {
                path: ckpt.shards[t.shard].clone(),
                source,
            },
            ConvertError::Candle(e) => ModelError::Candle(e),
        })?;
        checksums.push(hashing.hash.digest());
        let pad = target_bytes(t).div_ceil(ALIGNMENT) * ALIGNMENT - target_bytes(t);
        w.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
    let values: Vec<u8> = checksums.iter().flat_map(|c| c.to_le_bytes()).collect();
    file.seek(SeekFrom::Start(checksums_at)).map_err(io)?;
    file.write_all(&values).map_err(io)?;
    file.sync_all().map_err(io)
}

/// GGUF v3 header: metadata, then the tensor table with offsets computed from the target
/// types, then padding to the data alignment. The metadata `huatuo.checksums` (one u64 per
/// tensor, in table order: [`super::gguf::checksum`] of its bytes) is written as zeros, to
/// be filled in once the data is written; the returned offset is where its values start.
fn write_header(
    w: &mut impl Write,
    quant: Quant,
    identity: &str,
    tensors: &[SourceTensor],
) -> std::io::Result<u64> {
    fn string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
        w.write_all(&(s.len() as u64).to_le_bytes())?;
        w.write_all(s.as_bytes())
    }
    const TYPE_U32: u32 = 4;
    const TYPE_STRING: u32 = 8;
    const TYPE_ARRAY: u32 = 9;
    const TYPE_U64: u32 = 10;
    let mut written = 0u64;
    let mut out = Vec::new();
    out.extend_from_slice(&0x4655_4747u32.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&6u64.to_le_bytes());
    let strings = [
        ("general.architecture", "huatuo"),
        ("huatuo.quant", quant.name()),
        ("huatuo.source", identity),
    ];
    for (key, value) in strings {
        string(&mut out, key)?;
        out.extend_from_slice(&TYPE_STRING.to_le_bytes());
        string(&mut out, value)?;
    }
    for (key, value) in [
        ("general.alignment", ALIGNMENT as u32),
        ("huatuo.format", FORMAT_VERSION),
    ] {
        string(&mut out, key)?;
        out.extend_from_slice(&TYPE_U32.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    string(&mut out, CHECKSUMS_KEY)?;
    out.extend_from_slice(&TYPE_ARRAY.to_le_bytes());
    out.extend_from_slice(&TYPE_U64.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    let checksums_at = out.len() as u64;
    out.extend(std::iter::repeat_n(0u8, 8 * tensors.len()));
    let mut offset = 0u64;
    for t in tensors {
        string(&mut out, &t.name)?;
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        let id = ggml_type_id(t.target).map_err(|e| std::io::Error::other(e.to_string()))?;
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += target_bytes(t).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    written += out.len() as u64;
    let pad = written.div_ceil(ALIGNMENT) * ALIGNMENT - written;
    out.extend(std::iter::repeat_n(0u8, pad as usize));
    w.write_all(&out)?;
    Ok(checksums_at)
}

/// Passes bytes on while hashing them (one tensor's data, for its checksum).
struct Hashing<'a, W> {
    inner: &'a mut W,
    hash: Xxh3,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The bytes of one converted chunk, or why it failed.
type ChunkResult = Result<Vec<u8>, ConvertError>;

enum ConvertError {
    Io(std::io::Error),
    Candle(candle_core::Error),
}

/// Converts one tensor in row chunks, `threads` chunks at a time in parallel, writing each
/// group in order; `done(n)` reports source bytes converted.
fn convert_tensor(
    t: &SourceTensor,
    shard: &File,
    w: &mut impl Write,
    done: &mut dyn FnMut(u64),
) -> Result<(), ConvertError> {
    let cols = match t.shape.as_slice() {
        [_, c] => *c,
        _ => t.shape.iter().product::<usize>().max(1),
    };
    let rows = t.shape.iter().product::<usize>() / cols.max(1);
    let rows_per_chunk = (CHUNK_ELEMS / cols.max(1)).clamp(1, rows.max(1));
    let chunks = rows.div_ceil(rows_per_chunk);
    let threads = candle_core::utils::get_num_threads().max(1);
    let row_bytes = cols * t.dtype.size();
    let mut first = 0;
    while first < chunks {
        let group = (first..chunks.min(first + threads)).collect::<Vec<_>>();
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<ChunkResult>>> =
            group.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..group.len() {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&chunk) = group.get(i) else {
                        break;
                    };
                    let r0 = chunk * rows_per_chunk;
                    let n = rows_per_chunk.min(rows - r0);
                    let offset = t.start + (r0 * row_bytes) as u64;
                    let out = convert_chunk(t, shard, offset, n, cols);
                    *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(out);
                });
            }
        });
        for (slot, &chunk) in results.into_iter().zip(&group) {
            let out = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            let bytes = match out {
                Some(r) => r?,
                None => {
                    return Err(ConvertError::Candle(candle_core::Error::Msg(
                        "a conversion worker stopped".into(),
                    )))
                }
            };
            w.write_all(&bytes).map_err(ConvertError::Io)?;
            let n = rows_per_chunk.min(rows - chunk * rows_per_chunk);
            done((n * row_bytes) as u64);
        }
        first += group.len();
    }
    Ok(())
}

/// `rows × cols` source values at `offset` → the target type's bytes.
fn convert_chunk(
    t: &SourceTensor,
    shard: &File,
    offset: u64,
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>, ConvertError> {
    let mut raw = vec![0u8; rows * cols * t.dtype.size()];
    read_at(shard, &mut raw, offset).map_err(ConvertError::Io)?;
    let values: Vec<f32> = match t.dtype {
        SourceDType::Bf16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        SourceDType::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        SourceDType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    };
    drop(raw);
    match t.target {
        GgmlDType::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        GgmlDType::F16 => Ok(values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect()),
        target => {
            let x = Tensor::from_vec(values, (rows, cols), &Device::Cpu)
                .map_err(ConvertError::Candle)?;
            let q = QTensor::quantize(&x, target).map_err(ConvertError::Candle)?;
            Ok(q.data().map_err(ConvertError::Candle)?.into_owned())
        }
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file;

    use super::*;

    #[test]
    fn header_round_trips_through_candles_reader() {
        let tensors = vec![
            SourceTensor {
                name: "a.weight".into(),
                shard: 0,
                dtype: SourceDType::Bf16,
                shape: vec![3, 256],
                start: 0,
                target: GgmlDType::Q4K,
            },
            SourceTensor {
                name: "a.bias".into(),
                shard: 0,
                dtype: SourceDType::Bf16,
                shape: vec![3],
                start: 0,
                target: GgmlDType::F32,
            },
        ];
        let mut buf = Vec::new();
        write_header(&mut buf, Quant::Q4k, "id\nline", &tensors).expect("header");
        assert_eq!(buf.len() as u64 % ALIGNMENT, 0);
        let header_len = buf.len() as u64;
        // Data: q4k 3 rows (3 × 144 bytes, padded to 448), then the bias (12 → 32).
        buf.resize(buf.len() + 448 + 32, 0);
        let content = gguf_file::Content::read(&mut std::io::Cursor::new(&buf)).expect("read");
        assert_eq!(content.tensor_data_offset, header_len);
        assert_eq!(content.tensor_infos["a.weight"].shape.dims(), &[3, 256]);
        assert_eq!(content.tensor_infos["a.bias"].offset, 448);
        assert_eq!(
            super::super::gguf::expected_len(&content),
            Ok(buf.len() as u64)
        );
        assert!(matches!(
            content.metadata.get("huatuo.source"),
            Some(gguf_file::Value::String(s)) if s == "id\nline"
        ));
    }
}
