//! Attachment images in the transcript: reading an image file (its pixel size and SHA-256),
//! encoding a thumbnail for the terminal's graphics protocol (ratatui-image: kitty, iTerm2,
//! sixel, or halfblocks where none works), and the worker thread that does both off the UI
//! thread. Thumbnails are [`SlicedProtocol`]s, so a thumbnail scrolled half out of view still
//! shows its visible rows.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};

use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::widgets::Widget;
use ratatui_image::picker::Picker;
use ratatui_image::sliced::{SignedPosition, SlicedImage, SlicedProtocol};
use ratatui_image::Resize;
use sha2::{Digest, Sha256};

use super::msg::Msg;

/// The smallest "largest thumbnail", in terminal cells (and the size used without a
/// terminal to measure).
pub const THUMBNAIL_MAX: Size = Size {
    width: 28,
    height: 8,
};

/// The largest thumbnail for a terminal of `cols` × `rows` cells: a third of the width and a
/// quarter of the height, between [`THUMBNAIL_MAX`] and 72 × 24 cells.
pub fn thumbnail_max(cols: u16, rows: u16) -> Size {
    Size {
        width: (cols / 3).clamp(THUMBNAIL_MAX.width, 72),
        height: (rows / 4).clamp(THUMBNAIL_MAX.height, 24),
    }
}

/// What the viewer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewJob {
    pub path: PathBuf,
    pub window: Option<String>,
    pub frame: Option<u32>,
    /// The 336×336 input the model receives, instead of the image as it is.
    pub model_input: bool,
    /// The cells the picture may take.
    pub cells: Size,
}

/// A picture for the viewer, encoded for the terminal.
pub struct ViewPicture {
    pub protocol: ratatui_image::protocol::Protocol,
    /// The pixels shown (the original's, or 336×336).
    pub width: u32,
    pub height: u32,
    /// The window a greyscale DICOM image was drawn through (the original only).
    pub window: Option<crate::dicom::AppliedWindow>,
}

impl std::fmt::Debug for ViewPicture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewPicture({}x{})", self.width, self.height)
    }
}

/// Renders `job`: the image (DICOM with its window and frame), or the model's input made
/// from it (padded, resized: what `huatuo render` writes), fitted to `job.cells`.
pub fn view(job: &ViewJob, picker: &Picker) -> Result<ViewPicture, String> {
    let bytes = crate::chat::images::read_image(&job.path).map_err(|e| e.to_string())?;
    let window = match &job.window {
        Some(w) => Some(
            w.parse::<crate::dicom::Window>()
                .map_err(|e| format!("window {w:?}: {e}"))?,
        ),
        None => None,
    };
    let opts = crate::dicom::ImageOptions {
        window,
        frame: job.frame,
    };
    let mut applied = None;
    let image = if job.model_input {
        let png = crate::engine::model_input_png(&job.path, &bytes, &opts)?;
        image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .map_err(|e| e.to_string())?
    } else if crate::dicom::is_dicom(&bytes) {
        let dicom = crate::dicom::from_bytes(&job.path, &bytes).map_err(|e| e.to_string())?;
        let rendering = dicom.render(&opts).map_err(|e| e.to_string())?;
        applied = rendering.window;
        image::DynamicImage::ImageRgb8(rendering.image)
    } else {
        image::load_from_memory(&bytes).map_err(|e| e.to_string())?
    };
    let (width, height) = (image.width(), image.height());
    let image = zoomed(image, picker.font_size(), job.cells, u32::MAX);
    let size = Resize::Fit(None).size_for(&image, picker.font_size(), job.cells);
    let size = Size::new(size.width.max(1), size.height.max(1));
    let protocol = picker
        .new_protocol(image, size, Resize::Fit(None))
        .map_err(|e| e.to_string())?;
    Ok(ViewPicture {
        protocol,
        width,
        height,
        window: applied,
    })
}

/// `image` enlarged (whole pixels repeated, nearest neighbour: no made-up detail) to fill
/// `cells` of `font` pixels as far as its aspect allows, by at most `max_factor`; an image
/// that already fills them is returned as it is (fitting it smaller is the protocol's job).
fn zoomed(
    image: image::DynamicImage,
    font: ratatui_image::FontSize,
    cells: Size,
    max_factor: u32,
) -> image::DynamicImage {
    let (w, h) = (image.width().max(1), image.height().max(1));
    // Bounded, whatever the terminal reports: at most 8192 pixels a side.
    let room_w = (u64::from(cells.width) * u64::from(font.width.max(1))).min(8192);
    let room_h = (u64::from(cells.height) * u64::from(font.height.max(1))).min(8192);
    // The largest factor, as a fraction, that keeps both sides inside the room.
    let scale = (room_w as f64 / f64::from(w))
        .min(room_h as f64 / f64::from(h))
        .min(f64::from(max_factor));
    if scale <= 1.0 {
        return image;
    }
    let (nw, nh) = (
        ((f64::from(w) * scale).floor() as u32).max(1),
        ((f64::from(h) * scale).floor() as u32).max(1),
    );
    image.resize_exact(nw, nh, image::imageops::FilterType::Nearest)
}

