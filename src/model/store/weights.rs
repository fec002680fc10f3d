//! Where the networks' weights come from: safetensors shards through candle's `VarBuilder`
//! (dense, the exact path), or quantized tensors by name, read from a GGUF cache file
//! ([`super::gguf`]) or built in memory with random values at a real geometry (`huatuo
//! bench --shape`). The architectures ask this type for linear layers, norms, embeddings and
//! plain tensors by name and never learn which source answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{LayerNorm, RmsNorm, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::quant::{tensor_type, WeightLayout};
use crate::model::checkpoint::Checkpoint;
use crate::model::linear::{Embedding, Linear, QWeight};
use crate::protocol::Quant;

/// The rule the safetensors crate (and so the dense loader) enforces on a shard's data
/// offsets: the tensors tile the data section exactly, in some order, with no overlap and no
/// gap. Overlapping tensors would share bytes (one tensor's edit changes another); checked
/// here, before anything is written, so the quantized path accepts what the dense one does.
pub(crate) fn check_extents(
    mut extents: Vec<(u64, u64, String)>,
    data_len: u64,
) -> std::result::Result<(), String> {
    extents.sort();
    let mut end = 0;
    let mut previous: Option<&str> = None;
    for (begin, stop, name) in &extents {
        if *begin < end {
            let other = previous.unwrap_or("the header");
            return Err(format!(
                "tensor {name} overlaps tensor {other} (data offsets {begin}..{stop})"
            ));
        }
        if *begin > end {
            return Err(format!(
                "tensor {name} starts at {begin}, leaving a gap after byte {end} (data offsets \
                 must be contiguous)"
            ));
        }
        end = *stop;
        previous = Some(name);
    }
    if end != data_len {
        return Err(format!(
            "the tensors cover {end} bytes of data but the file holds {data_len}"
        ));
    }
    Ok(())
}

/// The shape the network will ask for `name` under the checkpoint's configs (the layout of
/// `decoder.rs`, `clip.rs` and the projector), when it is one of the tensors it reads;
/// `None` for a name it does not know (converted as it is).
fn expected_shape(ckpt: &Checkpoint, name: &str) -> Option<Vec<usize>> {
    let c = &ckpt.config;
    let (h, i, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim(),
        c.num_kv_heads() * c.head_dim(),
    );
    let v = &ckpt.vision;
    let (vh, vi) = (v.hidden_size, v.intermediate_size);
    if let Some(rest) = name.strip_prefix("model.vision_tower.vision_tower.vision_model.") {
        let grid = v.image_size / v.patch_size.max(1);
        return Some(match rest {
            "embeddings.class_embedding" => vec![vh],
            "embeddings.patch_embedding.weight" => {
                vec![vh, v.num_channels, v.patch_size, v.patch_size]
            }
            "embeddings.position_embedding.weight" => vec![grid * grid + 1, vh],
            _ => {
                let (_, field) = rest.strip_prefix("encoder.layers.")?.split_once('.')?;
                match field {
                    "mlp.fc1.weight" => vec![vi, vh],
                    "mlp.fc1.bias" => vec![vi],
                    "mlp.fc2.weight" => vec![vh, vi],
                    f if f.starts_with("self_attn.") && f.ends_with(".weight") => vec![vh, vh],
                    f if f.ends_with(".bias") || f.ends_with(".weight") => vec![vh],
                    _ => return None,
                }
            }
        });
    }
    Some(match name {
        "model.embed_tokens.weight" | "lm_head.weight" => vec![vocab, h],
        "model.norm.weight" => vec![h],
        "model.mm_projector.0.weight" => vec![h, c.mm_hidden_size],
        "model.mm_projector.2.weight" => vec![h, h],
        "model.mm_projector.0.bias" | "model.mm_projector.2.bias" => vec![h],
        _ => {
            let (_, field) = name.strip_prefix("model.layers.")?.split_once('.')?;
            match field {
                "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![h],
                "self_attn.q_proj.weight" => vec![q, h],
                "self_attn.q_proj.bias" => vec![q],
                "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
                "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => vec![kv],
                "self_attn.o_proj.weight" => vec![h, q],
                "self_attn.o_proj.bias" => vec![h],
                "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![i, h],
                "mlp.down_proj.weight" => vec![h, i],
                _ => return None,
            }
        }
    })
}

/// Refuses a tensor whose shape is not the one the network will ask for, before the
/// conversion writes gigabytes that the load would then reject.
pub(crate) fn check_shape(
    ckpt: &Checkpoint,
    name: &str,
    shape: &[usize],
) -> std::result::Result<(), String> {
    match expected_shape(ckpt, name) {
        Some(want) if want != shape => Err(format!(
            "tensor {name} has shape {shape:?} but config.json implies {want:?}"
        )),
        _ => Ok(()),
    }
}

