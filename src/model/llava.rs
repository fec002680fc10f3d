//! The whole HuatuoGPT-Vision network: CLIP tower → projector → image features spliced into
//! the decoder's input embeddings at the image sentinels (llava_arch.py
//! `prepare_inputs_labels_for_multimodal`, huatuo-reference.md §3.2, §5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::checkpoint::Checkpoint;
use super::clip::{Selection, VisionTower};
use super::config::{ClipVisionConfig, LlavaConfig};
use super::decoder::{Decoder, Logits};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::store::gguf;
use super::store::quant::{ConvertProgress, LoadOptions, LoadReport, WeightLayout};
use super::store::weights::{QuantizedWeights, Synthetic, SyntheticDense, Weights};
use super::ModelError;
use crate::protocol::Quant;
use crate::text::IMAGE_TOKEN_INDEX;

/// `mm_projector`: `linear`, or `mlp{N}x_gelu` = Linear, then (GELU(erf), Linear) × (N-1)
/// (llava/model/multimodal_projector/builder.py).
#[derive(Debug, Clone)]
struct Projector {
    layers: Vec<Linear>,
}

impl Projector {
    fn load(kind: &str, mm_hidden: usize, hidden: usize, w: &Weights) -> candle_core::Result<Self> {
        let depth = if kind == "linear" {
            1
        } else {
            kind.strip_prefix("mlp")
                .and_then(|s| s.strip_suffix("x_gelu"))
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|d| *d >= 1)
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("mm_projector_type {kind:?} is not supported"))
                })?
        };
        if kind == "linear" {
            return Ok(Self {
                layers: vec![w.linear(mm_hidden, hidden, true)?],
            });
        }
        let mut layers = vec![w.pp("0").linear(mm_hidden, hidden, true)?];
        for i in 1..depth {
            layers.push(w.pp(2 * i).linear(hidden, hidden, true)?);
        }
        Ok(Self { layers })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = self.layers[0].forward(xs)?;
        for layer in &self.layers[1..] {
            xs = layer.forward(&xs.gelu_erf()?)?;
        }
        Ok(xs)
    }
}

/// A loaded HuatuoGPT-Vision model on one device.
#[derive(Debug, Clone)]
pub struct Huatuo {
    vision: VisionTower,
    projector: Projector,
    decoder: Decoder,
    patches_per_image: usize,
    /// Positions a prompt may hold (`tokenizer_model_max_length`): where KV buffers stop
    /// growing ahead of need.
    context_length: usize,
    device: Device,
    quant: Quant,
}

