//! `huatuo export --format llava-hf --model M OUT_DIR`: writes a transformers
//! `LlavaForConditionalGeneration` checkpoint that vLLM, SGLang and LMDeploy load (see
//! `model::export`). A hub model is downloaded first, as `pull` does; progress goes to
//! stderr, the directory written to stdout.

use std::time::Instant;

use anyhow::{bail, Result};

use super::progress::BarProgress;
use crate::cli::{ExportArgs, ExportFormat};
use crate::hub::{self, format_bytes, HubOptions, ModelRef};
use crate::model::export::{self, ExportDType};
use crate::term::TermFacts;

pub fn run(args: ExportArgs, facts: TermFacts) -> Result<()> {
    let ExportFormat::LlavaHf = args.format;
    let name = args
        .model
        .clone()
        .or_else(|| super::settings().ok().and_then(|s| s.model))
        .unwrap_or_else(|| super::DEFAULT_MODEL.to_string());
    let model = hub::parse_model_ref(&name);
    let dir = match &model {
        ModelRef::Local(path) => path.clone(),
        _ => {
            let mut opts = HubOptions::from_env();
            opts.revision = args.revision.clone();
            opts.offline |= args.offline;
            hub::resolve(&model, &opts, &mut BarProgress::new(facts.stderr_tty))?.dir
        }
    };
    if args.shard_size_mb == 0 {
        bail!("--shard-size-mb must be at least 1");
    }
    let dtype = if args.f32 {
        ExportDType::F32
    } else {
        ExportDType::Bf16
    };
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = std::sync::Arc::clone(&interrupted);
        let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let started = Instant::now();
    let mut last_pct = u64::MAX;
    let result = export::llava_hf(
        &dir,
        &args.out,
        dtype,
        args.shard_size_mb * 1_000_000,
        &mut |done, total| {
            if facts.stderr_tty {
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                if pct != last_pct {
                    eprint!("\r\x1b[2Kexporting: {pct}% of {}", format_bytes(total));
                    last_pct = pct;
                }
            }
            !interrupted.load(std::sync::atomic::Ordering::SeqCst)
        },
    );
    if facts.stderr_tty {
        eprint!("\r\x1b[2K");
    }
    let done = match result {
        Ok(done) => done,
        Err(export::ExportError::Cancelled) => return Err(super::Interrupted.into()),
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "exported {name} as llava-hf ({}): {} tensors in {} shards, {} in {:.1} s; image token {}{}",
        if dtype == ExportDType::F32 { "f32" } else { "bf16" },
        done.tensors,
        done.shards,
        format_bytes(done.bytes),
        started.elapsed().as_secs_f64(),
        done.image_token_index,
        if done.added_row {
            " (a row added to the vocabulary)"
        } else {
            ""
        }
    );
    println!("{}", done.dir.display());
    Ok(())
}
