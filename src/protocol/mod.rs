//! The engine's messages: what a front end (`ask`, the TUI) sends to the model worker and what
//! comes back, and every value they carry (model choice, precision, device, quantization,
//! sampling settings, stop reasons, image references, the conversation's history). Plain data
//! only — no tensors, no candle or clap types, no file handles, nothing imported from the rest
//! of huatuo — so that the same messages can drive a remote serving engine (an
//! OpenAI-compatible server such as vLLM) instead of the in-process worker, and serialise.
//! `model` and `engine` import these types, never the reverse; `cli` turns arguments into them.
//!
//! Every request carries an id; events name the id they answer, and a front end drops events
//! of ids it no longer waits for.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod openai;
mod record;
pub use record::{ImageRecord, ModelRecord, Record, TimingRecord, TokenRecord};

/// The most images one turn may attach (cli.py:315 asserts `len(images) < 6`).
pub const MAX_IMAGES_PER_TURN: usize = 5;

/// The most images a one-shot question may attach: the reference's `inference()` keeps the
/// first `max_image_num = 6` (cli.py:33, 259-260); `huatuo eval` asks as it does.
pub const MAX_IMAGES_INFERENCE: usize = 6;

/// The most images request `request` may attach: a conversation's turn as `chat()` allows,
/// a single question as `inference()` does.
pub fn max_images(history: &[Exchange]) -> usize {
    if history.is_empty() {
        MAX_IMAGES_INFERENCE
    } else {
        MAX_IMAGES_PER_TURN
    }
}

/// Serialises a path as text, lossily when it is not UTF-8 (each invalid byte as U+FFFD), so
/// a file name that is not UTF-8 never stops a record or a session from being written; see
/// [`is_lossy`].
pub fn lossy_path<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// Whether [`lossy_path`] changes `path` (it is not UTF-8).
pub fn is_lossy(path: &std::path::Path) -> bool {
    path.to_str().is_none()
}

/// A value given by name (on the command line, in config.toml, in JSON) that is not one of
/// the names allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {given:?} is not one of {}", allowed.join(", "))]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub allowed: &'static [&'static str],
}

/// Enums with a fixed set of lowercase names, parsed and printed by them.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The name used on the command line, in config.toml and in JSON.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    _ => Err(UnknownName { what: $what, given: s.to_string(), allowed: Self::NAMES }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// Numeric precision of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// f32 on a CPU, bf16 on a GPU.
    Auto,
    F32,
    Bf16,
    F16,
}
named_enum!(DType, "dtype", { Auto => "auto", F32 => "f32", Bf16 => "bf16", F16 => "f16" });

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePref {
    /// A GPU when huatuo was built with one and it is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
    Metal,
}
named_enum!(DevicePref, "device", { Auto => "auto", Cpu => "cpu", Cuda => "cuda", Metal => "metal" });

/// How the weights of a model are stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Quant {
    /// Dense weights in the load dtype (f32 on a CPU): exact, and 2× the bf16 size.
    #[serde(rename = "none")]
    None,
    /// GGML Q8_0: 8.5 bits per weight, close to lossless.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// GGML Q6_K: 6.56 bits per weight.
    #[serde(rename = "q6k")]
    Q6k,
    /// GGML Q5_K: 5.5 bits per weight.
    #[serde(rename = "q5k")]
    Q5k,
    /// GGML Q4_K: 4.5 bits per weight, the fastest on a CPU.
    #[serde(rename = "q4k")]
    Q4k,
}
named_enum!(Quant, "quantization", { None => "none", Q8_0 => "q8_0", Q6k => "q6k", Q5k => "q5k", Q4k => "q4k" });

impl Quant {
    /// Every choice, from the most to the least accurate.
    pub const ALL: [Quant; 5] = [Self::None, Self::Q8_0, Self::Q6k, Self::Q5k, Self::Q4k];
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The model produced its end-of-sequence token.
    Eos,
    /// `max_new_tokens` was reached.
    Length,
    /// The context window is full: the answer could not go on.
    Context,
    /// The caller asked to stop (Ctrl-C, a closed pipe).
    Cancelled,
}