/// A source of named quantized tensors.
pub(crate) trait TensorSource: Send + Sync {
    /// The tensor called `name`, checked to have `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<QWeight>;
    fn contains(&self, name: &str) -> bool;
}

/// A prefix-scoped view of the weights, as candle's `VarBuilder` is.
#[derive(Clone)]
pub enum Weights<'a> {
    /// Dense tensors from safetensors shards, converted to the builder's dtype.
    Dense(VarBuilder<'a>),
    /// Quantized (or f32) tensors by name.
    Quantized(QuantizedWeights),
}

/// The quantized side of [`Weights`]: a source and a name prefix.
#[derive(Clone)]
pub struct QuantizedWeights {
    source: Arc<dyn TensorSource>,
    prefix: String,
    device: Device,
    layout: WeightLayout,
}

impl QuantizedWeights {
    pub(crate) fn new(
        source: Arc<dyn TensorSource>,
        device: &Device,
        layout: WeightLayout,
    ) -> Self {
        Self {
            source,
            prefix: String::new(),
            device: device.clone(),
            layout,
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn get_q(&self, name: &str, shape: &[usize]) -> Result<QWeight> {
        self.source.get(&self.path(name), shape)
    }

    fn get_dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_q(name, shape)?.dequantize(&self.device)
    }
}

impl<'a> Weights<'a> {
    /// The same weights under `{prefix}.{s}`.
    pub fn pp<S: ToString>(&self, s: S) -> Self {
        match self {
            Self::Dense(vb) => Self::Dense(vb.pp(s)),
            Self::Quantized(q) => Self::Quantized(QuantizedWeights {
                prefix: q.path(&s.to_string()),
                ..q.clone()
            }),
        }
    }

    /// Whether `name` (under the prefix) exists.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Dense(vb) => vb.contains_tensor(name),
            Self::Quantized(q) => q.source.contains(&q.path(name)),
        }
    }

    /// A plain tensor (norm weights, embeddings added to activations) in the activation
    /// dtype: the builder's for dense weights, f32 for quantized ones.
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str) -> Result<Tensor> {
        match self {
            Self::Dense(vb) => vb.get(shape, name),
            Self::Quantized(q) => q.get_dense(name, shape.into().dims()),
        }
    }

    /// The linear layer `{prefix}.weight` `[out, in]` (+ `{prefix}.bias` `[out]`).
    pub fn linear(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        match self {
            Self::Dense(vb) => Linear::load(in_dim, out_dim, bias, vb.clone()),
            Self::Quantized(q) => {
                let weight = q.get_q("weight", &[out_dim, in_dim])?;
                let bias = if bias {
                    Some(q.get_dense("bias", &[out_dim])?)
                } else {
                    None
                };
                Linear::quantized(weight, bias, q.layout == WeightLayout::Repacked)
            }
        }
    }

    /// RMSNorm with `{prefix}.weight`.
    pub fn rms_norm(&self, size: usize, eps: f64) -> Result<RmsNorm> {
        match self {
            Self::Dense(vb) => candle_nn::rms_norm(size, eps, vb.clone()),
            Self::Quantized(_) => Ok(RmsNorm::new(self.get(size, "weight")?, eps)),
        }
    }

    /// LayerNorm with `{prefix}.weight` and `{prefix}.bias`.
    pub fn layer_norm(&self, size: usize, eps: f64) -> Result<LayerNorm> {
        match self {
            Self::Dense(vb) => candle_nn::layer_norm(size, eps, vb.clone()),
            Self::Quantized(_) => Ok(LayerNorm::new(
                self.get(size, "weight")?,
                self.get(size, "bias")?,
                eps,
            )),
        }
    }

    /// The token-embedding table `{prefix}.weight` `[vocab, hidden]`.
    pub fn embedding(&self, vocab: usize, hidden: usize) -> Result<Embedding> {
        match self {
            Self::Dense(vb) => Ok(Embedding::dense(candle_nn::Embedding::new(
                vb.get((vocab, hidden), "weight")?,
                hidden,
            ))),
            Self::Quantized(q) => Ok(match q.get_q("weight", &[vocab, hidden])? {
                QWeight::Interleaved(p) => Embedding::interleaved(p),
                QWeight::Candle { tensor, .. }
                    if matches!(tensor.dtype(), GgmlDType::F32 | GgmlDType::F16) =>
                {
                    let t = tensor.dequantize(&q.device)?;
                    Embedding::dense(candle_nn::Embedding::new(t, hidden))
                }
                QWeight::Candle { tensor, .. } => Embedding::quantized(tensor),
            }),
        }
    }
}

/// Quantized tensors held in memory by name (what a GGUF cache file loads into).
pub(crate) struct TensorMap(pub HashMap<String, QWeight>);

