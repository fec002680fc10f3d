//! Command-line arguments (clap derive). Only what the user typed: no IO, no defaults that
//! need the environment. clap stays here: arguments become the plain values of
//! [`crate::protocol`] (parsed by their names), which the rest of huatuo uses.

use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::dicom::Window;
use crate::protocol::{DType, DevicePref, Quant, SamplingOverrides};

/// A value parser for the named values of the protocol (`Quant`, `DType`, `DevicePref`):
/// clap lists the names in help and errors, then the name is parsed.
fn named<T>() -> impl TypedValueParser<Value = T>
where
    T: FromStr + Names + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(T::NAMES).try_map(|name| name.parse::<T>())
}

/// The names a value parses from.
trait Names {
    const NAMES: &'static [&'static str];
}

impl Names for Quant {
    const NAMES: &'static [&'static str] = Quant::NAMES;
}
impl Names for DType {
    const NAMES: &'static [&'static str] = DType::NAMES;
}
impl Names for DevicePref {
    const NAMES: &'static [&'static str] = DevicePref::NAMES;
}

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
    Bench(BenchArgs),
    /// Write the 336x336 image the model sees (DICOM windowed, padded, resized) as a PNG.
    Render(RenderArgs),
    /// Developer tools (tiny checkpoints for tests and parity fixtures); only in builds
    /// with the `test-support` feature.
    #[cfg(feature = "test-support")]
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Re-hash a cached model's files against the hub's SHA-256 and check its quantized
    /// cache files; exits 2 on damage (`huatuo pull` repairs it).
    Verify(VerifyArgs),
    /// Serve the model over an OpenAI-compatible API (/v1/chat/completions, /v1/models,
    /// /health) for tools such as Open WebUI, aichat, the openai package or curl.
    Serve(ServeArgs),
    /// Write the model in another format: `llava-hf`, the transformers
    /// LlavaForConditionalGeneration checkpoint that vLLM, SGLang and LMDeploy serve.
    Export(ExportArgs),
    /// Run the paper's benchmark on the authors' evaluation data (their prompt and scorer),
    /// locally or against --endpoint; resumable; `--score` scores an eval.py output file.
    Eval(EvalArgs),
}

/// `huatuo eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The authors' medical_multimodel_evaluation_data.json (images.zip unpacked beside it).
    #[arg(long, value_name = "PATH", required_unless_present = "score")]
    pub data: Option<PathBuf>,

    /// Score an output file of the authors' eval.py (their items with `model_output`)
    /// instead of running a model.
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pub score: Option<PathBuf>,

    /// Where results.jsonl, summary.json and results.json go; running again with the same
    /// folder resumes (default: huatuo-eval-DATE in the current folder).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Only these datasets (comma-separated names as in the data, e.g. SLAKE_test,VQA-RAD_test).
    #[arg(long, value_name = "A,B")]
    pub datasets: Option<String>,

    /// Only the first N scored items (after --datasets).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Requests in flight with --endpoint (a GPU engine batches them); locally one at a time.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub concurrency: usize,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `huatuo export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The format to write (only `llava-hf`).
    #[arg(long, value_enum, default_value = "llava-hf")]
    pub format: ExportFormat,
    /// `7b` (default), `34b`, a Hugging Face repo id or a checkpoint directory.
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Use only files already in the cache.
    #[arg(long)]
    pub offline: bool,
    /// Write f32 weights instead of bf16 (twice the size; bf16 is the checkpoint's own).
    #[arg(long)]
    pub f32: bool,
    /// Largest shard, in MB.
    #[arg(long, value_name = "MB", default_value_t = 5000)]
    pub shard_size_mb: u64,
    /// The directory to write (must not exist, or be empty).
    #[arg(value_name = "OUT_DIR")]
    pub out: PathBuf,
}

/// `export --format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    LlavaHf,
}

