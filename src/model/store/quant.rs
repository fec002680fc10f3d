//! Weight quantization (issue 6): the `--quant` choices, the GGML type each tensor of a
//! checkpoint gets under one of them, the default choice for the memory at hand, and the load
//! options and report that [`super::Huatuo::load_with`] takes and returns.
//!
//! The cache file itself (conversion of the bf16 shards, validation, reading back) is
//! [`super::gguf`]; how quantized weights are multiplied is [`super::linear`].

use std::path::PathBuf;
use std::time::Duration;

use candle_core::quantized::GgmlDType;
use candle_core::DType;

use crate::protocol::{DType as Precision, Quant};

/// What a quantization means for the network: its GGML types and memory. (The choice itself,
/// its names and parsing, is plain data in [`crate::protocol`].)
impl Quant {
    /// The GGML type of the matrices under this choice; `None` for dense weights.
    pub fn ggml(self) -> Option<GgmlDType> {
        match self {
            Self::None => None,
            Self::Q8_0 => Some(GgmlDType::Q8_0),
            Self::Q6k => Some(GgmlDType::Q6K),
            Self::Q5k => Some(GgmlDType::Q5K),
            Self::Q4k => Some(GgmlDType::Q4K),
        }
    }

    /// Average bits per weight of the whole model held in memory, for every memory estimate
    /// (the default choice here, the preflight in `hub::memory`): the matrices' type, the LM
    /// head of q4k/q5k being q6k (see [`tensor_type`]: about 7% of the 7B's weights), and for
    /// `None` the dense dtype (`Auto` is f32, what a CPU computes in).
    pub fn bits_per_weight(self, dense: Precision) -> f64 {
        match self {
            Self::None => match dense {
                Precision::F16 | Precision::Bf16 => 16.0,
                _ => 32.0,
            },
            Self::Q8_0 => 8.5,
            Self::Q6k => 6.5625,
            Self::Q5k => 5.6,
            Self::Q4k => 4.65,
        }
    }

    /// Estimated bytes of the weights in memory on a CPU for a checkpoint of `bf16_bytes` on
    /// disk.
    pub fn weight_bytes(self, bf16_bytes: u64) -> u64 {
        let params = bf16_bytes as f64 / 2.0;
        (params * self.bits_per_weight(Precision::F32) / 8.0).ceil() as u64
    }
}

/// Memory kept free beyond the weights: the KV cache and eager-attention scores at the full
/// 4k context (about 2.5 GB for the 7B, 6 GB for the 34B in f32), the vision tower's
/// activations and the runtime. An eighth of the weights is added on top.
const FIXED_HEADROOM_BYTES: u64 = 3 << 30;

/// The default quantization when the user chooses none: the most accurate choice whose
/// weights fit in `available_bytes`, in the order of [`Quant::ALL`] (none → q8_0 → q6k →
/// q5k → q4k). A choice fits when its estimated weights ([`Quant::weight_bytes`]) plus an
/// eighth of them plus 3 GiB of headroom are at most `available_bytes`. When nothing fits,
/// q4k (the smallest; the memory preflight then explains the shortfall). On a GPU the
/// weights are not quantized (`Quant::None`: bf16 there).
///
/// On a 24 GB machine this picks q8_0 for the 7B (15 GB of bf16 → 8 GB) and q4k for the 34B.
/// q4k is about twice as fast as q8_0 on a CPU (BENCHMARKS.md), so users who prefer speed
/// say `--quant q4k`.
pub fn choose_quant(total_bf16_bytes: u64, available_bytes: u64, device_is_cpu: bool) -> Quant {
    if !device_is_cpu {
        return Quant::None;
    }
    Quant::ALL
        .into_iter()
        .find(|q| {
            let w = q.weight_bytes(total_bf16_bytes);
            w.saturating_add(w / 8).saturating_add(FIXED_HEADROOM_BYTES) <= available_bytes
        })
        .unwrap_or(Quant::Q4k)
}

/// Block size of q8_0, the fallback of matrices too narrow for k-quant blocks (256).
const Q8_0_BLOCK: usize = 32;

/// The GGML type a checkpoint tensor is stored as under `quant` (not `Quant::None`).
///
/// - 2-D matrices (decoder, projector and CLIP linear weights, the token embedding table
///   and the LM head) take the quantized type; the LM head of q4k/q5k takes q6k, as
///   llama.cpp's `_K_M` mixes do, since its errors go straight into the logits.
/// - A matrix whose last dimension is not a multiple of 256 cannot hold k-quant blocks: it
///   falls back to q8_0 (blocks of 32), and to f16 when not even that fits.
/// - Everything else stays f32: vectors (norms, biases, the class embedding), the CLIP
///   position embedding (added, not multiplied) and the conv patch embedding (4-D).
pub fn tensor_type(name: &str, shape: &[usize], quant: Quant) -> GgmlDType {
    let Some(wanted) = quant.ggml() else {
        return GgmlDType::F32;
    };
    let is_matrix = shape.len() == 2 && name.ends_with(".weight");
    if !is_matrix || name.ends_with("position_embedding.weight") {
        return GgmlDType::F32;
    }
    let wanted = if name == "lm_head.weight" && matches!(quant, Quant::Q4k | Quant::Q5k) {
        GgmlDType::Q6K
    } else {
        wanted
    };
    let last = shape[1];
    let fits = |dtype: GgmlDType| last.is_multiple_of(dtype.block_size());
    if fits(wanted) {
        wanted
    } else if last.is_multiple_of(Q8_0_BLOCK) {
        GgmlDType::Q8_0
    } else {
        GgmlDType::F16
    }
}

