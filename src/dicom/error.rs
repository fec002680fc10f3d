//! Why a DICOM file could not be shown. Every message names the file and a reason in our own
//! words, plus tag numbers, sizes and technical values (transfer syntax, photometric
//! interpretation); never the value of a tag that could identify a patient, and never the
//! text of a dicom-rs error, which may quote one.

use std::path::PathBuf;

/// Everything that can go wrong while reading and rendering a DICOM file.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// The file could not be read at all (missing, a directory, permissions).
    #[error("cannot read DICOM file {}: {source}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not form a DICOM data set we can parse (truncated, corrupt).
    #[error("cannot read DICOM file {}: {reason}", path.display())]
    Invalid {
        /// The path as given.
        path: PathBuf,
        /// What is wrong, in our words.
        reason: String,
    },
    /// A DICOM object without an image: an RT plan, a structured report, a dose summary.
    #[error(
        "DICOM file {} holds no image (no Pixel Data; modality {modality}): \
         plans, reports and other non-image objects cannot be shown",
        path.display()
    )]
    NoPixelData {
        /// The path as given.
        path: PathBuf,
        /// The (sanitised) Modality, or "unknown".
        modality: String,
    },
    /// A transfer syntax we cannot decode.
    #[error(
        "DICOM file {} uses the unsupported transfer syntax {name} ({uid}); \
         convert it to an uncompressed or JPEG/JPEG 2000 syntax (e.g. dcmdjpeg, gdcmconv --raw)",
        path.display()
    )]
    UnsupportedSyntax {
        /// The path as given.
        path: PathBuf,
        /// The transfer syntax UID.
        uid: String,
        /// Its name, when the UID is a known one.
        name: String,
    },
    /// An image layout we do not render (photometric interpretation, bit depth, ...).
    #[error("DICOM file {} is not supported: {reason}", path.display())]
    Unsupported {
        /// The path as given.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// More pixels than we agree to allocate for one frame.
    #[error(
        "DICOM file {} is too large: a frame of {columns}x{rows} pixels with {samples} \
         sample(s) each is over the limit ({limit} pixels, 1 GiB per frame)",
        path.display()
    )]
    TooLarge {
        /// The path as given.
        path: PathBuf,
        /// Columns (width).
        columns: u64,
        /// Rows (height).
        rows: u64,
        /// Samples per pixel.
        samples: u64,
        /// The largest pixel count accepted.
        limit: u64,
    },
    /// A frame number outside 1..=frames.
    #[error(
        "DICOM file {} has {frames} frame{}; frame {frame} does not exist (frames are numbered from 1)",
        path.display(),
        if *frames == 1 { "" } else { "s" }
    )]
    FrameOutOfRange {
        /// The path as given.
        path: PathBuf,
        /// The frame asked for (1-based).
        frame: u32,
        /// How many frames the file has.
        frames: u32,
    },
    /// A window was asked for on a colour image.
    #[error(
        "DICOM file {} is a colour image ({photometric}); a window applies to greyscale \
         (MONOCHROME1/2) images only",
        path.display()
    )]
    WindowOnColour {
        /// The path as given.
        path: PathBuf,
        /// Its photometric interpretation.
        photometric: String,
    },
    /// A window or frame was asked for on a file that is not DICOM.
    #[error(
        "{} is not a DICOM file; a {option} applies to DICOM images only",
        path.display()
    )]
    NotDicom {
        /// The path as given.
        path: PathBuf,
        /// "window" or "frame".
        option: &'static str,
    },
    /// The codec failed on the frame's data.
    #[error("cannot decode frame {frame} of DICOM file {}: {reason}", path.display())]
    Decode {
        /// The path as given.
        path: PathBuf,
        /// The frame (1-based).
        frame: u32,
        /// The codec's complaint (about the bitstream, never about tags).
        reason: String,
    },
}
