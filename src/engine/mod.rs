//! The model engine: one worker thread owns the device and the loaded model and answers
//! plain messages ([`crate::protocol`]); front ends (`ask`, the TUI) hold an [`EngineHandle`]. The
//! worker builds each prompt exactly as the reference does, prefills and streams the answer
//! (`pipeline` is the synchronous core it runs). Across turns it keeps the encoded images and
//! the KV cache of the conversation ([`cache`]) and runs only what changed, with the answer a
//! full recomputation gives. Nothing here prints.
//!
//! Models are found through an injected [`Resolver`], so the engine knows nothing of the hub
//! or the cache layout (the binary injects the hub's; [`local_resolver`] takes checkpoint
//! directories only). Cancellation reaches a busy worker
//! within one token through state shared with the handle, not only through the queue.

pub mod cache;
mod faults;
mod pipeline;
pub mod remote;
mod worker;

use std::path::PathBuf;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use faults::Faults;
pub use pipeline::{Answer, EngineError, Pipeline, Timings};
pub use remote::model_input_png;

use crate::protocol::{
    Command, Event, FailureKind, FileHash, LoadStage, ModelSpec, Quant, RequestId,
};
use std::ops::ControlFlow;
use worker::{Signals, Worker};

/// Finds (and, with the hub, downloads) the checkpoint directory of a [`ModelSpec`],
/// reporting progress as `(stage, done, total)`; the progress callback answers `Break` when
/// the load was cancelled, and the resolver then stops as soon as it can. Injected so the
/// worker needs no knowledge of the hub or the cache layout.
pub type Resolver = Box<
    dyn FnMut(
            &ModelSpec,
            &mut dyn FnMut(LoadStage, u64, u64) -> ControlFlow<()>,
        ) -> Result<ResolvedModel, ResolveError>
        + Send,
>;

/// Why a resolver could not give a model: one line naming what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    pub message: String,
    /// The model does not fit in the memory available now (it might once the loaded model
    /// is dropped).
    pub out_of_memory: bool,
}

impl ResolveError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            out_of_memory: false,
        }
    }

    pub fn cancelled() -> Self {
        Self::new("cancelled")
    }
}

/// Where a resolver found a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The checkpoint directory to load.
    pub dir: PathBuf,
    /// The hub repo id, when the model came from the hub.
    pub repo: Option<String>,
    /// The hub commit, when the model came from the hub.
    pub revision: Option<String>,
    /// The weight quantization to load with.
    pub quant: Quant,
    /// Where quantized weight files are cached (needed unless `quant` is `Quant::None`).
    pub quant_cache_dir: Option<PathBuf>,
    /// Every file of the checkpoint with its SHA-256, for the record (empty if unknown).
    pub files: Vec<FileHash>,
    /// Where file hashes are cached by size and mtime (huatuo's cache dir), so the quantized
    /// weights' file is hashed once, not at every load.
    pub hash_cache: Option<PathBuf>,
}

/// A resolver for local checkpoint directories only (tests, tools): the source must name an
/// existing directory.
pub fn local_resolver() -> Resolver {
    Box::new(|spec, _progress| {
        let dir = PathBuf::from(&spec.source);
        if !dir.is_dir() {
            return Err(ResolveError::new(format!(
                "{} is not a checkpoint directory (give the path of a downloaded HuatuoGPT-Vision checkpoint)",
                spec.source
            )));
        }
        Ok(ResolvedModel {
            dir: std::fs::canonicalize(&dir).unwrap_or(dir),
            repo: None,
            revision: None,
            quant: spec.quant.unwrap_or(Quant::None),
            quant_cache_dir: Some(std::env::temp_dir().join("huatuo-quant")),
            files: Vec::new(),
            hash_cache: None,
        })
    })
}

/// The worker has ended (after `Shutdown`), so a command can no longer be queued.
#[derive(Debug, thiserror::Error)]
#[error("the model worker has stopped")]
pub struct WorkerStopped;

/// Starts the model worker.
pub struct Engine;

impl Engine {
    /// Spawns the worker thread with no model loaded; send [`Command::Load`] first.
    pub fn spawn(resolver: Resolver) -> EngineHandle {
        Self::spawn_with_faults(resolver, Faults::from_env())
    }

