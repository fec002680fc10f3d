//! One loaded checkpoint and the generation of one answer (huatuo-reference.md §2–§5), either
//! from scratch ([`Pipeline::generate`]) or through the caches of a conversation
//! ([`cache`]), with the same result.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;

use super::cache::{self, Caches, FeatureCache, ImageKey, ImageSource, PromptImage};
use crate::chat::{conversation, template};
use crate::model::preprocess::{self, ImageOptions, ProcessorConfig};
use crate::model::sampling::Sampler;
use crate::model::store::quant::LoadOptions;
use crate::model::tokenizer::{AnswerStream, Tokenizer};
use crate::model::{Checkpoint, Huatuo, ModelError};
use crate::protocol::{DType, DevicePref, Exchange, Quant, SamplingParams, Stop};
use crate::text::IMAGE_TOKEN_INDEX;

/// What went wrong, naming the file, flag or limit involved.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Names the image once: most preprocessing errors already do (see [`image_message`]).
    #[error("{}", image_message(path, source))]
    Image {
        path: PathBuf,
        source: preprocess::PreprocessError,
    },
    #[error("image {}: {reason}", path.display())]
    View { path: PathBuf, reason: String },
    #[error("{count} images in one turn: at most {limit} are allowed")]
    TooManyImages { count: usize, limit: usize },
    #[error(
        "the prompt needs {total} positions ({} + {} × {per_image}) but the context window is {limit}{earlier}: shorten the text, attach fewer images, drop the oldest turns (/drop N in the chat) or start a new conversation",
        crate::text::count(*text, "text token", "text tokens"),
        crate::text::count(*images, "image", "images")
    )]
    ContextOverflow {
        total: usize,
        text: usize,
        images: usize,
        per_image: usize,
        limit: usize,
        /// What the earlier turns take (`; earlier turns: 1: 640 (1 image), 2: 90`), or empty.
        earlier: String,
    },
    /// Text that cannot fit the context window, refused before it is tokenized.
    #[error(
        "the text is {bytes} bytes, more than the {limit} bytes that could fit the context window of {context} positions: shorten it or start a new conversation"
    )]
    TextTooLong {
        bytes: usize,
        limit: usize,
        context: usize,
    },
    /// The network produced NaN or an infinity: its configs or weights are broken.
    #[error(
        "model {model}: the logits for generated token {step} are not finite numbers (NaN or infinity); the checkpoint's config.json or weights are broken"
    )]
    NonFiniteLogits { model: PathBuf, step: usize },
    #[error("device {0:?} is not available: {1}")]
    Device(DevicePref, String),
    #[error("invalid sampling setting: {0}")]
    Sampling(String),
    /// A generation was requested while no model is loaded (none yet, the last load failed,
    /// or it was unloaded).
    #[error(
        "no model loaded: load a model first (the last load failed or the model was unloaded)"
    )]
    NotLoaded,
}

/// Wall-clock costs of one answer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub image_encode: Duration,
    pub prefill: Duration,
    pub decode: Duration,
    /// From the start of the request to the first token.
    pub first_token: Duration,
}

/// One finished (or stopped) answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Decoded without special tokens and stripped: what cli.py's `inference()` returns.
    pub text: String,
    /// What `chat()` keeps in its history: the streamer's concatenated output, unstripped
    /// (usually, not always, the plain decode; see `Tokenizer::streamed_text`).
    pub raw: String,
    /// Generated ids, EOS included when it was produced.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: Stop,
    pub timings: Timings,
    /// Prompt positions taken from the KV cache of the previous turn instead of being run.
    pub reused_positions: usize,
    /// Images run through the vision tower for this answer.
    pub images_encoded: usize,
    /// Images not encoded because the same content was encoded before (an earlier turn,
    /// or earlier in this prompt).
    pub images_from_cache: usize,
}

/// A loaded checkpoint: network, tokenizer and image settings.
pub struct Pipeline {
    pub checkpoint: Checkpoint,
    pub model: Huatuo,
    pub tokenizer: Tokenizer,
    pub processor: ProcessorConfig,
    /// The checkpoint's sampling defaults (reported in `ModelInfo`).
    pub defaults: SamplingParams,
    device: Device,
    quant: Quant,
    /// The quantized weights' cache file the model was read from.
    cache_file: Option<PathBuf>,
    /// See [`Pipeline::max_text_bytes`].
    max_text_bytes: usize,
}

impl Pipeline {
    /// Loads the checkpoint at `dir` on the chosen device and dtype.
    pub fn load(dir: &Path, device: DevicePref, dtype: DType) -> Result<Self, EngineError> {
        Self::load_quantized(dir, device, dtype, Quant::None, None)
    }

