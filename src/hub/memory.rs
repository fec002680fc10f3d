//! Memory preflight: will this checkpoint fit in this machine's memory at this precision?
//! Better a clear refusal with a suggestion before loading than the kernel's OOM killer halfway
//! through (huatuo-reference.md §0: the weights are bf16 on disk; on a CPU they are upcast to
//! f32, about 32 GB for the 7B, or quantized).
//!
//! The estimate is weights (the index's `metadata.total_size`, bf16 on disk, scaled to the
//! chosen format) plus the KV cache (f16 for quantized formats) and the largest transient
//! activations (the eager attention scores and the MLP of the last prefill chunk of a prompt
//! that fills the context) plus a fixed runtime allowance. Available memory is
//! `MemAvailable` from `/proc/meminfo`, lowered by a cgroup limit when there is one; on other
//! systems the check is skipped. It is meant for CPU loading; GPU memory is not checked here.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::format_bytes;
use super::manifest::{read_json, INDEX};
use crate::protocol::{DType, Quant};

/// Room for the runtime, the vision tower's activations, the tokenizer and the image buffers.
const RUNTIME_BYTES: u64 = 512 << 20;

/// How the weights are held in memory: quantized, or dense in a dtype (`DType::Auto` is f32,
/// since the estimate is for a CPU). Bytes per weight come from [`Quant::bits_per_weight`],
/// the one memory model that also picks the default quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightFormat {
    pub quant: Quant,
    /// The dtype of dense weights (ignored when quantized: those compute in f32).
    pub dtype: DType,
}

impl WeightFormat {
    /// Dense f32 weights, what a CPU computes in.
    pub const F32: Self = Self::dense(DType::F32);

    /// The formats a suggestion may name, from the most to the least accurate.
    const CHOICES: [Self; 7] = [
        Self::F32,
        Self::dense(DType::Bf16),
        Self::dense(DType::F16),
        Self::quantized(Quant::Q8_0),
        Self::quantized(Quant::Q6k),
        Self::quantized(Quant::Q5k),
        Self::quantized(Quant::Q4k),
    ];

    pub const fn dense(dtype: DType) -> Self {
        Self {
            quant: Quant::None,
            dtype,
        }
    }

    pub const fn quantized(quant: Quant) -> Self {
        Self {
            quant,
            dtype: DType::F32,
        }
    }

    /// The format a load with `quant` and `dtype` holds its weights in.
    pub fn of(quant: Quant, dtype: DType) -> Self {
        if quant == Quant::None {
            Self::dense(dtype)
        } else {
            Self::quantized(quant)
        }
    }

    pub fn bytes_per_param(self) -> f64 {
        self.quant.bits_per_weight(self.dtype) / 8.0
    }

    /// Bytes per activation (quantized models compute in f32 on a CPU).
    pub fn activation_bytes(self) -> u64 {
        match (self.quant, self.dtype) {
            (Quant::None, DType::F16 | DType::Bf16) => 2,
            _ => 4,
        }
    }

    /// Bytes per KV-cache element: quantized models keep their cache in f16.
    pub fn kv_bytes(self) -> u64 {
        match (self.quant, self.dtype) {
            (Quant::None, DType::F32 | DType::Auto) => 4,
            _ => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match (self.quant, self.dtype) {
            (Quant::None, DType::Auto) => "f32",
            (Quant::None, dtype) => dtype.name(),
            (quant, _) => quant.name(),
        }
    }
}

/// What a model needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    pub params: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub activation_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot estimate the memory {model} needs from {}: {detail}", path.display())]
    Unreadable {
        model: String,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "{model} in {format} needs about {} of memory (weights {}, KV cache and activations {}) \
         but only {} is available; {suggestion}",
        format_bytes(estimate.total_bytes),
        format_bytes(estimate.weights_bytes),
        format_bytes(estimate.total_bytes - estimate.weights_bytes),
        format_bytes(*available)
    )]
    TooLarge {
        model: String,
        format: &'static str,
        estimate: MemoryEstimate,
        available: u64,
        suggestion: String,
    },
}