/// An encoded thumbnail, ready to draw.
pub struct Thumbnail(SlicedProtocol);

impl std::fmt::Debug for Thumbnail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = self.size();
        write!(f, "Thumbnail({}x{} cells)", size.width, size.height)
    }
}

impl Thumbnail {
    /// Its size in cells.
    pub fn size(&self) -> Size {
        self.0.size()
    }

    /// Draws the rows of the thumbnail that fall inside `area`, as if its top-left corner
    /// were at `(x, y)` relative to `area` (`y` may be negative: scrolled above the top).
    pub fn render(&self, area: Rect, x: u16, y: i32, buf: &mut Buffer) {
        let y = y.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        let x = x.min(i16::MAX as u16) as i16;
        SlicedImage::new(&self.0, SignedPosition::from((x, y))).render(area, buf);
    }
}

/// What reading an attachment found.
#[derive(Debug)]
pub struct ImageMeta {
    pub width: u32,
    pub height: u32,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// `None` when the terminal cannot draw it (the label still shows).
    pub thumbnail: Option<Thumbnail>,
    /// For a DICOM file, its safe technical facts (modality, size, frames…); never a tag that
    /// identifies anyone.
    pub dicom: Option<String>,
    /// Warnings about the pixels (text burned in that may identify the patient).
    pub warnings: Vec<String>,
}

/// Reads `path`, decodes it and encodes a thumbnail of at most [`THUMBNAIL_MAX`] with
/// `picker`. The error is one line.
pub fn load(path: &Path, picker: &Picker) -> Result<ImageMeta, String> {
    load_with(path, picker, THUMBNAIL_MAX)
}