    /// Loads with weight quantization: the first load of a checkpoint with a given `quant`
    /// converts its shards into a GGUF file under `quant_cache_dir`; later loads map it.
    pub fn load_quantized(
        dir: &Path,
        device: DevicePref,
        dtype: DType,
        quant: Quant,
        quant_cache_dir: Option<&Path>,
    ) -> Result<Self, EngineError> {
        let checkpoint = Checkpoint::open(dir)?;
        let device = select_device(device)?;
        let dtype = resolve_dtype(dtype, &device);
        let tokenizer = Tokenizer::from_dir(dir).map_err(ModelError::from)?;
        let processor = ProcessorConfig::from_file(&checkpoint.preprocessor_config)
            .map_err(ModelError::from)?;
        let defaults = crate::model::checkpoint::sampling_defaults(dir)?;
        let max_text_bytes = text_bound(&tokenizer, checkpoint.config.context_length());
        let (model, cache_file) = if quant == Quant::None {
            (Huatuo::load(&checkpoint, &device, dtype)?, None)
        } else {
            let opts = LoadOptions {
                dtype,
                quant,
                cache_dir: quant_cache_dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| std::env::temp_dir().join("huatuo-quant")),
            };
            let (model, report) = Huatuo::load_with(&checkpoint, &device, &opts, &|_| {})?;
            (model, report.cache_file)
        };
        Ok(Self {
            checkpoint,
            model,
            tokenizer,
            processor,
            defaults,
            device,
            quant,
            cache_file,
            max_text_bytes,
        })
    }

    /// The longest text (in UTF-8 bytes, history and turn together) that could fit the
    /// context window: no token covers more bytes than the vocabulary's longest token string
    /// (byte-level and SentencePiece strings spell each byte with at least one byte), so more
    /// than `context_length × longest × 2` bytes (2 for what normalisation may shrink) is
    /// refused before tokenizing it, which would take memory and time in proportion.
    pub fn max_text_bytes(&self) -> usize {
        self.max_text_bytes
    }

    /// The quantized weights' cache file the model was read from (`None` for dense weights).
    pub fn cache_file(&self) -> Option<&Path> {
        self.cache_file.as_deref()
    }

    /// The weight quantization the model was loaded with.
    pub fn quant(&self) -> Quant {
        self.quant
    }

    /// The device the model runs on, e.g. "cpu".
    pub fn device_name(&self) -> &'static str {
        match self.device {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            Device::Metal(_) => "metal",
        }
    }

    /// The dtype the weights were loaded in, e.g. "f32" or "bf16" (what `auto` resolved to).
    pub fn dtype_name(&self) -> &'static str {
        self.model.dtype().as_str()
    }

    /// Prompt ids of a conversation, with `IMAGE_TOKEN_INDEX` where each image goes.
    /// `user` is the raw text of this turn; it is sanitised and gets one placeholder per
    /// image of the turn (§3.1).
    pub fn prompt_ids(
        &self,
        history: &[Exchange],
        user: &str,
        new_images: usize,
    ) -> Result<(Vec<i64>, String), EngineError> {
        let limit = crate::protocol::max_images(history);
        if new_images > limit {
            return Err(EngineError::TooManyImages {
                count: new_images,
                limit,
            });
        }
        let user = conversation::user_text(user, new_images);
        let ids = self.conversation_ids(history, &user)?;
        Ok((ids, user))
    }

    /// Prompt ids of a conversation whose current turn is already in the history's form
    /// (`user` sanitised, with its placeholders: what a `GenerateRequest` carries).
    pub fn conversation_ids(
        &self,
        history: &[Exchange],
        user: &str,
    ) -> Result<Vec<i64>, EngineError> {
        let bytes = user.len()
            + history
                .iter()
                .map(|e| e.user.len() + e.answer.len())
                .sum::<usize>();
        if bytes > self.max_text_bytes {
            return Err(EngineError::TextTooLong {
                bytes,
                limit: self.max_text_bytes,
                context: self.checkpoint.config.context_length(),
            });
        }
        let segments = template::segments(history, user);
        let tok = &self.tokenizer;
        let ids = template::prompt_ids(
            &segments,
            |chunk| tok.encode_chunk(chunk),
            tok.bos_id(),
            tok.model_max_length(),
        )
        .map_err(ModelError::from)?;
        Ok(ids)
    }

    /// Checks that a prompt fits in the context window, counting image positions.
    pub fn check_context(&self, ids: &[i64]) -> Result<usize, EngineError> {
        let images = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
        let text = ids.len() - images;
        let per_image = self.model.tokens_per_image();
        let total = text + images * per_image;
        let limit = self.checkpoint.config.context_length();
        if total > limit {
            return Err(EngineError::ContextOverflow {
                total,
                text,
                images,
                per_image,
                limit,
                earlier: String::new(),
            });
        }
        Ok(total)
    }

    /// The positions each earlier turn of `history` takes in a prompt (its user and
    /// assistant segments, each image as its positions), and its number of images: what a
    /// user must know to choose which turns to drop when the window is full.
    pub fn turn_positions(&self, history: &[Exchange]) -> Result<Vec<(usize, usize)>, EngineError> {
        let per_image = self.model.tokens_per_image();
        let segments = template::segments(history, "");
        let tok = &self.tokenizer;
        (0..history.len())
            .map(|i| {
                let ids = template::prompt_ids(
                    &segments[2 * i..2 * i + 2],
                    |chunk| tok.encode_chunk(chunk),
                    tok.bos_id(),
                    tok.model_max_length(),
                )
                .map_err(ModelError::from)?;
                let images = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
                Ok((ids.len() - images + images * per_image, images))
            })
            .collect()
    }

    /// Preprocesses image files (Pillow-exact) into CHW pixels.
    pub fn load_images(&self, paths: &[PathBuf]) -> Result<Vec<Vec<f32>>, EngineError> {
        paths
            .iter()
            .map(|p| {
                preprocess::preprocess_file(p, &self.processor).map_err(|source| {
                    EngineError::Image {
                        path: p.clone(),
                        source,
                    }
                })
            })
            .collect()
    }

    /// Generates an answer to `ids` (with one image per sentinel, in order), calling
    /// `on_text` after every generated token with the text that became printable (often
    /// empty); `ControlFlow::Break` stops generation (the partial answer is returned with
    /// `Stop::Cancelled`), so cancellation is checked once per token. Every image is encoded
    /// and the whole prompt prefilled: no cache survives the call.
    pub fn generate(
        &self,
        ids: &[i64],
        images: &[Vec<f32>],
        params: &SamplingParams,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, EngineError> {
        self.generate_with(ids, images, params, |piece| Ok(on_text(piece)))
    }

    /// [`Pipeline::generate`] with a callback that may fail: its error ends generation and
    /// is returned as is, so that a failure on the caller's side of the callback (and, in
    /// tests, an injected fault) takes the same path as a failure of the model.
    pub(crate) fn generate_with(
        &self,
        ids: &[i64],
        images: &[Vec<f32>],
        params: &SamplingParams,
        on_text: impl FnMut(&str) -> Result<ControlFlow<()>, EngineError>,
    ) -> Result<Answer, EngineError> {
        let images = images
            .iter()
            .map(|pixels| PromptImage {
                key: ImageKey::of_pixels(pixels),
                source: ImageSource::Pixels(pixels.clone()),
            })
            .collect();
        let mut caches = Caches::new(&self.model);
        self.generate_cached(ids, images, &mut caches, params, on_text)
    }

    /// Reads, hashes and (unless `cache` already holds its features) preprocesses each image
    /// file, so that a missing or corrupt file is refused before anything runs. An image
    /// already in the conversation costs a read and a hash, not a decode.
    pub(crate) fn prepare_images(
        &self,
        images: &[(PathBuf, ImageOptions)],
        cache: &mut FeatureCache,
    ) -> Result<Vec<PromptImage>, EngineError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(images.len());
        for (path, view) in images {
            let image_error = |source| EngineError::Image {
                path: path.clone(),
                source,
            };
            // Read once (regular files only, size-capped), hashed and decoded from memory.
            let bytes = preprocess::read_file(path).map_err(image_error)?;
            // Two windows of one DICOM slice are two images to the model.
            let key = ImageKey::of_view(&bytes, view);
            let source = if !seen.insert(key) {
                ImageSource::Repeat
            } else if let Some(features) = cache.get(&key) {
                ImageSource::Cached(features)
            } else {
                let pixels = preprocess::preprocess_bytes(path, &bytes, &self.processor, view)
                    .map_err(image_error)?;
                ImageSource::Pixels(pixels)
            };
            out.push(PromptImage { key, source });
        }
        Ok(out)
    }

    /// [`Pipeline::generate_with`] through `caches`: images whose features are cached are
    /// not encoded, and the prompt positions the KV cache already holds (its longest exact
    /// prefix, see [`cache::reusable`]) are not run again. The answer is the one a full
    /// recomputation gives. Afterwards the KV cache holds the prompt and every generated
    /// token that was run; after a failure it is empty.
    pub(crate) fn generate_cached(
        &self,
        ids: &[i64],
        images: Vec<PromptImage>,
        caches: &mut Caches,
        params: &SamplingParams,
        mut on_text: impl FnMut(&str) -> Result<ControlFlow<()>, EngineError>,
    ) -> Result<Answer, EngineError> {
        params.validate().map_err(EngineError::Sampling)?;
        let start = Instant::now();
        let prompt_tokens = self.check_context(ids)?;
        let mut timings = Timings::default();
        let keys: Vec<ImageKey> = images.iter().map(|i| i.key).collect();
        let (features, images_encoded, images_from_cache) =
            cache::features(&self.model, images, &mut caches.features)?;
        timings.image_encode = start.elapsed();
        let t = Instant::now();
        let prefix = &mut caches.prefix;
        let (mut logits, reused_positions) = prefix.prefill(&self.model, ids, &keys, &features)?;
        timings.prefill = t.elapsed();
        let eos = self.tokenizer.eos_id();
        let window = self.checkpoint.config.context_length();
        let mut sampler = Sampler::new(params.clone(), eos);
        let mut stream = AnswerStream::new(&self.tokenizer);
        let mut tokens = Vec::new();
        let decode_start = Instant::now();
        let mut stop = Stop::Length;
        // On any error below, the KV cache is emptied: a partly run step leaves it unknown.
        let result = (|| {
            while tokens.len() < params.max_new_tokens {
                let mut row = logits
                    .squeeze(0)
                    .and_then(|r| r.to_vec1::<f32>())
                    .map_err(ModelError::from)?;
                // A broken config (rope_theta = -1) or weights give NaN: never sample them.
                if row.iter().any(|v| !v.is_finite()) {
                    return Err(EngineError::NonFiniteLogits {
                        model: self.checkpoint.dir.clone(),
                        step: tokens.len() + 1,
                    });
                }
                let next = sampler.next(&mut row, &tokens);
                if tokens.is_empty() {
                    timings.first_token = start.elapsed();
                }
                tokens.push(next);
                if next == eos {
                    stop = Stop::Eos;
                    break;
                }
                let piece = stream.push(next).map_err(ModelError::from)?;
                if on_text(&piece)?.is_break() {
                    stop = Stop::Cancelled;
                    break;
                }
                if tokens.len() == params.max_new_tokens {
                    break;
                }
                if prefix.len() + 1 > window {
                    stop = Stop::Context;
                    break;
                }
                logits = prefix.step(&self.model, next)?;
            }
            if stop != Stop::Cancelled {
                let rest = stream.finish().map_err(ModelError::from)?;
                if !rest.is_empty() {
                    // The answer is complete; a Break here changes nothing.
                    let _ = on_text(&rest)?;
                }
            }
            Ok::<_, EngineError>(())
        })();
        if let Err(e) = result {
            prefix.clear();
            return Err(e);
        }
        timings.decode = decode_start.elapsed();
        let text = crate::text::py_strip(&stream.text().map_err(ModelError::from)?).to_string();
        let raw = stream.history_text().map_err(ModelError::from)?;
        Ok(Answer {
            text,
            raw,
            tokens,
            prompt_tokens,
            stop,
            timings,
            reused_positions,
            images_encoded,
            images_from_cache,
        })
    }
}