impl Huatuo {
    /// Loads every weight from the checkpoint's shards, memory-mapped, converting to `dtype`.
    pub fn load(ckpt: &Checkpoint, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let load_err = |source: candle_core::Error| ModelError::Load {
            dir: ckpt.dir.clone(),
            source,
        };
        // SAFETY: the shards are memory-mapped read-only; huatuo never writes to them while
        // a model is loaded, and a concurrent external writer is outside what we support (the
        // same contract as every mmap-based loader: candle, safetensors, llama.cpp).
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&ckpt.shards, dtype, device) }
            .map_err(load_err)?;
        Self::from_weights(
            &ckpt.config,
            &ckpt.vision,
            Weights::Dense(vb),
            device,
            Quant::None,
        )
        .map_err(|e| with_dir(e, ckpt))
    }

    /// Loads a checkpoint dense (`Quant::None`, as [`Huatuo::load`]) or quantized: on first
    /// use of a quantization the shards are converted into a GGUF file in
    /// `opts.cache_dir` ([`gguf::ensure`]; `progress` follows that conversion), which this
    /// and later loads read. Quantized models compute in f32. q4_K weights are repacked
    /// for speed ([`WeightLayout::Repacked`]); see [`Huatuo::load_with_layout`].
    pub fn load_with(
        ckpt: &Checkpoint,
        device: &Device,
        opts: &LoadOptions,
        progress: &dyn Fn(ConvertProgress),
    ) -> Result<(Self, LoadReport), ModelError> {
        Self::load_with_layout(ckpt, device, opts, WeightLayout::Repacked, progress)
    }

    /// [`Huatuo::load_with`] with a choice of in-memory layout for q4_K weights: `Compact`
    /// keeps the GGUF blocks for candle's block kernels (same memory, slower prefill).
    pub fn load_with_layout(
        ckpt: &Checkpoint,
        device: &Device,
        opts: &LoadOptions,
        layout: WeightLayout,
        progress: &dyn Fn(ConvertProgress),
    ) -> Result<(Self, LoadReport), ModelError> {
        let start = Instant::now();
        if opts.quant == Quant::None {
            let model = Self::load(ckpt, device, opts.dtype)?;
            let report = model.report(None, Duration::ZERO, start);
            return Ok((model, report));
        }
        let cache = gguf::ensure(ckpt, opts.quant, &opts.cache_dir, progress)?;
        let convert_time = if cache.converted {
            start.elapsed()
        } else {
            Duration::ZERO
        };
        let tensors = gguf::read(&cache.path, device, layout)?;
        let weights = Weights::Quantized(QuantizedWeights::new(Arc::new(tensors), device, layout));
        let model = Self::from_weights(&ckpt.config, &ckpt.vision, weights, device, opts.quant)
            .map_err(|e| with_dir(e, ckpt))?;
        let mut report = model.report(Some(cache.path.clone()), convert_time, start);
        report.layout = layout;
        report.converted = cache.converted;
        report.rebuilt_because = cache.rebuilt_because;
        Ok((model, report))
    }

    /// A model with random weights at the geometry of `cfg` and `vision` (`huatuo bench
    /// --shape`): nothing is read from disk. Quantized as `quant` asks (dense f32 for
    /// `Quant::None`), held in `layout`.
    pub fn synthetic(
        cfg: &LlavaConfig,
        vision: &ClipVisionConfig,
        quant: Quant,
        layout: WeightLayout,
        device: &Device,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let source = Synthetic::new(quant, layout, device, seed);
        let weights = if quant == Quant::None {
            Weights::Dense(VarBuilder::from_backend(
                Box::new(SyntheticDense(source)),
                DType::F32,
                device.clone(),
            ))
        } else {
            Weights::Quantized(QuantizedWeights::new(Arc::new(source), device, layout))
        };
        Self::from_weights(cfg, vision, weights, device, quant)
    }

    /// Builds the network from any weight source.
    fn from_weights(
        cfg: &LlavaConfig,
        vision_cfg: &ClipVisionConfig,
        weights: Weights,
        device: &Device,
        quant: Quant,
    ) -> Result<Self, ModelError> {
        let selection = Selection {
            layer: cfg.mm_vision_select_layer,
            drop_cls: cfg.mm_vision_select_feature == "patch",
        };
        let vision = VisionTower::load_from(
            vision_cfg,
            selection,
            &weights.pp("model.vision_tower.vision_tower.vision_model"),
        )?;
        if vision_cfg.hidden_size != cfg.mm_hidden_size {
            return Err(ModelError::BadConfig {
                path: "config.json".into(),
                reason: format!(
                    "mm_hidden_size {} differs from the vision tower's hidden_size {}",
                    cfg.mm_hidden_size, vision_cfg.hidden_size
                ),
            });
        }
        let projector = Projector::load(
            &cfg.mm_projector_type,
            cfg.mm_hidden_size,
            cfg.hidden_size,
            &weights.pp("model.mm_projector"),
        )?;
        let decoder = Decoder::load_from(cfg, &weights)?;
        let patches_per_image = vision_cfg.num_patches() + usize::from(!selection.drop_cls);
        Ok(Self {
            vision,
            projector,
            decoder,
            patches_per_image,
            context_length: cfg.context_length(),
            device: device.clone(),
            quant,
        })
    }

    fn report(
        &self,
        cache_file: Option<std::path::PathBuf>,
        convert_time: Duration,
        start: Instant,
    ) -> LoadReport {
        LoadReport {
            quant: self.quant,
            layout: WeightLayout::Repacked,
            cache_file,
            converted: false,
            rebuilt_because: None,
            convert_time,
            load_time: start.elapsed(),
            weight_bytes: self.weight_bytes() as u64,
        }
    }

    /// How the weights are stored.
    pub fn quant(&self) -> Quant {
        self.quant
    }

    /// Bytes of weights held in memory (blocks, interleaved q4_K and dense tensors).
    pub fn weight_bytes(&self) -> usize {
        self.vision.weight_bytes()
            + self
                .projector
                .layers
                .iter()
                .map(Linear::bytes)
                .sum::<usize>()
            + self.decoder.weight_bytes()
    }

    /// Positions each image occupies in the prompt (576 for the real models).
    pub fn tokens_per_image(&self) -> usize {
        self.patches_per_image
    }

    /// The side, in pixels, of the square images the tower takes.
    pub fn image_size(&self) -> usize {
        self.vision.image_size()
    }

    /// An empty KV cache for this model: f16 for quantized weights on a CPU (half the
    /// memory, llama.cpp's default; quantized answers are approximate anyway, and
    /// [`crate::kernels::kv_attention`] reads it in place at decode), otherwise in the activations'
    /// dtype, so that `--quant none` stays exact.
    pub fn new_cache(&self) -> KvCache {
        let cache = KvCache::with_limit(self.decoder.num_layers(), self.context_length);
        if self.quant != Quant::None && self.device.is_cpu() {
            cache.storing(DType::F16)
        } else {
            cache
        }
    }

    /// Positions the model attends over (its configuration's context length).
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The dtype activations run in.
    pub fn dtype(&self) -> DType {
        self.decoder.dtype()
    }

    /// Encodes preprocessed images (each `3×S×S` CHW f32) into projected features
    /// `[tokens_per_image, hidden]` each, one image at a time to bound memory.
    pub fn encode_images(&self, images: &[Vec<f32>]) -> Result<Vec<Tensor>, ModelError> {
        let s = self.image_size();
        images
            .iter()
            .map(|pixels| {
                let t = Tensor::from_slice(pixels, (1, 3, s, s), &self.device)?;
                let feats = self.vision.forward(&t)?;
                Ok(self.projector.forward(&feats)?.squeeze(0)?)
            })
            .collect()
    }

    /// Embeds prompt ids, replacing the j-th `IMAGE_TOKEN_INDEX` sentinel by image j's
    /// features; the counts must agree (the reference asserts the same, §3.2).
    pub fn embed_prompt(&self, ids: &[i64], images: &[Tensor]) -> Result<Tensor, ModelError> {
        let sentinels = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
        if sentinels != images.len() {
            return Err(ModelError::ImageCount {
                placeholders: sentinels,
                images: images.len(),
            });
        }
        let mut parts: Vec<Tensor> = Vec::new();
        let mut images = images.iter();
        for run in ids.split_inclusive(|&t| t == IMAGE_TOKEN_INDEX) {
            let (text, image) = match run.split_last() {
                Some((&last, text)) if last == IMAGE_TOKEN_INDEX => (text, images.next()),
                _ => (run, None),
            };
            if !text.is_empty() {
                let text: Vec<u32> = text
                    .iter()
                    .map(|&t| u32::try_from(t).map_err(|_| ModelError::BadToken { id: t }))
                    .collect::<Result<_, _>>()?;
                let t = Tensor::new(text.as_slice(), &self.device)?;
                parts.push(self.decoder.embed(&t)?);
            }
            if let Some(image) = image {
                parts.push(image.to_dtype(self.dtype())?);
            }
        }
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }

    /// Runs embeddings `[1, n, hidden]` after what `cache` holds; f32 logits.
    pub fn forward(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Tensor, ModelError> {
        Ok(self.decoder.forward(embeds, cache, which)?)
    }

    /// Embeds ordinary token ids (decode steps).
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        let t = Tensor::new(ids, &self.device)?;
        Ok(self.decoder.embed(&t)?.unsqueeze(0)?)
    }
}

/// Names the checkpoint in a load error that came from building the network.
fn with_dir(e: ModelError, ckpt: &Checkpoint) -> ModelError {
    match e {
        ModelError::Candle(source) => ModelError::Load {
            dir: ckpt.dir.clone(),
            source,
        },
        ModelError::BadConfig { reason, .. } => ModelError::BadConfig {
            path: ckpt.dir.join("config.json"),
            reason,
        },
        other => other,
    }
}
