//! Tiny random checkpoints in the exact on-disk layout of the real HuatuoGPT-Vision repos
//! (huatuo-reference.md §1.1–§1.6): the same config keys, tensor names, bf16 sharded
//! safetensors with `model.safetensors.index.json`, tokenizer files and the `vit/` folder, at
//! sizes a laptop runs in milliseconds. Values are drawn from ChaCha8 seeded by `seed`, in a
//! fixed tensor order, so a checkpoint is bit-identical on every machine: the parity fixtures
//! computed by scripts/reference/ from one stay valid for the tests that rebuild it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use half::bf16;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::model::config::Family;

/// Geometry of a tiny checkpoint. Image geometry stays real (336 px, 14 px patches → 576
/// tokens per image) so that preprocessing and prompt lengths are those of the real models.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub family: Family,
    pub seed: u64,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vision_hidden: usize,
    pub vision_intermediate: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub shards: usize,
}

impl TinySpec {
    /// A 7B-like (Qwen2, q/k/v biases, GQA) checkpoint.
    pub fn qwen2(seed: u64) -> Self {
        Self {
            family: Family::Qwen2,
            seed,
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vision_hidden: 32,
            vision_intermediate: 64,
            vision_layers: 3,
            vision_heads: 2,
            shards: 3,
        }
    }

    /// Random weights at HuatuoGPT-Vision-7B's real geometry (Qwen2-7B, 28 layers, and the
    /// whole CLIP ViT-L/14-336), in 4 shards: 15 GB of bf16, built in memory first. For
    /// load and reload benchmarks of a full-size checkpoint without a download.
    pub fn full_7b(seed: u64) -> Self {
        Self {
            family: Family::Qwen2,
            seed,
            hidden: 3584,
            intermediate: 18944,
            layers: 28,
            heads: 28,
            kv_heads: 4,
            vision_hidden: 1024,
            vision_intermediate: 4096,
            vision_layers: 24,
            vision_heads: 16,
            shards: 4,
        }
    }

    /// A checkpoint of `family` whose every matrix dimension is a multiple of 256, so that
    /// all its linear layers take k-quant blocks (the quantization tests, issue 6).
    pub fn kquant(family: Family, seed: u64) -> Self {
        Self {
            family,
            seed,
            hidden: 256,
            intermediate: 512,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vision_hidden: 256,
            vision_intermediate: 512,
            vision_layers: 3,
            vision_heads: 4,
            shards: 2,
        }
    }

    /// A 34B-like (Yi/Llama, no biases, GQA) checkpoint.
    pub fn yi(seed: u64) -> Self {
        Self {
            family: Family::Llama,
            kv_heads: 1,
            shards: 2,
            ..Self::qwen2(seed)
        }
    }
}

/// The standard openai/clip-vit-large-patch14-336 preprocessor config (§2 step 3).
pub const PREPROCESSOR_CONFIG: &str = r#"{
  "crop_size": 336,
  "do_center_crop": true,
  "do_normalize": true,
  "do_resize": true,
  "feature_extractor_type": "CLIPFeatureExtractor",
  "image_mean": [
    0.48145466,
    0.4578275,
    0.40821073
  ],
  "image_std": [
    0.26862954,
    0.26130258,
    0.27577711
  ],
  "resample": 3,
  "size": 336
}
"#;

