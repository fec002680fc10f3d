//! `/view [N]` (F3: the last image): image N of the conversation on the whole screen, fitted
//! to it, with Tab toggling between the image as it is (a DICOM file through its window) and
//! the 336×336 input the model receives from it (padded with the CLIP mean and resized: what
//! `huatuo render` writes). The picture is rendered and encoded on the image thread; Esc goes
//! back to the chat.

use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Widget};

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
            window: v.image.window.clone(),
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

    /// A rendered picture arrived; one for another image or mode is stale and dropped.
    pub(crate) fn on_viewed(&mut self, job: ViewJob, result: Result<ViewPicture, String>) {
        if let Some(v) = &mut self.viewer {
            if v.image.path == job.path && v.model_input == job.model_input {
                v.picture = Some(result);
            }
        }
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
    if let Some(w) = &v.image.window {
        title.push_str(&format!("· window {w} "));
    }
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.border)
        .title(Span::styled(title, theme.title))
        .title_bottom(
            Line::from(Span::styled(
                " Tab: original / model input · Esc: back ",
                theme.hint,
            ))
            .right_aligned(),
        );
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
