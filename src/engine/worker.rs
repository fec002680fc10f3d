//! The model worker: one thread that owns the device and the loaded [`Pipeline`] and talks to
//! front ends only through [`Command`] and [`Event`] (style.md §2, rule 9).
//!
//! It answers each turn exactly as the reference's multi-turn `chat()` does
//! (huatuo-reference.md §3.1, §3.4): the whole history is re-tokenized into the prompt, but
//! images already encoded and the longest exact prefix of the previous turn's KV cache are
//! reused ([`Caches`], one set per loaded model, dropped on a swap, `Unload` and `Reset`), so
//! the answer is the one a full recomputation gives. Cancellation reaches a busy worker
//! through shared state checked once per generated token, not only through the command queue.
//! Loading goes through an injected [`Resolver`], so the hub can plug in without the worker
//! knowing about downloads; on a swap the old weights are dropped before the new ones are
//! read. It never prints.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cache::Caches;
use super::faults::Faults;
use super::pipeline::{Answer, EngineError, Pipeline};
use super::{ResolveError, ResolvedModel, Resolver};
use crate::model::preprocess::ImageOptions;
use crate::model::ModelError;
use crate::protocol::{
    Command, Completion, EngineBuild, Event, FailureKind, GenerateRequest, GenerationStats,
    ImageRef, LoadStage, ModelInfo, ModelSpec, PromptStats, RequestId, Stop,
};
use crate::text::IMAGE_TOKEN_INDEX;

/// What the handle tells a busy worker without waiting for the queue.
#[derive(Debug, Default)]
pub(super) struct Signals {
    /// Ids whose cancellation the worker has not yet received through the queue. An id
    /// leaves the set when its `Cancel` command is dequeued, which is always after the
    /// request it cancels (if that was queued first), so the set stays small.
    cancelled: Mutex<HashSet<RequestId>>,
    /// Set when the handle is dropped or sends `Shutdown`: everything stops.
    pub(super) shutdown: AtomicBool,
}

impl Signals {
    fn set(&self) -> MutexGuard<'_, HashSet<RequestId>> {
        // A panic while holding this lock cannot leave the set inconsistent.
        self.cancelled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `id` cancelled; the worker sees it at its next token.
    pub(super) fn cancel(&self, id: RequestId) {
        self.set().insert(id);
    }

    pub(super) fn forget(&self, id: RequestId) {
        self.set().remove(&id);
    }

    /// Whether request `id` must stop now.
    pub(super) fn stop_requested(&self, id: RequestId) -> bool {
        self.shutdown.load(Ordering::SeqCst) || self.set().contains(&id)
    }
}

/// The loaded model, what the front ends were told about it, and the caches of the
/// conversation it is serving (they are only valid for this model, so they live and die
/// with it).
struct Loaded {
    pipeline: Pipeline,
    info: ModelInfo,
    caches: Caches,
    /// What was asked for, to load it again after a swap that failed.
    spec: ModelSpec,
}

/// The worker thread's state.
pub(super) struct Worker {
    resolver: Resolver,
    loaded: Option<Loaded>,
    events: Sender<Event>,
    signals: Arc<Signals>,
    faults: Faults,
}

/// A failed request: the error (boxed: it is large, and failures are rare) and the answer
/// text streamed before it.
struct Failure {
    error: Box<EngineError>,
    partial: String,
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        Self {
            error: Box::new(error),
            partial: String::new(),
        }
    }
}

impl Worker {
    /// A worker with no model loaded that reports to `events`.
    pub(super) fn new(
        resolver: Resolver,
        events: Sender<Event>,
        signals: Arc<Signals>,
        faults: Faults,
    ) -> Self {
        Self {
            resolver,
            loaded: None,
            events,
            signals,
            faults,
        }
    }