/// Writes a checkpoint for `spec` into `out` (created if needed), taking the tokenizer files
/// (tokenizer.json, tokenizer_config.json, special_tokens_map.json, added_tokens.json) from
/// `tokenizer_dir`.
pub fn write_checkpoint(spec: &TinySpec, tokenizer_dir: &Path, out: &Path) -> Result<()> {
    if !spec.hidden.is_multiple_of(spec.heads) || !spec.heads.is_multiple_of(spec.kv_heads) {
        bail!("inconsistent head counts in {spec:?}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tokenizer_vocab = copy_tokenizer(spec.family, tokenizer_dir, out)?;
    let vocab = match spec.family {
        // The real 7B pads its 151,646 tokens to 152,064 rows (§1.7).
        Family::Qwen2 => tokenizer_vocab.div_ceil(128) * 128,
        Family::Llama => tokenizer_vocab,
    };
    write_json(&out.join("config.json"), &llava_config(spec, vocab))?;
    write_json(
        &out.join("generation_config.json"),
        &generation_config(spec),
    )?;
    let vit = out.join("vit").join("clip_vit_large_patch14_336");
    std::fs::create_dir_all(&vit)?;
    write_json(&vit.join("config.json"), &clip_config(spec))?;
    std::fs::write(vit.join("preprocessor_config.json"), PREPROCESSOR_CONFIG)?;
    write_shards(spec, vocab, out)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Copies the tokenizer files; for Qwen2 also derives vocab.json and merges.txt from
/// tokenizer.json, as the real repo ships them. Returns the vocabulary size with added tokens.
fn copy_tokenizer(family: Family, from: &Path, out: &Path) -> Result<usize> {
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "tokenizer.model",
    ] {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, out.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
        } else if name == "tokenizer.json" {
            bail!("{} has no tokenizer.json", from.display());
        }
    }
    let text = std::fs::read_to_string(from.join("tokenizer.json"))?;
    let tok: Value = serde_json::from_str(&text)?;
    let model_vocab = tok["model"]["vocab"]
        .as_object()
        .context("tokenizer.json has no model.vocab")?;
    let max_added = tok["added_tokens"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["id"].as_u64()).max().unwrap_or(0))
        .unwrap_or(0) as usize;
    let size = model_vocab.len().max(max_added + 1);
    if family == Family::Qwen2 {
        write_json(&out.join("vocab.json"), &Value::Object(model_vocab.clone()))?;
        let mut merges = String::from("#version: 0.2\n");
        for m in tok["model"]["merges"].as_array().into_iter().flatten() {
            match m {
                Value::String(s) => merges.push_str(s),
                Value::Array(pair) => {
                    let parts: Vec<&str> = pair.iter().filter_map(Value::as_str).collect();
                    merges.push_str(&parts.join(" "));
                }
                _ => bail!("unexpected merge entry {m}"),
            }
            merges.push('\n');
        }
        std::fs::write(out.join("merges.txt"), merges)?;
    }
    Ok(size)
}

fn llava_config(spec: &TinySpec, vocab: usize) -> Value {
    let mm = json!({
        "image_aspect_ratio": "pad",
        "mm_hidden_size": spec.vision_hidden,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "./vit/clip_vit_large_patch14_336",
        "tokenizer_model_max_length": 4096,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
        "tune_mm_mlp_adapter": false,
        "use_cache": false,
        "use_mm_proj": true,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": false,
        "vocab_size": vocab,
    });
    let family = match spec.family {
        Family::Qwen2 => json!({
            "_name_or_path": "HuatuoGPT-Vision-7B",
            "architectures": ["LlavaQwen2ForCausalLM"],
            "model_type": "llava_qwen2",
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "max_position_embeddings": 131072,
            "max_window_layers": spec.layers,
            "rope_theta": 1000000.0,
            "sliding_window": 131072,
            "use_sliding_window": false,
            "tokenizer_padding_side": "right",
        }),
        Family::Llama => json!({
            "_flash_attn_2_enabled": true,
            "_name_or_path": "HuatuoGPT-Vision-34B",
            "architectures": ["LlavaLlamaForCausalLM"],
            "model_type": "llava_llama",
            "attention_bias": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "max_position_embeddings": 4096,
            "pretraining_tp": 1,
            "rope_scaling": null,
            "rope_theta": 5000000.0,
            "tokenizer_padding_side": "left",
        }),
    };
    merge_sorted(&[mm, family])
}

fn generation_config(spec: &TinySpec) -> Value {
    match spec.family {
        Family::Qwen2 => json!({
            "_from_model_config": true,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "transformers_version": "4.40.0.dev0",
        }),
        Family::Llama => json!({
            "_from_model_config": true,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "transformers_version": "4.40.0.dev0",
        }),
    }
}

