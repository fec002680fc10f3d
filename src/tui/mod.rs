//! `huatuo chat`: the full-screen terminal chat (ratatui + crossterm).
//!
//! Three sources feed one UI loop: the input thread (terminal events → [`Msg`]), the model
//! engine's events, and a tick. The loop hands each message to the pure state machine
//! [`App::update`], carries out the returned [`Effect`]s through a [`Host`] (engine commands
//! are queued, never awaited; images are read on their own thread), and draws. The UI thread
//! never blocks on the model and the input thread never waits for anything but the terminal.
//!
//! Module map: `app` (state), `keys` and `actions` (what input does), `events` (what engine
//! events and IO results do), `commands` (the slash command table), `editor`, `complete`,
//! `paste`, `markdown` and `wrap` (text), `transcript`, `status` and `ui` (drawing), `image`
//! (thumbnails), `theme`, and `effects`, `input` and `terminal` (the outside world).

mod actions;
pub mod app;
pub mod clipboard;
pub mod commands;
pub mod compare;
pub mod complete;
pub mod editor;
pub mod effects;
mod events;
pub mod image;
pub mod input;
mod keys;
pub mod markdown;
pub mod msg;
pub mod paste;
pub mod status;
pub mod terminal;
pub mod theme;
pub mod transcript;
pub mod ui;
pub mod viewer;
pub mod wrap;

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::Terminal;
use ratatui_image::picker::cap_parser::QueryStdioOptions;
use ratatui_image::picker::Picker;

use crate::chat::session::Store;
use crate::engine::EngineHandle;
use crate::protocol::{Command, Event, FailureKind, RequestId};

pub use app::{App, AppConfig};
pub use effects::Host;
pub use keys::KEYS;
pub use msg::{Effect, Exit, Msg};

/// How long the loop waits for a message while the model works (tokens are drawn at most
/// this late) and while idle.
const WAIT_BUSY: Duration = Duration::from_millis(25);
const WAIT_IDLE: Duration = Duration::from_millis(250);
/// How often the spinner moves.
const TICK: Duration = Duration::from_millis(100);

/// Runs the loop until the App asks to exit: wait for a message (or the tick), update,
/// carry out effects, draw. `observe` sees the App after every frame (tests use it).
pub fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    msgs: &Receiver<Msg>,
    host: &mut dyn Host,
    store: &Store,
    observe: &mut dyn FnMut(&App),
) -> Result<Exit>
where
    B::Error: Send + Sync + 'static,
{
    let mut last_tick = Instant::now();
    loop {
        if host.take_redraw() {
            // `Terminal::clear` would ask the terminal where the cursor is; a resize to the
            // same size clears without a query.
            let size = terminal.size().context("cannot read the terminal size")?;
            terminal
                .resize(ratatui::layout::Rect::new(0, 0, size.width, size.height))
                .context("cannot clear the screen")?;
        }
        terminal
            .draw(|frame| ui::render(app, frame))
            .context("cannot draw the screen")?;
        observe(app);
        if let Some(exit) = app.exit() {
            for effect in app.on_exit() {
                if let Some(reply) = effects::execute(effect, host, store) {
                    app.update(reply);
                }
            }
            return Ok(exit);
        }
        let wait = if app.busy() { WAIT_BUSY } else { WAIT_IDLE };
        let mut queue = Vec::new();
        match msgs.recv_timeout(wait) {
            Ok(msg) => queue.push(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(Exit::Quit),
        }
        queue.extend(msgs.try_iter());
        queue.extend(host.poll_engine().into_iter().map(Msg::Engine));
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            queue.push(Msg::Tick);
        }
        for msg in queue {
            dispatch(app, msg, host, store);
        }
    }
}

/// Updates the App with `msg` and carries out the effects, feeding their results back.
pub fn dispatch(app: &mut App, msg: Msg, host: &mut dyn Host, store: &Store) {
    let mut pending = vec![msg];
    while let Some(msg) = pending.pop() {
        for effect in app.update(msg) {
            if let Some(reply) = effects::execute(effect, host, store) {
                pending.push(reply);
            }
        }
    }
}

