//! The record of one answer: exactly what produced it, kept with each turn (sessions,
//! `--json`, exports, evaluations).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{lossy_path, Completion, EngineBuild, FileHash, ModelInfo, SamplingParams, Stop};

/// Exactly what produced one answer, kept with the turn (sessions, `--json`, exports): the
/// program, the model and its files, the precision, every sampling setting with the seed
/// used, every image of the prompt by hash with the turn it came from, token counts and
/// timings. The record of a turn is the truth of that turn: a model or setting changed
/// mid-conversation shows in the turns after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub engine: EngineBuild,
    pub model: ModelRecord,
    pub dtype: String,
    pub quantization: String,
    pub device: String,
    pub sampling: SamplingParams,
    /// Every image in the prompt, in order.
    pub images: Vec<ImageRecord>,
    pub stop: Stop,
    pub tokens: TokenRecord,
    pub timings: TimingRecord,
    /// Set when the prompt is not the reference's (e.g. `huatuo serve --system-prompt
    /// prepend` put a system message into the first turn): what differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_note: Option<String>,
}

/// The model of a [`Record`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// What the user asked for (`7b`, a repo id or a path).
    pub source: String,
    /// The hub repo and commit, when it came from the hub.
    pub repo: Option<String>,
    pub revision: Option<String>,
    /// The directory the weights were read from.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub family: String,
    pub files: Vec<FileHash>,
    pub quant_file: Option<FileHash>,
}

/// One image of a prompt in a [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The file as the user named it.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub sha256: Option<String>,
    /// The turn (1-based) that attached it.
    pub turn: usize,
    /// The DICOM window and frame it was shown with, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
}

/// Token counts of a [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub prompt_text: usize,
    pub prompt_images: usize,
    pub prompt_total: usize,
    pub generated: usize,
    pub context_length: usize,
    /// Prompt positions taken from the previous turn's KV cache.
    pub reused_positions: usize,
    /// Images run through the vision tower for this answer.
    pub images_encoded: usize,
}

/// Costs of a [`Record`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRecord {
    pub image_encode_ms: f64,
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

impl Record {
    /// The record of `completion`, answered by the model `info` about `images` (each with the
    /// 1-based turn that attached it).
    pub fn new(info: &ModelInfo, completion: &Completion, images: Vec<ImageRecord>) -> Self {
        let s = &completion.stats;
        Self {
            engine: info.engine.clone(),
            model: ModelRecord {
                source: info.source.clone(),
                repo: info.repo.clone(),
                revision: info.revision.clone(),
                path: info.path.clone(),
                family: info.family.clone(),
                files: info.files.clone(),
                quant_file: info.quant_file.clone(),
            },
            dtype: info.dtype.clone(),
            quantization: info.quantization.clone(),
            device: info.device.clone(),
            sampling: completion.params.clone(),
            images,
            stop: completion.stop,
            tokens: TokenRecord {
                prompt_text: s.prompt.text_tokens,
                prompt_images: s.prompt.image_tokens,
                prompt_total: s.prompt.total,
                generated: s.generated_tokens,
                context_length: s.prompt.context_length,
                reused_positions: s.reused_positions,
                images_encoded: s.images_encoded,
            },
            timings: TimingRecord {
                image_encode_ms: s.image_encode_ms,
                time_to_first_token_ms: s.time_to_first_token_ms,
                prefill_tokens_per_s: s.prefill_tokens_per_s,
                decode_tokens_per_s: s.decode_tokens_per_s,
            },
            prompt_note: None,
        }
    }
}
