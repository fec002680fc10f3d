//! `huatuo chat` (and `huatuo` alone): checks that there is a terminal, resolves the theme,
//! the model and the user's sampling settings (config.toml under flags; the engine puts them
//! over the model's defaults), then hands over to the full-screen chat in [`crate::tui`]. Without a terminal it points to `huatuo ask`.

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches};

use crate::chat::session::{Session, Store};
use crate::cli::ChatArgs;
use crate::config::{Dirs, Settings};
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
    let sessions = Store::new(dirs.sessions());
    let session = match (&args.session, args.resume) {
        (Some(name), _) => Some(sessions.load(name)?.unwrap_or_else(|| Session::new(name))),
        (None, true) => {
            let Some(latest) = sessions.list()?.into_iter().next() else {
                bail!(
                    "no saved conversation to continue in {}",
                    sessions.dir().display()
                );
            };
            Some(sessions.get(&latest.name)?)
        }
        (None, false) => None,
    };
    let remote = super::remote(&args.remote, &settings)?;
    let config = AppConfig {
        spec: super::spec_for(remote.as_ref(), &args.model, &args.runtime, &settings)?,
        sampling: super::sampling(&args.sampling, &settings)?,
        theme,
        sessions,
        images,
        session,
    };
    // Download progress must come as engine events for the chat's progress bar: a bar drawn
    // on stderr would scribble over the screen.
    let engine = super::engine_with(remote.as_ref(), false);
    let exit = tui::run(tui::Options { config, engine }).context("chat")?;
    match exit {
        Exit::Quit => Ok(()),
        Exit::Interrupted => Err(super::Interrupted.into()),
    }
}
