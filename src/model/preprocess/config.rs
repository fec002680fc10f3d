//! `preprocessor_config.json`: the settings of transformers' `CLIPImageProcessor`, with its
//! defaults for absent keys and its ways of writing sizes.

use std::path::Path;

use serde::Deserialize;

use super::{resize_output_hw, PreprocessError, MAX_OUTPUT_SIDE, RESAMPLE_BICUBIC};

/// The resize target of `CLIPImageProcessor` (`size` in preprocessor_config.json).
///
/// transformers' `get_size_dict(size, default_to_square=False)` turns a bare integer into
/// `{"shortest_edge": n}` and a two-element list into `{"height": h, "width": w}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub enum ResizeTarget {
    /// Scale so that the shorter side becomes `n`, the longer one `int(n * long / short)`.
    ShortestEdge(u32),
    /// Resize to exactly this many rows and columns.
    Exact {
        /// Output rows.
        height: u32,
        /// Output columns.
        width: u32,
    },
}

/// The center-crop size (`crop_size`): an integer means a square
/// (`get_size_dict(crop_size, default_to_square=True)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct CropSize {
    /// Output rows.
    pub height: u32,
    /// Output columns.
    pub width: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(u32),
    Pair([u32; 2]),
    Dict {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

impl TryFrom<SizeRepr> for ResizeTarget {
    type Error = String;

    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Int(n) => Ok(Self::ShortestEdge(n)),
            SizeRepr::Pair([height, width]) => Ok(Self::Exact { height, width }),
            SizeRepr::Dict {
                shortest_edge: Some(n),
                ..
            } => Ok(Self::ShortestEdge(n)),
            SizeRepr::Dict {
                height: Some(height),
                width: Some(width),
                ..
            } => Ok(Self::Exact { height, width }),
            SizeRepr::Dict { .. } => {
                Err("size must hold \"shortest_edge\" or \"height\" and \"width\"".into())
            }
        }
    }
}

impl TryFrom<SizeRepr> for CropSize {
    type Error = String;

    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Int(n) => Ok(Self {
                height: n,
                width: n,
            }),
            SizeRepr::Pair([height, width]) => Ok(Self { height, width }),
            SizeRepr::Dict {
                height: Some(height),
                width: Some(width),
                ..
            } => Ok(Self { height, width }),
            SizeRepr::Dict { .. } => Err("crop_size must hold \"height\" and \"width\"".into()),
        }
    }
}

/// A number or a list of numbers (`image_mean` / `image_std`); a number is used for every
/// channel, as transformers' `normalize` does.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x; 3],
        OneOrMany::Many(v) => v,
    })
}

