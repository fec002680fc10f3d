//! The messages the chat's state machine consumes ([`Msg`]: keys, pastes, engine events,
//! results of IO) and the requests it makes ([`Effect`]: engine commands, file and terminal
//! work). `App::update(Msg) -> Vec<Effect>` never does the work itself, so every test can run
//! with a fake engine and a fake terminal (the Elm architecture of the ratatui templates).

use std::path::PathBuf;

use crossterm::event::{KeyEvent, MouseEvent};

use crate::chat::session::Session;
use crate::protocol::{Command, Event, RequestId};

use super::image::ImageMeta;

/// Something that happened. (An engine event carries a model's description and is the
/// largest; messages are few and moved once, so they are not boxed.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    /// A key press (or repeat); releases never arrive.
    Key(KeyEvent),
    /// Bracketed paste: a paste or a file dropped on the terminal.
    Paste(String),
    /// A mouse wheel event.
    Mouse(MouseEvent),
    /// The terminal changed size.
    Resize,
    /// Time passed (animates the spinner).
    Tick,
    /// An event from the model engine.
    Engine(Event),
    /// A picture for the viewer was rendered (or could not be).
    Viewed {
        job: super::image::ViewJob,
        result: Result<super::image::ViewPicture, String>,
    },
    /// An image was read for an attachment (its size, hash and thumbnail), or could not be.
    Image {
        path: PathBuf,
        result: Result<ImageMeta, String>,
    },
    /// A save finished: the name and file it was saved as; `announce` for `/save` (automatic
    /// saves after each turn are silent unless they fail).
    Saved {
        result: Result<(String, PathBuf), String>,
        announce: bool,
        /// The conversation that was saved (`App::conversation` then).
        conversation: u64,
    },
    /// `/sessions` finished: one line per saved conversation.
    SessionList(Result<Vec<String>, String>),
    /// `/load` finished.
    SessionLoaded(Result<Session, String>),
    /// `/export` finished.
    Exported(Result<PathBuf, String>),
    /// `/copy` finished: what was copied and how, or why nothing was.
    Copied(Result<String, String>),
    /// The external editor (Ctrl+G) closed: the edited prompt.
    Edited(Result<String, String>),
}

/// Work the state machine asks for; the runner (or a test's fake) does it and may answer
/// with a [`Msg`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a command to the engine (`Load`, `Generate`).
    Engine(Command),
    /// Stop request `id` at once.
    Cancel(RequestId),
    /// Read an image's size, hash and thumbnail off the UI thread → [`Msg::Image`].
    LoadImage(PathBuf),
    /// Save the session → [`Msg::Saved`]. Without a name, one is made from the date.
    /// `overwrite` allows replacing an existing session of that name.
    Save {
        name: Option<String>,
        session: Box<Session>,
        overwrite: bool,
        announce: bool,
        /// The file of a dated name this save replaces (`/save NAME` renames it).
        replaces: Option<String>,
        conversation: u64,
    },
    /// List the saved sessions → [`Msg::SessionList`].
    ListSessions,
    /// Load a saved session → [`Msg::SessionLoaded`].
    LoadSession(String),
    /// Write Markdown to a file → [`Msg::Exported`].
    Export { path: PathBuf, markdown: String },
    /// Put text on the clipboard → [`Msg::Copied`]; `what` names it ("the last answer").
    Copy { text: String, what: String },
    /// Edit the prompt in `$VISUAL`/`$EDITOR` → [`Msg::Edited`].
    Edit(String),
    /// Clear and redraw the whole screen (Ctrl+L).
    Redraw,
    /// Mouse reports on (scrolling) or off (text selection) (F2).
    Mouse(bool),
    /// Render a picture for the viewer off the UI thread → [`Msg::Viewed`].
    View(super::image::ViewJob),
}

/// How the chat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `/quit` or Ctrl+D.
    Quit,
    /// Ctrl+C twice.
    Interrupted,
}
