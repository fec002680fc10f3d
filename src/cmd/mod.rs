//! The subcommands. Each turns parsed arguments into work and user-facing output; what they
//! share (model choice, sampling settings, the engine) lives here.

pub mod ask;
pub mod bench;
pub mod chat;
pub mod dev;
pub mod models;
pub mod render;
pub mod sessions;

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{ModelArgs, RuntimeArgs, SamplingArgs};
use crate::config::{Dirs, Settings};
use crate::engine::protocol::ModelSpec;
use crate::engine::protocol::{DType, DevicePref, LoadStage};
use crate::engine::{Engine, EngineHandle, Faults, ResolvedModel, Resolver};
use crate::hub::{self, memory::WeightFormat};
use crate::model::decoder::PREFILL_CHUNK;
use crate::model::quant::{choose_quant, Quant};
use crate::model::sampling::SamplingParams;

/// The model used when neither `--model` nor config.toml names one.
pub const DEFAULT_MODEL: &str = "7b";

/// Returned when the user pressed Ctrl-C: `main` exits 130 without a message.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The user's config.toml (defaults when absent).
pub fn settings() -> Result<Settings> {
    Settings::load(&Dirs::from_env()?.config_file())
}

/// What to load: `--model`, else config.toml's `model`, else the 7B; `--quant`, else
/// config.toml's `quant` (an unknown name there is an error naming the file), else chosen by
/// the resolver. config.toml is read once.
pub fn model_spec(args: &ModelArgs, runtime: &RuntimeArgs) -> Result<ModelSpec> {
    let configured = settings()?;
    let quant = match (runtime.quant, configured.quant.as_deref()) {
        (Some(q), _) => Some(q),
        (None, Some(name)) => Some(Quant::from_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid quant {name:?} in {}: use none, q8_0, q6k, q5k or q4k",
                Dirs::from_env()
                    .map(|d| d.config_file().display().to_string())
                    .unwrap_or_else(|_| "config.toml".into())
            )
        })?),
        (None, None) => None,
    };
    Ok(ModelSpec {
        source: args
            .model
            .clone()
            .or(configured.model)
            .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
        revision: args.revision.clone(),
        device: runtime.device,
        dtype: runtime.dtype,
        offline: args.offline,
        quant,
    })
}

/// Starts the model worker with the resolver that finds or downloads models. With
/// `draw_download_bar` (a one-shot command with stderr on a terminal) downloads draw a bar on
/// stderr; otherwise (the full-screen chat, scripts) they are reported as engine events.
///
/// `HUATUO_TEST_TOKEN_DELAY_MS` (undocumented, for the test suite) slows every token down so
/// that tests can interrupt an answer midway.
pub fn engine_for(draw_download_bar: bool) -> EngineHandle {
    let delay = std::env::var("HUATUO_TEST_TOKEN_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let faults = Faults {
        token_delay: delay,
        ..Faults::default()
    };
    Engine::spawn_with_faults(hub_resolver(draw_download_bar), faults)
}