/// [`Pipeline::max_text_bytes`] for a tokenizer and context window.
fn text_bound(tokenizer: &Tokenizer, context_length: usize) -> usize {
    let longest = tokenizer
        .inner()
        .get_vocab(true)
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(1)
        .max(1);
    context_length.saturating_mul(longest).saturating_mul(2)
}

/// An image error's text naming the path once: as the preprocessing error says it when that
/// names the file, else `image PATH: ` and the cause.
fn image_message(path: &Path, source: &preprocess::PreprocessError) -> String {
    if source.names_file() {
        source.to_string()
    } else {
        format!("image {}: {source}", path.display())
    }
}

/// The candle device for a preference; GPUs exist only in builds with their feature.
fn select_device(pref: DevicePref) -> Result<Device, EngineError> {
    match pref {
        DevicePref::Cpu => Ok(Device::Cpu),
        DevicePref::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                return Err(EngineError::Device(
                    pref,
                    "this huatuo was built without the `cuda` feature (cargo install --features cuda)".into(),
                ));
            }
            Device::new_cuda(0).map_err(|e| EngineError::Device(pref, e.to_string()))
        }
        DevicePref::Metal => {
            if !candle_core::utils::metal_is_available() {
                return Err(EngineError::Device(
                    pref,
                    "this huatuo was built without the `metal` feature (cargo install --features metal)".into(),
                ));
            }
            Device::new_metal(0).map_err(|e| EngineError::Device(pref, e.to_string()))
        }
        DevicePref::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// `auto` is f32 on a CPU (candle has no fast bf16 CPU matmul) and bf16 on a GPU.
fn resolve_dtype(dtype: DType, device: &Device) -> candle_core::DType {
    match dtype {
        DType::F32 => candle_core::DType::F32,
        DType::Bf16 => candle_core::DType::BF16,
        DType::F16 => candle_core::DType::F16,
        DType::Auto => {
            if device.is_cpu() {
                candle_core::DType::F32
            } else {
                candle_core::DType::BF16
            }
        }
    }
}