/// Decoding settings. Defaults are the reference CLI's (cli.py:21-27 + transformers defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    /// 1.0 disables the penalty; it applies to tokens generated so far, never the prompt.
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.2,
            max_new_tokens: 512,
            min_new_tokens: 1,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Whether decoding is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// These settings with `overrides` applied over them.
    pub fn with(&self, overrides: &SamplingOverrides) -> Self {
        let o = overrides;
        Self {
            temperature: o.temperature.unwrap_or(self.temperature),
            top_k: o.top_k.unwrap_or(self.top_k),
            top_p: o.top_p.unwrap_or(self.top_p),
            repetition_penalty: o.repetition_penalty.unwrap_or(self.repetition_penalty),
            max_new_tokens: o.max_new_tokens.unwrap_or(self.max_new_tokens),
            min_new_tokens: o.min_new_tokens.unwrap_or(self.min_new_tokens),
            seed: o.seed.unwrap_or(self.seed),
        }
    }

    /// Checks ranges, naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition-penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if self.max_new_tokens == 0 {
            return Err("max-new-tokens must be at least 1".into());
        }
        Ok(())
    }
}

/// The sampling settings a user chose (flags, config.toml, `/set`): what a request carries.
/// The engine applies them over the loaded model's defaults ([`ModelInfo::defaults`]: the
/// reference CLI's, with the checkpoint's generation_config.json), so the merge
/// defaults < config.toml < flags and commands happens in one place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Not a user setting of the TUI or `ask`: API clients' `min_tokens` and `ignore_eos`
    /// (end-of-sequence suppressed until this many tokens, as transformers'
    /// `min_new_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_new_tokens: Option<usize>,
}

impl From<&SamplingParams> for SamplingOverrides {
    /// Every setting of `p` chosen explicitly (`min_new_tokens` is not a user setting).
    fn from(p: &SamplingParams) -> Self {
        Self {
            temperature: Some(p.temperature),
            top_k: Some(p.top_k),
            top_p: Some(p.top_p),
            repetition_penalty: Some(p.repetition_penalty),
            max_new_tokens: Some(p.max_new_tokens),
            seed: Some(p.seed),
            min_new_tokens: None,
        }
    }
}

impl SamplingOverrides {
    /// `self` where it sets a value, else `lower` (flags over config.toml).
    pub fn or(&self, lower: &SamplingOverrides) -> Self {
        Self {
            temperature: self.temperature.or(lower.temperature),
            top_k: self.top_k.or(lower.top_k),
            top_p: self.top_p.or(lower.top_p),
            repetition_penalty: self.repetition_penalty.or(lower.repetition_penalty),
            max_new_tokens: self.max_new_tokens.or(lower.max_new_tokens),
            seed: self.seed.or(lower.seed),
            min_new_tokens: self.min_new_tokens.or(lower.min_new_tokens),
        }
    }

    /// Checks the values that are set, naming the offending one, before any model is loaded
    /// (the defaults they go over are valid).
    pub fn validate(&self) -> Result<(), String> {
        SamplingParams::default().with(self).validate()
    }
}

/// One completed round of a conversation, as the reference keeps it in `self.history`
/// (reference §3.1, §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The sanitized user text with this round's `<image>\n` placeholders in front, not
    /// stripped (it is stripped when the prompt is built).
    pub user: String,
    /// The model's answer as streamed, **not** stripped.
    pub answer: String,
}

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes when known (sessions record it, so a changed file
    /// can be noticed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For a DICOM file: the window it is shown through (`C,W` or a preset name such as
    /// `lung`); `None`: the file's own window, else the frame's min-max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// For a multi-frame DICOM file: the frame (1-based); `None`: frame 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
}