/// What `huatuo chat` was asked for.
pub struct Options {
    pub config: AppConfig,
    /// The model worker (started with the resolver that finds or downloads checkpoints).
    pub engine: EngineHandle,
}

/// The real outside world: the engine worker, the image thread, the input thread and the
/// terminal.
struct RealHost {
    engine: EngineHandle,
    images: image::ImageWorker,
    input: input::Input,
    redraw: bool,
    /// Requests the worker could not take, answered as failures at the next poll.
    failed: Vec<Event>,
}

impl Host for RealHost {
    fn engine(&mut self, command: Command) {
        // A stopped worker answers nothing: fail the request here so the chat does not wait.
        let id = match &command {
            Command::Load { id, .. } | Command::Generate { id, .. } => Some(*id),
            _ => None,
        };
        if let (Err(e), Some(id)) = (self.engine.send(command), id) {
            self.failed.push(Event::Failed {
                id,
                kind: FailureKind::Internal,
                error: e.to_string(),
                partial: String::new(),
            });
        }
    }

    fn cancel(&mut self, id: RequestId) {
        self.engine.cancel(id);
    }

    fn load_image(&mut self, path: PathBuf) {
        self.images.load(path);
    }

    fn copy(&mut self, text: &str) -> Result<String, String> {
        clipboard::copy(text)
    }

    fn edit(&mut self, text: &str) -> Result<String, String> {
        self.input.pause();
        let result = terminal::edit_externally(text);
        self.input.resume();
        result
    }

    fn redraw(&mut self) {
        self.redraw = true;
    }

    fn set_mouse(&mut self, on: bool) {
        let _ = terminal::set_mouse(on);
    }

    fn view_image(&mut self, job: image::ViewJob) {
        self.images.view(job);
    }

    fn take_redraw(&mut self) -> bool {
        std::mem::take(&mut self.redraw)
    }

    fn poll_engine(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.failed);
        events.extend(self.engine.events().try_iter());
        events
    }
}

/// How long the terminal has to answer the graphics query (ratatui-image waits 2 s).
const PICKER_TIMEOUT: Duration = Duration::from_millis(1000);

/// Asks the terminal which image protocol and font size it has (before anything else reads
/// the terminal), falling back to halfblocks. When the query goes unanswered (tmux without an
/// attached client, some ssh setups), ratatui-image's reader thread is left waiting on stdin
/// and would eat the user's first keys: a device status report, which every terminal and tmux
/// itself answer, lets it finish before our input thread starts.
fn query_picker() -> Picker {
    let started = Instant::now();
    let options = QueryStdioOptions {
        timeout: PICKER_TIMEOUT,
        ..QueryStdioOptions::default()
    };
    let picker =
        Picker::from_query_stdio_with_options(options).unwrap_or_else(|_| Picker::halfblocks());
    if started.elapsed() >= PICKER_TIMEOUT {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[5n").and_then(|()| out.flush());
        std::thread::sleep(Duration::from_millis(100));
    }
    picker
}

/// Runs the chat until the user quits. The terminal is restored on every path out.
pub fn run(options: Options) -> Result<Exit> {
    terminal::install_panic_hook();
    terminal::enter().context("cannot set up the terminal")?;
    let _guard = terminal::Guard;
    let picker = query_picker();
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .context("cannot set up the terminal")?;

    let (tx, rx) = mpsc::channel();
    let input = input::Input::spawn(tx.clone()).context("cannot start the input thread")?;
    let images =
        image::ImageWorker::spawn(picker, tx.clone()).context("cannot start the image thread")?;
    drop(tx);
    let store = options.config.sessions.clone();
    let mut host = RealHost {
        engine: options.engine,
        images,
        input,
        redraw: false,
        failed: Vec::new(),
    };
    let mut app = App::new(options.config);
    for effect in app.start() {
        if let Some(reply) = effects::execute(effect, &mut host, &store) {
            dispatch(&mut app, reply, &mut host, &store);
        }
    }
    event_loop(&mut term, &mut app, &rx, &mut host, &store, &mut |_| {})
}
