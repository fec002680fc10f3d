//! The transcript region: turns (the user's text with numbered image attachments and their
//! thumbnails, the answer rendered from Markdown), notices and errors, laid out as rows of a
//! given width and drawn from a top row. Wrapped answers are cached by content and width, so
//! a long conversation costs little per frame while one answer streams. Reads the [`App`];
//! never changes it (except that cache).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use crate::chat::session::Turn;
use crate::text::py_strip;

use super::app::{file_name, short_model_name, App, ImageState, Notice};
use super::markdown::{self, MdLine};
use super::wrap::wrap;

/// Spinner frames while the model works.
pub const SPINNER: [&str; 4] = ["⠋", "⠙", "⠹", "⠸"];

/// One row of the laid-out transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Text(Line<'static>),
    /// Row `index` of the thumbnail of `path`, drawn from column `x`.
    Image {
        path: PathBuf,
        index: u16,
        x: u16,
    },
}

/// Wrapped answers by (content hash, width).
#[derive(Debug, Default)]
pub struct Cache {
    answers: HashMap<(u64, u16), Vec<Line<'static>>>,
}

impl Cache {
    /// Forgets every wrapped answer (the conversation was replaced).
    pub fn clear(&mut self) {
        self.answers.clear();
    }
}

/// Columns thumbnails are indented by.
const IMAGE_INDENT: u16 = 2;

/// Prose is wrapped at most this wide, however wide the window: long lines are hard to read.
pub const PROSE_MAX: u16 = 100;

/// Lays out the whole transcript at `width` (prose at most [`PROSE_MAX`] wide).
pub fn rows(app: &App, width: u16) -> Vec<Row> {
    let full = width;
    let width = width.min(PROSE_MAX);
    let mut out = Vec::new();
    let theme = &app.theme;
    let text_rows = |out: &mut Vec<Row>, line: MdLine| {
        out.extend(wrap(&line, usize::from(width)).into_iter().map(Row::Text));
    };
    if app.session.turns.is_empty() {
        for line in welcome(app) {
            text_rows(&mut out, line);
        }
    }
    let mut image_no = 0;
    for (i, turn) in app.session.turns.iter().enumerate() {
        notices(app, i, &mut out, width);
        if !out.is_empty() {
            out.push(Row::Text(Line::default()));
        }
        out.push(Row::Text(Line::from(Span::styled(
            "▍You",
            theme.user_label,
        ))));
        for attachment in &turn.images {
            image_no += 1;
            let mut label = image_label(app, image_no, &attachment.path);
            let view = super::actions::view_label(attachment);
            if !view.is_empty() {
                label.push_str(&format!(" · {view}"));
            }
            text_rows(
                &mut out,
                MdLine::plain(vec![Span::styled(label, theme.image_label)]),
            );
            if let Some(ImageState::Ready(meta)) = app.images.get(&attachment.path) {
                if let Some(thumb) = &meta.thumbnail {
                    for index in 0..thumb.size().height {
                        out.push(Row::Image {
                            path: attachment.path.clone(),
                            index,
                            x: IMAGE_INDENT,
                        });
                    }
                }
            }
        }
        for line in turn.text.split('\n') {
            let spans = vec![Span::styled(line.to_string(), theme.user_text)];
            text_rows(&mut out, MdLine::plain(spans));
        }
        out.push(Row::Text(Line::default()));
        answer(app, i, turn, width, &mut out);
        if let Some(c) = app.compare.as_ref().filter(|c| c.after_turns == i + 1) {
            out.extend(super::compare::rows(app, c, full));
        }
    }
    notices(app, app.session.turns.len(), &mut out, width);
    out
}

/// `[img1] name · 512×512`, with the reading state while it is not known.
fn image_label(app: &App, number: usize, path: &std::path::Path) -> String {
    let name = file_name(path);
    match app.images.get(path) {
        Some(ImageState::Ready(meta)) => match &meta.dicom {
            Some(facts) => format!(
                "[img{number}] {name} · {}×{} · {facts}",
                meta.width, meta.height
            ),
            None => format!("[img{number}] {name} · {}×{}", meta.width, meta.height),
        },
        Some(ImageState::Failed(e)) => format!("[img{number}] {name} · unreadable: {e}"),
        Some(ImageState::Loading) => format!("[img{number}] {name} · reading…"),
        None => format!("[img{number}] {name}"),
    }
}

