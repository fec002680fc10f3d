//! Download progress as callbacks, so the hub code never draws anything itself: the CLI shows
//! an indicatif bar on stderr (only when stderr is a terminal), the TUI its own widget, tests
//! nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives the progress of each file download.
pub trait Progress {
    /// A download of `file` (`total` bytes) begins, or begins again, with `already` bytes
    /// present from an earlier attempt.
    fn start(&mut self, file: &str, total: u64, already: u64);
    /// `bytes` more arrived.
    fn advance(&mut self, bytes: u64);
    /// `file` is complete and in the cache.
    fn finish(&mut self, file: &str);
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
/// into engine or TUI events.
pub struct FnProgress<F: FnMut(&str, u64, u64)> {
    f: F,
    file: String,
    done: u64,
    total: u64,
}

impl<F: FnMut(&str, u64, u64)> FnProgress<F> {
    pub fn new(f: F) -> Self {
        Self {
            f,
            file: String::new(),
            done: 0,
            total: 0,
        }
    }
}

impl<F: FnMut(&str, u64, u64)> Progress for FnProgress<F> {
    fn start(&mut self, file: &str, total: u64, already: u64) {
        self.file = file.to_string();
        self.total = total;
        self.done = already;
        (self.f)(&self.file, self.done, self.total);
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        (self.f)(&self.file, self.done, self.total);
    }
    fn finish(&mut self, _file: &str) {}
}

/// A bar per file on stderr (file, bytes, rate, ETA), or nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct BarProgress {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl BarProgress {
    /// Draws when stderr is a terminal.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// Draws on stderr when `enabled` (the caller's terminal facts); otherwise does nothing.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, bar: None }
    }
}

impl Progress for BarProgress {
    fn start(&mut self, file: &str, total: u64, already: u64) {
        if !self.enabled {
            return;
        }
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        // Fits 80 columns; decimal units, as the hub shows sizes.
        let style = ProgressStyle::with_template(
            "{msg:<28} {wide_bar:.cyan/blue} {decimal_bytes:>8}/{decimal_total_bytes:<8} \
             {decimal_bytes_per_sec:>10} {eta:>3}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(tail(file, 28));
        bar.set_position(already);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self, file: &str) {
        if let Some(bar) = self.bar.take() {
            // One line per finished file above the live bar, then the bar goes away.
            let size = super::format_bytes(bar.length().unwrap_or(0));
            bar.println(format!("{file} ({size})"));
            bar.finish_and_clear();
        }
    }
}

/// The last `width` characters of `name`, with a leading `…` when cut (the end of a path says
/// more than its start).
fn tail(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_string();
    }
    let rest: String = name.chars().skip(n - width + 1).collect();
    format!("…{rest}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_names_keep_their_end() {
        assert_eq!(super::tail("config.json", 28), "config.json");
        let t = super::tail(
            "vit/clip_vit_large_patch14_336/preprocessor_config.json",
            28,
        );
        assert_eq!(t.chars().count(), 28);
        assert!(t.starts_with('…') && t.ends_with("preprocessor_config.json"));
    }
}
