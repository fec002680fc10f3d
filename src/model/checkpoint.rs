//! A checkpoint directory in the layout of the Hugging Face repos (huatuo-reference.md §1.6):
//! `config.json`, sharded safetensors listed by `model.safetensors.index.json`, tokenizer files,
//! and `vit/clip_vit_large_patch14_336/{config.json, preprocessor_config.json}`. The vision
//! tower's *weights* come from the main shards (`model.vision_tower.vision_tower.*`), never
//! from vit/'s own weight file (§1.3). Checks that every file is there before anything loads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::config::{read_json, ClipVisionConfig, LlavaConfig};
use super::ModelError;

/// Where the vision tower's config lives when `mm_vision_tower` does not say (§1.3).
pub const DEFAULT_VISION_DIR: &str = "vit/clip_vit_large_patch14_336";

/// The parsed configs and file paths of one checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: LlavaConfig,
    pub vision: ClipVisionConfig,
    /// `vit/.../preprocessor_config.json`, read by the image preprocessing.
    pub preprocessor_config: PathBuf,
    /// The safetensors shards, in index order.
    pub shards: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

impl Checkpoint {
    /// Reads the configs and checks that every file inference needs exists.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let config = LlavaConfig::from_file(&dir.join("config.json"))?;
        let vision_dir = dir.join(vision_subdir(&config));
        let vision = ClipVisionConfig::from_file(&vision_dir.join("config.json"))?;
        let preprocessor_config = vision_dir.join("preprocessor_config.json");
        require(&preprocessor_config)?;
        require(&dir.join("tokenizer.json"))?;
        let shards = shard_paths(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            vision,
            preprocessor_config,
            shards,
        })
    }
}

/// `mm_vision_tower` relative to the checkpoint ("./vit/clip_vit_large_patch14_336"); a hub id
/// such as "openai/clip-vit-large-patch14-336" or an absolute path falls back to the default
/// folder, since the tower's weights are in the shards anyway.
fn vision_subdir(config: &LlavaConfig) -> PathBuf {
    match config.mm_vision_tower.as_deref() {
        Some(p) if p.starts_with("./") || p.starts_with("vit/") => {
            PathBuf::from(p.trim_start_matches("./"))
        }
        _ => PathBuf::from(DEFAULT_VISION_DIR),
    }
}

fn require(path: &Path) -> Result<(), ModelError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ModelError::MissingFile {
            path: path.to_path_buf(),
        })
    }
}

/// The shards named by `model.safetensors.index.json`, or a lone `model.safetensors`.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.exists() {
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        return Err(ModelError::MissingFile { path: index_path });
    }
    let index: ShardIndex = read_json(&index_path)?;
    let names: BTreeSet<&String> = index.weight_map.values().collect();
    if names.is_empty() {
        return Err(ModelError::BadConfig {
            path: index_path,
            reason: "weight_map is empty".into(),
        });
    }
    let shards: Vec<PathBuf> = names.into_iter().map(|n| dir.join(n)).collect();
    for shard in &shards {
        require(shard)?;
    }
    Ok(shards)
}