    /// Serves commands until `Shutdown` or until the handle is dropped.
    pub(super) fn run(mut self, commands: Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            if self.signals.shutdown.load(Ordering::SeqCst) {
                break;
            }
            match command {
                Command::Load { id, spec } => self.guarded(id, |w| w.load(id, &spec)),
                Command::Generate { id, request } => self.guarded(id, |w| w.generate(id, &request)),
                Command::Cancel { id } => self.signals.forget(id),
                Command::Reset => {
                    if let Some(loaded) = &mut self.loaded {
                        loaded.caches.clear();
                    }
                }
                Command::Unload => {
                    self.loaded = None;
                    self.emit(Event::Unloaded);
                }
                Command::Shutdown => break,
            }
        }
    }

    /// Runs one request, turning a panic (a bug, never expected) into `Failed` so the front
    /// end is not left waiting and the worker keeps serving.
    fn guarded(&mut self, id: RequestId, f: impl FnOnce(&mut Self)) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(self))) {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // A panic may have stopped between a KV cache append and its bookkeeping.
            if let Some(loaded) = &mut self.loaded {
                loaded.caches.clear();
            }
            let error = format!("internal error in the model worker: {}", one_line(&what));
            self.emit(failed(id, FailureKind::Internal, error, ""));
        }
    }

    fn emit(&self, event: Event) {
        // Nobody listening is not an error: the front end has gone.
        let _ = self.events.send(event);
    }

    /// Loads a model. A model already loaded stays loaded until the new one is ready: the new
    /// one is resolved (downloaded) first, then loaded beside it when the memory preflight
    /// allows, and only then the old one is dropped. When the two do not fit together the old
    /// one is dropped before the weights load. A load that fails or is cancelled leaves the
    /// previous model loaded (loaded again if it had to make room) and says so with
    /// `Restored`.
    fn load(&mut self, id: RequestId, spec: &ModelSpec) {
        let previous = self.loaded.as_ref().map(|l| l.spec.clone());
        let mut resolved = self.resolve(id, spec);
        if matches!(&resolved, Err(e) if e.out_of_memory) && self.loaded.is_some() {
            // Not beside the current model: make room and try again.
            self.unload_for(id);
            resolved = self.resolve(id, spec);
        }
        let result = resolved
            .map_err(|e| e.message)
            .and_then(|resolved| self.load_resolved(id, spec, resolved));
        match result {
            Ok(loaded) => {
                if self.loaded.is_some() {
                    self.unload_for(id);
                }
                self.emit(Event::Loaded {
                    id,
                    info: loaded.info.clone(),
                });
                self.loaded = Some(loaded);
            }
            Err(error) => self.load_failed(id, spec, &error, previous),
        }
    }

    /// Finds (and downloads) `spec`'s checkpoint, reporting progress; a cancel of `id` stops
    /// a download at the next chunk.
    fn resolve(&mut self, id: RequestId, spec: &ModelSpec) -> Result<ResolvedModel, ResolveError> {
        let (events, signals) = (&self.events, &self.signals);
        let resolved = (self.resolver)(spec, &mut |stage, done, total| {
            let _ = events.send(Event::LoadProgress {
                id,
                stage,
                done,
                total,
            });
            if signals.stop_requested(id) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if self.signals.stop_requested(id) {
            return Err(ResolveError::cancelled());
        }
        resolved
    }

    /// Loads the weights of a resolved checkpoint.
    fn load_resolved(
        &mut self,
        id: RequestId,
        spec: &ModelSpec,
        resolved: ResolvedModel,
    ) -> Result<Loaded, String> {
        let progress = |stage, done, total| Event::LoadProgress {
            id,
            stage,
            done,
            total,
        };
        self.emit(progress(LoadStage::Weights, 0, 1));
        let pipeline = Pipeline::load_quantized(
            &resolved.dir,
            spec.device,
            spec.dtype,
            resolved.quant,
            resolved.quant_cache_dir.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        if self.signals.stop_requested(id) {
            return Err(ResolveError::cancelled().message);
        }
        self.emit(progress(LoadStage::Weights, 1, 1));
        let config = &pipeline.checkpoint.config;
        let info = ModelInfo {
            source: spec.source.clone(),
            path: resolved.dir,
            repo: resolved.repo,
            revision: resolved.revision,
            family: config
                .family()
                .map_or_else(|| config.model_type.clone(), |f| f.name().to_string()),
            dtype: pipeline.dtype_name().to_string(),
            device: pipeline.device_name().to_string(),
            quantization: pipeline.quant().name().to_string(),
            context_length: config.context_length(),
            tokens_per_image: pipeline.model.tokens_per_image(),
            defaults: pipeline.defaults.clone(),
            quant_file: pipeline.cache_file().and_then(|path| {
                crate::provenance::file_hash(path, resolved.hash_cache.as_deref()).ok()
            }),
            files: resolved.files,
            engine: EngineBuild {
                name: "huatuo".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                git_commit: option_env!("HUATUO_GIT_COMMIT").map(str::to_string),
                endpoint: None,
            },
        };
        let caches = Caches::new(&pipeline.model);
        Ok(Loaded {
            pipeline,
            info,
            caches,
            spec: spec.clone(),
        })
    }

    /// Drops the loaded model (and its caches), reported as the `Unload` stage of load `id`.
    fn unload_for(&mut self, id: RequestId) {
        let progress = |done| Event::LoadProgress {
            id,
            stage: LoadStage::Unload,
            done,
            total: 1,
        };
        self.emit(progress(0));
        self.loaded = None;
        self.emit(progress(1));
    }

    /// Reports a failed (or cancelled) load of `spec`; the model loaded before (`previous`)
    /// is still there, or is loaded again if it made room, and `Restored` says which it is.
    fn load_failed(
        &mut self,
        id: RequestId,
        spec: &ModelSpec,
        error: &str,
        previous: Option<ModelSpec>,
    ) {
        if self.loaded.is_none() {
            if let Some(previous) = previous {
                let reloaded = (self.resolve(id, &previous).map_err(|e| e.message))
                    .and_then(|r| self.load_resolved(id, &previous, r));
                self.loaded = reloaded.ok();
            }
        }
        let kept = self.loaded.as_ref().map(|l| l.info.clone());
        // The model is named once: an error that already names it (a folder that is missing or
        // not a checkpoint) is not prefixed with it again.
        let error = one_line(error);
        let what = if error.contains(&spec.source) {
            format!("cannot load the model: {error}")
        } else {
            format!("cannot load model {}: {error}", spec.source)
        };
        let error = match &kept {
            Some(info) => format!("{what}; {} is still loaded", info.source),
            None => format!("{what}; no model is loaded"),
        };
        self.emit(failed(id, FailureKind::Model, error, ""));
        if let Some(info) = kept {
            self.emit(Event::Restored { id, info });
        }
    }

    /// Answers one turn: `Started`, `Token`s, then `Finished`, or `Failed` with the partial
    /// answer.
    fn generate(&mut self, id: RequestId, request: &GenerateRequest) {
        let event = match self.answer(id, request) {
            Ok(completion) => Event::Finished { id, completion },
            Err(Failure { error, partial }) => {
                failed(id, failure_kind(&error), error.to_string(), &partial)
            }
        };
        self.emit(event);
    }

    /// The answer to one turn, as `chat()` computes it (reference §3.1, §3.4): the prompt
    /// from the whole history, every image of the conversation in order, then generation,
    /// streaming each printable piece as a `Token` and stopping within a token of a cancel.
    /// Cached image features and KV positions are reused where they are exactly what a full
    /// recomputation would compute.
    fn answer(&mut self, id: RequestId, request: &GenerateRequest) -> Result<Completion, Failure> {
        let Some(loaded) = &mut self.loaded else {
            return Err(EngineError::NotLoaded.into());
        };
        let pipeline = &loaded.pipeline;
        let caches = &mut loaded.caches;
        let limit = crate::protocol::max_images(&request.history);
        if request.images.len() > limit {
            return Err(EngineError::TooManyImages {
                count: request.images.len(),
                limit,
            }
            .into());
        }
        let params = loaded.info.defaults.with(&request.sampling);
        params.validate().map_err(EngineError::Sampling)?;
        let ids = pipeline.conversation_ids(&request.history, &request.user)?;
        let prompt = prompt_stats(&ids, &loaded.info);
        let image_count = request.history_images.len() + request.images.len();
        if prompt.images != image_count {
            return Err(EngineError::Model(ModelError::ImageCount {
                placeholders: prompt.images,
                images: image_count,
            })
            .into());
        }
        if let Err(EngineError::ContextOverflow {
            total,
            text,
            images,
            per_image,
            limit,
            ..
        }) = pipeline.check_context(&ids)
        {
            let turns = pipeline.turn_positions(&request.history)?;
            let earlier: Vec<String> = (turns.iter().enumerate())
                .map(|(i, (positions, images))| match images {
                    0 => format!("{}: {positions}", i + 1),
                    1 => format!("{}: {positions} (1 image)", i + 1),
                    n => format!("{}: {positions} ({n} images)", i + 1), // n ≥ 2
                })
                .collect();
            let earlier = if earlier.is_empty() {
                String::new()
            } else {
                format!("; positions of the earlier turns: {}", earlier.join(", "))
            };
            return Err(EngineError::ContextOverflow {
                total,
                text,
                images,
                per_image,
                limit,
                earlier,
            }
            .into());
        }
        let mut completion = Completion {
            text: String::new(),
            history_text: String::new(),
            stop: Stop::Cancelled,
            stats: GenerationStats {
                prompt,
                ..GenerationStats::default()
            },
            params: params.clone(),
        };
        if self.signals.stop_requested(id) {
            return Ok(completion);
        }
        let start = Instant::now();
        let views = (request.history_images.iter())
            .chain(&request.images)
            .map(image_view)
            .collect::<Result<Vec<_>, _>>()?;
        let images = pipeline.prepare_images(&views, &mut caches.features)?;
        let preprocess = start.elapsed();
        let (events, signals, faults) = (&self.events, &self.signals, self.faults);
        let _ = events.send(Event::Started {
            id,
            prompt,
            params: params.clone(),
        });

        let mut streamed = String::new();
        let mut calls = 0usize;
        let on_text = |piece: &str| {
            faults.before_token(calls)?;
            calls += 1;
            if !piece.is_empty() {
                let token = Event::Token {
                    id,
                    text: piece.to_owned(),
                };
                if events.send(token).is_err() {
                    return Ok(ControlFlow::Break(()));
                }
                streamed.push_str(piece);
            }
            if signals.stop_requested(id) {
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        };
        let result = pipeline.generate_cached(&ids, images, caches, &params, on_text);
        let answer = result.map_err(|error| Failure {
            error: Box::new(error),
            partial: streamed.clone(),
        })?;
        completion.stats = generation_stats(prompt, &answer, preprocess);
        // Uncancelled, the streamed pieces are the stripped answer; cancelled, they are the
        // part of it no further token could have changed, a prefix of the full answer.
        completion.text = if answer.stop == Stop::Cancelled {
            streamed
        } else {
            answer.text
        };
        completion.history_text = answer.raw;
        completion.stop = answer.stop;
        Ok(completion)
    }
}

fn failed(id: RequestId, kind: FailureKind, error: String, partial: &str) -> Event {
    Event::Failed {
        id,
        kind,
        error: one_line(&error),
        partial: partial.to_owned(),
    }
}

/// The error a [`Faults::fail_after_tokens`] fault raises: a model computation error.
/// An image of a request as the pipeline reads it: its file and, for DICOM, the window and
/// frame it is shown with (a window that does not parse is bad input naming the image).
fn image_view(image: &ImageRef) -> Result<(PathBuf, ImageOptions), EngineError> {
    let window = match &image.window {
        None => None,
        Some(w) => Some(w.parse().map_err(|e| EngineError::View {
            path: image.path.clone(),
            reason: format!("window {w:?}: {e}"),
        })?),
    };
    Ok((
        image.path.clone(),
        ImageOptions {
            window,
            frame: image.frame,
        },
    ))
}

/// Which kind of failure an error is, so front ends can react: bad input can be fixed by the
/// user's next request; a model problem needs another `Load`.
fn failure_kind(error: &EngineError) -> FailureKind {
    match error {
        EngineError::Image { .. }
        | EngineError::View { .. }
        | EngineError::TooManyImages { .. }
        | EngineError::ContextOverflow { .. }
        | EngineError::Sampling(_)
        | EngineError::TextTooLong { .. }
        | EngineError::Model(ModelError::ImageCount { .. }) => FailureKind::BadInput,
        EngineError::Device(..) | EngineError::NotLoaded | EngineError::NonFiniteLogits { .. } => {
            FailureKind::Model
        }
        EngineError::Model(_) => FailureKind::Internal,
    }
}

/// Error texts are shown on one line (a status bar, one stderr line per failure).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a prompt of `ids` (with one sentinel per image) fills the model's context.
fn prompt_stats(ids: &[i64], info: &ModelInfo) -> PromptStats {
    let images = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
    let text_tokens = ids.len() - images;
    let image_tokens = images * info.tokens_per_image;
    PromptStats {
        text_tokens,
        images,
        image_tokens,
        total: text_tokens + image_tokens,
        context_length: info.context_length,
    }
}

/// The costs of one answer. `preprocess` is the time spent reading, hashing and resizing the
/// images before the pipeline ran, counted in the image time and the time to first token.
/// Prefill speed is prompt positions run (not reused) per second of the prefill forward pass;
/// decode speed counts the forward passes of the decode loop (one per token after the first).
fn generation_stats(prompt: PromptStats, answer: &Answer, preprocess: Duration) -> GenerationStats {
    let generated_tokens = answer.tokens.len();
    let timings = &answer.timings;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rate = |n: usize, d: Duration| {
        let secs = d.as_secs_f64();
        if n == 0 || secs <= 0.0 {
            0.0
        } else {
            n as f64 / secs
        }
    };
    GenerationStats {
        prompt,
        generated_tokens,
        image_encode_ms: ms(preprocess + timings.image_encode),
        time_to_first_token_ms: if generated_tokens == 0 {
            0.0
        } else {
            ms(preprocess + timings.first_token)
        },
        prefill_tokens_per_s: rate(
            prompt.total.saturating_sub(answer.reused_positions),
            timings.prefill,
        ),
        decode_tokens_per_s: rate(generated_tokens.saturating_sub(1), timings.decode),
        reused_positions: answer.reused_positions,
        images_encoded: answer.images_encoded,
        images_from_cache: answer.images_from_cache,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timings;

    fn info() -> ModelInfo {
        ModelInfo {
            source: "x".into(),
            path: PathBuf::from("x"),
            repo: None,
            revision: None,
            family: "qwen2".into(),
            dtype: "f32".into(),
            device: "cpu".into(),
            quantization: "none".into(),
            context_length: 4096,
            tokens_per_image: 576,
            defaults: crate::protocol::SamplingParams::default(),
            files: Vec::new(),
            quant_file: None,
            engine: Default::default(),
        }
    }

    #[test]
    fn prompt_stats_count_images_as_their_positions() {
        let ids = [5, IMAGE_TOKEN_INDEX, 6, 7, IMAGE_TOKEN_INDEX, 8];
        let s = prompt_stats(&ids, &info());
        assert_eq!(
            s,
            PromptStats {
                text_tokens: 4,
                images: 2,
                image_tokens: 1152,
                total: 1156,
                context_length: 4096,
            }
        );
    }

    fn answer(generated: usize, timings: Timings, reused_positions: usize) -> Answer {
        Answer {
            text: String::new(),
            raw: String::new(),
            tokens: vec![0; generated],
            prompt_tokens: 0,
            stop: Stop::Length,
            timings,
            reused_positions,
            images_encoded: 1,
            images_from_cache: 2,
        }
    }

    #[test]
    fn stats_rates_and_times() {
        let timings = Timings {
            image_encode: Duration::from_millis(30),
            prefill: Duration::from_millis(500),
            decode: Duration::from_secs(2),
            first_token: Duration::from_millis(600),
        };
        let prompt = PromptStats {
            total: 1000,
            ..PromptStats::default()
        };
        let s = generation_stats(
            prompt,
            &answer(11, timings.clone(), 0),
            Duration::from_millis(20),
        );
        assert_eq!(s.generated_tokens, 11);
        assert!((s.image_encode_ms - 50.0).abs() < 1e-9);
        assert!((s.time_to_first_token_ms - 620.0).abs() < 1e-9);
        assert!((s.prefill_tokens_per_s - 2000.0).abs() < 1e-9);
        assert!((s.decode_tokens_per_s - 5.0).abs() < 1e-9);
        // Reused positions were not run: the prefill rate counts the other 400.
        let s = generation_stats(prompt, &answer(11, timings, 600), Duration::ZERO);
        assert!((s.prefill_tokens_per_s - 800.0).abs() < 1e-9);
        assert_eq!(
            (s.reused_positions, s.images_encoded, s.images_from_cache),
            (600, 1, 2)
        );
        // Nothing generated, nothing timed: no division by zero, no fake numbers.
        let s = generation_stats(prompt, &answer(0, Timings::default(), 0), Duration::ZERO);
        assert_eq!(
            (
                s.time_to_first_token_ms,
                s.prefill_tokens_per_s,
                s.decode_tokens_per_s
            ),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn failure_kinds() {
        let bad = [
            EngineError::TooManyImages { count: 6, limit: 5 },
            EngineError::Sampling("x".into()),
            EngineError::ContextOverflow {
                total: 5000,
                text: 10,
                images: 8,
                per_image: 576,
                limit: 4096,
                earlier: String::new(),
            },
            EngineError::Model(ModelError::ImageCount {
                placeholders: 1,
                images: 2,
            }),
        ];
        for e in &bad {
            assert_eq!(failure_kind(e), FailureKind::BadInput, "{e}");
        }
        assert_eq!(failure_kind(&EngineError::NotLoaded), FailureKind::Model);
        let computation = ModelError::Candle(candle_core::Error::Msg("nan".into()));
        assert_eq!(
            failure_kind(&EngineError::Model(computation)),
            FailureKind::Internal
        );
    }

    #[test]
    fn errors_fit_on_one_line() {
        assert_eq!(one_line("a\n  b\n\nc  "), "a; b; c");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn cancel_signals_clear_when_their_command_is_dequeued() {
        let s = Signals::default();
        assert!(!s.stop_requested(1));
        s.cancel(1);
        assert!(s.stop_requested(1));
        assert!(!s.stop_requested(2));
        s.forget(1);
        assert!(!s.stop_requested(1));
        s.shutdown.store(true, Ordering::SeqCst);
        assert!(s.stop_requested(2));
    }

    #[test]
    fn local_resolver_wants_a_directory() {
        let mut resolve = crate::engine::local_resolver();
        let spec = |source: &str| ModelSpec {
            source: source.into(),
            revision: None,
            device: crate::protocol::DevicePref::Cpu,
            dtype: crate::protocol::DType::F32,
            offline: true,
            quant: None,
        };
        let err = resolve(&spec("/no/such/dir"), &mut |_, _, _| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(err.message.contains("/no/such/dir"), "{err:?}");
        let dir = std::env::temp_dir();
        let found = resolve(&spec(&dir.to_string_lossy()), &mut |_, _, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(found.dir.is_dir());
        assert_eq!((found.repo, found.revision), (None, None));
    }
}