fn answer(app: &App, index: usize, turn: &Turn, width: u16, out: &mut Vec<Row>) {
    let theme = &app.theme;
    let generating = app.generation.filter(|g| g.turn == index);
    let name = short_model_name(turn.model.as_deref().unwrap_or("assistant"));
    let mut label = vec![Span::styled(format!("▍{name}"), theme.assistant_label)];
    if let Some(g) = generating {
        let frame = SPINNER[app.spinner % SPINNER.len()];
        let has_images = app.session.turns.iter().any(|t| !t.images.is_empty());
        let what = match (g.started, has_images) {
            (true, _) => "",
            (false, true) => " reading the images…",
            (false, false) => " thinking…",
        };
        label.push(Span::styled(format!(" {frame}{what}"), theme.hint));
    }
    out.push(Row::Text(Line::from(label)));
    let text = py_strip(&turn.answer);
    if generating.is_some() {
        for line in markdown::render(text, theme) {
            out.extend(wrap(&line, usize::from(width)).into_iter().map(Row::Text));
        }
    } else {
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let key = (hasher.finish(), width);
        let mut cache = app.cache.borrow_mut();
        if cache.answers.len() > 512 {
            cache.answers.clear();
        }
        let lines = cache.answers.entry(key).or_insert_with(|| {
            markdown::render(text, theme)
                .iter()
                .flat_map(|l| wrap(l, usize::from(width)))
                .collect()
        });
        out.extend(lines.iter().cloned().map(Row::Text));
    }
    if turn.interrupted && generating.is_none() {
        out.push(Row::Text(Line::from(Span::styled(
            "(interrupted)",
            theme.interrupted,
        ))));
    } else if turn.stop == Some(crate::protocol::Stop::Context) && generating.is_none() {
        out.push(Row::Text(Line::from(Span::styled(
            "(context full)",
            theme.interrupted,
        ))));
    }
}

fn notices(app: &App, after_turns: usize, out: &mut Vec<Row>, width: u16) {
    let theme = &app.theme;
    for Notice { error, text, .. } in app.notices.iter().filter(|n| n.after_turns == after_turns) {
        let (mark, style) = if *error {
            ("✗ ", theme.error)
        } else {
            ("· ", theme.notice)
        };
        let line = MdLine {
            prefix: vec![Span::styled(mark, style)],
            continuation: vec![Span::raw("  ")],
            spans: vec![Span::styled(text.clone(), style)],
        };
        out.extend(wrap(&line, usize::from(width)).into_iter().map(Row::Text));
    }
}

/// What an empty chat shows.
fn welcome(app: &App) -> Vec<MdLine> {
    let theme = &app.theme;
    let line = |text: &str, style| MdLine::plain(vec![Span::styled(text.to_string(), style)]);
    vec![
        line(
            "HuatuoGPT-Vision · medical images, on this computer",
            theme.heading,
        ),
        line(
            "Attach an image with /image PATH (or paste or drop the file), then ask about it.",
            theme.text,
        ),
        line(
            "Enter sends · Alt+Enter new line · Esc stops · F1 or /help for more",
            theme.hint,
        ),
        line(
            "A research model: its answers are not a diagnosis.",
            theme.hint,
        ),
    ]
}

/// Draws the transcript's rows from `top` into `area`.
pub fn render(app: &App, rows: &[Row], top: usize, area: Rect, buf: &mut Buffer) {
    let visible = rows.iter().skip(top).take(usize::from(area.height));
    for (i, row) in visible.enumerate() {
        let y = area.y + i as u16;
        match row {
            Row::Text(line) => {
                line.render(Rect::new(area.x, y, area.width, 1), buf);
            }
            Row::Image { path, index, x } => {
                // Draw each thumbnail once, from its first visible row.
                if *index > 0 && i > 0 {
                    continue;
                }
                if let Some(ImageState::Ready(meta)) = app.images.get(path) {
                    if let Some(thumb) = &meta.thumbnail {
                        let top_y = i as i32 - i32::from(*index);
                        thumb.render(area, *x, top_y, buf);
                    }
                }
            }
        }
    }
}