/// A `CLIPConfig` whose `vision_config` has the tiny tower's geometry (real image geometry).
fn clip_config(spec: &TinySpec) -> Value {
    json!({
        "_name_or_path": "openai/clip-vit-large-patch14-336",
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 16,
        "text_config": {
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "projection_dim": 16,
            "model_type": "clip_text_model",
        },
        "torch_dtype": "float32",
        "transformers_version": "4.21.3",
        "vision_config": {
            "dropout": 0.0,
            "hidden_act": "quick_gelu",
            "hidden_size": spec.vision_hidden,
            "image_size": 336,
            "intermediate_size": spec.vision_intermediate,
            "layer_norm_eps": 1e-5,
            "model_type": "clip_vision_model",
            "num_attention_heads": spec.vision_heads,
            "num_channels": 3,
            "num_hidden_layers": spec.vision_layers,
            "patch_size": 14,
            "projection_dim": 16,
        },
    })
}

fn merge_sorted(parts: &[Value]) -> Value {
    let mut all = BTreeMap::new();
    for p in parts {
        if let Value::Object(m) = p {
            all.extend(m.clone());
        }
    }
    Value::Object(all.into_iter().collect())
}

/// How a tensor's random values are scaled.
#[derive(Clone, Copy)]
enum Init {
    /// U(-1, 1) · s.
    Uniform(f32),
    /// 1 + U(-1, 1) · 0.2 (norm weights).
    NearOne,
}

/// Every tensor of the checkpoint, in module order (the order the real shards follow).
fn tensor_plan(spec: &TinySpec, vocab: usize) -> Vec<(String, Vec<usize>, Init)> {
    let (h, i) = (spec.hidden, spec.intermediate);
    let hd = h / spec.heads;
    let kv = spec.kv_heads * hd;
    let fan = |n: usize| Init::Uniform((3.0 / n as f32).sqrt());
    let bias = Init::Uniform(0.1);
    let mut plan = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![vocab, h],
        Init::Uniform(1.0),
    )];
    let qkv_bias = spec.family == Family::Qwen2;
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        plan.push((
            format!("{p}.input_layernorm.weight"),
            vec![h],
            Init::NearOne,
        ));
        for (name, out) in [("q_proj", h), ("k_proj", kv), ("v_proj", kv)] {
            plan.push((format!("{p}.self_attn.{name}.weight"), vec![out, h], fan(h)));
            if qkv_bias {
                plan.push((format!("{p}.self_attn.{name}.bias"), vec![out], bias));
            }
        }
        plan.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h], fan(h)));
        plan.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::NearOne,
        ));
        plan.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h], fan(h)));
        plan.push((format!("{p}.mlp.up_proj.weight"), vec![i, h], fan(h)));
        plan.push((format!("{p}.mlp.down_proj.weight"), vec![h, i], fan(i)));
    }
    plan.push(("model.norm.weight".into(), vec![h], Init::NearOne));
    let vh = spec.vision_hidden;
    plan.push(("model.mm_projector.0.weight".into(), vec![h, vh], fan(vh)));
    plan.push(("model.mm_projector.0.bias".into(), vec![h], bias));
    plan.push(("model.mm_projector.2.weight".into(), vec![h, h], fan(h)));
    plan.push(("model.mm_projector.2.bias".into(), vec![h], bias));
    let v = "model.vision_tower.vision_tower.vision_model";
    let (patch, grid) = (14, 336 / 14);
    plan.push((
        format!("{v}.embeddings.class_embedding"),
        vec![vh],
        Init::Uniform(0.5),
    ));
    plan.push((
        format!("{v}.embeddings.patch_embedding.weight"),
        vec![vh, 3, patch, patch],
        fan(3 * patch * patch),
    ));
    plan.push((
        format!("{v}.embeddings.position_embedding.weight"),
        vec![grid * grid + 1, vh],
        Init::Uniform(0.5),
    ));
    plan.push((format!("{v}.pre_layrnorm.weight"), vec![vh], Init::NearOne));
    plan.push((format!("{v}.pre_layrnorm.bias"), vec![vh], bias));
    let vi = spec.vision_intermediate;
    for l in 0..spec.vision_layers {
        let p = format!("{v}.encoder.layers.{l}");
        for name in ["k_proj", "v_proj", "q_proj", "out_proj"] {
            plan.push((
                format!("{p}.self_attn.{name}.weight"),
                vec![vh, vh],
                fan(vh),
            ));
            plan.push((format!("{p}.self_attn.{name}.bias"), vec![vh], bias));
        }
        plan.push((format!("{p}.layer_norm1.weight"), vec![vh], Init::NearOne));
        plan.push((format!("{p}.layer_norm1.bias"), vec![vh], bias));
        plan.push((format!("{p}.mlp.fc1.weight"), vec![vi, vh], fan(vh)));
        plan.push((format!("{p}.mlp.fc1.bias"), vec![vi], bias));
        plan.push((format!("{p}.mlp.fc2.weight"), vec![vh, vi], fan(vi)));
        plan.push((format!("{p}.mlp.fc2.bias"), vec![vh], bias));
        plan.push((format!("{p}.layer_norm2.weight"), vec![vh], Init::NearOne));
        plan.push((format!("{p}.layer_norm2.bias"), vec![vh], bias));
    }
    plan.push((
        format!("{v}.post_layernorm.weight"),
        vec![vh],
        Init::NearOne,
    ));
    plan.push((format!("{v}.post_layernorm.bias"), vec![vh], bias));
    // A wide LM head spreads the logits, so greedy parity is not decided by float noise.
    plan.push((
        "lm_head.weight".into(),
        vec![vocab, h],
        Init::Uniform(4.0 * (3.0 / h as f32).sqrt()),
    ));
    plan
}

