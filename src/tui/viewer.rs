//! `/view [N]` (F3: the last image): image N of the conversation on the whole screen, fitted
//! to it, with Tab toggling between the image as it is (a DICOM file through its window) and
//! the 336×336 input the model receives from it (padded with the CLIP mean and resized: what
//! `huatuo render` writes). The picture is rendered and encoded on the image thread; Esc goes
//! back to the chat.
//!
//! A greyscale DICOM image can be re-windowed here as on a reading station: the digits pick the
//! presets, ←/→ narrow or widen the window, ↑/↓ move its level, 0 goes back. The answers already
//! given keep the window they saw; a new window takes effect on the next question: closing the
//! viewer attaches the image with it, and that turn's record carries it.

use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Widget};

use crate::dicom::{AppliedWindow, Window, PRESETS};
use crate::protocol::ImageRef;

use super::app::{file_name, App};
use super::image::{ViewJob, ViewPicture};
use super::msg::Effect;

/// The viewer's state.
#[derive(Debug)]
pub struct Viewer {
    /// The image's number in the conversation (1-based, as `[imgN]`).
    pub number: usize,
    pub image: ImageRef,
    pub model_input: bool,
    /// The window asked for now (starts as the image's own; `None`: the file's).
    pub window: Option<String>,
    /// The window the last original picture was drawn through: `Some` for greyscale DICOM
    /// only, which is what can be re-windowed.
    pub applied: Option<AppliedWindow>,
    /// `None` while it renders.
    pub picture: Option<Result<ViewPicture, String>>,
    /// The cells the picture was rendered for.
    cells: Size,
}

impl App {
    /// Every image of the conversation in `[imgN]` order, then the attached ones.
    fn numbered_images(&self) -> Vec<ImageRef> {
        self.session
            .turns
            .iter()
            .flat_map(|t| t.images.iter().cloned())
            .chain(self.pending.iter().cloned())
            .collect()
    }

    /// Opens the viewer on image `number` (`None`: the last one).
    pub(crate) fn open_viewer(&mut self, number: Option<usize>) -> Vec<Effect> {
        let images = self.numbered_images();
        if images.is_empty() {
            self.error("No image in the conversation yet: attach one with /image PATH");
            return Vec::new();
        }
        let number = number.unwrap_or(images.len());
        let Some(image) = images.get(number.wrapping_sub(1)).cloned() else {
            self.error(format!(
                "/view {number}: the conversation has {} (1 to {})",
                crate::text::count(images.len(), "image", "images"),
                images.len()
            ));
            return Vec::new();
        };
        let (w, h) = self.view.screen.get();
        let cells = Size::new(w.saturating_sub(2).max(1), h.saturating_sub(3).max(1));
        self.viewer = Some(Viewer {
            number,
            window: image.window.clone(),
            applied: None,
            image,
            model_input: false,
            picture: None,
            cells,
        });
        self.viewer_job()
    }

    fn viewer_job(&self) -> Vec<Effect> {
        let Some(v) = &self.viewer else {
            return Vec::new();
        };
        vec![Effect::View(ViewJob {
            path: v.image.path.clone(),
            window: v.window.clone(),
            frame: v.image.frame,
            model_input: v.model_input,
            cells: v.cells,
        })]
    }

    /// Tab in the viewer: the other picture.
    pub(crate) fn toggle_viewer(&mut self) -> Vec<Effect> {
        if let Some(v) = &mut self.viewer {
            v.model_input = !v.model_input;
            v.picture = None;
        }
        self.viewer_job()
    }

    /// A rendered picture arrived; one for another image, mode or window is stale and dropped.
    pub(crate) fn on_viewed(&mut self, job: ViewJob, result: Result<ViewPicture, String>) {
        if let Some(v) = &mut self.viewer {
            if v.image.path == job.path
                && v.model_input == job.model_input
                && v.window == job.window
            {
                if let Ok(p) = &result {
                    if p.window.is_some() {
                        v.applied = p.window;
                    }
                }
                v.picture = Some(result);
            }
        }
    }

