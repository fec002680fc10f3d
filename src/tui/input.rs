//! The input thread: reads terminal events (crossterm) and sends them to the UI as [`Msg`]s.
//! It never waits for anything but the terminal — not the model, not the UI — so typing stays
//! responsive while an answer streams. It drops key releases and mouse motion, and can be paused
//! (with an acknowledgement) while `$EDITOR` owns the terminal, as gitui's input does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind, MouseEventKind};

use super::msg::Msg;

/// How long one wait for a terminal event lasts before the thread checks its flags.
const POLL: Duration = Duration::from_millis(50);

/// Flags shared with the thread.
#[derive(Debug, Default)]
struct Flags {
    pause: AtomicBool,
    /// The thread saw `pause` and is not reading the terminal.
    parked: AtomicBool,
    stop: AtomicBool,
}

/// The running input thread.
pub struct Input {
    flags: Arc<Flags>,
    thread: Option<JoinHandle<()>>,
}

/// The message for a terminal event, if the UI cares about it.
pub fn to_msg(event: Event) -> Option<Msg> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => Some(Msg::Key(key)),
        Event::Paste(text) => Some(Msg::Paste(text)),
        Event::Mouse(m)
            if matches!(
                m.kind,
                MouseEventKind::ScrollUp | MouseEventKind::ScrollDown
            ) =>
        {
            Some(Msg::Mouse(m))
        }
        Event::Resize(..) => Some(Msg::Resize),
        _ => None,
    }
}

impl Input {
    /// Starts reading the terminal. Call after the terminal queries (ratatui-image's picker).
    pub fn spawn(msgs: Sender<Msg>) -> std::io::Result<Self> {
        let flags = Arc::new(Flags::default());
        let shared = Arc::clone(&flags);
        let thread = std::thread::Builder::new()
            .name("huatuo-input".into())
            .spawn(move || read_loop(&shared, &msgs))?;
        Ok(Self {
            flags,
            thread: Some(thread),
        })
    }

    /// Stops reading the terminal until [`Input::resume`]; waits (briefly) until the thread
    /// has let go of it.
    pub fn pause(&self) {
        self.flags.pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + POLL * 4;
        while !self.flags.parked.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Reads the terminal again after [`Input::pause`].
    pub fn resume(&self) {
        self.flags.pause.store(false, Ordering::SeqCst);
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_loop(flags: &Flags, msgs: &Sender<Msg>) {
    while !flags.stop.load(Ordering::SeqCst) {
        if flags.pause.load(Ordering::SeqCst) {
            flags.parked.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        flags.parked.store(false, Ordering::SeqCst);
        match event::poll(POLL) {
            Ok(true) => match event::read() {
                Ok(event) => {
                    if let Some(msg) = to_msg(event) {
                        if msgs.send(msg).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {}
            Err(_) => return,
        }
    }
}
