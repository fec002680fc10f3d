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
use crate::protocol::SamplingParams;

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
        let vision_dir = dir.join(vision_subdir(config.mm_vision_tower.as_deref()));
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

/// The vision tower's folder inside the checkpoint, from config.json's `mm_vision_tower` when it
/// is a relative path into the checkpoint ("./vit/clip_vit_large_patch14_336"); a hub id such
/// as "openai/clip-vit-large-patch14-336", an absolute path or one that leaves the folder
/// falls back to [`DEFAULT_VISION_DIR`], since the tower's weights are in the shards anyway.
/// The one rule for the layout: the hub fetches the files of this folder, the model reads them.
pub fn vision_subdir(mm_vision_tower: Option<&str>) -> String {
    match mm_vision_tower {
        Some(p) if p.starts_with("./") || p.starts_with("vit/") => {
            let p = p.trim_start_matches("./").trim_end_matches('/');
            let inside = p
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', ':']));
            if inside {
                p.to_string()
            } else {
                DEFAULT_VISION_DIR.to_string()
            }
        }
        _ => DEFAULT_VISION_DIR.to_string(),
    }
}

/// The sampling defaults of the checkpoint in `dir`: the reference CLI's, with `top_k` and
/// `top_p` from its generation_config.json when present, as transformers merges them
/// (huatuo-reference.md §4.1). A missing file means the reference's values.
pub fn sampling_defaults(dir: &Path) -> Result<SamplingParams, ModelError> {
    let mut p = SamplingParams::default();
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(p);
    }
    let gen: serde_json::Value = read_json(&path)?;
    // A value of the wrong type is an error, not silently the reference's default.
    let bad = |key: &str, want: &str, got: &serde_json::Value| ModelError::BadConfig {
        path: path.clone(),
        reason: format!("{key} must be {want}, got {got}"),
    };
    match gen.get("top_k") {
        None | Some(serde_json::Value::Null) => {}
        Some(v) => {
            let k = v
                .as_u64()
                .ok_or_else(|| bad("top_k", "a non-negative integer", v))?;
            p.top_k = usize::try_from(k).map_err(|_| bad("top_k", "a smaller integer", v))?;
        }
    }
    match gen.get("top_p") {
        None | Some(serde_json::Value::Null) => {}
        Some(v) => {
            let tp = v
                .as_f64()
                .filter(|tp| *tp > 0.0 && *tp <= 1.0)
                .ok_or_else(|| bad("top_p", "a number in (0, 1]", v))?;
            p.top_p = tp as f32;
        }
    }
    Ok(p)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_defaults_take_generation_config_over_the_reference() {
        let dir = tempfile::tempdir().expect("tmp");
        let reference = SamplingParams::default();
        assert_eq!(sampling_defaults(dir.path()).expect("none"), reference);
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"top_k": 20, "top_p": 0.8, "temperature": 0.7}"#,
        )
        .expect("write");
        let p = sampling_defaults(dir.path()).expect("read");
        assert_eq!((p.top_k, p.top_p), (20, 0.8));
        // Only top_k/top_p: cli.py passes its own temperature to generate().
        assert_eq!(p.temperature, reference.temperature);
        for (json, key) in [
            (r#"{"top_k": "many"}"#, "top_k"),
            (r#"{"top_k": -3}"#, "top_k"),
            (r#"{"top_p": "high"}"#, "top_p"),
            (r#"{"top_p": 7}"#, "top_p"),
        ] {
            std::fs::write(dir.path().join("generation_config.json"), json).expect("write");
            let err = sampling_defaults(dir.path()).expect_err(json).to_string();
            assert!(
                err.contains("generation_config.json") && err.contains(key),
                "{json}: {err}"
            );
        }
        std::fs::write(dir.path().join("generation_config.json"), "{").expect("write");
        let err = sampling_defaults(dir.path()).expect_err("broken");
        assert!(err.to_string().contains("generation_config.json"), "{err}");
    }

    #[test]
    fn vision_folder_stays_inside_the_checkpoint() {
        assert_eq!(
            vision_subdir(Some("./vit/clip_vit_large_patch14_336/")),
            "vit/clip_vit_large_patch14_336"
        );
        assert_eq!(vision_subdir(Some("vit/other")), "vit/other");
        for outside in ["./vit/../../etc", "./", "openai/clip-vit-large-patch14-336"] {
            assert_eq!(
                vision_subdir(Some(outside)),
                DEFAULT_VISION_DIR,
                "{outside}"
            );
        }
        assert_eq!(vision_subdir(None), DEFAULT_VISION_DIR);
    }
}