    /// A key that re-windows a greyscale DICOM image: `1`–`8` the presets, ←/→ the width,
    /// ↑/↓ the level, `0` the image's own window. `None` when the key is not one of them or the
    /// image has no window to change.
    pub(crate) fn window_key(&mut self, code: crossterm::event::KeyCode) -> Option<Vec<Effect>> {
        use crossterm::event::KeyCode;
        let v = self.viewer.as_mut()?;
        let applied = v.applied?;
        let (c, w) = (applied.center, applied.width.max(1.0));
        let step = |share: f64| (w * share).round().max(1.0);
        let window = match code {
            KeyCode::Char(d @ '1'..='8') => {
                let (name, _, _) = PRESETS[usize::from(d as u8 - b'1')];
                Some(name.to_string())
            }
            KeyCode::Char('0') => v.image.window.clone(),
            KeyCode::Left => {
                Window::new(c.round(), (w - step(0.1)).max(1.0)).map(|w| w.to_string())
            }
            KeyCode::Right => Window::new(c.round(), w + step(0.1)).map(|w| w.to_string()),
            KeyCode::Up => Window::new(c + step(0.05), w.round()).map(|w| w.to_string()),
            KeyCode::Down => Window::new(c - step(0.05), w.round()).map(|w| w.to_string()),
            _ => return None,
        };
        if window == v.window {
            return Some(Vec::new());
        }
        v.window = window;
        v.picture = None;
        Some(self.viewer_job())
    }

    /// Esc in the viewer: back to the chat. A new window goes with the next question: the
    /// image is attached with it (an attached one is re-windowed).
    pub(crate) fn close_viewer(&mut self) -> Vec<Effect> {
        let Some(v) = self.viewer.take() else {
            return Vec::new();
        };
        if v.window == v.image.window {
            return Vec::new();
        }
        let shown = v
            .applied
            .map(|a| a.to_string())
            .or_else(|| v.window.clone())
            .unwrap_or_else(|| "the file's".into());
        let was_pending = self.pending.iter().any(|p| p.path == v.image.path);
        let before = self.pending.len();
        let effects =
            self.attach_viewed(vec![v.image.path.clone()], v.window.clone(), v.image.frame);
        if was_pending || self.pending.len() > before {
            self.notice(format!(
                "[img{}] {} goes with your next question through window {shown}; the answers \
                 already given keep the window they saw",
                v.number,
                file_name(&v.image.path)
            ));
        }
        effects
    }
}

/// Draws the viewer over the whole `area`.
pub fn render(app: &App, v: &Viewer, area: Rect, buf: &mut Buffer) {
    let theme = &app.theme;
    Clear.render(area, buf);
    let what = if v.model_input {
        "what the model sees: 336×336, padded and resized".to_string()
    } else {
        match &v.picture {
            Some(Ok(p)) => format!("original {}×{}", p.width, p.height),
            _ => "original".to_string(),
        }
    };
    let mut title = format!(" [img{}] {} · {what} ", v.number, file_name(&v.image.path));
    match (&v.applied, &v.window) {
        (Some(a), _) if v.picture.is_some() || v.model_input => {
            title.push_str(&format!("· window {a} "))
        }
        (_, Some(w)) => title.push_str(&format!("· window {w} ")),
        _ => {}
    }
    if v.window != v.image.window {
        title.push_str("(new: for the next question) ");
    }
    let keys = if v.applied.is_some() {
        " ←→ width · ↑↓ level · 1-8 presets · 0 back · Tab: model input · Esc: back "
    } else {
        " Tab: original / model input · Esc: back "
    };
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.border)
        .title(Span::styled(title, theme.title))
        .title_bottom(Line::from(Span::styled(keys, theme.hint)).right_aligned());
    let inner = block.inner(area);
    block.render(area, buf);
    match &v.picture {
        None => Line::from(Span::styled("rendering…", theme.hint)).render(inner, buf),
        Some(Err(e)) => {
            Line::from(Span::styled(format!("Cannot show it: {e}"), theme.error)).render(inner, buf)
        }
        Some(Ok(p)) => {
            let size = p.protocol.size();
            let x = inner.x + inner.width.saturating_sub(size.width) / 2;
            let y = inner.y + inner.height.saturating_sub(size.height) / 2;
            let at = Rect::new(
                x,
                y,
                size.width.min(inner.width),
                size.height.min(inner.height),
            );
            ratatui_image::Image::new(&p.protocol).render(at, buf);
        }
    }
}
