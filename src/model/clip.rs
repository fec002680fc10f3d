//! The CLIP ViT vision tower as LLaVA uses it: patch + class + position embeddings,
//! `pre_layrnorm`, then encoder layers, returning `hidden_states[select_layer]` (before
//! `post_layernorm`, which LLaVA never applies). Mirrors transformers' `CLIPVisionModel`
//! (modeling_clip.py) and huatuo-reference.md §1.3, §5.2. Layers after the selected one are
//! neither loaded nor run.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, VarBuilder};

use super::config::ClipVisionConfig;
use super::linear::Linear;
use super::store::weights::Weights;
use crate::kernels::vit_attention;

/// Which hidden state and which tokens of it the projector sees.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    /// Index into transformers' `hidden_states` (embeddings = 0), negative from the end.
    pub layer: i64,
    /// `patch` drops the CLS token; `cls_patch` keeps it.
    pub drop_cls: bool,
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(cfg: &ClipVisionConfig, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q: w.pp("q_proj").linear(h, h, true)?,
            k: w.pp("k_proj").linear(h, h, true)?,
            v: w.pp("v_proj").linear(h, h, true)?,
            out: w.pp("out_proj").linear(h, h, true)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// Bidirectional multi-head attention over all 577 positions (no mask).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, c) = xs.dims3()?;
        // transformers scales q before the product (CLIPAttention: q_proj(x) * scale).
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k, v) = (
            self.q.forward(xs)?,
            self.k.forward(xs)?,
            self.v.forward(xs)?,
        );
        if let Some(ctx) = vit_attention::attention(&q, &k, &v, self.heads, scale as f32)? {
            return self.out.forward(&ctx);
        }
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((q * scale)?)?;
        let k = split(k)?;
        let v = split(v)?;
        let scores = q.matmul(&k.t()?)?;
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.out.forward(&ctx)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    quick_gelu: bool,
}

impl EncoderLayer {
    fn load(cfg: &ClipVisionConfig, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let i = cfg.intermediate_size;
        Ok(Self {
            norm1: w.pp("layer_norm1").layer_norm(h, cfg.layer_norm_eps)?,
            attn: Attention::load(cfg, &w.pp("self_attn"))?,
            norm2: w.pp("layer_norm2").layer_norm(h, cfg.layer_norm_eps)?,
            fc1: w.pp("mlp.fc1").linear(h, i, true)?,
            fc2: w.pp("mlp.fc2").linear(i, h, true)?,
            quick_gelu: cfg.hidden_act == "quick_gelu",
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.norm1.forward(xs)?)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&xs)?)?;
        let h = if self.quick_gelu {
            quick_gelu(&h)?
        } else {
            h.gelu_erf()?
        };
        xs + self.fc2.forward(&h)?
    }
}

/// `x · sigmoid(1.702 x)`, transformers' QuickGELUActivation. On a CPU in f32 it is one
/// pass over the activations on every core (candle's ops make three, one at a time), with
/// the very operations candle's `affine`, `sigmoid` and `mul` apply, so the result is the
/// same to the bit.
fn quick_gelu(h: &Tensor) -> Result<Tensor> {
    if h.device().is_cpu() && h.dtype() == DType::F32 {
        return h.apply_op1_no_bwd(&QuickGelu);
    }
    h * candle_nn::ops::sigmoid(&(h * 1.702)?)?
}

struct QuickGelu;

impl candle_core::CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "huatuo-quick-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quick-gelu input is not contiguous");
        };
        let xs = &storage.as_slice::<f32>()?[start..end];
        let mut out = vec![0f32; xs.len()];
        let threads = candle_core::utils::get_num_threads().max(1);
        let chunk = xs.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (o, x) in out.chunks_mut(chunk).zip(xs.chunks(chunk)) {
                s.spawn(move || {
                    for (o, &x) in o.iter_mut().zip(x) {
                        // affine(x, 1.702, 0), sigmoid, mul: candle's order of operations.
                        let a = x * 1.702f32 + 0.0;
                        *o = x * ((-a).exp() + 1.0).recip();
                    }
                });
            }
        });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// The vision tower up to the selected hidden state.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    drop_cls: bool,
    image_size: usize,
}

