//! `huatuo chat` (and `huatuo` alone): checks that there is a terminal, resolves the theme,
//! the model and the sampling settings (defaults < config.toml < flags), then hands over to
//! the full-screen chat in [`crate::tui`]. Without a terminal it points to `huatuo ask`.

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches};

use crate::chat::session::Store;
use crate::cli::ChatArgs;
use crate::config::{Dirs, Settings};
use crate::model::sampling::SamplingParams;
use crate::term::TermFacts;
use crate::tui::{self, theme, AppConfig, Exit};

/// The arguments of `huatuo` with no subcommand: `chat` with every default.
pub fn default_args() -> Result<ChatArgs> {
    let command = ChatArgs::augment_args(clap::Command::new("chat"));
    let matches = command.try_get_matches_from(["chat"])?;
    Ok(ChatArgs::from_arg_matches(&matches)?)
}

/// Runs the chat until the user quits; Ctrl+C twice is [`super::Interrupted`] (exit 130).
pub fn run(args: ChatArgs, facts: TermFacts) -> Result<()> {
    if !facts.stdin_tty || !facts.stdout_tty {
        bail!(
            "huatuo chat needs a terminal on stdin and stdout; from a script or a pipe use `huatuo ask` (see `huatuo ask --help`)"
        );
    }
    let dirs = Dirs::from_env()?;
    let settings = Settings::load(&dirs.config_file())?;
    let theme_name = args
        .theme
        .clone()
        .or_else(|| settings.theme.clone())
        .unwrap_or_else(|| "dark".to_string());
    let theme = theme::load(&theme_name, &dirs.config.join("themes"))?;
    let mut images = Vec::new();
    for path in &args.images {
        if !path.is_file() {
            bail!("cannot attach {}: no such file", path.display());
        }
        images.push(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
    }
    let (params, pinned) = sampling(&args, &settings)?;
    let config = AppConfig {
        spec: super::model_spec(&args.model, &args.runtime)?,
        params,
        pinned,
        theme,
        sessions: Store::new(dirs.sessions()),
        images,
    };
    // Download progress must come as engine events for the chat's progress bar: a bar drawn
    // on stderr would scribble over the screen.
    let engine = super::engine_for(false);
    let exit = tui::run(tui::Options { config, engine }).context("chat")?;
    match exit {
        Exit::Quit => Ok(()),
        Exit::Interrupted => Err(super::Interrupted.into()),
    }
}

/// Sampling settings: the reference defaults, config.toml, then flags; and the keys either
/// set, which a checkpoint's generation_config.json must not override.
fn sampling(args: &ChatArgs, s: &Settings) -> Result<(SamplingParams, Vec<&'static str>)> {
    let f = &args.sampling;
    let mut p = SamplingParams::default();
    let mut pinned = Vec::new();
    let mut pin = |key: &'static str, set: bool| {
        if set {
            pinned.push(key);
        }
    };
    pin("temperature", f.temperature.or(s.temperature).is_some());
    pin("top_k", f.top_k.or(s.top_k).is_some());
    pin("top_p", f.top_p.or(s.top_p).is_some());
    pin(
        "repetition_penalty",
        f.repetition_penalty.or(s.repetition_penalty).is_some(),
    );
    pin(
        "max_new_tokens",
        f.max_new_tokens.or(s.max_new_tokens).is_some(),
    );
    pin("seed", f.seed.or(s.seed).is_some());
    p.temperature = f.temperature.or(s.temperature).unwrap_or(p.temperature);
    p.top_k = f.top_k.or(s.top_k).unwrap_or(p.top_k);
    p.top_p = f.top_p.or(s.top_p).unwrap_or(p.top_p);
    p.repetition_penalty = f
        .repetition_penalty
        .or(s.repetition_penalty)
        .unwrap_or(p.repetition_penalty);
    p.max_new_tokens = f
        .max_new_tokens
        .or(s.max_new_tokens)
        .unwrap_or(p.max_new_tokens);
    p.seed = f.seed.or(s.seed).unwrap_or(p.seed);
    p.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((p, pinned))
}
