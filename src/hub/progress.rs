//! Download progress as callbacks, so the hub code never draws anything itself: the CLI shows
//! an indicatif bar on stderr (`cmd::progress`, only when stderr is a terminal), the TUI its
//! own widget, tests nothing.

use std::ops::ControlFlow;

/// Receives the progress of each file download.
pub trait Progress {
    /// A download of `file` (`total` bytes) begins, or begins again, with `already` bytes
    /// present from an earlier attempt.
    fn start(&mut self, file: &str, total: u64, already: u64);
    /// `bytes` more arrived.
    fn advance(&mut self, bytes: u64);
    /// `file` is complete and in the cache.
    fn finish(&mut self, file: &str);
    /// Whether the receiver asked to stop: the download ends at the next chunk, keeping what
    /// arrived.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Ignores all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _file: &str, _total: u64, _already: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self, _file: &str) {}
}

/// Forwards progress to a closure called with `(file, bytes done, file size)`, e.g. to turn it
/// into engine or TUI events; the closure's `Break` cancels the download.
pub struct FnProgress<F: FnMut(&str, u64, u64) -> ControlFlow<()>> {
    f: F,
    file: String,
    done: u64,
    total: u64,
    stop: bool,
}

impl<F: FnMut(&str, u64, u64) -> ControlFlow<()>> FnProgress<F> {
    pub fn new(f: F) -> Self {
        Self {
            f,
            file: String::new(),
            done: 0,
            total: 0,
            stop: false,
        }
    }
}

impl<F: FnMut(&str, u64, u64) -> ControlFlow<()>> Progress for FnProgress<F> {
    fn start(&mut self, file: &str, total: u64, already: u64) {
        self.file = file.to_string();
        self.total = total;
        self.done = already;
        self.stop |= (self.f)(&self.file, self.done, self.total).is_break();
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        self.stop |= (self.f)(&self.file, self.done, self.total).is_break();
    }
    fn finish(&mut self, _file: &str) {}
    fn cancelled(&self) -> bool {
        self.stop
    }
}
