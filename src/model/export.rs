//! `huatuo export --format llava-hf`: a HuatuoGPT-Vision checkpoint rewritten as a transformers
//! `LlavaForConditionalGeneration` checkpoint. vLLM, SGLang and LMDeploy load that class, with
//! tensor parallelism; none of them loads the LLaVA repo's own `LlavaQwen2ForCausalLM` /
//! `LlavaLlamaForCausalLM`.
//!
//! What is written (transformers' `convert_llava_weights_to_hf.py` renames, without its random
//! vocabulary resize):
//! - `config.json`: `model_type` llava, `text_config` from the checkpoint's own (qwen2 or
//!   llama, LLaVA's training keys dropped), `vision_config` from
//!   `vit/clip_vit_large_patch14_336/config.json` with every value explicit,
//!   `vision_feature_layer` −2, strategy "default", `projector_hidden_act` "gelu" (erf, as the
//!   reference's `nn.GELU()`), `image_token_index`;
//! - the tensors, streamed one at a time in bounded chunks (the 34B is 69 GB): the vision tower
//!   from the main shards (never vit/'s copy), `model.mm_projector.0/.2` →
//!   `multi_modal_projector.linear_1/_2`, the language model under `language_model.`; bf16, or
//!   f32 with `--dtype f32`; sharded, with the index; each shard read back and checked;
//! - the tokenizer files with `<image>` added as a special token, the chat template
//!   (tokenizer_config.json, chat_template.json, chat_template.jinja), the image processor's
//!   `preprocessor_config.json` and `processor_config.json` (`patch_size` 14), and a
//!   `generation_config.json` with the reference CLI's sampling.
//!
//! The image token: the 7B's output layer has 152,064 rows for 151,646 tokenizer ids, so
//! `<image>` is the new id 151646 and nothing is resized. The Yi vocabulary of the 34B has no
//! spare row: one row is added (embedding and output layer), zero. A zero output row gives the
//! logit 0, which cannot win against a trained model's positive top logits. transformers
//! masks it anyway (`suppress_tokens` in generation_config.json). The Python check
//! (`scripts/reference/export_check.py`) proves the greedy answers unchanged.
//!
//! The export goes into `<OUT>.partial-<pid>` beside `OUT` and is renamed when it is complete
//! and verified: a killed export never leaves a directory that looks finished.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::checkpoint::{vision_subdir, Checkpoint};
use super::config::read_json;
use super::store::mapped::MappedFile as Mapped;
use super::ModelError;
use crate::protocol::SamplingParams;

/// The prompt of HuatuoGPT-Vision's `cli.py` as a chat template (see `serving/`).
pub const CHAT_TEMPLATE: &str = include_str!("../../serving/huatuo-vision.jinja");
/// The token string of an image in prompts (vLLM's and transformers' llava convention).
pub const IMAGE_TOKEN: &str = "<image>";
/// Output shards are at most this large by default (transformers' `save_pretrained`).
pub const DEFAULT_SHARD_BYTES: u64 = 5_000_000_000;
/// Tensors are converted and written this many bytes of input at a time.
const CHUNK: usize = 4 << 20;

/// The precision of the exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportDType {
    Bf16,
    F32,
}

impl ExportDType {
    fn name(self) -> &'static str {
        match self {
            Self::Bf16 => "BF16",
            Self::F32 => "F32",
        }
    }

    fn size(self) -> usize {
        match self {
            Self::Bf16 => 2,
            Self::F32 => 4,
        }
    }

    fn torch(self) -> &'static str {
        match self {
            Self::Bf16 => "bfloat16",
            Self::F32 => "float32",
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists: give a new directory, or remove it first")]
    Exists(PathBuf),
    #[error("the export needs {need} MB free in {dir}, which has {free} MB: free some space or export elsewhere")]
    NoSpace { dir: PathBuf, need: u64, free: u64 },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("cancelled")]
    Cancelled,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub dir: PathBuf,
    pub tensors: usize,
    pub shards: usize,
    pub bytes: u64,
    pub image_token_index: u32,
    /// A row was added to the vocabulary for `<image>` (the Yi vocabulary has no spare row).
    pub added_row: bool,
}

/// One tensor of a source shard.
#[derive(Debug, Clone)]
struct Source {
    shard: PathBuf,
    name: String,
    dtype: String,
    shape: Vec<usize>,
    /// Byte range in the shard file (after its header).
    start: usize,
    end: usize,
}

