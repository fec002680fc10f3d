//! Drawing the chat screen from the [`App`]: the transcript on top, then (when there is
//! something to say) the load progress bar and an info row (attachments, completions, "press
//! Ctrl+C again"), the input box, and the status line; the help overlay above everything.
//! Never changes the App, except the measurements scrolling needs (`App::view`).

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Padding, Paragraph, Widget};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::app::{file_name, App, ImageState};
use super::commands::{usage, COMMANDS};
use super::keys::KEYS;
use super::markdown::MdLine;
use super::status;
use super::transcript;
use super::wrap::wrap;

/// Most rows the input box grows to (plus its borders).
const INPUT_MAX_ROWS: u16 = 8;

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame<'_>) {
    let area = frame.area();
    let buf = frame.buffer_mut();
    buf.set_style(area, app.theme.text);
    if area.width < 10 || area.height < 5 {
        Line::from("huatuo: window too small").render(area, buf);
        return;
    }
    app.view.screen.set((area.width, area.height));
    if let Some(viewer) = &app.viewer {
        super::viewer::render(app, viewer, area, buf);
        return;
    }
    let info = info_line(app);
    let input_width = area.width.saturating_sub(4);
    let (rows, cursor) = app.editor.layout(usize::from(input_width.max(1)));
    let max_rows = INPUT_MAX_ROWS.min((area.height / 3).max(1));
    let input_rows = (rows.len() as u16).clamp(1, max_rows);
    let [transcript_area, progress_area, info_area, input_area, status_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(app.loading.is_some())),
        Constraint::Length(u16::from(info.is_some())),
        Constraint::Length(input_rows + 2),
        Constraint::Length(1),
    ])
    .areas(area);

    let all = transcript::rows(app, transcript_area.width);
    app.view.content_rows.set(all.len());
    app.view
        .viewport_rows
        .set(usize::from(transcript_area.height));
    let top = app.top_row();
    // Scrolled up with more below: the last row is the marker's, so it never covers text.
    let mut text_area = transcript_area;
    let more_below = all
        .len()
        .saturating_sub(top + usize::from(transcript_area.height))
        > 0;
    if app.scroll.is_some() && more_below && text_area.height > 2 {
        text_area.height -= 1;
    }
    transcript::render(app, &all, top, text_area, buf);
    let below = all
        .len()
        .saturating_sub(top + usize::from(text_area.height));
    if app.scroll.is_some() && below > 0 {
        let text = format!(" ↓ {below} more · End ");
        let w = text.width() as u16;
        if w < transcript_area.width {
            let r = Rect::new(
                transcript_area.right() - w,
                transcript_area.bottom() - 1,
                w,
                1,
            );
            Span::styled(text, app.theme.hint.patch(app.theme.status)).render(r, buf);
        }
    }
    status::render_progress(app, progress_area, buf);
    if let Some(line) = info {
        line.render(info_area, buf);
    }
    let cursor_pos = render_input(app, &rows, cursor, input_area, buf);
    status::render(app, status_area, buf);
    if app.help.is_some() {
        render_help(app, area, buf);
    } else if let Some(pos) = cursor_pos {
        frame.set_cursor_position(pos);
    }
}

/// The row above the input box: what the user should know right now, if anything.
fn info_line(app: &App) -> Option<Line<'static>> {
    let theme = &app.theme;
    if app.quit_armed.is_some() {
        let text = if app.cancelled.is_some() {
            "Stopped. Press Ctrl+C again to quit."
        } else {
            "Press Ctrl+C again to quit."
        };
        return Some(Line::from(Span::styled(text, theme.hint)));
    }
    if let Some(tab) = &app.tab {
        let names: Vec<&str> = tab
            .candidates
            .iter()
            .map(|c| {
                let c = c.trim_end_matches(' ');
                let base = c.trim_end_matches('/');
                match base.rfind('/') {
                    Some(i) if i > 0 => &c[i + 1..],
                    _ => c,
                }
            })
            .collect();
        return Some(Line::from(Span::styled(names.join("  "), theme.hint)));
    }
    if !app.pending.is_empty() {
        let first = app
            .session
            .turns
            .iter()
            .map(|t| t.images.len())
            .sum::<usize>()
            + 1;
        let mut spans = vec![Span::styled("Attached: ", theme.hint)];
        for (i, a) in app.pending.iter().enumerate() {
            let size = match app.images.get(&a.path) {
                Some(ImageState::Ready(m)) => format!(" {}×{}", m.width, m.height),
                Some(ImageState::Loading) => " …".to_string(),
                _ => String::new(),
            };
            let view = super::actions::view_label(a);
            let view = if view.is_empty() {
                view
            } else {
                format!(" · {view}")
            };
            let label = format!("[img{}] {}{size}{view}  ", first + i, file_name(&a.path));
            spans.push(Span::styled(label, theme.image_label));
        }
        return Some(Line::from(spans));
    }
    None
}

