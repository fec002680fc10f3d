//! The HuatuoGPT-Vision network and its inputs: checkpoint layout and configs, tokenizer,
//! image preprocessing, CLIP tower, projector, decoder, KV cache and sampling; where its
//! weights are kept (safetensors, the quantized GGUF cache, memory-mapped blocks) is
//! [`store`], and the CPU kernels that multiply them are `crate::kernels`.
//! Never prints, never reads the environment, knows nothing of chat or terminals.

use std::path::PathBuf;

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod decoder;
pub mod export;
pub mod kv_cache;
pub mod linear;
pub mod llava;
pub mod preprocess;
pub mod sampling;
pub mod store;
pub mod tokenizer;

pub use checkpoint::Checkpoint;
pub use decoder::Logits;
pub use kv_cache::KvCache;
pub use llava::Huatuo;

/// What can go wrong loading or running a model. Every variant names the file or value.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path} is not a directory: give --model a checkpoint directory")]
    NotADirectory { path: PathBuf },
    #[error("missing file {path}: the checkpoint is incomplete (download it again)")]
    MissingFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error(
        "unknown model_type {model_type:?} in {path}: huatuo runs llava_qwen2 (HuatuoGPT-Vision-7B) and llava_llama (HuatuoGPT-Vision-34B)"
    )]
    UnknownModelType { path: PathBuf, model_type: String },
    #[error("cannot load the weights of {dir}: {source} (is a shard truncated or corrupt? download it again)")]
    Load {
        dir: PathBuf,
        source: candle_core::Error,
    },
    #[error("the prompt has {placeholders} image placeholders but {images} images were given")]
    ImageCount { placeholders: usize, images: usize },
    #[error("token id {id} is not in the vocabulary")]
    BadToken { id: i64 },
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error(transparent)]
    Preprocess(#[from] preprocess::PreprocessError),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
