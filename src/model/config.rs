//! Serde mirrors of a checkpoint's config files, with the defaults transformers applies when a
//! key is absent. Owns nothing but parsing: the network code reads geometry from here so that
//! the real 7B/34B checkpoints and tiny test ones run through the same code.
//!
//! Files (huatuo-reference.md §1.1, §1.2, §1.3):
//! - `config.json`: the LLaVA config, i.e. the backbone's config plus `mm_*` keys;
//! - `vit/clip_vit_large_patch14_336/config.json`: a `CLIPConfig` (or a bare
//!   `CLIPVisionConfig`) giving the vision tower's geometry (its weights come from the shards).

use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// The decoder family, chosen from `model_type` (never from the directory name, unlike cli.py).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `llava_qwen2`: HuatuoGPT-Vision-7B, a Qwen2 decoder (q/k/v biases).
    Qwen2,
    /// `llava_llama`: HuatuoGPT-Vision-34B, a Yi-1.5 (Llama) decoder.
    Llama,
}

impl Family {
    /// The family of a `model_type` string, or `None` for one huatuo does not run.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llava_qwen2" => Some(Self::Qwen2),
            "llava_llama" => Some(Self::Llama),
            _ => None,
        }
    }

    /// A short human name for status lines and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
        }
    }
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_select_layer() -> i64 {
    -2
}
fn default_select_feature() -> String {
    "patch".to_string()
}
fn default_projector() -> String {
    // llava/model/multimodal_projector/builder.py: getattr(config, 'mm_projector_type', 'linear')
    "linear".to_string()
}
fn default_hidden_act() -> String {
    "silu".to_string()
}

/// `config.json` of a HuatuoGPT-Vision checkpoint (reference §1.1/§1.2). Unknown keys are
/// ignored, as transformers does.
#[derive(Debug, Clone, Deserialize)]
pub struct LlavaConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent means multi-head attention (transformers' default: equal to the head count).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Present in newer Llama configs; otherwise hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Only `null` is supported: neither HuatuoGPT-Vision model scales RoPE.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Llama's `attention_bias` (false for Yi); Qwen2 always has q/k/v biases.
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    pub mm_hidden_size: usize,
    #[serde(default = "default_projector")]
    pub mm_projector_type: String,
    #[serde(default = "default_select_layer")]
    pub mm_vision_select_layer: i64,
    #[serde(default = "default_select_feature")]
    pub mm_vision_select_feature: String,
    #[serde(default)]
    pub mm_vision_tower: Option<String>,
    #[serde(default)]
    pub image_aspect_ratio: Option<String>,
    #[serde(default)]
    pub mm_use_im_start_end: Option<bool>,
    #[serde(default)]
    pub tokenizer_model_max_length: Option<usize>,
}

impl LlavaConfig {
    /// Reads and checks `config.json`: the model type must be one huatuo runs and the
    /// geometry must be consistent, so a wrong file fails here with its path in the message.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let cfg: Self = read_json(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |reason: String| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        if self.family().is_none() {
            return Err(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: self.model_type.clone(),
            });
        }
        if self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return Err(bad(
                "num_attention_heads and num_hidden_layers must be > 0".into()
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_kv_heads()
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            // A non-positive base makes every rotary frequency NaN, and so every logit.
            return Err(bad(format!(
                "rope_theta {} must be a positive finite number",
                self.rope_theta
            )));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad("rope_scaling is not supported".into()));
        }
        if self.hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act {:?} is not supported",
                self.hidden_act
            )));
        }
        if self.use_sliding_window == Some(true) {
            return Err(bad("use_sliding_window: true is not supported".into()));
        }
        if self.mm_use_im_start_end == Some(true) {
            return Err(bad("mm_use_im_start_end: true is not supported".into()));
        }
        if !matches!(
            self.mm_vision_select_feature.as_str(),
            "patch" | "cls_patch"
        ) {
            return Err(bad(format!(
                "mm_vision_select_feature {:?} is not supported",
                self.mm_vision_select_feature
            )));
        }
        if let Some(aspect) = &self.image_aspect_ratio {
            if aspect != "pad" {
                return Err(bad(format!(
                    "image_aspect_ratio {aspect:?} is not supported (HuatuoGPT-Vision uses \"pad\")"
                )));
            }
        }
        Ok(())
    }

    /// The decoder family; `from_file` guarantees it is known.
    pub fn family(&self) -> Option<Family> {
        Family::from_model_type(&self.model_type)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v projections carry a bias: always for Qwen2, `attention_bias` for Llama.
    pub fn qkv_bias(&self) -> bool {
        match self.family() {
            Some(Family::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Llama's o_proj bias follows `attention_bias` too; Qwen2's o_proj has none.
    pub fn o_bias(&self) -> bool {
        match self.family() {
            Some(Family::Qwen2) => false,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Prompts longer than this are refused (the reference silently truncates, §2).
    pub fn context_length(&self) -> usize {
        self.tokenizer_model_max_length.unwrap_or(4096)
    }
}

fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    32
}
fn default_vision_hidden() -> usize {
    768
}
fn default_vision_intermediate() -> usize {
    3072
}
fn default_vision_heads() -> usize {
    12
}
fn default_vision_layers() -> usize {
    12
}
fn default_num_channels() -> usize {
    3
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_vision_act() -> String {
    "quick_gelu".to_string()
}

/// transformers `CLIPVisionConfig`, with its defaults for absent keys.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "default_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_vision_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_num_channels")]
    pub num_channels: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_vision_act")]
    pub hidden_act: String,
}

impl ClipVisionConfig {
    /// Reads the tower's config: a full `CLIPConfig` (its `vision_config`), as the real
    /// `vit/clip_vit_large_patch14_336/config.json` is, or a bare vision config.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let value: serde_json::Value = read_json(path)?;
        let vision = match value.get("vision_config") {
            Some(v) if v.is_object() => v.clone(),
            _ => value,
        };
        let cfg: Self = serde_json::from_value(vision).map_err(|e| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            return Err(bad(format!(
                "image_size {} is not a multiple of patch_size {}",
                cfg.image_size, cfg.patch_size
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(
                "hidden_size is not a multiple of num_attention_heads".into()
            ));
        }
        if !matches!(cfg.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(bad(format!(
                "hidden_act {:?} is not supported",
                cfg.hidden_act
            )));
        }
        Ok(cfg)
    }

    /// Patches per side (24 for ViT-L/14 at 336).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Image tokens per image fed to the decoder (576 for ViT-L/14-336 with CLS dropped).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
}

/// Reads a JSON file, naming the file in every error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            ModelError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