/// One tensor of the export.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    source: Source,
    /// The source's shape, with one zero row more for an added vocabulary row.
    shape: Vec<usize>,
    extra_rows: usize,
}

impl Planned {
    fn bytes(&self, dtype: ExportDType) -> u64 {
        self.shape.iter().product::<usize>() as u64 * dtype.size() as u64
    }
}

/// The export's name for a checkpoint tensor, or `None` for one it leaves out.
pub fn export_name(name: &str) -> Option<String> {
    if name.ends_with("position_ids") {
        return None; // a buffer, recomputed by transformers
    }
    if let Some(rest) = name.strip_prefix("model.vision_tower.vision_tower.") {
        return Some(format!("vision_tower.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("model.mm_projector.") {
        let (index, param) = rest.split_once('.')?;
        let linear = match index {
            "0" => "linear_1",
            "2" => "linear_2",
            _ => return None,
        };
        return Some(format!("multi_modal_projector.{linear}.{param}"));
    }
    if let Some(rest) = name.strip_prefix("lm_head.") {
        return Some(format!("language_model.lm_head.{rest}"));
    }
    name.strip_prefix("model.")
        .map(|rest| format!("language_model.model.{rest}"))
}

/// Exports the checkpoint in `src` to `out` (which must not exist, or be empty). `progress` is
/// called with (bytes written, bytes to write) and answers `false` to cancel.
pub fn llava_hf(
    src: &Path,
    out: &Path,
    dtype: ExportDType,
    shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Exported, ExportError> {
    let checkpoint = Checkpoint::open(src)?;
    if out.exists() {
        let empty = out.is_dir() && std::fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty {
            return Err(ExportError::Exists(out.to_path_buf()));
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    remove_stale_partials(out);

    let config: Value = read_json(&src.join("config.json"))?;
    let vocab_size = config["vocab_size"]
        .as_u64()
        .ok_or_else(|| ExportError::Bad {
            path: src.join("config.json"),
            reason: "vocab_size is missing".into(),
        })? as usize;
    let tokenizer: Value = read_json(&src.join("tokenizer.json"))?;
    let image_id = next_token_id(&tokenizer).ok_or_else(|| ExportError::Bad {
        path: src.join("tokenizer.json"),
        reason: "no vocabulary".into(),
    })?;
    let added_row = image_id >= vocab_size;
    if image_id > vocab_size {
        return Err(ExportError::Bad {
            path: src.join("tokenizer.json"),
            reason: format!(
                "the tokenizer has {image_id} ids, more than the model's {vocab_size} rows"
            ),
        });
    }

    // The plan: every tensor, renamed, in name order, in shards of at most `shard_bytes`.
    let mut planned = Vec::new();
    for shard in &checkpoint.shards {
        for source in read_sources(shard)? {
            let Some(name) = export_name(&source.name) else {
                if source.name.ends_with("position_ids") {
                    continue;
                }
                return Err(ExportError::Bad {
                    path: shard.clone(),
                    reason: format!(
                        "tensor {} is not part of a LLaVA checkpoint this export knows",
                        source.name
                    ),
                });
            };
            let grows = added_row
                && (source.name == "model.embed_tokens.weight" || source.name == "lm_head.weight");
            let mut shape = source.shape.clone();
            if grows {
                if shape.len() != 2 || shape[0] != vocab_size {
                    return Err(ExportError::Bad {
                        path: shard.clone(),
                        reason: format!(
                            "{} has shape {shape:?}, not {vocab_size} rows",
                            source.name
                        ),
                    });
                }
                shape[0] += 1;
            }
            planned.push(Planned {
                name,
                source,
                shape,
                extra_rows: usize::from(grows),
            });
        }
    }
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    let mut shards: Vec<Vec<Planned>> = Vec::new();
    let mut size = 0u64;
    for t in planned {
        let b = t.bytes(dtype);
        if shards.is_empty() || (size + b > shard_bytes && size > 0) {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        shards.last_mut().expect("a shard").push(t);
    }
    let total: u64 = shards.iter().flatten().map(|t| t.bytes(dtype)).sum();
    let need = total + (64 << 20);
    if let Ok(free) = fs4::available_space(&parent) {
        if free < need {
            return Err(ExportError::NoSpace {
                dir: parent,
                need: need >> 20,
                free: free >> 20,
            });
        }
    }

    let partial = partial_dir(out);
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let result = (|| {
        let mut weight_map = BTreeMap::new();
        let count = shards.len();
        let mut done = 0u64;
        for (i, shard) in shards.iter().enumerate() {
            let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
            let path = partial.join(&file);
            write_shard(&path, shard, dtype, &mut |n| {
                done += n;
                progress(done, total)
            })?;
            verify_shard(&path, shard, dtype)?;
            for t in shard {
                weight_map.insert(t.name.clone(), file.clone());
            }
        }
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&partial.join("model.safetensors.index.json"), &index)?;
        write_configs(
            &checkpoint,
            &config,
            &partial,
            dtype,
            image_id,
            added_row,
            vocab_size,
        )?;
        write_tokenizer(src, &partial, image_id)?;
        sync_dir(&partial);
        if out.exists() {
            std::fs::remove_dir(out).map_err(io(out))?;
        }
        std::fs::rename(&partial, out).map_err(io(out))?;
        sync_dir(&parent);
        Ok(Exported {
            dir: out.to_path_buf(),
            tensors: shards.iter().map(Vec::len).sum(),
            shards: count,
            bytes: total,
            image_token_index: image_id as u32,
            added_row,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// `<OUT>.partial-<pid>`, beside `OUT`.
fn partial_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    out.with_file_name(format!("{name}.partial-{}", std::process::id()))
}

/// Removes `<OUT>.partial-<pid>` directories of exports whose process is gone (killed).
fn remove_stale_partials(out: &Path) {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!("{}.partial-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix) else {
            continue;
        };
        let gone = pid
            .parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The first id no token of `tokenizer.json` has (model vocabulary and added tokens).
fn next_token_id(tokenizer: &Value) -> Option<usize> {
    let vocab = tokenizer.pointer("/model/vocab")?;
    let mut max: Option<u64> = match vocab {
        Value::Object(map) => map.values().filter_map(Value::as_u64).max(),
        // Unigram: a list of [piece, score].
        Value::Array(list) => list.len().checked_sub(1).map(|n| n as u64),
        _ => None,
    };
    if let Some(added) = tokenizer["added_tokens"].as_array() {
        for t in added {
            if let Some(id) = t["id"].as_u64() {
                max = Some(max.map_or(id, |m| m.max(id)));
            }
        }
    }
    max.map(|m| m as usize + 1)
}

/// The tensors of one source shard, from its header.
fn read_sources(shard: &Path) -> Result<Vec<Source>, ExportError> {
    let bad = |reason: String| ExportError::Bad {
        path: shard.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(shard).map_err(io(shard))?;
    let len = file.metadata().map_err(io(shard))?.len();
    let mut reader = std::io::BufReader::new(file);
    let mut n = [0u8; 8];
    std::io::Read::read_exact(&mut reader, &mut n).map_err(io(shard))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n + 8 > len {
        return Err(bad(format!("a safetensors header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    std::io::Read::read_exact(&mut reader, &mut header).map_err(io(shard))?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
    let base = 8 + n as usize;
    let mut out = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().unwrap_or_default().to_string();
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .unwrap_or_default();
        let offsets: Vec<usize> = info["data_offsets"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .unwrap_or_default();
        let [start, end] = offsets[..] else {
            return Err(bad(format!("{name}: no data_offsets")));
        };
        let elem = match dtype.as_str() {
            "BF16" | "F16" => 2,
            "F32" => 4,
            other => return Err(bad(format!("{name}: dtype {other} cannot be exported"))),
        };
        let count: usize = shape.iter().product();
        if end < start || end - start != count * elem || (base + end) as u64 > len {
            return Err(bad(format!("{name}: its bytes do not match its shape")));
        }
        out.push(Source {
            shard: shard.to_path_buf(),
            name,
            dtype,
            shape,
            start: base + start,
            end: base + end,
        });
    }
    Ok(out)
}

/// The safetensors header of a shard of `tensors`, padded to 8 bytes as the safetensors crate
/// writes it.
fn header_of(tensors: &[Planned], dtype: ExportDType) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in tensors {
        let b = t.bytes(dtype);
        map.insert(
            t.name.clone(),
            json!({"dtype": dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + b]}),
        );
        offset += b;
    }
    let mut header = serde_json::to_vec(&Value::Object(map)).expect("a JSON header");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    header
}

/// Writes one shard, tensor by tensor in bounded chunks.
fn write_shard(
    path: &Path,
    tensors: &[Planned],
    dtype: ExportDType,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<(), ExportError> {
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let header = header_of(tensors, dtype);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| w.write_all(&header))
        .map_err(io(path))?;
    let mut out = Vec::with_capacity(CHUNK * 2);
    for t in tensors {
        let src = &t.source;
        let map = Mapped::open(&src.shard, false).map_err(io(&src.shard))?;
        let bytes = &map.bytes()[src.start..src.end];
        let in_size = if src.dtype == "F32" { 4 } else { 2 };
        for (i, piece) in bytes.chunks(CHUNK).enumerate() {
            out.clear();
            convert(piece, &src.dtype, dtype, &mut out);
            w.write_all(&out).map_err(io(path))?;
            // Read pages leave this process's memory (they stay in the page cache).
            let at = src.start + i * CHUNK;
            map.release(at..at + piece.len());
            if !progress((piece.len() / in_size * dtype.size()) as u64) {
                return Err(ExportError::Cancelled);
            }
        }
        let zeros = vec![0u8; t.shape[1..].iter().product::<usize>() * dtype.size()];
        for _ in 0..t.extra_rows {
            w.write_all(&zeros).map_err(io(path))?;
        }
    }
    let file = w.into_inner().map_err(|e| ExportError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(path))
}

/// Appends `input` (of `from`'s dtype) converted to `to`: bf16 rounds to nearest even, as
/// torch's `.to(torch.bfloat16)`; f32 is exact.
fn convert(input: &[u8], from: &str, to: ExportDType, out: &mut Vec<u8>) {
    match (from, to) {
        ("BF16", ExportDType::Bf16) | ("F32", ExportDType::F32) => out.extend_from_slice(input),
        ("BF16", ExportDType::F32) => {
            for c in input.chunks_exact(2) {
                let v = u32::from(u16::from_le_bytes([c[0], c[1]])) << 16;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        ("F16", _) => {
            for c in input.chunks_exact(2) {
                let v = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                push_f32(v, to, out);
            }
        }
        ("F32", ExportDType::Bf16) => {
            for c in input.chunks_exact(4) {
                push_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]), to, out);
            }
        }
        _ => unreachable!("dtypes are checked when the shard is read"),
    }
}

fn push_f32(v: f32, to: ExportDType, out: &mut Vec<u8>) {
    match to {
        ExportDType::F32 => out.extend_from_slice(&v.to_le_bytes()),
        ExportDType::Bf16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
    }
}

/// Reads a written shard back: its header parses as safetensors with exactly the planned
/// tensors, and every tensor's bytes equal the source's, converted (checked chunk by chunk).
fn verify_shard(path: &Path, tensors: &[Planned], dtype: ExportDType) -> Result<(), ExportError> {
    let bad = |reason: String| ExportError::Bad {
        path: path.to_path_buf(),
        reason: format!("the written shard does not read back: {reason}"),
    };
    let written = read_sources(path)?;
    if written.len() != tensors.len() {
        return Err(bad(format!(
            "{} tensors, {} written",
            tensors.len(),
            written.len()
        )));
    }
    let mapped = Mapped::open(path, false).map_err(io(path))?;
    let map = mapped.bytes();
    let mut expected = Vec::with_capacity(CHUNK * 2);
    for (t, w) in tensors.iter().zip(&written) {
        if t.name != w.name || t.shape != w.shape || w.dtype != dtype.name() {
            return Err(bad(format!("{} differs from its plan", t.name)));
        }
        let src_map = Mapped::open(&t.source.shard, false).map_err(io(&t.source.shard))?;
        let src = &src_map.bytes()[t.source.start..t.source.end];
        let in_size = if t.source.dtype == "F32" { 4 } else { 2 };
        let mut at = w.start;
        for (i, piece) in src.chunks(CHUNK).enumerate() {
            expected.clear();
            convert(piece, &t.source.dtype, dtype, &mut expected);
            let n = piece.len() / in_size * dtype.size();
            if map[at..at + n] != expected[..] {
                return Err(bad(format!("{} has other bytes than its source", t.name)));
            }
            let from = t.source.start + i * CHUNK;
            src_map.release(from..from + piece.len());
            mapped.release(at..at + n);
            at += n;
        }
        if map[at..w.end].iter().any(|&b| b != 0) {
            return Err(bad(format!("{}: the added row is not zero", t.name)));
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<(), ExportError> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON");
    text.push('\n');
    std::fs::write(path, text).map_err(io(path))
}

/// Keys of LLaVA's config.json that describe its training or its vision glue, not the language
/// model.
fn is_llava_key(key: &str) -> bool {
    [
        "mm_",
        "tune_",
        "freeze_",
        "unfreeze_",
        "tokenizer_",
        "image_",
        "use_mm_proj",
        "_name_or_path",
        "architectures",
        "transformers_version",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

fn write_configs(
    checkpoint: &Checkpoint,
    config: &Value,
    dir: &Path,
    dtype: ExportDType,
    image_id: usize,
    added_row: bool,
    vocab_size: usize,
) -> Result<(), ExportError> {
    let src = &checkpoint.dir;
    let (text_type, text_arch) = match config["model_type"].as_str() {
        Some("llava_qwen2") => ("qwen2", "Qwen2ForCausalLM"),
        Some("llava_llama") | Some("llava") => ("llama", "LlamaForCausalLM"),
        other => {
            return Err(ExportError::Bad {
                path: src.join("config.json"),
                reason: format!("model_type {other:?} is not a HuatuoGPT-Vision checkpoint"),
            })
        }
    };
    let mut text = Map::new();
    for (k, v) in config.as_object().into_iter().flatten() {
        if !is_llava_key(k) {
            text.insert(k.clone(), v.clone());
        }
    }
    text.insert("model_type".into(), json!(text_type));
    text.insert("architectures".into(), json!([text_arch]));
    text.insert(
        "vocab_size".into(),
        json!(vocab_size + usize::from(added_row)),
    );
    text.insert("torch_dtype".into(), json!(dtype.torch()));
    text.insert("use_cache".into(), json!(true));

    let v = &checkpoint.vision;
    let vit_path = src
        .join(vision_subdir(config["mm_vision_tower"].as_str()))
        .join("config.json");
    let vit: Value = read_json(&vit_path)?;
    let mut vision = match vit.get("vision_config") {
        Some(Value::Object(m)) => m.clone(),
        _ => vit.as_object().cloned().unwrap_or_default(),
    };
    // Every value the reference's tower uses, explicit (CLIPVisionConfig's own defaults are
    // ViT-B/32's).
    for (k, value) in [
        ("model_type", json!("clip_vision_model")),
        ("hidden_size", json!(v.hidden_size)),
        ("intermediate_size", json!(v.intermediate_size)),
        ("num_attention_heads", json!(v.num_attention_heads)),
        ("num_hidden_layers", json!(v.num_hidden_layers)),
        ("image_size", json!(v.image_size)),
        ("patch_size", json!(v.patch_size)),
        ("num_channels", json!(v.num_channels)),
        ("layer_norm_eps", json!(v.layer_norm_eps)),
        ("hidden_act", json!(v.hidden_act)),
    ] {
        vision.insert(k.into(), value);
    }
    vision.remove("architectures");
    let select_layer = config["mm_vision_select_layer"].as_i64().unwrap_or(-2);
    let patches = (v.image_size / v.patch_size).pow(2);
    let eos = config["eos_token_id"].clone();
    let llava = json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": image_id,
        "image_seq_length": patches,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": select_layer,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": config["tie_word_embeddings"].as_bool().unwrap_or(false),
        "pad_token_id": config.get("pad_token_id").cloned().unwrap_or(eos.clone()),
        "torch_dtype": dtype.torch(),
        "text_config": Value::Object(text),
        "vision_config": Value::Object(vision),
        "transformers_version": "4.46.3",
    });
    write_json(&dir.join("config.json"), &llava)?;

    // The reference CLI's sampling, with the checkpoint's top_k/top_p as transformers merges
    // them; the eos token as the pad token, as cli.py sets it.
    let defaults = super::checkpoint::sampling_defaults(src)?;
    let SamplingParams {
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        max_new_tokens,
        ..
    } = defaults;
    // As written in Python (0.2, not the f32's 0.20000000298023224).
    let short = |v: f32| v.to_string().parse::<f64>().unwrap_or(f64::from(v));
    let mut generation = json!({
        "do_sample": temperature > 0.0,
        "temperature": short(temperature),
        "top_k": top_k,
        "top_p": short(top_p),
        "repetition_penalty": short(repetition_penalty),
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "transformers_version": "4.46.3",
    });
    if let Some(bos) = config.get("bos_token_id") {
        generation["bos_token_id"] = bos.clone();
    }
    if added_row {
        generation["suppress_tokens"] = json!([image_id]);
    }
    write_json(&dir.join("generation_config.json"), &generation)?;

    let mut pre: Value = read_json(&checkpoint.preprocessor_config)?;
    if let Some(m) = pre.as_object_mut() {
        m.insert("image_processor_type".into(), json!("CLIPImageProcessor"));
        m.insert("processor_class".into(), json!("LlavaProcessor"));
    }
    write_json(&dir.join("preprocessor_config.json"), &pre)?;
    write_json(
        &dir.join("processor_config.json"),
        &json!({
            "processor_class": "LlavaProcessor",
            "patch_size": v.patch_size,
            "vision_feature_select_strategy": "default",
            "image_token": IMAGE_TOKEN,
            "num_additional_image_tokens": 1,
        }),
    )?;
    write_json(
        &dir.join("chat_template.json"),
        &json!({ "chat_template": CHAT_TEMPLATE }),
    )?;
    std::fs::write(dir.join("chat_template.jinja"), CHAT_TEMPLATE)
        .map_err(io(&dir.join("chat_template.jinja")))?;
    Ok(())
}

/// Copies the tokenizer files with `<image>` added as special token `image_id`, and the chat
/// template in tokenizer_config.json.
fn write_tokenizer(src: &Path, dir: &Path, image_id: usize) -> Result<(), ExportError> {
    let token = json!({
        "id": image_id,
        "content": IMAGE_TOKEN,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": true,
    });
    let mut tokenizer: Value = read_json(&src.join("tokenizer.json"))?;
    match tokenizer["added_tokens"].as_array_mut() {
        Some(list) => list.push(token),
        None => tokenizer["added_tokens"] = json!([token]),
    }
    // tokenizer.json is written compact, as the tokenizers library writes it.
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&tokenizer).expect("JSON")).map_err(io(&path))?;

    let config_path = src.join("tokenizer_config.json");
    let mut config: Value = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        json!({})
    };
    let decoder = json!({
        "content": IMAGE_TOKEN,
        "lstrip": false,
        "normalized": false,
        "rstrip": false,
        "single_word": false,
        "special": true,
    });
    if !config["added_tokens_decoder"].is_object() {
        config["added_tokens_decoder"] = json!({});
    }
    config["added_tokens_decoder"][image_id.to_string()] = decoder;
    config["chat_template"] = json!(CHAT_TEMPLATE);
    if let Some(m) = config.as_object_mut() {
        m.insert("processor_class".into(), json!("LlavaProcessor"));
    }
    write_json(&dir.join("tokenizer_config.json"), &config)?;

    let added = src.join("added_tokens.json");
    if added.is_file() {
        let mut map: Value = read_json(&added)?;
        map[IMAGE_TOKEN] = json!(image_id);
        write_json(&dir.join("added_tokens.json"), &map)?;
    }
    for name in [
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
    ] {
        let from = src.join(name);
        if from.is_file() {
            let to = dir.join(name);
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_transformers_llava() {
        let cases = [
            (
                "model.vision_tower.vision_tower.vision_model.post_layernorm.weight",
                Some("vision_tower.vision_model.post_layernorm.weight"),
            ),
            (
                "model.mm_projector.0.weight",
                Some("multi_modal_projector.linear_1.weight"),
            ),
            (
                "model.mm_projector.2.bias",
                Some("multi_modal_projector.linear_2.bias"),
            ),
            ("model.mm_projector.1.weight", None),
            ("lm_head.weight", Some("language_model.lm_head.weight")),
            (
                "model.layers.0.self_attn.q_proj.bias",
                Some("language_model.model.layers.0.self_attn.q_proj.bias"),
            ),
            (
                "model.vision_tower.vision_tower.vision_model.embeddings.position_ids",
                None,
            ),
            ("other.weight", None),
        ];
        for (from, to) in cases {
            assert_eq!(export_name(from).as_deref(), to, "{from}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_widens_exactly() {
        let mut out = Vec::new();
        // 1 + 2^-8 is halfway between two bf16 values: it rounds to the even one, 1.0.
        let halfway = f32::from_bits(0x3F80_8000);
        convert(&halfway.to_le_bytes(), "F32", ExportDType::Bf16, &mut out);
        assert_eq!(out, 0x3F80u16.to_le_bytes());
        out.clear();
        convert(&0x3F81u16.to_le_bytes(), "BF16", ExportDType::F32, &mut out);
        assert_eq!(out, 0x3F81_0000u32.to_le_bytes());
    }

    #[test]
    fn the_image_id_follows_every_token() {
        let t = json!({"model": {"vocab": {"a": 0, "b": 1}},
            "added_tokens": [{"id": 5, "content": "<x>"}]});
        assert_eq!(next_token_id(&t), Some(6));
        let t = json!({"model": {"vocab": [["a", 0.0], ["b", -1.0]]}});
        assert_eq!(next_token_id(&t), Some(2));
    }
}