/// How quantized q4_K weights are held in memory on a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightLayout {
    /// Interleaved eight rows at a time for huatuo's AVX2 kernels where the CPU has them
    /// (x86 with AVX2, FMA and F16C; `kernels::q4k`): the same 4.5 bits per weight as the
    /// GGUF blocks (interleaved as they load; the blocks are not kept), and about 2× faster prefill.
    #[default]
    Repacked,
    /// The GGUF blocks as they are, multiplied by candle's block kernels (and dequantized
    /// to f32 for 32 rows or more): the same memory, slower prefill. For comparison, and
    /// what every CPU without AVX2 runs anyway.
    Compact,
}

/// Progress of a conversion to the quantized cache: bytes of the source shards done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Activation and weight dtype of dense (`Quant::None`) loads; quantized models compute
    /// in f32 whatever this says.
    pub dtype: DType,
    pub quant: Quant,
    /// Where quantized cache files live (the binary passes `<cache dir>/quant/`); created
    /// if missing. Unused for `Quant::None`.
    pub cache_dir: PathBuf,
}

/// What a load did, for status lines, `--json` and transcripts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub quant: Quant,
    pub layout: WeightLayout,
    /// The GGUF cache file the weights came from (`None` for dense loads).
    pub cache_file: Option<PathBuf>,
    /// Whether the cache file was (re)built by this load.
    pub converted: bool,
    /// Why an existing cache file was rebuilt (stale source, corrupt or truncated file).
    pub rebuilt_because: Option<String>,
    /// Time spent converting the shards (zero when the cache was reused).
    pub convert_time: Duration,
    /// Total time of the load, conversion included.
    pub load_time: Duration,
    /// Bytes of weights held in memory after the load (quantized blocks, interleaved q4_K
    /// and dense tensors).
    pub weight_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn choose_quant_ladder() {
        // 7B (15.9 GB of bf16) and 34B (69 GB).
        let b7 = 15_900_000_000;
        let b34 = 69 * GB;
        let cases = [
            (b7, 64 * GB, true, Quant::None),
            (b7, 38 * GB, true, Quant::Q8_0),
            (b7, 24 * GB, true, Quant::Q8_0),
            (b7, 13 * GB, true, Quant::Q8_0),
            (b7, 12 * GB, true, Quant::Q6k),
            (b7, 10 * GB, true, Quant::Q5k),
            (b7, 9 * GB, true, Quant::Q4k),
            (b7, 4 * GB, true, Quant::Q4k),
            (b34, 24 * GB, true, Quant::Q4k),
            (b34, 32 * GB, true, Quant::Q5k),
            (b34, 40 * GB, true, Quant::Q6k),
            (b34, 48 * GB, true, Quant::Q8_0),
            (b34, 48 * GB, false, Quant::None),
            (b7, 0, false, Quant::None),
        ];
        for (bf16, avail, cpu, want) in cases {
            assert_eq!(
                choose_quant(bf16, avail, cpu),
                want,
                "{bf16} bytes of bf16, {avail} available, cpu {cpu}"
            );
        }
    }

    #[test]
    fn choose_quant_is_monotonic_in_memory() {
        let bf16 = 15_900_000_000;
        let mut last = Quant::Q4k;
        for gb in 0..100 {
            let q = choose_quant(bf16, gb * GB, true);
            assert!(q <= last, "more memory never picks a coarser quantization");
            last = q;
        }
    }

    #[test]
    fn tensor_types_follow_the_policy() {
        use GgmlDType as G;
        let q4 = Quant::Q4k;
        let cases: [(&str, &[usize], Quant, G); 12] = [
            (
                "model.layers.0.mlp.up_proj.weight",
                &[18944, 3584],
                q4,
                G::Q4K,
            ),
            ("model.layers.0.self_attn.q_proj.bias", &[3584], q4, G::F32),
            ("model.layers.0.input_layernorm.weight", &[3584], q4, G::F32),
            ("model.embed_tokens.weight", &[152064, 3584], q4, G::Q4K),
            ("lm_head.weight", &[152064, 3584], q4, G::Q6K),
            ("lm_head.weight", &[152064, 3584], Quant::Q8_0, G::Q8_0),
            ("lm_head.weight", &[152064, 3584], Quant::Q6k, G::Q6K),
            // Qwen2-0.5B's 896 is not a multiple of 256: q8_0 instead.
            (
                "model.layers.0.mlp.up_proj.weight",
                &[4864, 896],
                q4,
                G::Q8_0,
            ),
            ("x.weight", &[64, 40], q4, G::F16),
            (
                "v.embeddings.position_embedding.weight",
                &[577, 1024],
                q4,
                G::F32,
            ),
            (
                "v.embeddings.patch_embedding.weight",
                &[1024, 3, 14, 14],
                q4,
                G::F32,
            ),
            ("v.embeddings.class_embedding", &[1024], q4, G::F32),
        ];
        for (name, shape, quant, want) in cases {
            assert_eq!(
                tensor_type(name, shape, quant),
                want,
                "{name} {shape:?} {quant}"
            );
        }
        assert_eq!(
            tensor_type(
                "model.layers.0.mlp.up_proj.weight",
                &[18944, 3584],
                Quant::None
            ),
            G::F32
        );
    }
}
