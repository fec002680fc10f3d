//! Carrying out the App's [`Effect`]s. File work (sessions, export) is done here for the real chat and the tests alike; work that needs the model, the
//! image thread or the terminal goes through a [`Host`], which the runner implements for real
//! and tests implement with a fake engine.

use std::path::{Path, PathBuf};

use crate::chat::session::{now, Store};
use crate::protocol::{Command, RequestId};

use super::msg::{Effect, Msg};

/// What the effects need from the outside world.
pub trait Host {
    /// Queues a command for the engine; never waits for the model.
    fn engine(&mut self, command: Command);
    /// Stops request `id` at once.
    fn cancel(&mut self, id: RequestId);
    /// Reads an image off the UI thread; the answer arrives later as [`Msg::Image`].
    fn load_image(&mut self, path: PathBuf);
    /// Puts text on the clipboard.
    fn copy(&mut self, text: &str) -> Result<(), String>;
    /// Lets the user edit `text` in an external editor (suspending the screen).
    fn edit(&mut self, text: &str) -> Result<String, String>;
    /// Asks for the screen to be cleared so the next frame is drawn whole.
    fn redraw(&mut self);
    /// Whether a redraw was asked for since the last call.
    fn take_redraw(&mut self) -> bool {
        false
    }
    /// Engine events that arrived outside the message channel, without waiting.
    fn poll_engine(&mut self) -> Vec<crate::protocol::Event> {
        Vec::new()
    }
}

/// Does one effect; returns the message that reports its result, if any.
pub fn execute(effect: Effect, host: &mut dyn Host, store: &Store) -> Option<Msg> {
    match effect {
        Effect::Engine(command) => {
            host.engine(command);
            None
        }
        Effect::Cancel(id) => {
            host.cancel(id);
            None
        }
        Effect::LoadImage(path) => {
            host.load_image(path);
            None
        }
        Effect::Save {
            name,
            mut session,
            overwrite,
        } => Some(Msg::Saved(save(store, name, &mut session, overwrite))),
        Effect::LoadSession(name) => Some(Msg::SessionLoaded(
            store.get(&name).map_err(|e| e.to_string()),
        )),
        Effect::Export { path, markdown } => Some(Msg::Exported(export(&path, &markdown))),
        Effect::Copy(text) => Some(Msg::Copied(host.copy(&text).map(|()| text.chars().count()))),
        Effect::Edit(text) => {
            let result = host.edit(&text);
            host.redraw();
            Some(Msg::Edited(result))
        }
        Effect::Redraw => {
            host.redraw();
            None
        }
    }
}

fn save(
    store: &Store,
    name: Option<String>,
    session: &mut crate::chat::session::Session,
    overwrite: bool,
) -> Result<(String, PathBuf), String> {
    let name = match name {
        Some(n) => n,
        None => free_name(store, &format!("chat-{}", date_stamp(now())))?,
    };
    if !overwrite && store.load(&name).map_err(|e| e.to_string())?.is_some() {
        return Err(format!(
            "a session named {name} exists: /load {name} first to continue it, or choose another name"
        ));
    }
    session.name = name.clone();
    let path = store.save(session).map_err(|e| e.to_string())?;
    Ok((name, path))
}

/// `base`, or `base-2`, `base-3`… if taken.
fn free_name(store: &Store, base: &str) -> Result<String, String> {
    for n in 1..1000 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        if store.load(&name).map_err(|e| e.to_string())?.is_none() {
            return Ok(name);
        }
    }
    Err(format!("too many sessions named {base}"))
}

/// `2026-08-30-1412` (UTC) from Unix seconds.
pub fn date_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}-{:02}{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

fn export(path: &Path, markdown: &str) -> Result<PathBuf, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
    }
    std::fs::write(path, markdown).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::session::Session;

    #[test]
    fn date_stamps() {
        assert_eq!(date_stamp(0), "1970-01-01-0000");
        assert_eq!(date_stamp(951_782_400 + 3_660), "2000-02-29-0101");
        assert_eq!(date_stamp(1_788_000_000), "2026-08-29-1040");
    }

    #[test]
    fn unnamed_saves_get_a_free_dated_name_and_names_are_not_clobbered() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path().to_path_buf());
        let mut s = Session::new("");
        let (a, _) = save(&store, None, &mut s, true).expect("first");
        let (b, _) = save(&store, None, &mut s, true).expect("second");
        assert!(a.starts_with("chat-") && b == format!("{a}-2"), "{a} {b}");
        let err = save(&store, Some(a.clone()), &mut s, false).expect_err("exists");
        assert!(err.contains("exists"), "{err}");
        save(&store, Some(a), &mut s, true).expect("overwrite own");
    }
}
