//! `huatuo render IMAGE -o OUT.png`: writes the exact 336×336 RGB image the model receives
//! (after DICOM rendering, RGB conversion, padding to a square and the bicubic resize: the
//! bytes that get normalised), or with `--original` the full-size rendering before padding.
//! Works for every image format. For DICOM files, the safe technical metadata, the frame
//! count and the window applied go to stderr, with a warning when the pixels may carry burned-in
//! text; no identifying tag is ever printed.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::dicom::{self, ImageOptions, Window};
use crate::model::preprocess::{self, ProcessorConfig};

/// `huatuo render` arguments.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The image: DICOM (any extension), PNG, JPEG, BMP, TIFF or WebP.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Where to write the PNG.
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,

    /// DICOM window: CENTER,WIDTH (e.g. 40,400 or -600,1500) or a preset: brain, subdural,
    /// stroke, lung, mediastinum, abdomen, liver, bone. Default: the file's window, else the
    /// frame's min-max.
    #[arg(long, value_name = "W", allow_hyphen_values = true)]
    pub window: Option<Window>,

    /// DICOM frame to show, from 1 (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub frame: Option<u32>,

    /// Write the full-size rendering, before padding and resizing.
    #[arg(long)]
    pub original: bool,
}

/// Renders, reports on stderr and writes the PNG.
pub fn run(args: RenderArgs) -> Result<()> {
    let opts = ImageOptions {
        window: args.window,
        frame: args.frame,
    };
    let rgb = match std::fs::read(&args.image) {
        Ok(bytes) if dicom::is_dicom(&bytes) => {
            let rendering = dicom::from_bytes(&args.image, &bytes)?.render(&opts)?;
            eprintln!("{}: {}", args.image.display(), rendering.summary());
            for warning in rendering.meta.warnings() {
                eprintln!("huatuo: warning: {}: {warning}", args.image.display());
            }
            rendering.image
        }
        // Not DICOM, or unreadable: the image decoder reports it (naming the file).
        _ => preprocess::load_rgb_with(&args.image, &opts)?,
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
