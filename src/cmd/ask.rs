//! `huatuo ask`: one question, the answer alone on stdout (streamed, flushed per piece),
//! errors as one line on stderr. A closed stdout (`| head`) ends generation quietly.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{AskArgs, SamplingArgs};
use crate::engine::Pipeline;
use crate::model::sampling::SamplingParams;

/// Runs `ask`. A broken pipe on stdout is returned as an `io::Error` of kind `BrokenPipe`,
/// which `main` turns into a silent exit 0.
pub fn run(args: AskArgs) -> Result<()> {
    let prompt = args.prompt.join(" ");
    let pipeline = Pipeline::load(&args.model, args.runtime.device, args.runtime.dtype)
        .with_context(|| format!("cannot load model {}", args.model.display()))?;
    let params = sampling_params(&args.sampling, &args.model)?;
    let images = pipeline.load_images(&args.images)?;
    let (ids, _) = pipeline.prompt_ids(&[], &prompt, args.images.len())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error: Option<std::io::Error> = None;
    let answer = pipeline.generate(&ids, &images, &params, |piece| {
        match out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if !answer.text.is_empty() {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Merges flags over the checkpoint's generation_config.json (top_k, top_p) over the
/// reference CLI's defaults, as transformers merges them (huatuo-reference.md §4.1).
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
    if let Some(t) = args.temperature {
        p.temperature = t;
    }
    if let Some(k) = args.top_k {
        p.top_k = k;
    }
    if let Some(tp) = args.top_p {
        p.top_p = tp;
    }
    if let Some(r) = args.repetition_penalty {
        p.repetition_penalty = r;
    }
    if let Some(n) = args.max_new_tokens {
        p.max_new_tokens = n;
    }
    if let Some(s) = args.seed {
        p.seed = s;
    }
    p.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(p)
}