/// `huatuo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Address to listen on; the default answers this machine only. Use 0.0.0.0 to answer
    /// the network (then set --api-key).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: String,

    /// Port to listen on (0: any free port; the URL is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Require this key (`Authorization: Bearer KEY`) on /v1 requests; also HUATUO_API_KEY.
    #[arg(
        long,
        value_name = "KEY",
        env = "HUATUO_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// The model's name in /v1/models and requests (default: the short name or repo id as
    /// given, a directory's own name).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,

    /// What to do with a non-empty system message: refuse it with 400 (HuatuoGPT-Vision was
    /// trained without one), or prepend it to the first user turn (the response and its
    /// record then say the prompt is not the reference's).
    #[arg(long, value_enum, default_value = "refuse", value_name = "WHAT")]
    pub system_prompt: SystemPrompt,

    /// Accept images named by local paths or file:// URLs (read from this machine's disk).
    #[arg(long)]
    pub allow_file_images: bool,

    /// Accept http(s) image URLs (fetched by this server, up to 64 MiB each).
    #[arg(long)]
    pub allow_remote_images: bool,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `serve --system-prompt` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemPrompt {
    Refuse,
    Prepend,
}

/// A remote engine to answer instead of a local model.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Answer through an OpenAI-compatible server (vLLM, SGLang, llama-server, `huatuo
    /// serve`) instead of a local model, e.g. http://gpu-box:8000/v1; --model then names a
    /// served model (default: the first it lists). Also HUATUO_ENDPOINT or `endpoint` in
    /// config.toml.
    #[arg(long, value_name = "URL", env = "HUATUO_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The server's API key, sent as a Bearer token and never printed; also HUATUO_API_KEY
    /// or OPENAI_API_KEY.
    #[arg(
        long,
        value_name = "KEY",
        env = "HUATUO_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question; several words are joined with spaces. Text piped on stdin is added
    /// after it; `-` alone reads the whole prompt from stdin.
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    /// An image to ask about (PNG, JPEG, DICOM, …); repeat for several, in order (at most 5).
    /// A DICOM image may carry its own window and frame: `PATH@WINDOW`, `PATH@WINDOW:FRAME`
    /// or `PATH@:FRAME` (e.g. `ct.dcm@lung`, `ct.dcm@40,400:3`).
    #[arg(short, long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,

    /// DICOM window for the images without their own: CENTER,WIDTH (e.g. 40,400 or
    /// -600,1500) or a preset: brain, subdural, stroke, lung, mediastinum, abdomen, liver,
    /// bone. Default: the file's window, else the frame's min-max.
    #[arg(long, value_name = "W", allow_hyphen_values = true)]
    pub window: Option<Window>,

    /// DICOM frame (from 1) for the images without their own; default 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub frame: Option<u32>,

    /// Continue (or start) the saved conversation NAME: earlier turns and images are part of
    /// the prompt, and this turn is added to it.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,

    /// With --session: if another huatuo is answering in that session, fail at once instead
    /// of waiting for it.
    #[arg(long, requires = "session")]
    pub no_wait: bool,

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

    #[command(flatten)]
    pub remote: RemoteArgs,

    /// An image to attach to the first message; repeat for several (at most 5).
    #[arg(short, long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,

    /// Colours: dark (default), light, high-contrast, or NAME for <config dir>/themes/NAME.toml.
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,

    /// Reopen the saved conversation NAME (or start one under that name); every conversation
    /// is saved after each turn.
    #[arg(long, value_name = "NAME", conflicts_with = "resume")]
    pub session: Option<String>,

    /// Reopen the most recent saved conversation.
    #[arg(short = 'c', long = "continue", id = "resume")]
    pub resume: bool,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Which model, and where its files come from.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// `7b` (default), `34b`, a Hugging Face repo id (`org/name`) or a checkpoint directory.
    /// `ask` takes it twice to compare two models on the same question.
    #[arg(short, long, value_name = "MODEL", action = clap::ArgAction::Append)]
    pub model: Vec<String>,
    /// Hub revision (branch, tag or commit) to use.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Use only files already in the cache; never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    /// The one model named, if any; several are an error naming the command that takes
    /// several.
    pub fn single(&self) -> Result<Option<&String>, String> {
        match &self.model[..] {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            more => Err(format!(
                "{} models given ({}): give one --model (only `huatuo ask` compares two)",
                more.len(),
                more.join(", ")
            )),
        }
    }

    /// These arguments with only `model`.
    pub fn with(&self, model: &str) -> Self {
        Self {
            model: vec![model.to_string()],
            ..self.clone()
        }
    }
}

/// A whole number of 0 or more, said plainly when it is not (`-1`, `many`).
fn whole_number(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("{text:?} is not a whole number of 0 or more"))
}

