//! `huatuo verify [MODEL]`: re-reads a cached hub model and its quantized cache files and
//! says, file by file, whether they are intact: LFS files are hashed against the hub's
//! SHA-256 (their blob name), the small files checked by size, and each quantized file's
//! tensors against the checksums recorded when it was written. A damaged hub file is marked
//! so that loads refuse it and `huatuo pull` downloads it again; a damaged quantized file is
//! rebuilt by the next load. Exits 2 when anything is damaged.

use std::io::Write;

use anyhow::{bail, Result};
use serde_json::json;

use super::progress::BarProgress;
use crate::cli::VerifyArgs;
use crate::hub::{self, format_bytes, HubOptions, ModelRef, RepoCache};
use crate::term::TermFacts;

/// Checks the model named by `args` (default: config.toml's model, else the 7B).
pub fn run(args: VerifyArgs, facts: TermFacts) -> Result<()> {
    let name = args
        .model
        .or_else(|| super::settings().ok().and_then(|s| s.model))
        .unwrap_or_else(|| super::DEFAULT_MODEL.to_string());
    let repo = match hub::parse_model_ref(&name) {
        ModelRef::Repo { repo } => repo,
        ModelRef::Local(path) => bail!(
            "{} is a directory, not a hub model: there are no hub checksums to verify it \
             against (give 7b, 34b or org/name)",
            path.display()
        ),
    };
    let opts = HubOptions::from_env();
    let revision = args.revision.as_deref().unwrap_or("main");
    let cache = RepoCache::new(&opts.cache_dir, &repo);
    let mut bar = BarProgress::new(facts.stderr_tty);
    let (commit, files) = hub::verify_snapshot(&cache, revision, &mut bar)?;
    let quant_dir = crate::config::Dirs::from_env()
        .ok()
        .map(|d| d.quant_cache());
    let quantized: Vec<(String, Option<String>)> = quant_dir
        .map(|dir| crate::model::store::gguf::hub_cache_files(&dir, &repo))
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let problem = crate::model::store::gguf::verify_file(&p).err();
            (p.display().to_string(), problem)
        })
        .collect();

    let bad_files = files.iter().filter(|f| f.problem.is_some()).count();
    let bad_quantized = quantized.iter().filter(|(_, p)| p.is_some()).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = json!({
            "repo": repo,
            "revision": commit,
            "files": files,
            "quantized": quantized
                .iter()
                .map(|(path, problem)| json!({"path": path, "problem": problem}))
                .collect::<Vec<_>>(),
            "ok": bad_files + bad_quantized == 0,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        for f in &files {
            let how = if f.hashed { "sha256" } else { "size" };
            match &f.problem {
                None => writeln!(
                    out,
                    "ok       {} ({}, {how})",
                    crate::term::sanitize(&f.file),
                    format_bytes(f.bytes)
                )?,
                Some(why) => writeln!(
                    out,
                    "DAMAGED  {}: {}",
                    crate::term::sanitize(&f.file),
                    crate::term::sanitize(why)
                )?,
            }
        }
        for (path, problem) in &quantized {
            match problem {
                None => writeln!(out, "ok       {path} (tensor checksums)")?,
                Some(why) => writeln!(out, "DAMAGED  {path}: {why}")?,
            }
        }
    }
    drop(out);
    let pull = match revision {
        "main" => hub::short_name(&repo).to_string(),
        r => format!("{} --revision {r}", hub::short_name(&repo)),
    };
    match (bad_files, bad_quantized) {
        (0, 0) => {
            eprintln!(
                "{repo} at {commit}: {} files and {} quantized cache files intact",
                files.len(),
                quantized.len()
            );
            Ok(())
        }
        (0, n) => bail!(
            "{repo}: {n} quantized cache file(s) damaged; the next load rebuilds them from the \
             model's shards"
        ),
        (n, q) => bail!(
            "{repo} at {commit}: {n} of {} files damaged{}; run `huatuo pull {pull}` to \
             download them again",
            files.len(),
            if q > 0 {
                format!(" (and {q} quantized cache file(s), rebuilt by the next load)")
            } else {
                String::new()
            }
        ),
    }
}