/// The fields of `preprocessor_config.json` that `CLIPImageProcessor` uses
/// (huatuo-reference.md §2 step 3). Missing fields take `CLIPImageProcessor.__init__`'s
/// defaults; unknown fields (`feature_extractor_type`, `image_processor_type`, ...) are
/// ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProcessorConfig {
    /// Resize before cropping (default true).
    #[serde(default = "yes")]
    pub do_resize: bool,
    /// Resize target (default shortest edge 224).
    #[serde(default = "default_size")]
    pub size: ResizeTarget,
    /// PIL resampling filter number; only 3 (BICUBIC) is supported.
    #[serde(default = "default_resample")]
    pub resample: u32,
    /// Center-crop after resizing (default true).
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    /// Crop size (default 224×224).
    #[serde(default = "default_crop")]
    pub crop_size: CropSize,
    /// Multiply by `rescale_factor` (default true).
    #[serde(default = "yes")]
    pub do_rescale: bool,
    /// Default 1/255.
    #[serde(default = "default_rescale_factor")]
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std` (default true).
    #[serde(default = "yes")]
    pub do_normalize: bool,
    /// Per-channel mean (default OpenAI CLIP's).
    #[serde(default = "clip_mean", deserialize_with = "one_or_many")]
    pub image_mean: Vec<f64>,
    /// Per-channel standard deviation (default OpenAI CLIP's).
    #[serde(default = "clip_std", deserialize_with = "one_or_many")]
    pub image_std: Vec<f64>,
    /// Convert to RGB first (default true; our images are RGB already).
    #[serde(default = "yes")]
    pub do_convert_rgb: bool,
}

fn yes() -> bool {
    true
}
fn default_size() -> ResizeTarget {
    ResizeTarget::ShortestEdge(224)
}
fn default_resample() -> u32 {
    RESAMPLE_BICUBIC
}
fn default_crop() -> CropSize {
    CropSize {
        height: 224,
        width: 224,
    }
}
fn default_rescale_factor() -> f64 {
    1.0 / 255.0
}
fn clip_mean() -> Vec<f64> {
    vec![0.48145466, 0.4578275, 0.40821073]
}
fn clip_std() -> Vec<f64> {
    vec![0.26862954, 0.26130258, 0.27577711]
}

impl ProcessorConfig {
    /// The `preprocessor_config.json` of openai/clip-vit-large-patch14-336, the vision tower
    /// of both HuatuoGPT-Vision checkpoints (tests/fixtures/preprocessor_config.json is that
    /// file; a test checks they agree): for commands that need the preprocessing without a
    /// checkpoint (`huatuo render`).
    pub fn clip_vit_large_336() -> Self {
        Self {
            do_resize: true,
            size: ResizeTarget::ShortestEdge(336),
            resample: RESAMPLE_BICUBIC,
            do_center_crop: true,
            crop_size: CropSize {
                height: 336,
                width: 336,
            },
            do_rescale: true,
            rescale_factor: default_rescale_factor(),
            do_normalize: true,
            image_mean: clip_mean(),
            image_std: clip_std(),
            do_convert_rgb: true,
        }
    }

    /// Reads and checks a `preprocessor_config.json` (huatuo-reference.md §2 step 3).
    pub fn from_file(path: &Path) -> Result<Self, PreprocessError> {
        let bad = |reason: String| PreprocessError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad("file not found".into()),
            _ => bad(e.to_string()),
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// The expand2square fill colour: `tuple(int(x * 255) for x in image_mean)`
    /// (cli.py:227, truncation; `(122, 116, 104)` for CLIP). Values outside 0..=255 saturate.
    pub fn background(&self) -> [u8; 3] {
        let mut out = [0u8; 3];
        for (o, m) in out.iter_mut().zip(&self.image_mean) {
            // `as u8` truncates toward zero like Python's int(), and saturates.
            *o = (m * 255.0) as u8;
        }
        out
    }

    /// (height, width) of [`pixel_values`]' output for an input of `width`×`height`.
    pub fn output_hw(&self, width: u32, height: u32) -> (u32, u32) {
        if self.do_center_crop {
            return (self.crop_size.height, self.crop_size.width);
        }
        if self.do_resize {
            return resize_output_hw(width, height, self.size);
        }
        (height, width)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.do_resize {
            if self.resample != RESAMPLE_BICUBIC {
                return Err(format!(
                    "resample = {} is not supported, only 3 (BICUBIC) is",
                    self.resample
                ));
            }
            match self.size {
                ResizeTarget::ShortestEdge(0)
                | ResizeTarget::Exact { height: 0, .. }
                | ResizeTarget::Exact { width: 0, .. } => {
                    return Err("size must be positive".into());
                }
                _ => {}
            }
        }
        if self.do_center_crop && (self.crop_size.height == 0 || self.crop_size.width == 0) {
            return Err("crop_size must be positive".into());
        }
        // Each side is allocated (a crop larger than the image pads it): bound them.
        let sides = match self.size {
            ResizeTarget::ShortestEdge(n) => [n, n],
            ResizeTarget::Exact { height, width } => [height, width],
        };
        let checks = [
            ("size", self.do_resize, sides),
            (
                "crop_size",
                self.do_center_crop,
                [self.crop_size.height, self.crop_size.width],
            ),
        ];
        for (key, used, sides) in checks {
            if let Some(n) = sides
                .iter()
                .find(|&&n| n > MAX_OUTPUT_SIDE)
                .filter(|_| used)
            {
                return Err(format!(
                    "{key} {n} is more than {MAX_OUTPUT_SIDE} pixels, the largest side huatuo \
                     accepts (CLIP's is 336)"
                ));
            }
        }
        if self.do_rescale && !self.rescale_factor.is_finite() {
            return Err("rescale_factor must be a finite number".into());
        }
        if self.do_normalize {
            if self.image_mean.len() != 3 || self.image_std.len() != 3 {
                return Err(format!(
                    "image_mean and image_std need 3 values (RGB), got {} and {}",
                    self.image_mean.len(),
                    self.image_std.len()
                ));
            }
            if self.image_std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return Err("image_std values must be finite and non-zero".into());
            }
        }
        Ok(())
    }
}