/// Everything needed to answer one turn, as the reference's multi-turn `chat()` sees it
/// (huatuo-reference.md §3.1): earlier exchanges with their placeholders and unstripped
/// answers, every earlier image in order, then this turn's text and new images. Front ends
/// build it with the conversation core (`chat::conversation`), never by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub history: Vec<Exchange>,
    /// The images of all earlier turns, in the order their placeholders appear.
    pub history_images: Vec<ImageRef>,
    /// This turn's text as the history keeps it: sanitised, one `<image>\n` per new image
    /// in front (`Exchange::user`).
    pub user: String,
    /// This turn's new images (at most 5).
    pub images: Vec<ImageRef>,
    /// The user's sampling choices; the engine applies them over [`ModelInfo::defaults`].
    pub sampling: SamplingOverrides,
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
    #[serde(serialize_with = "lossy_path")]
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
    /// The sampling defaults of this model: the reference CLI's, with `top_k`/`top_p` from
    /// the checkpoint's generation_config.json as transformers merges them (reference §4.1).
    pub defaults: SamplingParams,
    /// Every file of the checkpoint that inference read, with its SHA-256 (empty when the
    /// engine cannot tell, e.g. a remote one).
    #[serde(default)]
    pub files: Vec<FileHash>,
    /// The quantized weights' cache file, when the weights came from one.
    #[serde(default)]
    pub quant_file: Option<FileHash>,
    /// The program that runs the model.
    #[serde(default)]
    pub engine: EngineBuild,
}

impl ModelInfo {
    /// How it runs, for status lines: `qwen2 f32 cpu`, or for a remote engine `remote
    /// <endpoint>`.
    pub fn describe(&self) -> String {
        match &self.engine.endpoint {
            Some(endpoint) => format!("remote {endpoint}"),
            None => format!("{} {} {}", self.family, self.dtype, self.device),
        }
    }
}

/// One file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// Relative to the checkpoint directory, `/`-separated (or the file's own path for a
    /// cache file).
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// What engine answered: this huatuo (version and, built from a checkout, its git commit)
/// or a remote serving engine behind an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineBuild {
    /// `huatuo` for the in-process engine.
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The OpenAI-compatible endpoint of a remote engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
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
    /// The sampling settings the answer was generated with (defaults with the request's
    /// overrides), for the record.
    pub params: SamplingParams,
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
    /// Load `id` failed (its `Failed` came first), and this model, the one loaded before,
    /// is loaded: kept, or loaded again after it had made room.
    Restored {
        id: RequestId,
        info: ModelInfo,
    },
    Unloaded,
    /// The prompt was built and accepted; generation begins with `params` (the model's
    /// defaults with the request's overrides).
    Started {
        id: RequestId,
        prompt: PromptStats,
        params: SamplingParams,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for q in Quant::ALL {
            assert_eq!(q.name().parse::<Quant>(), Ok(q));
            let json = serde_json::to_string(&q).expect("json");
            assert_eq!(json, format!("\"{}\"", q.name()));
        }
        let err = "q4_k".parse::<Quant>().expect_err("not a name");
        assert_eq!(
            err.to_string(),
            "quantization \"q4_k\" is not one of none, q8_0, q6k, q5k, q4k"
        );
        for d in [DType::Auto, DType::F32, DType::Bf16, DType::F16] {
            assert_eq!(d.name().parse::<DType>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).expect("json"), format!("\"{d}\""));
        }
        for d in [
            DevicePref::Auto,
            DevicePref::Cpu,
            DevicePref::Cuda,
            DevicePref::Metal,
        ] {
            assert_eq!(d.name().parse::<DevicePref>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).expect("json"), format!("\"{d}\""));
        }
    }

    #[test]
    fn overrides_apply_over_defaults_in_order() {
        let config = SamplingOverrides {
            temperature: Some(0.5),
            seed: Some(7),
            ..Default::default()
        };
        let flags = SamplingOverrides {
            temperature: Some(0.0),
            ..Default::default()
        };
        let merged = flags.or(&config);
        let defaults = SamplingParams {
            top_k: 20,
            ..SamplingParams::default()
        };
        let p = defaults.with(&merged);
        assert_eq!(p.temperature, 0.0);
        assert_eq!(p.seed, 7);
        assert_eq!(p.top_k, 20);
        assert_eq!(p.max_new_tokens, 512);
        let bad = SamplingOverrides {
            top_p: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            bad.validate(),
            Err("top-p must be in (0, 1], got 0".to_string())
        );
        // Unset fields are left out of JSON, and an empty object reads back as no overrides.
        assert_eq!(
            serde_json::to_string(&config).expect("json"),
            r#"{"temperature":0.5,"seed":7}"#
        );
        assert_eq!(
            serde_json::from_str::<SamplingOverrides>("{}").expect("json"),
            SamplingOverrides::default()
        );
    }
}
