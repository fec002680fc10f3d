//! Which files of a HuatuoGPT-Vision repository inference needs (huatuo-reference.md §1.6):
//! the configs, the tokenizer files, `model.safetensors.index.json` and the shards it lists, and
//! the vision tower's `config.json` / `preprocessor_config.json` (not its 1.2 GB duplicate
//! weights: the tower's weights are in the shards, §1.3). The same rules decide what to download
//! and whether a cached snapshot is complete.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::model::checkpoint;

/// The shard index.
pub const INDEX: &str = "model.safetensors.index.json";

/// Top-level files fetched when the repo has them, before the weights: small, and the index
/// and config.json tell what else is needed.
pub const SMALL_FILES: [&str; 10] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    INDEX,
];

/// Files a checkpoint cannot be loaded without (besides the shards and the vision configs).
pub const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];

/// A repo path we are willing to turn into a file path: relative, `/`-separated, no `.`/`..`
/// components (an index or a mirror cannot make us write outside the snapshot).
pub fn is_safe_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && !p.contains(':')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The first files to fetch: those of [`SMALL_FILES`] the repo has.
pub fn small_files(repo_files: &BTreeSet<String>) -> Vec<String> {
    SMALL_FILES
        .iter()
        .filter(|f| repo_files.contains(**f))
        .map(|f| f.to_string())
        .collect()
}

/// The vision tower's folder of the checkpoint whose config.json is `config` (the rule of
/// [`checkpoint::vision_subdir`], so the hub fetches what the model reads).
pub fn vision_dir(config: &Value) -> String {
    checkpoint::vision_subdir(config.get("mm_vision_tower").and_then(Value::as_str))
}

/// The shard file names of an index's `weight_map`, sorted and unique.
pub fn shards(index: &Value) -> Result<Vec<String>, String> {
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or("no weight_map")?;
    let mut out = BTreeSet::new();
    for v in map.values() {
        let f = v.as_str().ok_or("a weight_map value is not a string")?;
        if !is_safe_path(f) {
            return Err(format!("unsafe shard path {f:?}"));
        }
        out.insert(f.to_string());
    }
    if out.is_empty() {
        return Err("weight_map is empty".to_string());
    }
    Ok(out.into_iter().collect())
}

/// The vision configs and weights of a snapshot whose small files are present: what to fetch
/// second. `Err` says what is wrong with config.json or the index.
pub fn weight_files(snapshot: &Path) -> Result<Vec<String>, (String, String)> {
    let config =
        read_json(&snapshot.join("config.json")).map_err(|e| ("config.json".to_string(), e))?;
    let vd = vision_dir(&config);
    let mut files = vec![
        format!("{vd}/config.json"),
        format!("{vd}/preprocessor_config.json"),
    ];
    if snapshot.join(INDEX).exists() {
        let index = read_json(&snapshot.join(INDEX)).map_err(|e| (INDEX.to_string(), e))?;
        files.extend(shards(&index).map_err(|e| (INDEX.to_string(), e))?);
    } else {
        files.push("model.safetensors".to_string());
    }
    Ok(files)
}

/// What a cached snapshot lacks for inference, by repo path; empty when it is complete.
/// Dangling snapshot links count as missing.
pub fn missing_files(snapshot: &Path) -> Vec<String> {
    let mut missing: Vec<String> = REQUIRED
        .iter()
        .filter(|f| !snapshot.join(f).exists())
        .map(|f| f.to_string())
        .collect();
    if !snapshot.join("config.json").exists() {
        return missing;
    }
    match weight_files(snapshot) {
        Ok(files) => {
            let no_index = files.last().is_some_and(|f| f == "model.safetensors");
            for f in files {
                if !pointer_path(snapshot, &f).exists() {
                    missing.push(if no_index && f == "model.safetensors" {
                        INDEX.to_string()
                    } else {
                        f
                    });
                }
            }
        }
        Err((file, why)) => missing.push(format!("{file} (unreadable: {why})")),
    }
    missing
}

/// config.json describes a LLaVA model (it names a vision tower).
pub fn is_llava(snapshot: &Path) -> bool {
    read_json(&snapshot.join("config.json")).is_ok_and(|c| c.get("mm_vision_tower").is_some())
}

fn pointer_path(snapshot: &Path, file: &str) -> std::path::PathBuf {
    file.split('/')
        .fold(snapshot.to_path_buf(), |p, c| p.join(c))
}

pub(crate) fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selection() {
        let files: BTreeSet<String> = [
            "config.json",
            "README.md",
            "tokenizer.json",
            "model.safetensors.index.json",
            "vit/clip_vit_large_patch14_336/pytorch_model.bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            small_files(&files),
            ["config.json", "tokenizer.json", INDEX]
        );
        assert_eq!(
            vision_dir(&json!({"mm_vision_tower": "./vit/clip_vit_large_patch14_336"})),
            checkpoint::DEFAULT_VISION_DIR
        );
        assert_eq!(
            vision_dir(&json!({"mm_vision_tower": "./vit/../../x"})),
            checkpoint::DEFAULT_VISION_DIR
        );
        assert_eq!(
            vision_dir(&json!({"mm_vision_tower": "openai/clip-vit-large-patch14-336"})),
            checkpoint::DEFAULT_VISION_DIR
        );
        let index = json!({"weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-1.safetensors"}});
        assert_eq!(
            shards(&index).expect("shards"),
            ["m-1.safetensors", "m-2.safetensors"]
        );
        assert!(shards(&json!({"weight_map": {"a": "../../etc/passwd"}})).is_err());
        assert!(!is_safe_path("/abs"));
        assert!(is_safe_path("vit/x/config.json"));
    }
}
