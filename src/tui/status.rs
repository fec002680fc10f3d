//! The status line (model, dtype, device, quantization; context used of the window with text
//! and image tokens apart; time to first token and tokens/s of the last answer) and the
//! load/download progress bar. Text is built from the [`App`] alone and shortened to fit.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;
use unicode_width::UnicodeWidthStr;

use crate::protocol::LoadStage;

use super::app::{short_model_name, App};
use super::transcript::SPINNER;

/// A status segment in its long and short forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub long: String,
    pub short: String,
}

fn segment(long: String, short: String) -> Segment {
    Segment { long, short }
}

/// The status line's segments, most important first.
pub fn segments(app: &App) -> Vec<Segment> {
    let mut out = Vec::new();
    out.push(match (&app.model, &app.loading) {
        (_, Some(l)) => {
            let s = format!("loading {}", short_model_name(&l.source));
            segment(s.clone(), s)
        }
        (Some(info), None) => {
            let name = short_model_name(&info.source);
            let mut long = format!("{name} · {}", info.describe());
            if !["none", "", "unknown"].contains(&info.quantization.as_str()) {
                long.push(' ');
                long.push_str(&info.quantization);
            }
            segment(long, name)
        }
        (None, None) => segment("no model".into(), "no model".into()),
    });
    if let Some(p) = &app.prompt {
        let generated = match (&app.generation, &app.stats) {
            (Some(g), _) => g.tokens,
            (None, Some(s)) if s.prompt == *p => s.generated_tokens,
            _ => 0,
        };
        let window = app
            .model
            .as_ref()
            .map_or(p.context_length, |m| m.context_length);
        let used = p.total + generated;
        // Images attached but not sent yet will take their positions too.
        let attached = app.pending.len() * app.model.as_ref().map_or(576, |m| m.tokens_per_image);
        let (long, short) = if attached > 0 {
            (
                format!(
                    "ctx {used}+{attached}/{window} (text {}, images {} + {} attached)",
                    p.text_tokens + generated,
                    p.image_tokens,
                    attached
                ),
                format!("ctx {used}+{attached}/{window}"),
            )
        } else {
            (
                format!(
                    "ctx {used}/{window} (text {}, images {})",
                    p.text_tokens + generated,
                    p.image_tokens
                ),
                format!("ctx {used}/{window}"),
            )
        };
        out.push(segment(long, short));
    }
    if let Some(g) = app.generation {
        out.push(segment(
            format!("answering: {} tokens", g.tokens),
            format!("{} tok", g.tokens),
        ));
    } else if let Some(stats) = &app.stats {
        out.push(segment(
            format!(
                "ttft {:.1}s · {:.1} tok/s",
                stats.time_to_first_token_ms / 1000.0,
                stats.decode_tokens_per_s
            ),
            format!("{:.1} tok/s", stats.decode_tokens_per_s),
        ));
    }
    if let Some(seed) = app.shown_seed {
        out.push(segment(format!("seed {seed}"), format!("seed {seed}")));
    }
    // A dated name of the automatic save says nothing the user chose; /sessions lists it.
    if !app.session.name.is_empty() && !app.auto_named {
        out.push(segment(
            format!("session {}", app.session.name),
            app.session.name.clone(),
        ));
    }
    out
}

/// The separator between segments.
const SEP: &str = " │ ";

/// Picks forms that fit `width`: long ones while they fit, shortening from the first segment
/// on, then dropping segments from the end.
pub fn fit(segments: &[Segment], width: usize) -> Vec<String> {
    let total = |parts: &[&str]| -> usize {
        parts.iter().map(|p| p.width()).sum::<usize>() + SEP.width() * parts.len().saturating_sub(1)
    };
    let mut parts: Vec<&str> = segments.iter().map(|s| s.long.as_str()).collect();
    for (i, seg) in segments.iter().enumerate() {
        if total(&parts) <= width {
            break;
        }
        parts[i] = seg.short.as_str();
    }
    while parts.len() > 1 && total(&parts) > width {
        parts.pop();
    }
    let mut out: Vec<String> = parts.into_iter().map(str::to_string).collect();
    if let Some(first) = out.first_mut() {
        *first = truncate(first, width);
    }
    out
}

