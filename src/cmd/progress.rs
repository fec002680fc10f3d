//! Download progress drawn on stderr: an indicatif bar per file for the one-shot commands
//! (`pull`, `ask`), only when stderr is a terminal. The hub reports progress through its
//! [`Progress`] callbacks and never draws.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::hub::Progress;

/// A bar per file on stderr (file, bytes, rate, ETA), or nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct BarProgress {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl BarProgress {
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
        bar.set_message(tail(&crate::term::sanitize(file), 28));
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
            let size = crate::hub::format_bytes(bar.length().unwrap_or(0));
            bar.println(format!("{} ({size})", crate::term::sanitize(file)));
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