/// [`load`] with a thumbnail of at most `max` cells.
pub fn load_with(path: &Path, picker: &Picker, max: Size) -> Result<ImageMeta, String> {
    // Regular files only, bounded in size: never /dev/zero or a FIFO.
    let bytes = crate::chat::images::read_image(path).map_err(|e| e.to_string())?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let (image, dicom, warnings) = if crate::dicom::is_dicom(&bytes) {
        // The thumbnail shows the file's own window (else min-max), frame 1.
        let dicom = crate::dicom::from_bytes(path, &bytes).map_err(|e| e.to_string())?;
        let facts = dicom.meta().to_string();
        let warnings = dicom.meta().warnings();
        let rendering = dicom
            .render(&crate::dicom::ImageOptions::default())
            .map_err(|e| e.to_string())?;
        (
            image::DynamicImage::ImageRgb8(rendering.image),
            Some(facts),
            warnings,
        )
    } else {
        let image = image::load_from_memory(&bytes).map_err(|e| e.to_string())?;
        (image, None, Vec::new())
    };
    let (width, height) = (image.width(), image.height());
    // A small scan (a 64×64 MR) is enlarged, at most 4 times, to be seen at all.
    let image = zoomed(image, picker.font_size(), max, 4);
    let size = Resize::Fit(None).size_for(&image, picker.font_size(), max);
    let size = Size::new(size.width.max(1), size.height.max(1));
    let thumbnail = SlicedProtocol::new(picker, image, Some(size))
        .ok()
        .map(Thumbnail);
    Ok(ImageMeta {
        width,
        height,
        sha256,
        thumbnail,
        dicom,
        warnings,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A job of the image worker.
enum Job {
    Thumbnail(PathBuf),
    View(ViewJob),
}

/// The image worker: give it paths; each answer arrives as a [`Msg::Image`] (or
/// [`Msg::Viewed`] for the viewer).
pub struct ImageWorker {
    jobs: Sender<Job>,
}

impl ImageWorker {
    /// Starts the thread. It ends when the worker is dropped or the message channel closes.
    pub fn spawn(picker: Picker, msgs: Sender<Msg>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("huatuo-images".into())
            .spawn(move || {
                for job in rx {
                    let msg = match job {
                        Job::Thumbnail(path) => {
                            // Sized to the window at the time (a share of it).
                            let max = crossterm::terminal::size()
                                .map(|(c, r)| thumbnail_max(c, r))
                                .unwrap_or(THUMBNAIL_MAX);
                            let result = load_with(&path, &picker, max);
                            Msg::Image { path, result }
                        }
                        Job::View(job) => {
                            let result = view(&job, &picker);
                            Msg::Viewed { job, result }
                        }
                    };
                    if msgs.send(msg).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    /// Queues `path`.
    pub fn load(&self, path: PathBuf) {
        let _ = self.jobs.send(Job::Thumbnail(path));
    }

    /// Queues a picture for the viewer.
    pub fn view(&self, job: ViewJob) {
        let _ = self.jobs.send(Job::View(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name)
    }

    #[test]
    fn dicom_thumbnails_carry_safe_facts_and_warnings() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/identifying.dcm");
        let meta = load(&path, &Picker::halfblocks()).expect("load");
        assert!(meta.thumbnail.is_some());
        let facts = meta.dicom.expect("DICOM facts");
        assert!(!facts.is_empty());
        assert!(!meta.warnings.is_empty(), "burned-in text is warned about");
    }

    #[test]
    fn thumbnails_grow_with_the_window() {
        assert_eq!(thumbnail_max(80, 24), THUMBNAIL_MAX);
        assert_eq!(thumbnail_max(250, 70), Size::new(72, 17));
        assert_eq!(thumbnail_max(160, 45), Size::new(53, 11));
    }

    #[test]
    fn the_viewer_shows_the_image_or_the_models_input() {
        let picker = Picker::halfblocks();
        let job = ViewJob {
            path: fixture("cell.png"),
            window: None,
            frame: None,
            model_input: false,
            cells: Size::new(100, 40),
        };
        let original = view(&job, &picker).expect("original");
        assert_eq!((original.width, original.height), (550, 660));
        let input = view(
            &ViewJob {
                model_input: true,
                ..job
            },
            &picker,
        )
        .expect("model input");
        assert_eq!((input.width, input.height), (336, 336));
    }

    /// Zoom to fit: a small scan fills the viewer and its thumbnail grows (at most 4×), with
    /// whole pixels repeated; a large image is left to the protocol to fit.
    #[test]
    fn small_images_are_enlarged_to_be_seen() {
        const FONT: ratatui_image::FontSize = ratatui_image::FontSize {
            width: 10,
            height: 20,
        };
        let tiny = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 24, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 10) as u8, 0])
        }));
        let big = zoomed(tiny.clone(), FONT, Size::new(98, 37), u32::MAX);
        assert_eq!(
            (big.width(), big.height()),
            (980, 735),
            "fills the height: 37×20 / 24"
        );
        let big = big.to_rgb8();
        let small = tiny.to_rgb8();
        for (x, y) in [(0, 0), (979, 734), (500, 300)] {
            let (sx, sy) = (x * 32 / 980, y * 24 / 735);
            assert_eq!(big.get_pixel(x, y), small.get_pixel(sx, sy), "({x},{y})");
        }
        let thumb = zoomed(tiny.clone(), FONT, Size::new(72, 24), 4);
        assert_eq!(
            (thumb.width(), thumb.height()),
            (128, 96),
            "at most 4 times"
        );
        let large = image::DynamicImage::new_rgb8(2000, 1000);
        let same = zoomed(large, FONT, Size::new(28, 8), 4);
        assert_eq!((same.width(), same.height()), (2000, 1000));

        let picker = Picker::halfblocks();
        let ct =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/ct_explicit_le.dcm");
        let job = ViewJob {
            path: ct.clone(),
            window: None,
            frame: None,
            model_input: false,
            cells: Size::new(98, 37),
        };
        let shown = view(&job, &picker).expect("view");
        assert_eq!(
            (shown.width, shown.height),
            (32, 24),
            "the caption keeps the real size"
        );
        assert!(
            shown.protocol.size().height >= 30,
            "{:?}",
            shown.protocol.size()
        );
        let thumb = load(&ct, &picker)
            .expect("load")
            .thumbnail
            .expect("thumbnail");
        assert!(thumb.size().width >= 12, "{:?}", thumb.size());
    }

    #[test]
    fn reads_size_hash_and_a_thumbnail_that_fits() {
        let meta = load(&fixture("large_500x700.png"), &Picker::halfblocks()).expect("load");
        assert_eq!((meta.width, meta.height), (500, 700));
        assert_eq!(meta.sha256.len(), 64);
        let size = meta.thumbnail.expect("halfblocks always work").size();
        assert!(size.width <= THUMBNAIL_MAX.width && size.height <= THUMBNAIL_MAX.height);
        assert!(size.height > 0);
    }

    #[test]
    fn errors_are_one_line() {
        let err = load(Path::new("/nonexistent/x.png"), &Picker::halfblocks()).expect_err("io");
        assert!(!err.contains('\n'));
        let dir = tempfile::tempdir().expect("tmp");
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"not a png").expect("write");
        assert!(load(&bad, &Picker::halfblocks()).is_err());
    }
}