    /// Spawns a worker that answers through a remote OpenAI-compatible endpoint instead of a
    /// local model (see [`remote`]): the same commands and events.
    pub fn spawn_remote(remote: remote::Remote) -> EngineHandle {
        let (command_tx, command_rx) = mpsc::channel();
        let (event_tx, event_rx) = mpsc::channel();
        let signals = Arc::new(Signals::default());
        let worker = remote::RemoteWorker::new(remote, event_tx.clone(), Arc::clone(&signals));
        Self::handle(
            std::thread::Builder::new()
                .name("huatuo-remote".into())
                .spawn(move || worker.run(command_rx)),
            command_tx,
            event_tx,
            event_rx,
            signals,
        )
    }

    /// [`Engine::spawn`] with injected faults (only builds with the `test-support` feature
    /// can make any).
    pub fn spawn_with_faults(resolver: Resolver, faults: Faults) -> EngineHandle {
        let (command_tx, command_rx) = mpsc::channel();
        let (event_tx, event_rx) = mpsc::channel();
        let signals = Arc::new(Signals::default());
        let worker = Worker::new(resolver, event_tx.clone(), Arc::clone(&signals), faults);
        let spawned = std::thread::Builder::new()
            .name("huatuo-engine".into())
            .spawn(move || worker.run(command_rx));
        Self::handle(spawned, command_tx, event_tx, event_rx, signals)
    }

    fn handle(
        spawned: std::io::Result<JoinHandle<()>>,
        command_tx: Sender<Command>,
        event_tx: Sender<Event>,
        event_rx: Receiver<Event>,
        signals: Arc<Signals>,
    ) -> EngineHandle {
        let (thread, dead) = match spawned {
            Ok(thread) => (Some(thread), None),
            Err(e) => (
                None,
                Some((
                    event_tx,
                    format!("cannot start the model worker thread: {e}"),
                )),
            ),
        };
        EngineHandle {
            commands: command_tx,
            events: event_rx,
            signals,
            thread,
            dead,
        }
    }
}

/// The front end's end of the engine: send commands, read events, cancel a request.
/// Dropping it stops the worker (a generation in progress ends within one token).
pub struct EngineHandle {
    commands: Sender<Command>,
    events: Receiver<Event>,
    signals: Arc<Signals>,
    thread: Option<JoinHandle<()>>,
    /// Set when the thread could not start: requests are answered here with this error
    /// instead of leaving the front end waiting.
    dead: Option<(Sender<Event>, String)>,
}

impl EngineHandle {
    /// Queues a command. `Cancel` and `Shutdown` also take effect at once through shared
    /// state, even while the worker is busy generating. Fails only once the worker has ended
    /// (after `Shutdown`); if its thread never started, each `Load` and `Generate` is
    /// answered with a `Failed` event saying why.
    pub fn send(&self, command: Command) -> Result<(), WorkerStopped> {
        match &command {
            Command::Cancel { id } => self.signals.cancel(*id),
            Command::Shutdown => self.signals.shutdown.store(true, Ordering::SeqCst),
            _ => {}
        }
        if let Some((events, error)) = &self.dead {
            if let Command::Load { id, .. } | Command::Generate { id, .. } = &command {
                let _ = events.send(Event::Failed {
                    id: *id,
                    kind: FailureKind::Internal,
                    error: error.clone(),
                    partial: String::new(),
                });
            }
            return Ok(());
        }
        self.commands.send(command).map_err(|_| WorkerStopped)
    }

    /// The events, in the order they happen. Use `recv_timeout` or `try_recv` to keep a UI
    /// responsive; a disconnected channel means the worker has stopped.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Stops request `id` within one token (a generation ends with `Finished` and
    /// `Stop::Cancelled`, keeping its partial text; a queued one ends before it starts).
    /// Unknown and finished ids are ignored.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.send(Command::Cancel { id });
    }

    /// Stops the worker and waits for it: at most one token of a generation in progress, but
    /// a load in progress runs to its end.
    pub fn shutdown(mut self) {
        let _ = self.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.signals.shutdown.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Shutdown);
    }
}