/// Draws the values of every tensor in plan order and writes them as bf16 shards of about
/// equal size, plus the index that maps each tensor to its shard.
fn write_shards(spec: &TinySpec, vocab: usize, out: &Path) -> Result<()> {
    let plan = tensor_plan(spec, vocab);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = plan
        .into_iter()
        .map(|(name, shape, init)| {
            let n: usize = shape.iter().product();
            let mut bytes = Vec::with_capacity(2 * n);
            for _ in 0..n {
                // 24 random bits → U(-1, 1), exactly representable in f32.
                let u = (rng.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
                let x = match init {
                    Init::Uniform(s) => u * s,
                    Init::NearOne => 1.0 + 0.2 * u,
                };
                bytes.extend_from_slice(&bf16::from_f32(x).to_le_bytes());
            }
            (name, shape, bytes)
        })
        .collect();
    let total: usize = tensors.iter().map(|t| t.2.len()).sum();
    let per_shard = total.div_ceil(spec.shards.max(1));
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut filled = 0;
    for (idx, t) in tensors.iter().enumerate() {
        if filled >= per_shard && groups.len() < spec.shards {
            groups.push(Vec::new());
            filled = 0;
        }
        if let Some(group) = groups.last_mut() {
            group.push(idx);
        }
        filled += t.2.len();
    }
    let n = groups.len();
    let mut weight_map = BTreeMap::new();
    for (s, group) in groups.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, n);
        let views = group
            .iter()
            .map(|&i| {
                let (name, shape, bytes) = &tensors[i];
                weight_map.insert(name.clone(), Value::String(file.clone()));
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::BF16,
                    shape.clone(),
                    bytes,
                )?;
                Ok((name.clone(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = Some([("format".to_string(), "pt".to_string())].into());
        safetensors::tensor::serialize_to_file(views, metadata, &out.join(&file))
            .with_context(|| format!("writing {file}"))?;
    }
    let index = json!({
        "metadata": { "total_size": total },
        "weight_map": Value::Object(weight_map.into_iter().collect()),
    });
    write_json(&out.join("model.safetensors.index.json"), &index)
}