/// The shapes the estimate needs, from config.json.
#[derive(Debug, Clone, Copy)]
struct Shapes {
    layers: u64,
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    intermediate: u64,
    vocab: u64,
}

fn model_name(dir: &Path) -> String {
    read_json(&dir.join("config.json"))
        .ok()
        .and_then(|c| {
            c.get("_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Estimates what the checkpoint in `dir` needs in `format` with `context_tokens` of context,
/// a prompt running `prefill_chunk` positions at a time (the decoder's chunk).
pub fn estimate(
    dir: &Path,
    format: WeightFormat,
    context_tokens: usize,
    prefill_chunk: usize,
) -> Result<MemoryEstimate, MemoryError> {
    let unreadable = |path: PathBuf, detail: String| MemoryError::Unreadable {
        model: model_name(dir),
        path,
        detail,
    };
    let config_path = dir.join("config.json");
    let config = read_json(&config_path).map_err(|e| unreadable(config_path.clone(), e))?;
    let get = |k: &str| config.get(k).and_then(Value::as_u64);
    let need = |k: &str| get(k).ok_or_else(|| unreadable(config_path.clone(), format!("no {k}")));
    let heads = need("num_attention_heads")?.max(1);
    let shapes = Shapes {
        layers: need("num_hidden_layers")?,
        hidden: need("hidden_size")?,
        heads,
        kv_heads: get("num_key_value_heads").unwrap_or(heads),
        intermediate: get("intermediate_size").unwrap_or(0),
        vocab: get("vocab_size").unwrap_or(0),
    };
    let stored_bytes = match config.get("torch_dtype").and_then(Value::as_str) {
        Some("float32") => 4,
        _ => 2,
    };
    let index_path = dir.join(INDEX);
    let on_disk = if index_path.exists() {
        read_json(&index_path)
            .map_err(|e| unreadable(index_path.clone(), e))?
            .pointer("/metadata/total_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| unreadable(index_path.clone(), "no metadata.total_size".into()))?
    } else {
        let single = dir.join("model.safetensors");
        std::fs::metadata(&single)
            .map_err(|e| unreadable(single.clone(), e.to_string()))?
            .len()
    };
    Ok(estimate_from(
        on_disk / stored_bytes,
        shapes,
        format,
        context_tokens as u64,
        prefill_chunk.clamp(1, context_tokens.max(1)) as u64,
    ))
}

fn estimate_from(
    params: u64,
    s: Shapes,
    format: WeightFormat,
    ctx: u64,
    chunk: u64,
) -> MemoryEstimate {
    let act = format.activation_bytes();
    let weights_bytes = (params as f64 * format.bytes_per_param()).ceil() as u64;
    let head_dim = s.hidden / s.heads;
    let kv_cache_bytes = 2 * s.layers * s.kv_heads * head_dim * ctx * format.kv_bytes();
    // The last chunk of a prompt that fills the context attends to all of it.
    let attention_scores = s.heads * chunk * ctx * act;
    let mlp = 4 * chunk * s.intermediate.max(s.hidden) * act;
    let logits = s.vocab * 4;
    let activation_bytes = attention_scores + mlp + logits + RUNTIME_BYTES;
    MemoryEstimate {
        params,
        weights_bytes,
        kv_cache_bytes,
        activation_bytes,
        total_bytes: weights_bytes + kv_cache_bytes + activation_bytes,
    }
}

/// Memory this process may still use, where it can be known (Linux); `None` elsewhere.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut available = parse_meminfo(&meminfo)?;
    let read_u64 = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let cgroup = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ];
    for (limit, usage) in cgroup {
        if let (Some(limit), Some(usage)) = (read_u64(limit), read_u64(usage)) {
            available = available.min(limit.saturating_sub(usage));
            break;
        }
    }
    Some(available)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Estimates the need and refuses, with a suggestion, when it exceeds the available memory.
/// Returns the estimate when it fits or when available memory cannot be known.
pub fn preflight(
    dir: &Path,
    format: WeightFormat,
    context_tokens: usize,
    prefill_chunk: usize,
) -> Result<MemoryEstimate, MemoryError> {
    let est = estimate(dir, format, context_tokens, prefill_chunk)?;
    match available_memory() {
        Some(available) => {
            check(dir, format, context_tokens, prefill_chunk, est, available).map(|()| est)
        }
        None => Ok(est),
    }
}

/// The comparison of [`preflight`], on a given amount of available memory.
pub fn check(
    dir: &Path,
    format: WeightFormat,
    context_tokens: usize,
    prefill_chunk: usize,
    est: MemoryEstimate,
    available: u64,
) -> Result<(), MemoryError> {
    if est.total_bytes <= available {
        return Ok(());
    }
    let fitting: Vec<String> = WeightFormat::CHOICES
        .iter()
        .filter(|f| f.bytes_per_param() < format.bytes_per_param())
        .filter_map(|f| {
            let e = estimate(dir, *f, context_tokens, prefill_chunk).ok()?;
            (e.total_bytes <= available)
                .then(|| format!("{} (about {})", f.name(), format_bytes(e.total_bytes)))
        })
        .collect();
    let mut suggestion = if fitting.is_empty() {
        "no smaller precision or quantization of this model fits either".to_string()
    } else {
        format!(
            "a smaller precision or quantization fits: {}",
            fitting.join(", ")
        )
    };
    if est.params > 15_000_000_000 {
        suggestion.push_str("; or use the 7B model (--model 7b)");
    } else if fitting.is_empty() {
        suggestion.push_str("; close other programs or use a machine with more memory");
    }
    Err(MemoryError::TooLarge {
        model: model_name(dir),
        format: format.name(),
        estimate: est,
        available,
        suggestion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HuatuoGPT-Vision-7B's shapes (huatuo-reference.md §1.1).
    const QWEN2_7B: Shapes = Shapes {
        layers: 28,
        hidden: 3584,
        heads: 28,
        kv_heads: 4,
        intermediate: 18944,
        vocab: 152064,
    };

    #[test]
    fn seven_b_numbers() {
        // ~15.9 GB of bf16 shards.
        let params = 15_880_000_000 / 2;
        let f32 = estimate_from(params, QWEN2_7B, WeightFormat::F32, 4096, 4096);
        assert_eq!(f32.weights_bytes, 31_760_000_000);
        // 2 × 28 layers × 4 kv heads × 128 × 4096 × 4 bytes
        assert_eq!(f32.kv_cache_bytes, 469_762_048);
        assert!(f32.total_bytes > 34_000_000_000 && f32.total_bytes < 36_000_000_000);
        let q4 = estimate_from(
            params,
            QWEN2_7B,
            WeightFormat::quantized(Quant::Q4k),
            4096,
            256,
        );
        // 4.65 bits per weight: q4_K matrices and the q6_K LM head.
        assert_eq!(q4.weights_bytes, 4_615_125_000); // 7.94e9 × 4.65 / 8
                                                     // The f16 KV cache of quantized models: half of f32's.
        assert_eq!(q4.kv_cache_bytes, 469_762_048 / 2);
    }

    /// The 34B in q4k at its full context fits a 24 GB machine: its f16 KV cache (1 GB) and
    /// a 256-position prefill chunk's activations (0.3 GB) rather than an f32 cache (2 GB)
    /// and a whole 4,096-position prompt's scores and MLP (5.1 GB).
    #[test]
    fn thirty_four_b_q4k_fits_24_gb() {
        let yi_34b = Shapes {
            layers: 60,
            hidden: 7168,
            heads: 56,
            kv_heads: 8,
            intermediate: 20480,
            vocab: 64000,
        };
        // ~69 GB of bf16 shards.
        let params = 69_000_000_000 / 2;
        let q4 = estimate_from(
            params,
            yi_34b,
            WeightFormat::quantized(Quant::Q4k),
            4096,
            256,
        );
        assert_eq!(q4.kv_cache_bytes, 2 * 60 * 8 * 128 * 4096 * 2);
        assert!(q4.total_bytes < 22_000_000_000, "{q4:?}");
        let whole = estimate_from(
            params,
            yi_34b,
            WeightFormat::quantized(Quant::Q4k),
            4096,
            4096,
        );
        assert!(whole.total_bytes > 24_000_000_000, "{whole:?}");
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24570000 kB\nMemFree: 1 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(20_480_000_000));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }
}
