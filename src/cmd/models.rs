//! `huatuo pull`, `list`, `rm` and `info`: the model cache from the command line. Results go
//! to stdout (the snapshot path, a table, or `--json`), messages and the progress bar to stderr.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::progress::BarProgress;
use crate::cli::{InfoArgs, ListArgs, PullArgs, RmArgs};
use crate::hub::{self, format_bytes, memory, CachedModel, HubOptions, ModelRef, Progress};
use crate::term::TermFacts;

/// Counts what was downloaded while passing progress on.
struct Counting<'a> {
    inner: &'a mut dyn Progress,
    bytes: u64,
    files: usize,
}

impl Progress for Counting<'_> {
    fn start(&mut self, file: &str, total: u64, already: u64) {
        self.inner.start(file, total, already);
    }
    fn advance(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.inner.advance(bytes);
    }
    fn finish(&mut self, file: &str) {
        self.files += 1;
        self.inner.finish(file);
    }
}

/// `huatuo pull [MODEL] [--revision R]`: downloads what the cache lacks; prints the snapshot
/// directory.
pub fn pull(args: PullArgs, facts: TermFacts) -> Result<()> {
    let name = args
        .model
        .or_else(|| super::settings().ok().and_then(|s| s.model))
        .unwrap_or_else(|| super::DEFAULT_MODEL.to_string());
    let model = hub::parse_model_ref(&name);
    if let ModelRef::Local(path) = &model {
        bail!(
            "{} is a directory, not a hub model: nothing to pull (give 7b, 34b or org/name)",
            path.display()
        );
    }
    let mut opts = HubOptions::from_env();
    opts.revision = args.revision;
    let started = Instant::now();
    let mut bar = BarProgress::new(facts.stderr_tty);
    let mut counting = Counting {
        inner: &mut bar,
        bytes: 0,
        files: 0,
    };
    let resolved = hub::resolve(&model, &opts, &mut counting)?;
    let (bytes, files) = (counting.bytes, counting.files);
    let repo = resolved.repo.as_deref().unwrap_or(&name);
    let commit = resolved.revision.as_deref().unwrap_or("?");
    if files == 0 {
        eprintln!("{repo} at {commit} is complete in the cache; nothing to download");
    } else {
        eprintln!(
            "pulled {repo} at {commit}: {files} files, {} in {:.1} s",
            format_bytes(bytes),
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", resolved.dir.display());
    Ok(())
}

fn shown(m: &CachedModel, all: bool) -> bool {
    all || m.is_llava || m.repo == hub::REPO_7B || m.repo == hub::REPO_34B
}

fn status(m: &CachedModel) -> String {
    if !m.damaged.is_empty() {
        format!(
            "damaged ({}: `huatuo pull` repairs)",
            crate::text::count(m.damaged.len(), "file", "files")
        )
    } else if m.complete {
        "complete".to_string()
    } else if m.partial_bytes > 0 {
        format!("downloading ({} partial)", format_bytes(m.partial_bytes))
    } else {
        format!(
            "incomplete ({} missing)",
            crate::text::count(m.missing.len(), "file", "files")
        )
    }
}

/// `huatuo list [--json] [--all]`: the cached models with size, revision and completeness.
pub fn list(args: ListArgs) -> Result<()> {
    let opts = HubOptions::from_env();
    let models: Vec<CachedModel> = hub::list_cached(&opts.cache_dir)?
        .into_iter()
        .filter(|m| shown(m, args.all))
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&models)?)?;
        return Ok(());
    }
    if models.is_empty() {
        eprintln!(
            "no models in the cache at {} (`huatuo pull 7b` downloads the 7B)",
            opts.cache_dir.display()
        );
        return Ok(());
    }
    let width = models
        .iter()
        .map(|m| m.repo.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:<5}  {:<8}  {:>9}  STATUS",
        "MODEL", "NAME", "REVISION", "SIZE"
    )?;
    for m in &models {
        let rev = m.revision.as_deref().map_or("-", |r| &r[..r.len().min(8)]);
        let short = match hub::short_name(&m.repo) {
            s if s == m.repo => "-",
            s => s,
        };
        writeln!(
            out,
            "{:<width$}  {:<5}  {:<8}  {:>9}  {}",
            // Folder names of the cache are not huatuo's: shown escaped.
            crate::term::sanitize(&m.repo),
            short,
            rev,
            format_bytes(m.size_bytes),
            status(m)
        )?;
    }
    Ok(())
}