impl VisionTower {
    /// Loads the tower from `vb` rooted at `...vision_model`. Only the layers needed for
    /// `selection` are read.
    pub fn load(cfg: &ClipVisionConfig, selection: Selection, vb: VarBuilder) -> Result<Self> {
        Self::load_from(cfg, selection, &Weights::Dense(vb))
    }

    /// [`VisionTower::load`] from dense or quantized weights.
    pub fn load_from(cfg: &ClipVisionConfig, selection: Selection, w: &Weights) -> Result<Self> {
        let n_states = cfg.num_hidden_layers as i64 + 1;
        let index = if selection.layer < 0 {
            n_states + selection.layer
        } else {
            selection.layer
        };
        if !(0..n_states).contains(&index) {
            candle_core::bail!(
                "mm_vision_select_layer {} is outside the tower's {} hidden states",
                selection.layer,
                n_states
            );
        }
        let h = cfg.hidden_size;
        let emb = w.pp("embeddings");
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let weight = emb.get(
            (h, cfg.num_channels, cfg.patch_size, cfg.patch_size),
            "patch_embedding.weight",
        )?;
        let patch_embedding = Conv2d::new(weight, None, conv_cfg);
        let class_embedding = emb.get(h, "class_embedding")?;
        let position_embedding =
            emb.get((cfg.num_patches() + 1, h), "position_embedding.weight")?;
        let pre_layernorm = w.pp("pre_layrnorm").layer_norm(h, cfg.layer_norm_eps)?;
        let layers = (0..index as usize)
            .map(|l| EncoderLayer::load(cfg, &w.pp(format!("encoder.layers.{l}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding,
            class_embedding,
            position_embedding,
            pre_layernorm,
            layers,
            drop_cls: selection.drop_cls,
            image_size: cfg.image_size,
        })
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let norm = |n: &LayerNorm| t(n.weight()) + n.bias().map(t).unwrap_or_default();
        let mut total = t(self.patch_embedding.weight())
            + t(&self.class_embedding)
            + t(&self.position_embedding)
            + norm(&self.pre_layernorm);
        for l in &self.layers {
            let a = &l.attn;
            total += [&a.q, &a.k, &a.v, &a.out, &l.fc1, &l.fc2]
                .iter()
                .map(|x| x.bytes())
                .sum::<usize>();
            total += norm(&l.norm1) + norm(&l.norm2);
        }
        total
    }

    /// The side of the square input images in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// `[N, 3, S, S]` normalised pixels → `[N, patches(+1), hidden]` features.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let dtype = self.class_embedding.dtype();
        let pixels = pixels.to_dtype(dtype)?;
        let patches = self.patch_embedding.forward(&pixels)?; // [N, h, g, g]
        let (n, h, _, _) = patches.dims4()?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // [N, g*g, h]
        let cls = self.class_embedding.reshape((1, 1, h))?.expand((n, 1, h))?;
        let xs = Tensor::cat(&[&cls, &patches], 1)?;
        let xs = xs.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut xs = self.pre_layernorm.forward(&xs)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        if self.drop_cls {
            let len = xs.dim(D::Minus2)?;
            xs = xs.narrow(1, 1, len - 1)?;
        }
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused quick-GELU equals candle's three ops to the bit.
    #[test]
    fn fused_quick_gelu_is_bit_identical() {
        let vals: Vec<f32> = (0..10_001)
            .map(|i| (i as f32 - 5000.0) * 0.0037 + if i % 7 == 0 { -0.0 } else { 0.0 })
            .collect();
        let h = Tensor::from_vec(vals, (1, 10_001), &Device::Cpu).expect("h");
        let fused: Vec<f32> = quick_gelu(&h)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("fused");
        let ops: Vec<f32> = (&h
            * candle_nn::ops::sigmoid(&(&h * 1.702).expect("affine")).expect("sigmoid"))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("ops");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&ops));
    }
}
