//! The whole HuatuoGPT-Vision network: CLIP tower → projector → image features spliced into
//! the decoder's input embeddings at the image sentinels (llava_arch.py
//! `prepare_inputs_labels_for_multimodal`, huatuo-reference.md §3.2, §5).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::checkpoint::Checkpoint;
use super::clip::{Selection, VisionTower};
use super::decoder::{Decoder, Logits};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::tokenizer::IMAGE_TOKEN_INDEX;
use super::ModelError;

/// `mm_projector`: `linear`, or `mlp{N}x_gelu` = Linear, then (GELU(erf), Linear) × (N-1)
/// (llava/model/multimodal_projector/builder.py).
#[derive(Debug, Clone)]
struct Projector {
    layers: Vec<Linear>,
}

impl Projector {
    fn load(
        kind: &str,
        mm_hidden: usize,
        hidden: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
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
                layers: vec![Linear::load(mm_hidden, hidden, true, vb)?],
            });
        }
        let mut layers = vec![Linear::load(mm_hidden, hidden, true, vb.pp("0"))?];
        for i in 1..depth {
            layers.push(Linear::load(
                hidden,
                hidden,
                true,
                vb.pp(format!("{}", 2 * i)),
            )?);
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
    device: Device,
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
        let cfg = &ckpt.config;
        let selection = Selection {
            layer: cfg.mm_vision_select_layer,
            drop_cls: cfg.mm_vision_select_feature == "patch",
        };
        let vision = VisionTower::load(
            &ckpt.vision,
            selection,
            vb.pp("model.vision_tower.vision_tower.vision_model"),
        )
        .map_err(load_err)?;
        if ckpt.vision.hidden_size != cfg.mm_hidden_size {
            return Err(ModelError::BadConfig {
                path: ckpt.dir.join("config.json"),
                reason: format!(
                    "mm_hidden_size {} differs from the vision tower's hidden_size {}",
                    cfg.mm_hidden_size, ckpt.vision.hidden_size
                ),
            });
        }
        let projector = Projector::load(
            &cfg.mm_projector_type,
            cfg.mm_hidden_size,
            cfg.hidden_size,
            vb.pp("model.mm_projector"),
        )
        .map_err(load_err)?;
        let decoder = Decoder::load(cfg, vb).map_err(load_err)?;
        let patches_per_image = ckpt.vision.num_patches() + usize::from(!selection.drop_cls);
        Ok(Self {
            vision,
            projector,
            decoder,
            patches_per_image,
            device: device.clone(),
        })
    }

    /// Positions each image occupies in the prompt (576 for the real models).
    pub fn tokens_per_image(&self) -> usize {
        self.patches_per_image
    }

    /// The side, in pixels, of the square images the tower takes.
    pub fn image_size(&self) -> usize {
        self.vision.image_size()
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.decoder.num_layers())
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
