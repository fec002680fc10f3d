//! The language model of both HuatuoGPT-Vision sizes: a pre-norm decoder with RMSNorm,
//! rotary positions (non-interleaved "rotate_half"), grouped-query attention and a SiLU-gated
//! MLP. Qwen2 (7B) and Yi/Llama (34B) differ here only in the q/k/v biases and RoPE θ, which
//! come from the config, so one implementation serves both (transformers' modeling_qwen2.py and
//! modeling_llama.py, huatuo-reference.md §5.4). It is fed input embeddings, not token ids, so
//! that image features can be spliced in (candle's qwen2 cannot do that).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use super::config::LlavaConfig;
use super::kv_cache::KvCache;
use super::linear::{Embedding, Linear};
use super::store::weights::Weights;

/// Positions a forward pass runs at once. A longer prompt runs in chunks of this many, so
/// its attention scores (`heads × chunk × context` floats) stay bounded: the last chunk of a
/// 4,096-position prompt to the 34B holds two buffers of 0.24 GB where the whole prompt
/// held three of 3.8 GB. Half llama.cpp's default batch: no slower here (the quantized
/// kernels reuse a weight over 128 rows at a time anyway), half the memory.
pub const PREFILL_CHUNK: usize = 256;

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every position of the input: parity tests compare these.
    All,
    /// Only the last position: generation needs nothing else.
    Last,
}

#[derive(Debug, Clone)]
struct Geometry {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    geo: Geometry,
}