/// Draws the input box; returns where the cursor goes.
fn render_input(
    app: &App,
    rows: &[String],
    cursor: (usize, usize),
    area: Rect,
    buf: &mut ratatui::buffer::Buffer,
) -> Option<Position> {
    let theme = &app.theme;
    let busy = app.generation.is_some();
    let title = if busy {
        " Answering… Esc stops "
    } else {
        " Message "
    };
    let hints = if area.width >= 70 {
        " Enter send · Alt+Enter new line · F1 help "
    } else {
        " Enter send · F1 help "
    };
    let border = if busy {
        theme.border_busy
    } else {
        theme.border
    };
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(border)
        .title(Span::styled(title, theme.title))
        .title_bottom(Line::from(Span::styled(hints, theme.hint)).right_aligned())
        .padding(Padding::horizontal(1));
    let inner = block.inner(area);
    block.render(area, buf);
    if app.editor.is_empty() {
        let placeholder = if app.pending.is_empty() {
            "Ask a question, or /image PATH to attach a scan"
        } else {
            "Ask about the attached image"
        };
        let text = status::truncate(placeholder, usize::from(inner.width));
        Span::styled(text, theme.hint).render(inner, buf);
    }
    let height = usize::from(inner.height);
    let first = (cursor.0 + 1).saturating_sub(height);
    let lines: Vec<Line<'_>> = rows
        .iter()
        .skip(first)
        .take(height)
        .map(|r| {
            let style = if app.editor.selected() {
                theme.user_text.add_modifier(Modifier::REVERSED)
            } else {
                theme.user_text
            };
            Line::from(Span::styled(r.as_str(), style))
        })
        .collect();
    if !app.editor.is_empty() {
        Paragraph::new(lines).render(inner, buf);
    }
    let x = inner.x + (cursor.1 as u16).min(inner.width.saturating_sub(1));
    let y = inner.y + (cursor.0 - first) as u16;
    Some(Position::new(x, y))
}

/// The help overlay: keys, then the command table.
fn render_help(app: &App, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let theme = &app.theme;
    let width = area.width.saturating_sub(4).min(84);
    let height = area.height.saturating_sub(2);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    Clear.render(popup, buf);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.border)
        .style(theme.popup)
        .title(Span::styled(" Help ", theme.title))
        .title_bottom(
            Line::from(Span::styled(" Esc closes · ↑↓ scroll ", theme.hint)).right_aligned(),
        );
    let inner = block.inner(popup);
    block.render(popup, buf);

    let inner_w = usize::from(inner.width);
    let key_w = (inner_w / 2).clamp(8, 24);
    let entry = |key: String, help: &str| MdLine {
        prefix: vec![Span::styled(format!("{key:<key_w$} "), theme.help_key)],
        continuation: vec![Span::raw(" ".repeat(key_w + 1))],
        spans: vec![Span::styled(help.to_string(), theme.popup)],
    };
    let mut lines: Vec<MdLine> = Vec::new();
    lines.push(MdLine::plain(vec![Span::styled("Commands", theme.heading)]));
    for c in COMMANDS {
        let name = usage(c);
        if name.width() > key_w {
            lines.push(MdLine::plain(vec![Span::styled(name, theme.help_key)]));
            lines.push(entry(String::new(), c.help));
        } else {
            lines.push(entry(name, c.help));
        }
    }
    lines.push(MdLine::default());
    lines.push(MdLine::plain(vec![Span::styled("Keys", theme.heading)]));
    for (key, help) in KEYS {
        if key.width() > key_w {
            lines.push(MdLine::plain(vec![Span::styled(*key, theme.help_key)]));
            lines.push(entry(String::new(), help));
        } else {
            lines.push(entry((*key).to_string(), help));
        }
    }
    let rows: Vec<Line<'static>> = lines.iter().flat_map(|l| wrap(l, inner_w)).collect();
    let max = rows.len().saturating_sub(usize::from(inner.height));
    app.view.help_max.set(max);
    let offset = app.help.unwrap_or(0).min(max);
    Paragraph::new(rows)
        .scroll((offset as u16, 0))
        .render(inner, buf);
}
