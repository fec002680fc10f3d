//! The subcommands. Each turns parsed arguments into work and user-facing output; what they
//! share (model choice, sampling settings, the engine) lives here.

pub mod ask;
pub mod bench;
pub mod chat;
#[cfg(feature = "test-support")]
pub mod dev;
pub mod eval;
pub mod export;
pub mod models;
pub mod progress;
pub mod render;
pub mod serve;
pub mod sessions;
pub mod verify;

use std::path::Path;

use anyhow::Result;

use crate::cli::{ModelArgs, RemoteArgs, RuntimeArgs, SamplingArgs};
use crate::config::{Dirs, Settings};
use crate::engine::remote::Remote;
use crate::engine::{Engine, EngineHandle, ResolveError, ResolvedModel, Resolver};
use crate::hub::{self, memory::WeightFormat};
use crate::model::decoder::PREFILL_CHUNK;
use crate::model::store::quant::choose_quant;
use crate::protocol::{DevicePref, LoadStage, ModelSpec, Quant, SamplingOverrides};
use std::ops::ControlFlow;

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
/// the resolver.
pub fn model_spec(
    args: &ModelArgs,
    runtime: &RuntimeArgs,
    settings: &Settings,
) -> Result<ModelSpec> {
    let quant = match (runtime.quant, settings.quant.as_deref()) {
        (Some(q), _) => Some(q),
        (None, Some(name)) => Some(name.parse::<Quant>().map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}",
                Dirs::from_env()
                    .map(|d| d.config_file().display().to_string())
                    .unwrap_or_else(|_| "config.toml".into())
            )
        })?),
        (None, None) => None,
    };
    let named = args.single().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ModelSpec {
        source: named
            .cloned()
            .or_else(|| settings.model.clone())
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
pub fn engine_for(draw_download_bar: bool) -> EngineHandle {
    Engine::spawn(hub_resolver(draw_download_bar))
}

/// The remote engine the user chose: `--endpoint`, else HUATUO_ENDPOINT (through clap), else
/// config.toml's `endpoint`; the key from `--api-key`/HUATUO_API_KEY, else OPENAI_API_KEY.
pub fn remote(args: &RemoteArgs, settings: &Settings) -> Result<Option<Remote>> {
    let Some(endpoint) = args
        .endpoint
        .clone()
        .or_else(|| settings.endpoint.clone())
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    let key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("OPENAI_API_KEY").ok());
    Remote::new(&endpoint, key)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The engine for a front end: the remote one when an endpoint is set, else the local model
/// worker ([`engine_for`]).
pub fn engine_with(remote: Option<&Remote>, draw_download_bar: bool) -> EngineHandle {
    match remote {
        Some(r) => Engine::spawn_remote(r.clone()),
        None => engine_for(draw_download_bar),
    }
}

/// What to load: [`model_spec`] locally; with an endpoint, the served model `--model` names
/// (empty: the first the server lists).
pub fn spec_for(
    remote: Option<&Remote>,
    args: &ModelArgs,
    runtime: &RuntimeArgs,
    settings: &Settings,
) -> Result<ModelSpec> {
    let mut spec = model_spec(args, runtime, settings)?;
    if remote.is_some() {
        spec.source = args
            .single()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .cloned()
            .unwrap_or_default();
    }
    Ok(spec)
}

/// Resolves `7b`, `34b`, repo ids (downloading what is missing into the shared Hugging Face
/// cache) and directories, then checks that the model fits in memory before it loads.
/// With `draw_bar`, download progress is drawn on stderr; otherwise it is reported as
/// `LoadStage::Download` events.
pub fn hub_resolver(draw_bar: bool) -> Resolver {
    Box::new(
        move |spec: &ModelSpec,
              progress: &mut dyn FnMut(LoadStage, u64, u64) -> ControlFlow<()>| {
            let mut opts = hub::HubOptions::from_env();
            if spec.revision.is_some() {
                opts.revision = spec.revision.clone();
            }
            opts.offline |= spec.offline;
            let model = hub::parse_model_ref(&spec.source);
            let resolved = if draw_bar {
                hub::resolve(&model, &opts, &mut progress::BarProgress::new(true))
            } else {
                let mut events = hub::FnProgress::new(|_file: &str, done: u64, total: u64| {
                    progress(LoadStage::Download, done, total)
                });
                hub::resolve(&model, &opts, &mut events)
            }
            .map_err(|e| ResolveError::new(e.to_string()))?;
            let on_cpu = runs_on_cpu(spec.device);
            let quant = spec.quant.unwrap_or_else(|| {
                let bf16 = checkpoint_bytes(&resolved.dir);
                let available = hub::memory::available_memory().unwrap_or(u64::MAX);
                choose_quant(bf16, available, on_cpu)
            });
            if on_cpu {
                let format = WeightFormat::of(quant, spec.dtype);
                hub::memory::preflight(&resolved.dir, format, 4096, PREFILL_CHUNK).map_err(
                    |e| ResolveError {
                        out_of_memory: matches!(e, hub::memory::MemoryError::TooLarge { .. }),
                        message: e.to_string(),
                    },
                )?;
            }
            let dirs = Dirs::from_env().ok();
            let hash_cache = dirs.as_ref().map(|d| d.cache.clone());
            // The record of every answer names the checkpoint's files by SHA-256: the hub's
            // own hashes for its blobs (not read again), others hashed once and cached.
            let files = crate::provenance::checkpoint_files(&resolved.dir, hash_cache.as_deref())
                .map_err(|e| ResolveError::new(e.to_string()))?;
            Ok(ResolvedModel {
                dir: resolved.dir,
                repo: resolved.repo,
                revision: resolved.revision,
                quant,
                quant_cache_dir: dirs.map(|d| d.quant_cache()),
                files,
                hash_cache,
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

/// The user's sampling settings: flags over config.toml, checked before anything is loaded or
/// downloaded. The engine applies them over the model's defaults (the reference CLI's and the
/// checkpoint's generation_config.json).
pub fn sampling(args: &SamplingArgs, settings: &Settings) -> Result<SamplingOverrides> {
    let overrides = args.overrides().or(&settings.sampling());
    overrides.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(overrides)
}
