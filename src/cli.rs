//! Command-line arguments (clap derive). Only what the user typed: no IO, no defaults that
//! need the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::{DevicePref, ModelDType};

/// Chat with the HuatuoGPT-Vision medical vision-language models about images, locally.
#[derive(Debug, Parser)]
#[command(name = "huatuo", version, about, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask one question (optionally about images) and print the answer on stdout.
    Ask(AskArgs),
    /// Developer tools (tiny checkpoints for tests and parity fixtures).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question. Several words are joined with spaces.
    #[arg(required = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,

    /// Checkpoint directory (config.json, shards, tokenizer, vit/).
    #[arg(short, long, value_name = "PATH")]
    pub model: PathBuf,

    /// An image to ask about (PNG, JPEG, …); repeat for several, in order.
    #[arg(short, long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Decoding settings; unset ones take the reference CLI's values (temperature 0.2, top-k 50,
/// top-p 1.0, repetition penalty 1.2, 512 new tokens) or the checkpoint's
/// generation_config.json where it sets top-k/top-p.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 means greedy (deterministic).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Penalty for tokens already generated in this answer (1.0 disables).
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,
    /// Most tokens to generate.
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Random seed for sampling (the same seed gives the same answer).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Weights and activations precision: auto is f32 on CPU, bf16 on GPU.
    #[arg(long, value_enum, default_value_t = ModelDType::Auto)]
    pub dtype: ModelDType,
    /// Where to run the model (cuda/metal need a build with that feature).
    #[arg(long, value_enum, default_value_t = DevicePref::Auto)]
    pub device: DevicePref,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Write a tiny random checkpoint in the real on-disk layout.
    TinyCheckpoint {
        /// qwen2 (7B-like) or yi (34B-like).
        #[arg(long, value_parser = ["qwen2", "yi"])]
        family: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Directory with tokenizer.json and its companion files.
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        /// Output directory.
        out: PathBuf,
    },
}
