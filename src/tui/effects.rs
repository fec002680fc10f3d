//! Carrying out the App's [`Effect`]s. File work (sessions, export) is done here for the real chat and the tests alike; work that needs the model, the
//! image thread or the terminal goes through a [`Host`], which the runner implements for real
//! and tests implement with a fake engine.

use std::path::{Path, PathBuf};

use crate::chat::session::{dated_name, now, Store};
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
    /// Puts text on the clipboard; says how (or why nothing was copied).
    fn copy(&mut self, text: &str) -> Result<String, String>;
    /// Lets the user edit `text` in an external editor (suspending the screen).
    fn edit(&mut self, text: &str) -> Result<String, String>;
    /// Asks for the screen to be cleared so the next frame is drawn whole.
    fn redraw(&mut self);
    /// Turns the terminal's mouse reports on (the wheel scrolls the chat) or off (the
    /// terminal selects text).
    fn set_mouse(&mut self, on: bool);
    /// Renders a picture for the viewer off the UI thread; it arrives as [`Msg::Viewed`].
    fn view_image(&mut self, job: super::image::ViewJob);
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
            announce,
            replaces,
            conversation,
        } => {
            let result = save(store, name, &mut session, overwrite);
            if let (Ok((saved, _)), Some(old)) = (&result, replaces) {
                if *saved != old {
                    // Renamed: the dated file goes (its images stay, the new file uses them).
                    let _ = store.remove(&old);
                }
            }
            Some(Msg::Saved {
                result,
                announce,
                conversation,
            })
        }
        Effect::ListSessions => Some(Msg::SessionList(list_sessions(store))),
        Effect::LoadSession(name) => Some(Msg::SessionLoaded(
            store.get(&name).map_err(|e| e.to_string()),
        )),
        Effect::Export { path, markdown } => Some(Msg::Exported(export(&path, &markdown))),
        Effect::Copy { text, what } => Some(Msg::Copied(host.copy(&text).map(|how| {
            format!(
                "Copied {what} ({}) {how}",
                crate::text::count(text.chars().count(), "character", "characters")
            )
        }))),
        Effect::Edit(text) => {
            let result = host.edit(&text);
            host.redraw();
            Some(Msg::Edited(result))
        }
        Effect::Redraw => {
            host.redraw();
            None
        }
        Effect::Mouse(on) => {
            host.set_mouse(on);
            None
        }
        Effect::View(job) => {
            host.view_image(job);
            None
        }
    }
}

/// One line per saved session, most recent first: name, date, turns, model, first question.
fn list_sessions(store: &Store) -> Result<Vec<String>, String> {
    let list = store.list().map_err(|e| e.to_string())?;
    Ok(list.iter().map(|s| s.line()).collect())
}

fn save(
    store: &Store,
    name: Option<String>,
    session: &mut crate::chat::session::Session,
    overwrite: bool,
) -> Result<(String, PathBuf), String> {
    let name = match name {
        Some(n) => n,
        None => free_name(store, &dated_name(now()))?,
    };
    if !overwrite && store.load(&name).map_err(|e| e.to_string())?.is_some() {
        return Err(format!(
            "a session named {name} exists: /load {name} first to continue it, or choose another name"
        ));
    }
    session.name = name.clone();
    // Not while an `ask --session` of the same name is answering (the screen never waits:
    // the next save tries again).
    let _lock = store.lock(&name, false, || {}).map_err(|e| e.to_string())?;
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

fn export(path: &Path, markdown: &str) -> Result<PathBuf, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            return Err(format!(
                "the folder {} does not exist: create it first, or give another path",
                dir.display()
            ));
        }
        if !dir.is_dir() {
            return Err(format!("{} is a file, not a folder", dir.display()));
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
    fn exports_name_a_missing_folder() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = export(&dir.path().join("nope/out.md"), "x").expect_err("missing");
        assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
        std::fs::write(dir.path().join("file"), "").expect("write");
        let e = export(&dir.path().join("file/out.md"), "x").expect_err("a file");
        assert!(e.contains("is a file, not a folder"), "{e}");
        let ok = export(&dir.path().join("out.md"), "x").expect("written");
        assert!(ok.is_file());
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