/// Draws the status line into a one-row `area`.
pub fn render(app: &App, area: Rect, buf: &mut Buffer) {
    buf.set_style(area, app.theme.status);
    let width = usize::from(area.width).saturating_sub(2);
    let mut spans = vec![Span::styled(" ", app.theme.status)];
    for (i, part) in fit(&segments(app), width).into_iter().enumerate() {
        if i == 0 {
            spans.push(Span::styled(part, app.theme.status_accent));
        } else {
            spans.push(Span::styled(SEP, app.theme.status));
            spans.push(Span::styled(part, app.theme.status));
        }
    }
    Line::from(spans).render(area, buf);
}

/// `s` cut to `width` cells, with `…` if it was cut.
pub fn truncate(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Bytes as `1.2 GB`.
fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} MB", n / 1e6)
    } else {
        format!("{:.0} kB", n / 1e3)
    }
}

/// Draws the loading line: what is happening and a progress bar.
pub fn render_progress(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(loading) = &app.loading else {
        return;
    };
    let theme = &app.theme;
    let frame = SPINNER[app.spinner % SPINNER.len()];
    let name = short_model_name(&loading.source);
    let (what, fraction) = match loading.progress {
        None => ("starting".to_string(), None),
        Some((LoadStage::Download, done, total)) => (
            format!("downloading {} / {}", bytes(done), bytes(total)),
            Some((done, total)),
        ),
        Some((LoadStage::Unload, ..)) => ("freeing the previous model".to_string(), None),
        Some((LoadStage::Weights, done, total)) => {
            ("reading weights".to_string(), Some((done, total)))
        }
    };
    let label = format!("{frame} Loading {name}: {what} ");
    let label = truncate(&label, usize::from(area.width));
    let label_w = label.width();
    let mut spans = vec![Span::styled(label, theme.text)];
    let room = usize::from(area.width).saturating_sub(label_w + 5);
    if room >= 8 {
        let ratio = match fraction {
            Some((done, total)) if total > 0 => (done as f64 / total as f64).clamp(0.0, 1.0),
            _ => 0.0,
        };
        let filled = (ratio * room as f64).round() as usize;
        spans.push(Span::styled("━".repeat(filled), theme.progress));
        spans.push(Span::styled(
            "─".repeat(room - filled),
            theme.progress_track,
        ));
        if fraction.is_some() {
            spans.push(Span::styled(
                format!(" {:>3.0}%", ratio * 100.0),
                theme.text,
            ));
        }
    }
    Line::from(spans).render(area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_shorten_then_drop_to_fit() {
        let seg = |l: &str, s: &str| segment(l.into(), s.into());
        let segs = [
            seg("model · long", "model"),
            seg("ctx 1/2 (more)", "ctx 1/2"),
            seg("fast tok/s", "fast"),
        ];
        assert_eq!(
            fit(&segs, 80),
            ["model · long", "ctx 1/2 (more)", "fast tok/s"]
        );
        assert_eq!(fit(&segs, 35), ["model", "ctx 1/2 (more)", "fast tok/s"]);
        assert_eq!(fit(&segs, 24), ["model", "ctx 1/2", "fast"]);
        assert_eq!(fit(&segs, 15), ["model", "ctx 1/2"]);
        assert_eq!(fit(&segs, 3), ["mo…"]);
    }

    #[test]
    fn truncation_and_sizes() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("肺部影像", 5), "肺部…");
        assert_eq!(bytes(1_500_000_000), "1.5 GB");
        assert_eq!(bytes(15_000_000), "15 MB");
    }
}