/// Resolves `7b`, `34b`, repo ids (downloading what is missing into the shared Hugging Face
/// cache) and directories, then checks that the model fits in memory before it loads.
/// With `draw_bar`, download progress is drawn on stderr; otherwise it is reported as
/// `LoadStage::Download` events.
pub fn hub_resolver(draw_bar: bool) -> Resolver {
    Box::new(
        move |spec: &ModelSpec, progress: &mut dyn FnMut(LoadStage, u64, u64)| {
            let mut opts = hub::HubOptions::from_env();
            if spec.revision.is_some() {
                opts.revision = spec.revision.clone();
            }
            opts.offline |= spec.offline;
            let model = hub::parse_model_ref(&spec.source);
            let resolved = if draw_bar {
                hub::resolve(&model, &opts, &mut hub::BarProgress::new(true))
            } else {
                let mut events = hub::FnProgress::new(|_file: &str, done: u64, total: u64| {
                    progress(LoadStage::Download, done, total)
                });
                hub::resolve(&model, &opts, &mut events)
            }
            .map_err(|e| e.to_string())?;
            let on_cpu = runs_on_cpu(spec.device);
            let quant = spec.quant.unwrap_or_else(|| {
                let bf16 = checkpoint_bytes(&resolved.dir);
                let available = hub::memory::available_memory().unwrap_or(u64::MAX);
                choose_quant(bf16, available, on_cpu)
            });
            if on_cpu {
                let format = match (quant, spec.dtype) {
                    (Quant::None, DType::Auto | DType::F32) => WeightFormat::F32,
                    (Quant::None, DType::Bf16) => WeightFormat::Bf16,
                    (Quant::None, DType::F16) => WeightFormat::F16,
                    (Quant::Q4k, _) => WeightFormat::Q4K,
                    // q5k/q6k are smaller than q8_0: estimating them as q8_0 errs on the safe side.
                    (Quant::Q8_0 | Quant::Q6k | Quant::Q5k, _) => WeightFormat::Q8_0,
                };
                hub::memory::preflight(&resolved.dir, format, 4096, PREFILL_CHUNK)
                    .map_err(|e| e.to_string())?;
            }
            let quant_cache_dir = Dirs::from_env().ok().map(|d| d.quant_cache());
            Ok(ResolvedModel {
                dir: resolved.dir,
                repo: resolved.repo,
                revision: resolved.revision,
                quant,
                quant_cache_dir,
            })
        },
    )
}

/// The checkpoint's size on disk (bf16): the index's `metadata.total_size`, else the shards'
/// file sizes.
fn checkpoint_bytes(dir: &Path) -> u64 {
    let index = std::fs::read_to_string(dir.join("model.safetensors.index.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if let Some(total) = index
        .as_ref()
        .and_then(|v| v.pointer("/metadata/total_size"))
        .and_then(serde_json::Value::as_u64)
    {
        return total;
    }
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Whether a device preference ends up on the CPU (GPUs exist only in builds with their
/// feature, and only when present).
fn runs_on_cpu(device: DevicePref) -> bool {
    match device {
        DevicePref::Cpu => true,
        DevicePref::Cuda | DevicePref::Metal => false,
        DevicePref::Auto => {
            !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available()
        }
    }
}

/// Merges, lowest first: the reference CLI's defaults, the checkpoint's
/// generation_config.json (top_k, top_p — as transformers merges them, huatuo-reference.md
/// §4.1), config.toml, then flags.
pub fn sampling_params(args: &SamplingArgs, model_dir: &Path) -> Result<SamplingParams> {
    let mut p = SamplingParams::default();
    let gen_path = model_dir.join("generation_config.json");
    if let Ok(text) = std::fs::read_to_string(&gen_path) {
        let gen: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("invalid {}", gen_path.display()))?;
        if let Some(k) = gen.get("top_k").and_then(serde_json::Value::as_u64) {
            p.top_k = k as usize;
        }
        if let Some(tp) = gen.get("top_p").and_then(serde_json::Value::as_f64) {
            p.top_p = tp as f32;
        }
    }
    let s = settings()?;
    p.temperature = pick(args.temperature, s.temperature, p.temperature);
    p.top_k = pick(args.top_k, s.top_k, p.top_k);
    p.top_p = pick(args.top_p, s.top_p, p.top_p);
    p.repetition_penalty = pick(
        args.repetition_penalty,
        s.repetition_penalty,
        p.repetition_penalty,
    );
    p.max_new_tokens = pick(args.max_new_tokens, s.max_new_tokens, p.max_new_tokens);
    p.seed = pick(args.seed, s.seed, p.seed);
    p.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(p)
}

/// A flag, else the config file's value, else what was there.
fn pick<T>(flag: Option<T>, config: Option<T>, current: T) -> T {
    flag.or(config).unwrap_or(current)
}
