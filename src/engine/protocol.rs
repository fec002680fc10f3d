//! The engine's messages: what a front end (`ask`, the TUI) sends to the model worker and what
//! comes back. Plain data only — no tensors, no candle types, no file handles — so that the
//! same messages can drive a remote serving engine (an OpenAI-compatible server such as vLLM)
//! instead of the in-process worker. Every request carries an id; events name the id they
//! answer, and a front end drops events of ids it no longer waits for.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chat::template::Exchange;
use crate::model::quant::Quant;
use crate::model::sampling::SamplingParams;

pub use super::pipeline::{DType, DevicePref, Stop};

/// Identifies one request (load or generate) and every event it causes.
pub type RequestId = u64;

/// Which model to load and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// A local checkpoint directory, a short name (`7b`, `34b`) or a hub repo id (`org/name`).
    pub source: String,
    /// A hub revision (branch, tag or commit); `None` is `main`.
    pub revision: Option<String>,
    pub device: DevicePref,
    pub dtype: DType,
    /// Use only what is already in the cache.
    pub offline: bool,
    /// Weight quantization; `None` lets the resolver pick the best that fits in memory on a
    /// CPU (dense on a GPU).
    #[serde(default)]
    pub quant: Option<Quant>,
}

/// One image of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes when known (sessions record it).
    pub sha256: Option<String>,
}

/// Everything needed to answer one turn, as the reference's multi-turn `chat()` sees it
/// (huatuo-reference.md §3.1): earlier exchanges with their placeholders and unstripped
/// answers, every earlier image in order, then this turn's raw text and new images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub history: Vec<Exchange>,
    /// The images of all earlier turns, in the order their placeholders appear.
    pub history_images: Vec<ImageRef>,
    /// This turn's text as typed (sanitised and given placeholders by the engine).
    pub user: String,
    /// This turn's new images (at most 5).
    pub images: Vec<ImageRef>,
    pub params: SamplingParams,
}

/// Requests to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Load a model, replacing the loaded one (its weights are dropped first).
    Load { id: RequestId, spec: ModelSpec },
    /// Answer one turn with the loaded model.
    Generate {
        id: RequestId,
        request: Box<GenerateRequest>,
    },
    /// Stop request `id` (a generation ends with `Stop::Cancelled`, keeping its partial text).
    Cancel { id: RequestId },
    /// Forget the conversation: drop the cached image features and KV cache of the loaded
    /// model (the TUI's `/clear`), so nothing of it stays in memory. Answers stay the same
    /// with or without it; the next turn just computes everything again.
    Reset,
    /// Drop the loaded model (and its caches) and free its memory.
    Unload,
    /// End the worker.
    Shutdown,
}

/// Phases of loading a model, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStage {
    /// Fetching files from the hub (`done`/`total` in bytes).
    Download,
    /// Dropping the previous model.
    Unload,
    /// Reading weights (`done`/`total` in steps).
    Weights,
}

/// What a loaded model is, for status lines and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// What the user asked for (`7b`, a repo id or a path).
    pub source: String,
    /// The directory the weights were read from.
    pub path: PathBuf,
    /// The hub repo id and commit, when it came from the hub.
    pub repo: Option<String>,
    pub revision: Option<String>,
    /// `qwen2` or `llama`.
    pub family: String,
    pub dtype: String,
    pub device: String,
    /// e.g. "none", "q4k" (issue 6).
    pub quantization: String,
    pub context_length: usize,
    pub tokens_per_image: usize,
}

/// How the prompt of a request is made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptStats {
    pub text_tokens: usize,
    pub images: usize,
    pub image_tokens: usize,
    /// text + image positions.
    pub total: usize,
    pub context_length: usize,
}

/// Costs of one answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt: PromptStats,
    pub generated_tokens: usize,
    pub image_encode_ms: f64,
    pub time_to_first_token_ms: f64,
    /// Positions run by the prefill pass per second (reused positions are not counted).
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Prompt positions taken from the previous turn's KV cache instead of being run
    /// (its longest exact prefix shared with this prompt).
    #[serde(default)]
    pub reused_positions: usize,
    /// Images run through the vision tower for this answer.
    #[serde(default)]
    pub images_encoded: usize,
    /// Images not encoded because an image with the same file content was encoded before (in
    /// an earlier turn, or earlier in this prompt); with `images_encoded` it adds up to
    /// `prompt.images`.
    #[serde(default)]
    pub images_from_cache: usize,
}

/// A finished (or cancelled) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Stripped, as the reference's `inference()` returns it.
    pub text: String,
    /// As the reference's `chat()` keeps it in its history (unstripped).
    pub history_text: String,
    pub stop: Stop,
    pub stats: GenerationStats,
    /// This turn's user text as the conversation must store it for the next turn: sanitised,
    /// with one `<image>\n` per new image in front (`Exchange::user`, reference §3.1). The
    /// engine builds it, so front ends never re-implement the reference's text rules.
    pub user_with_placeholders: String,
}

impl Completion {
    /// The exchange to append to the history for the next turn, as `chat()` appends it
    /// (reference §3.3: the streamed answer, unstripped).
    pub fn exchange(&self) -> Exchange {
        Exchange {
            user: self.user_with_placeholders.clone(),
            answer: self.history_text.clone(),
        }
    }
}

/// Why a request failed, so front ends can react (e.g. offer a smaller prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The input was refused: a missing or corrupt image, a prompt past the context window,
    /// too many images, a bad setting.
    BadInput,
    /// No model is loaded, or it could not be found, downloaded or loaded.
    Model,
    /// The computation itself failed.
    Internal,
}

/// Events from the engine, in the order they happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    LoadProgress {
        id: RequestId,
        stage: LoadStage,
        done: u64,
        total: u64,
    },
    Loaded {
        id: RequestId,
        info: ModelInfo,
    },
    Unloaded,
    /// The prompt was built and accepted; generation begins.
    Started {
        id: RequestId,
        prompt: PromptStats,
    },
    /// Text to append to the answer (already safe to print: whole characters, no leading
    /// whitespace the final strip would remove).
    Token {
        id: RequestId,
        text: String,
    },
    Finished {
        id: RequestId,
        completion: Completion,
    },
    /// The request failed; `partial` is the answer text produced before the failure.
    Failed {
        id: RequestId,
        kind: FailureKind,
        error: String,
        partial: String,
    },
}