/// `huatuo rm MODEL`: deletes a hub model's cache folder (no question asked); refuses
/// anything that is not a hub model in the cache.
pub fn rm(args: RmArgs) -> Result<()> {
    let opts = HubOptions::from_env();
    let repo = match hub::parse_model_ref(&args.model) {
        ModelRef::Repo { repo } => repo,
        ModelRef::Local(path) => cached_repo_of(&path, &opts.cache_dir).with_context(|| {
            format!(
                "{} is not a hub model in the cache at {}; `huatuo rm` only deletes cached hub \
                 models (see `huatuo list`)",
                path.display(),
                opts.cache_dir.display()
            )
        })?,
    };
    match hub::remove_cached(&opts.cache_dir, &repo)? {
        Some(bytes) => {
            eprintln!(
                "removed {repo} ({}) from {}",
                format_bytes(bytes),
                opts.cache_dir.display()
            );
            Ok(())
        }
        None => bail!(
            "{repo} is not in the cache at {} (see `huatuo list`)",
            opts.cache_dir.display()
        ),
    }
}

/// A `models--org--name` folder directly inside the cache, as a repo id.
fn cached_repo_of(path: &Path, cache_dir: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let cache = cache_dir.canonicalize().ok()?;
    if path.parent()? != cache {
        return None;
    }
    let name = path.file_name()?.to_str()?.strip_prefix("models--")?;
    let (org, model) = name.split_once("--")?;
    let repo = format!("{org}/{model}");
    hub::is_valid_repo_id(&repo).then_some(repo)
}

/// `huatuo info [--json]`: where the hub cache and huatuo's own files are.
pub fn info(args: InfoArgs) -> Result<()> {
    let opts = HubOptions::from_env();
    let dirs = crate::config::Dirs::from_env()?;
    let memory = memory::available_memory();
    let cached = hub::list_cached(&opts.cache_dir)
        .map(|v| v.iter().filter(|m| shown(m, false)).count())
        .unwrap_or(0);
    let image_store = crate::chat::session::Store::new(dirs.sessions()).images();
    let stored_images = image_store.size();
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "image_store": image_store.dir(),
            "image_store_bytes": stored_images,
            "hub_cache": opts.cache_dir,
            "hub_endpoint": opts.endpoint,
            "hub_token": opts.token.is_some(),
            "offline": opts.offline,
            "config_dir": dirs.config,
            "data_dir": dirs.data,
            "memory_available_bytes": memory,
            "cached_models": cached,
            "kernels": crate::kernels::isa(),
            "cpu_features": crate::kernels::cpu_features(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let rows: [(&str, String); 11] = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("hub cache", opts.cache_dir.display().to_string()),
        ("hub endpoint", opts.endpoint.clone()),
        (
            "hub token",
            if opts.token.is_some() {
                "set"
            } else {
                "not set"
            }
            .to_string(),
        ),
        (
            "offline",
            if opts.offline { "yes" } else { "no" }.to_string(),
        ),
        ("config dir", dirs.config.display().to_string()),
        ("data dir", dirs.data.display().to_string()),
        (
            "image store",
            format!(
                "{} in {}",
                format_bytes(stored_images),
                image_store.dir().display()
            ),
        ),
        (
            "memory",
            memory.map_or("unknown".to_string(), |m| {
                format!("{} available", format_bytes(m))
            }),
        ),
        ("models", format!("{cached} cached (`huatuo list`)")),
        (
            "kernels",
            format!(
                "{} (CPU: {}; HUATUO_KERNELS=scalar|avx2|avx512 chooses)",
                crate::kernels::isa(),
                crate::kernels::cpu_features().join(" ")
            ),
        ),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<13} {v}")?;
    }
    Ok(())
}
