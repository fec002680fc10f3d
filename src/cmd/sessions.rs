//! `huatuo sessions [list|show NAME|rm NAME]`: the conversations `ask --session` and the
//! chat's `/save` keep under the data directory.

use std::io::Write;

use anyhow::Result;

use crate::chat::session::Store;
use crate::cli::SessionsCommand;
use crate::config::Dirs;

pub fn run(command: Option<SessionsCommand>) -> Result<()> {
    let store = Store::new(Dirs::from_env()?.sessions());
    let mut out = std::io::stdout().lock();
    match command.unwrap_or(SessionsCommand::List { json: false }) {
        SessionsCommand::List { json } => {
            let list = store.list()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                eprintln!("no saved sessions in {}", store.dir().display());
            } else {
                writeln!(out, "{:<32} {:>5} {:>6}", "NAME", "TURNS", "IMAGES")?;
                for s in list {
                    writeln!(out, "{:<32} {:>5} {:>6}", s.name, s.turns, s.images)?;
                }
            }
        }
        SessionsCommand::Show { name } => {
            write!(out, "{}", store.get(&name)?.to_markdown())?;
        }
        SessionsCommand::Rm { name } => store.remove(&name)?,
    }
    out.flush()?;
    Ok(())
}
