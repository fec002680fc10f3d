//! `huatuo render IMAGE -o OUT.png`: writes the exact 336×336 RGB image the model receives
//! (after DICOM rendering, RGB conversion, padding to a square and the bicubic resize: the
//! bytes that get normalised), or with `--original` the full-size rendering before padding.
//! Works for every image format. For DICOM files, the safe technical metadata, the frame
//! count and the window applied go to stderr, with a warning when the pixels may carry burned-in
//! text; no identifying tag is ever printed.

use anyhow::{Context, Result};

use crate::cli::RenderArgs;
use crate::dicom::{self, ImageOptions};
use crate::model::preprocess::{self, ProcessorConfig};

/// Renders, reports on stderr and writes the PNG.
pub fn run(args: RenderArgs) -> Result<()> {
    let opts = ImageOptions {
        window: args.window,
        frame: args.frame,
    };
    // Regular files only, size-capped: `/dev/zero` or a FIFO is refused, not read forever.
    let bytes = preprocess::read_file(&args.image)?;
    let rgb = match bytes {
        bytes if dicom::is_dicom(&bytes) => {
            let rendering = dicom::from_bytes(&args.image, &bytes)?.render(&opts)?;
            eprintln!("{}: {}", args.image.display(), rendering.summary());
            for warning in rendering.meta.warnings() {
                eprintln!("huatuo: warning: {}: {warning}", args.image.display());
            }
            rendering.image
        }
        // Not DICOM: the image decoder reports what is wrong (naming the file).
        bytes => preprocess::load_rgb_bytes(&args.image, &bytes, &opts)?,
    };
    let out = if args.original {
        rgb
    } else {
        preprocess::model_input(&rgb, &ProcessorConfig::clip_vit_large_336())?
    };
    out.save_with_format(&args.output, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}