impl Attention {
    fn load(cfg: &LlavaConfig, geo: &Geometry, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let bias = cfg.qkv_bias();
        Ok(Self {
            q: w.pp("q_proj").linear(h, geo.heads * geo.head_dim, bias)?,
            k: w.pp("k_proj")
                .linear(h, geo.kv_heads * geo.head_dim, bias)?,
            v: w.pp("v_proj")
                .linear(h, geo.kv_heads * geo.head_dim, bias)?,
            o: w.pp("o_proj")
                .linear(geo.heads * geo.head_dim, h, cfg.o_bias())?,
            geo: geo.clone(),
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        let g = &self.geo;
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.reshape((b, n, heads, g.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(xs)?, g.heads)?;
        let k = split(self.k.forward(xs)?, g.kv_heads)?;
        let v = split(self.v.forward(xs)?, g.kv_heads)?;
        let (cos, sin) = rope;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = cache.append(layer, &k, &v)?;
        // Grouped-query attention without repeating K and V for every query head: the
        // `groups` query heads that share a KV head are stacked along the sequence axis
        // (`[b, kv, groups·n, d]`, a free reshape), so each product reads the cache once.
        let groups = g.heads / g.kv_heads;
        let t = k.dim(2)?;
        let q = q.reshape((b, g.kv_heads, groups * n, g.head_dim))?;
        let scale = 1.0 / (g.head_dim as f64).sqrt();
        let (k, v) = if k.dtype() == q.dtype() {
            (k, v)
        } else if n == 1 && b == 1 {
            // A decode step over an f16 cache, read where it is (on every CPU: the scalar
            // loops where huatuo has no SIMD ones), never converted per step.
            let ctx = crate::kernels::kv_attention::decode(&q, &k, &v, scale as f32)?
                .to_dtype(q.dtype())?
                .reshape((b, g.heads, n, g.head_dim))?
                .transpose(1, 2)?
                .reshape((b, n, ()))?;
            return self.o.forward(&ctx);
        } else {
            // A prefill: the cache's views in the activations' dtype, once for the call.
            (k.to_dtype(q.dtype())?, v.to_dtype(q.dtype())?)
        };
        // Scores are a step's largest buffers at a long prompt's last chunk (the 34B's: 56
        // heads × 256 × 4,096 f32, 0.24 GB), so each is dropped once the next exists: two
        // live at a time, not three.
        let scores = (q.matmul(&k.t()?)? * scale)?.reshape((b, g.heads, n, t))?;
        let scores = match mask {
            Some(m) => {
                let masked = scores.broadcast_add(m)?;
                drop(scores);
                masked
            }
            None => scores,
        };
        // Softmax in f32 whatever the activation dtype, as transformers does.
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
        drop(scores);
        let probs = probs
            .to_dtype(v.dtype())?
            .reshape((b, g.kv_heads, groups * n, t))?;
        let ctx = probs
            .matmul(&v)?
            .reshape((b, g.heads, n, g.head_dim))?
            .transpose(1, 2)?
            .reshape((b, n, ()))?;
        self.o.forward(&ctx)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(cfg: &LlavaConfig, w: &Weights) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: w.pp("gate_proj").linear(h, i, false)?,
            up: w.pp("up_proj").linear(h, i, false)?,
            down: w.pp("down_proj").linear(i, h, false)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(xs)?)?;
        self.down.forward(&(gate * self.up.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// The decoder with its embedding table and LM head.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    geo: Geometry,
    hidden: usize,
}

impl Decoder {
    /// Loads the decoder from a VarBuilder at the checkpoint root (`model.*`, `lm_head.*`).
    pub fn load(cfg: &LlavaConfig, vb: VarBuilder) -> Result<Self> {
        Self::load_from(cfg, &Weights::Dense(vb))
    }

    /// Loads the decoder from dense or quantized weights at the checkpoint root.
    pub fn load_from(cfg: &LlavaConfig, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let geo = Geometry {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_kv_heads(),
            head_dim: cfg.head_dim(),
            rope_theta: cfg.rope_theta,
        };
        let m = w.pp("model");
        let embed = m.pp("embed_tokens").embedding(cfg.vocab_size, h)?;
        let eps = cfg.rms_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let lw = m.pp(format!("layers.{l}"));
                Ok(Layer {
                    input_norm: lw.pp("input_layernorm").rms_norm(h, eps)?,
                    attn: Attention::load(cfg, &geo, &lw.pp("self_attn"))?,
                    post_norm: lw.pp("post_attention_layernorm").rms_norm(h, eps)?,
                    mlp: Mlp::load(cfg, &lw.pp("mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = m.pp("norm").rms_norm(h, eps)?;
        let lm_head = if cfg.tie_word_embeddings.unwrap_or(false) && !w.contains("lm_head.weight") {
            embed.as_linear()?
        } else {
            w.pp("lm_head").linear(h, cfg.vocab_size, false)?
        };
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            geo,
            hidden: h,
        })
    }

    /// Number of decoder layers (the KV cache needs one slot per layer).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The model width.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The dtype activations run in (that of the embedding table; f32 when quantized).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let norm = |n: &RmsNorm| {
            let w = n.clone().into_inner();
            w.weight().elem_count() * w.weight().dtype().size_in_bytes()
        };
        let mut total = self.embed.bytes() + self.lm_head.bytes() + norm(&self.norm);
        for l in &self.layers {
            let a = &l.attn;
            let m = &l.mlp;
            total += [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
                .iter()
                .map(|x| x.bytes())
                .sum::<usize>();
            total += norm(&l.input_norm) + norm(&l.post_norm);
        }
        total
    }

    /// `[n]` token ids → `[n, hidden]` embeddings (no scaling, §5.4).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.forward(ids)
    }

    /// Runs `[1, n, hidden]` embeddings at positions `cache.len()..` and returns f32 logits
    /// `[n, vocab]` (`Logits::All`) or `[1, vocab]` (`Logits::Last`). A long prompt runs
    /// [`PREFILL_CHUNK`] positions at a time; each chunk attends to the cache and to itself,
    /// so the logits are those of one pass (up to the order of float sums).
    pub fn forward(&self, embeds: &Tensor, cache: &mut KvCache, which: Logits) -> Result<Tensor> {
        let (_, n, _) = embeds.dims3()?;
        if n == 0 {
            candle_core::bail!("a forward pass needs at least one position");
        }
        let mut hidden = Vec::with_capacity(n.div_ceil(PREFILL_CHUNK));
        for at in (0..n).step_by(PREFILL_CHUNK) {
            let part = embeds.narrow(1, at, PREFILL_CHUNK.min(n - at))?;
            let xs = self.run_layers(&part, cache)?;
            if which == Logits::All || at + PREFILL_CHUNK >= n {
                hidden.push(xs);
            }
        }
        let xs = match hidden.len() {
            1 => hidden.remove(0),
            _ => Tensor::cat(&hidden, 1)?,
        };
        let xs = match which {
            Logits::All => xs,
            Logits::Last => xs.narrow(1, xs.dim(1)? - 1, 1)?,
        };
        let xs = self.norm.forward(&xs)?;
        self.lm_head.forward(&xs)?.squeeze(0)?.to_dtype(DType::F32)
    }

    /// Runs `[1, n, hidden]` embeddings through every layer at positions `cache.len()..`,
    /// appending their keys and values, and returns the last layer's hidden states.
    fn run_layers(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_, n, _) = embeds.dims3()?;
        let offset = cache.len();
        let device = embeds.device();
        let dtype = embeds.dtype();
        let rope = self.rope_tables(offset, n, dtype, device)?;
        let mask = if n > 1 {
            Some(causal_mask(n, offset, dtype, device)?)
        } else {
            None
        };
        let mut xs = embeds.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.attn.forward(
                &layer.input_norm.forward(&xs)?,
                &rope,
                mask.as_ref(),
                cache,
                l,
            )?;
            xs = (xs + h)?;
            let h = layer.mlp.forward(&layer.post_norm.forward(&xs)?)?;
            xs = (xs + h)?;
        }
        cache.advance(n);
        Ok(xs)
    }

    /// cos/sin `[n, head_dim/2]` for positions `offset..offset+n`, computed in f32 as
    /// transformers does (`inv_freq = 1/θ^(2i/d)`, then `position · inv_freq`), then cast.
    fn rope_tables(
        &self,
        offset: usize,
        n: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let d = self.geo.head_dim;
        let theta = self.geo.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / d as f32))
            .collect();
        let mut freqs = Vec::with_capacity(n * d / 2);
        for p in offset..offset + n {
            let p = p as f32;
            freqs.extend(inv_freq.iter().map(|f| p * f));
        }
        let cos: Vec<f32> = freqs.iter().map(|x| x.cos()).collect();
        let sin: Vec<f32> = freqs.iter().map(|x| x.sin()).collect();
        let cos = Tensor::from_vec(cos, (n, d / 2), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (n, d / 2), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// `[n, offset+n]` additive mask: 0 where query i may see key j (j ≤ offset+i), -inf elsewhere.
fn causal_mask(n: usize, offset: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let total = offset + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (n, total), device)?.to_dtype(dtype)
}
