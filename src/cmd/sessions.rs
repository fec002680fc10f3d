//! `huatuo sessions [list|show NAME|rm NAME]`: the conversations `ask --session` and the
//! chat's `/save` keep under the data directory.

use std::io::{IsTerminal, Write};

use anyhow::Result;

use crate::chat::session::{date_time, short, Store};
use crate::cli::SessionsCommand;
use crate::config::Dirs;
use crate::term::{sanitize, sanitize_text};

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
                writeln!(
                    out,
                    "{:<28} {:<16} {:>5} {:>6}  {:<16} FIRST QUESTION",
                    "NAME", "UPDATED", "TURNS", "IMAGES", "MODEL"
                )?;
                for s in list {
                    if let Some(why) = &s.corrupt {
                        writeln!(out, "{:<28} corrupt: {}", s.name, sanitize(why))?;
                        continue;
                    }
                    let question = s
                        .first_question
                        .as_deref()
                        .map(|q| q.split_whitespace().collect::<Vec<_>>().join(" "))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:<28} {:<16} {:>5} {:>6}  {:<16} {}",
                        s.name,
                        date_time(s.updated),
                        s.turns,
                        s.images,
                        sanitize(&short(s.model.as_deref().unwrap_or("-"), 16)),
                        sanitize(&short(&question, 60)),
                    )?;
                }
            }
        }
        SessionsCommand::Show { name, json: false } => {
            let md = store.get(&name)?.to_markdown();
            // On a terminal, what people typed and models answered cannot drive it; piped, the
            // text is as saved (JSON escapes it in --json).
            if std::io::stdout().is_terminal() {
                write!(out, "{}", sanitize_text(&md))?;
            } else {
                write!(out, "{md}")?;
            }
        }
        SessionsCommand::Show { name, json: true } => {
            writeln!(out, "{}", serde_json::to_string_pretty(&store.get(&name)?)?)?;
        }
        SessionsCommand::Rm { name } => {
            let freed = store.remove(&name)?;
            if freed > 0 {
                eprintln!(
                    "removed {name}; freed {} of stored images",
                    crate::hub::format_bytes(freed)
                );
            }
        }
    }
    out.flush()?;
    Ok(())
}