/// Decoding settings; unset ones take the reference CLI's values (temperature 0.2, top-k 50,
/// top-p 1.0, repetition penalty 1.2, 512 new tokens) or the checkpoint's
/// generation_config.json where it sets top-k/top-p.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 means greedy (deterministic).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = whole_number)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Penalty for tokens already generated in this answer (1.0 disables).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub repetition_penalty: Option<f32>,
    /// Most tokens to generate.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    pub max_new_tokens: Option<usize>,
    /// Random seed for sampling (the same seed gives the same answer).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The settings these flags choose (unset ones are left to config.toml and the model).
    pub fn overrides(&self) -> SamplingOverrides {
        SamplingOverrides {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            ..SamplingOverrides::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Weights and activations precision: auto is f32 on CPU, bf16 on GPU.
    #[arg(long, value_parser = named::<DType>(), default_value = "auto")]
    pub dtype: DType,
    /// Where to run the model (cuda/metal need a build with that feature).
    #[arg(long, value_parser = named::<DevicePref>(), default_value = "auto")]
    pub device: DevicePref,
    /// Weight quantization; unset picks the best that fits in memory on a CPU (converted
    /// once and cached on disk), dense weights on a GPU.
    #[arg(long, value_parser = named::<Quant>())]
    pub quant: Option<Quant>,
}

/// `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Forced on or off, or `None` to let the terminal decide.
    pub fn forced(self) -> Option<bool> {
        match self {
            Self::Auto => None,
            Self::Always => Some(true),
            Self::Never => Some(false),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List saved sessions (the default).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a session as Markdown (with each answer's record), or `--json`: the session
    /// file itself, every turn with its record.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a session.
    Rm { name: String },
}

#[cfg(feature = "test-support")]
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

/// A real model geometry for `--shape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Shape {
    /// HuatuoGPT-Vision-7B: Qwen2-7B (28 layers, 3584 wide, 152,064 tokens) + CLIP-L/336.
    #[value(name = "7b")]
    #[serde(rename = "7b")]
    B7,
    /// HuatuoGPT-Vision-34B: Yi-1.5-34B (60 layers, 7168 wide, 64,000 tokens) + CLIP-L/336.
    #[value(name = "34b")]
    #[serde(rename = "34b")]
    B34,
}

/// `huatuo bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A checkpoint directory to load (quantized through the cache).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "shape",
        required_unless_present = "shape"
    )]
    pub model: Option<PathBuf>,
    /// Build a model with random weights at this real geometry instead (nothing downloaded).
    #[arg(long, value_enum)]
    pub shape: Option<Shape>,
    /// With --shape: only this many decoder layers (the 7B has 28, the 34B 60).
    #[arg(long, value_name = "N", requires = "shape")]
    pub layers: Option<usize>,
    /// Weight quantization; by default the most accurate one that fits in available memory.
    #[arg(long, value_parser = named::<Quant>())]
    pub quant: Option<Quant>,
    /// Keep q4k weights as GGUF blocks for candle's block kernels instead of interleaving
    /// them for huatuo's AVX2 kernels (same memory, slower prefill; for comparison).
    #[arg(long)]
    pub compact: bool,
    /// Threads for the matrix kernels (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Tokens of the prompt whose prefill is timed and after which the 64 decode steps run
    /// (as llama-bench's depth): decode slows as the context grows.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub depth: usize,
    /// Time each step N times and report medians.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: usize,
    /// Where quantized cache files go with --model (default: the one `chat` and `ask` use).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `huatuo render` arguments.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The image: DICOM (any extension), PNG, JPEG, BMP, TIFF or WebP.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Where to write the PNG.
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,

    /// DICOM window: CENTER,WIDTH (e.g. 40,400 or -600,1500) or a preset: brain, subdural,
    /// stroke, lung, mediastinum, abdomen, liver, bone. Default: the file's window, else the
    /// frame's min-max.
    #[arg(long, value_name = "W", allow_hyphen_values = true)]
    pub window: Option<Window>,

    /// DICOM frame to show, from 1 (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub frame: Option<u32>,

    /// Write the full-size rendering, before padding and resizing.
    #[arg(long)]
    pub original: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// `7b` (default), `34b` or a Hugging Face repo id (`org/name`).
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) to check.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// One JSON object instead of a line per file.
    #[arg(long)]
    pub json: bool,
}