impl TensorSource for TensorMap {
    fn get(&self, name: &str, shape: &[usize]) -> Result<QWeight> {
        let Some(w) = self.0.get(name) else {
            candle_core::bail!("tensor {name} is missing from the quantized weights");
        };
        if w.shape().dims() != shape {
            candle_core::bail!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                w.shape()
            );
        }
        Ok(w.clone())
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Random weights generated on request, quantized per [`tensor_type`], for benchmarks at
/// the real geometry without a download. Each distinct (shape, type) is drawn and quantized
/// once from at most 1024 rows, whose bytes are tiled to the full height: building the 7B
/// takes seconds instead of quantizing 7.6 billion values, and every layer still owns its
/// bytes, so memory use is that of a real model. Values are uniform with the variance of a
/// fan-in initialisation, so activations stay finite through many layers.
pub(crate) struct Synthetic {
    quant: Quant,
    /// Whether q4_K matrices are interleaved as they are made ([`WeightLayout::Repacked`]).
    interleave: bool,
    device: Device,
    seed: u64,
    templates: Mutex<HashMap<TemplateKey, Arc<Vec<u8>>>>,
}

/// (shape, type and distribution) of a synthetic template.
type TemplateKey = (Vec<usize>, String);

/// Rows drawn per template before tiling.
const TEMPLATE_ROWS: usize = 1024;

impl Synthetic {
    pub fn new(quant: Quant, layout: WeightLayout, device: &Device, seed: u64) -> Self {
        Self {
            quant,
            interleave: layout == WeightLayout::Repacked,
            device: device.clone(),
            seed,
            templates: Mutex::new(HashMap::new()),
        }
    }

    /// Values for `name`: norm weights near 1, biases and embeddings small, matrices with
    /// unit-variance outputs for unit-variance inputs. `rows` of a matrix are drawn.
    fn values(&self, name: &str, shape: &[usize], rows: usize) -> Vec<f32> {
        let (center, scale) = init(name, shape);
        let seed =
            self.seed ^ (shape.iter().product::<usize>() as u64) ^ u64::from(scale.to_bits());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = match shape {
            [_, cols] => rows * cols,
            _ => shape.iter().product(),
        };
        (0..n)
            .map(|_| center + scale * rng.random_range(-1.0f32..1.0))
            .collect()
    }
}

/// (center, half-width) of the uniform distribution a synthetic tensor is drawn from.
fn init(name: &str, shape: &[usize]) -> (f32, f32) {
    let fan_in: usize = shape
        .get(1..)
        .unwrap_or(&[])
        .iter()
        .product::<usize>()
        .max(1);
    if shape.len() == 1 && name.ends_with("weight") {
        (1.0, 0.1)
    } else if name.contains("embed_tokens") {
        (0.0, 1.0)
    } else if shape.len() == 1 || name.contains("embedding") {
        (0.0, 0.5)
    } else {
        (0.0, (3.0 / fan_in as f32).sqrt())
    }
}

impl TensorSource for Synthetic {
    fn get(&self, name: &str, shape: &[usize]) -> Result<QWeight> {
        let dtype = tensor_type(name, shape, self.quant);
        let key = (shape.to_vec(), format!("{dtype:?} {:?}", init(name, shape)));
        let template = {
            let mut cache = self
                .templates
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match cache.get(&key) {
                Some(t) => t.clone(),
                None => {
                    let (rows, cols) = match shape {
                        [r, c] => ((*r).min(TEMPLATE_ROWS), *c),
                        _ => (1, shape.iter().product()),
                    };
                    let values = self.values(name, shape, rows);
                    let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu)?;
                    let bytes = Arc::new(QTensor::quantize(&t, dtype)?.data()?.into_owned());
                    cache.insert(key, bytes.clone());
                    bytes
                }
            }
        };
        let total: usize = shape.iter().product::<usize>() / dtype.block_size() * dtype.type_size();
        let mut data = Vec::with_capacity(total);
        while data.len() < total {
            let take = (total - data.len()).min(template.len());
            data.extend_from_slice(&template[..take]);
        }
        QWeight::from_bytes_in(dtype, shape, &data, &self.device, self.interleave)
    }

    fn contains(&self, _name: &str) -> bool {
        true
    }
}

/// The dense counterpart of [`Synthetic`] (`--quant none`), as a candle `VarBuilder` backend.
pub(crate) struct SyntheticDense(pub Synthetic);

impl candle_nn::var_builder::SimpleBackend for SyntheticDense {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let dims = s.dims();
        let rows = dims.first().copied().unwrap_or(1);
        let values = if dims.len() == 2 {
            let t = self.0.values(name, dims, rows.min(TEMPLATE_ROWS));
            let mut all = Vec::with_capacity(s.elem_count());
            while all.len() < s.elem_count() {
                let take = (s.elem_count() - all.len()).min(t.len());
                all.extend_from_slice(&t[..take]);
            }
            all
        } else {
            self.0.values(name, dims, rows)
        };
        Tensor::from_vec(values, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("synthetic weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
