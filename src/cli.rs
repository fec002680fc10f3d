//! Command-line arguments (clap derive). Only what the user typed: no IO, no defaults that
//! need the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::{DevicePref, ModelDType};
use crate::model::quant::Quant;

/// Chat with the HuatuoGPT-Vision medical vision-language models about images, locally.
#[derive(Debug, Parser)]
#[command(name = "huatuo", version, about)]
pub struct Cli {
    /// When to use colours on stderr: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, value_enum, global = true, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Without a subcommand, huatuo opens the chat.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the full-screen chat (the default): images inline, streamed answers, /help.
    Chat(ChatArgs),
    /// Ask one question (optionally about images) and print the answer on stdout.
    Ask(AskArgs),
    /// List, show or delete saved conversations (`ask --session`, `/save`).
    Sessions {
        #[command(subcommand)]
        command: Option<SessionsCommand>,
    },
    /// Download a model into the Hugging Face cache (resumable, verified); prints its folder.
    Pull(PullArgs),
    /// List the models in the cache with size, revision and completeness.
    List(ListArgs),
    /// Delete a model from the cache.
    Rm(RmArgs),
    /// Show where the model cache, the config and the data directories are.
    Info(InfoArgs),
    /// Measure load time, image encoding, prefill and decode speed and peak memory.
    Bench(crate::cmd::bench::BenchArgs),
    /// Write the 336x336 image the model sees (DICOM windowed, padded, resized) as a PNG.
    Render(crate::cmd::render::RenderArgs),
    /// Developer tools (tiny checkpoints for tests and parity fixtures).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question; several words are joined with spaces. Text piped on stdin is added
    /// after it; `-` alone reads the whole prompt from stdin.
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// An image to ask about (PNG, JPEG, …); repeat for several, in order (at most 5).
    #[arg(short, long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,

    /// Continue (or start) the saved conversation NAME: earlier turns and images are part of
    /// the prompt, and this turn is added to it.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,

    /// Print one JSON object (answer, model, settings, images, token counts, timings)
    /// instead of the streamed answer.
    #[arg(long)]
    pub json: bool,

    /// Do not show the attached images in the terminal before the answer.
    #[arg(long)]
    pub no_images: bool,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// An image to attach to the first message; repeat for several (at most 5).
    #[arg(short, long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,

    /// Colours: dark (default), light, high-contrast, or NAME for <config dir>/themes/NAME.toml.
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Which model, and where its files come from.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// `7b` (default), `34b`, a Hugging Face repo id (`org/name`) or a checkpoint directory.
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) to use.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Use only files already in the cache; never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
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
    /// Weight quantization; unset picks the best that fits in memory on a CPU (converted
    /// once and cached on disk), dense weights on a GPU.
    #[arg(long, value_enum)]
    pub quant: Option<Quant>,
}

/// `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List saved sessions (the default).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a session as Markdown.
    Show { name: String },
    /// Delete a session.
    Rm { name: String },
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
        /// The real 7B geometry instead of a tiny one (qwen2 only; 15 GB written, and as
        /// much memory while writing).
        #[arg(long)]
        full_size: bool,
        /// Directory with tokenizer.json and its companion files.
        #[arg(long, value_name = "DIR")]
        tokenizer: PathBuf,
        /// Output directory.
        out: PathBuf,
    },
    /// Serve every DIR/org/name/ checkpoint on a local stand-in for the Hugging Face hub
    /// (for interoperability checks with Python's huggingface_hub); prints its URL.
    HubServer {
        /// Folder of org/name/ checkpoint folders.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `7b` (default), `34b` or a Hugging Face repo id (`org/name`).
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) to download.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list cached repos that are not HuatuoGPT-Vision-like checkpoints.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// `7b`, `34b` or a repo id (`org/name`) in the cache.
    #[arg(value_name = "MODEL")]
    pub model: String,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}
