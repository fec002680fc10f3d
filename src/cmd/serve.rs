//! `huatuo serve`: the loaded model behind an OpenAI-compatible API (the endpoints of
//! llama-server and vLLM), for tools that speak it (Open WebUI, aichat, the `openai` package,
//! curl, another huatuo's `--endpoint`).
//!
//! - `GET /health`: 503 while the model loads, then 200 `{"status":"ok"}`.
//! - `GET /v1/models`: the served model (with a `huatuo` field: its sampling defaults).
//! - `POST /v1/chat/completions`: plain JSON or `stream: true` server-sent events.
//!
//! Every prompt is built by the conversation core exactly as the reference's multi-turn
//! `chat()` builds it, so a client that sends back what it received gets, turn after turn, the
//! answers of `huatuo ask --session`. Requests queue on the one model (the engine runs one
//! generation at a time); its image-feature and prefix caches carry over between requests,
//! so the next turn of a conversation costs what it costs in the TUI. A client that goes away
//! cancels its answer at the next token.
//!
//! HTTP is tiny_http's (synchronous threads, like the engine; no async runtime to carry for
//! one model that answers one request at a time). Streamed responses are written on the raw
//! connection so each event leaves at once (tiny_http's own chunked writer buffers 8 KiB).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::{engine_for, model_spec};
use crate::chat::conversation::user_text;
use crate::chat::images::ImageStore;
use crate::chat::session::{Session, Turn};
use crate::cli::{ServeArgs, SystemPrompt};
use crate::config::{Dirs, Settings};
use crate::engine::EngineHandle;
use crate::model::preprocess::{self, ImageOptions};
use crate::protocol::openai::{
    self, ChatRequest, ChatResponse, Choice, Chunk, ChunkChoice, Content, Delta, Extension,
    Message, ModelEntry, ModelList, ServedModel, Usage,
};
use crate::protocol::{
    Command, Completion, Event, FailureKind, GenerateRequest, ImageRef, ModelInfo, RequestId,
    SamplingOverrides, MAX_IMAGES_INFERENCE, MAX_IMAGES_PER_TURN,
};

const LOAD_ID: RequestId = 1;
/// A request body is refused past this size (five images per turn over a long conversation,
/// base64-encoded, stay well below it).
const MAX_BODY: usize = 256 << 20;
/// Connections handled at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 64;
/// Answers remembered so that one sent back stripped is put in the history unstripped.
const ANSWER_MEMORY: usize = 1024;
/// A remote image is refused past this size.
const MAX_REMOTE_IMAGE: u64 = 64 << 20;
/// While a non-streamed answer is generated, a space is written this often so a client that
/// went away is noticed (JSON allows leading whitespace).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What the handlers share.
struct Shared {
    served: String,
    api_key: Option<String>,
    /// The server's own sampling settings (flags over config.toml); a request's fields go
    /// over them.
    overrides: SamplingOverrides,
    system: SystemPrompt,
    allow_files: bool,
    allow_remote: bool,
    state: Mutex<State>,
    jobs: Mutex<Sender<Job>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    answers: Mutex<Answers>,
    /// Where each request's images are written while it runs.
    images: PathBuf,
    started: u64,
}

#[derive(Default)]
struct State {
    info: Option<ModelInfo>,
    fatal: Option<String>,
}

enum Job {
    Generate {
        id: RequestId,
        request: Box<GenerateRequest>,
        events: Sender<Event>,
    },
    Cancel(RequestId),
}

/// Stripped answers this server gave, with the unstripped text the reference keeps in its
/// history: a client that sends back the `content` it received (stripped, as `inference()`
/// returns it) still gets the reference's next prompt.
#[derive(Default)]
struct Answers {
    order: VecDeque<String>,
    raw: HashMap<String, String>,
}

impl Answers {
    fn remember(&mut self, stripped: &str, raw: &str) {
        if stripped == raw || self.raw.contains_key(stripped) {
            return;
        }
        if self.order.len() >= ANSWER_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.raw.remove(&old);
            }
        }
        self.order.push_back(stripped.to_string());
        self.raw.insert(stripped.to_string(), raw.to_string());
    }

    fn history_text(&self, sent: &str) -> String {
        self.raw
            .get(sent)
            .cloned()
            .unwrap_or_else(|| sent.to_string())
    }
}

/// An error answered as an OpenAI error object.
#[derive(Debug)]
struct ApiError {
    status: u16,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> String {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.code}})
            .to_string()
    }

    /// The error of a failed engine request.
    fn of_failure(kind: FailureKind, message: String) -> Self {
        match kind {
            FailureKind::BadInput => Self::bad(
                if message.contains("context window") {
                    "context_length_exceeded"
                } else {
                    "invalid_request"
                },
                message,
            ),
            FailureKind::Model => Self {
                status: 503,
                kind: "unavailable_error",
                code: "model_unavailable",
                message,
            },
            FailureKind::Internal => Self {
                status: 500,
                kind: "server_error",
                code: "internal_error",
                message,
            },
        }
    }
}

/// Runs the server until Ctrl-C.
pub fn run(args: ServeArgs) -> Result<()> {
    let dirs = Dirs::from_env()?;
    let settings = Settings::load(&dirs.config_file())?;
    let overrides = super::sampling(&args.sampling, &settings)?;
    let spec = model_spec(&args.model, &args.runtime, &settings)?;
    let served = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| served_name(&spec.source));
    let server = tiny_http::Server::http((args.host.as_str(), args.port))
        .map_err(|e| anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("the server has no IP address"))?;
    let images = dirs.cache.join(format!("serve-{}", std::process::id()));
    std::fs::create_dir_all(&images)
        .with_context(|| format!("cannot create {}", images.display()))?;
    let _cleanup = RemoveOnDrop(images.clone());

    let (jobs_tx, jobs_rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        served,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        overrides,
        system: args.system_prompt,
        allow_files: args.allow_file_images,
        allow_remote: args.allow_remote_images,
        state: Mutex::new(State::default()),
        jobs: Mutex::new(jobs_tx),
        next_id: AtomicU64::new(LOAD_ID + 1),
        connections: AtomicUsize::new(0),
        answers: Mutex::new(Answers::default()),
        images,
        started: unix_now(),
    });
    let engine = engine_for(false);
    {
        let shared = Arc::clone(&shared);
        let spec = spec.clone();
        std::thread::Builder::new()
            .name("huatuo-serve-dispatch".into())
            .spawn(move || dispatch(engine, spec, jobs_rx, &shared))
            .context("cannot start the dispatcher thread")?;
    }
    let url = format!("http://{addr}/v1");
    println!("{url}");
    let _ = std::io::stdout().flush();
    eprintln!(
        "huatuo serve: listening on {url} (model {:?}, loading {}){}",
        shared.served,
        spec.source,
        if shared.api_key.is_some() {
            ", API key required"
        } else {
            ""
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let mut announced = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            eprintln!("huatuo serve: stopped");
            return Ok(());
        }
        {
            let state = lock(&shared.state);
            if let Some(error) = &state.fatal {
                bail!("{error}");
            }
            if let (false, Some(info)) = (announced, &state.info) {
                eprintln!(
                    "huatuo serve: ready: {} ({}, {}, {} positions)",
                    info.source, info.family, info.quantization, info.context_length
                );
                announced = true;
            }
        }
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => bail!("the server stopped accepting connections: {e}"),
        };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            let busy = ApiError {
                status: 503,
                kind: "unavailable_error",
                code: "busy",
                message: format!("more than {MAX_CONNECTIONS} requests at once: try again"),
            };
            respond_error(request, &busy);
            continue;
        }
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("huatuo-serve-request".into())
            .spawn(move || {
                handle(request, &shared);
                shared.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("huatuo serve: cannot start a request thread: {e}");
        }
    }
}

/// The name a model is served under: a short name or repo id as given; a directory by its
/// own name (never the server's paths).
fn served_name(source: &str) -> String {
    let path = Path::new(source);
    if path.is_dir() {
        if let Some(name) = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            return name;
        }
    }
    source.to_string()
}

/// Owns the engine: loads the model, sends each job's commands and routes each event to the
/// request it belongs to.
fn dispatch(
    engine: EngineHandle,
    spec: crate::protocol::ModelSpec,
    jobs: Receiver<Job>,
    shared: &Shared,
) {
    #[cfg(feature = "test-support")]
    if let Some(delay) = std::env::var("HUATUO_TEST_LOAD_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let fatal = |error: String| lock(&shared.state).fatal = Some(error);
    if engine.send(Command::Load { id: LOAD_ID, spec }).is_err() {
        return fatal("the model worker has stopped".into());
    }
    let mut routes: HashMap<RequestId, Sender<Event>> = HashMap::new();
    loop {
        loop {
            match jobs.try_recv() {
                Ok(Job::Generate {
                    id,
                    request,
                    events,
                }) => {
                    routes.insert(id, events);
                    let _ = engine.send(Command::Generate { id, request });
                }
                Ok(Job::Cancel(id)) => engine.cancel(id),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let event = match engine.events().recv_timeout(Duration::from_millis(10)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return fatal("the model worker stopped unexpectedly".into())
            }
        };
        match event {
            Event::Loaded { id: LOAD_ID, info } => lock(&shared.state).info = Some(info),
            Event::Failed {
                id: LOAD_ID, error, ..
            } => return fatal(format!("cannot load the model: {error}")),
            Event::Started { id, .. } | Event::Token { id, .. } => {
                if let Some(route) = routes.get(&id) {
                    if route.send(event).is_err() {
                        engine.cancel(id);
                    }
                }
            }
            Event::Finished { id, .. } | Event::Failed { id, .. } => {
                if let Some(route) = routes.remove(&id) {
                    let _ = route.send(event);
                }
            }
            _ => {}
        }
    }
}

fn handle(mut request: tiny_http::Request, shared: &Shared) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let method = request.method().clone();
    let result = match (method.as_str(), path.as_str()) {
        ("GET", "/health" | "/v1/health") => {
            let state = lock(&shared.state);
            if state.info.is_some() {
                respond_json(request, 200, &json!({"status": "ok"}).to_string());
            } else {
                respond_error(request, &loading());
            }
            return;
        }
        ("GET", "/v1/models") => authorize(&request, shared).and_then(|()| models(shared)),
        ("POST", "/v1/chat/completions") => {
            match authorize(&request, shared).and_then(|()| read_body(&mut request)) {
                Ok(body) => return chat(request, &body, shared),
                Err(e) => Err(e),
            }
        }
        (_, "/health" | "/v1/health" | "/v1/models" | "/v1/chat/completions") => Err(ApiError {
            status: 405,
            kind: "invalid_request_error",
            code: "method_not_allowed",
            message: format!("{method} is not allowed on {path}"),
        }),
        _ => Err(ApiError {
            status: 404,
            kind: "not_found_error",
            code: "not_found",
            message: format!(
                "no such endpoint: {path} (this server has /health, /v1/models and /v1/chat/completions)"
            ),
        }),
    };
    match result {
        Ok(body) => respond_json(request, 200, &body),
        Err(e) => respond_error(request, &e),
    }
}

fn loading() -> ApiError {
    ApiError {
        status: 503,
        kind: "unavailable_error",
        code: "model_loading",
        message: "the model is loading: try again shortly".into(),
    }
}

fn authorize(request: &tiny_http::Request, shared: &Shared) -> Result<(), ApiError> {
    let Some(key) = &shared.api_key else {
        return Ok(());
    };
    let given = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| {
            let v = h.value.as_str();
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let unauthorized = |message: &str| ApiError {
        status: 401,
        kind: "authentication_error",
        code: "invalid_api_key",
        message: message.into(),
    };
    match given {
        None => Err(unauthorized(
            "this server needs an API key: send it as `Authorization: Bearer KEY`",
        )),
        Some(g) if !same_bytes(g.as_bytes(), key.as_bytes()) => {
            Err(unauthorized("the API key is wrong"))
        }
        Some(_) => Ok(()),
    }
}

/// Compares without stopping at the first difference (the time taken does not tell how much
/// of a guessed key was right).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn models(shared: &Shared) -> Result<String, ApiError> {
    let info = lock(&shared.state).info.clone().ok_or_else(loading)?;
    let list = ModelList {
        object: "list".into(),
        data: vec![ModelEntry {
            id: shared.served.clone(),
            object: "model".into(),
            created: shared.started,
            owned_by: "huatuo".into(),
            max_model_len: Some(info.context_length),
            huatuo: Some(ServedModel {
                defaults: info.defaults.with(&shared.overrides),
                context_length: info.context_length,
                tokens_per_image: info.tokens_per_image,
            }),
        }],
    };
    serde_json::to_string(&list)
        .map_err(|e| ApiError::of_failure(FailureKind::Internal, e.to_string()))
}

fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError {
        status: 413,
        kind: "invalid_request_error",
        code: "request_too_large",
        message: format!("the request body is over {} MiB", MAX_BODY >> 20),
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad("bad_body", format!("cannot read the request body: {e}")))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// One request's images on disk, removed when it ends.
struct RequestDir(PathBuf);

impl Drop for RequestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A chat request turned into the conversation core's terms.
struct Prepared {
    request: GenerateRequest,
    turn: Turn,
    earlier: Vec<Turn>,
    stream: bool,
    include_usage: bool,
    prompt_note: Option<String>,
    images: usize,
}

fn chat(request: tiny_http::Request, body: &[u8], shared: &Shared) {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let dir = RequestDir(shared.images.join(id.to_string()));
    let info = match lock(&shared.state).info.clone() {
        Some(info) => info,
        None => return respond_error(request, &loading()),
    };
    let prepared = match prepare(body, shared, &info, &dir.0) {
        Ok(p) => p,
        Err(e) => {
            log(id, &format!("{} {}", e.status, e.message));
            return respond_error(request, &e);
        }
    };
    let (events_tx, events) = mpsc::channel();
    let job = Job::Generate {
        id,
        request: Box::new(prepared.request.clone()),
        events: events_tx,
    };
    if lock(&shared.jobs).send(job).is_err() {
        let e = ApiError::of_failure(FailureKind::Model, "the model worker has stopped".into());
        return respond_error(request, &e);
    }
    // Queued: wait for the engine to take it (or refuse it).
    let started = loop {
        match events.recv() {
            Ok(Event::Started { .. }) => break true,
            Ok(Event::Failed { kind, error, .. }) => {
                let e = ApiError::of_failure(kind, error);
                log(id, &format!("{} {}", e.status, e.message));
                return respond_error(request, &e);
            }
            Ok(Event::Finished { .. }) | Err(_) => break false,
            Ok(_) => {}
        }
    };
    if !started {
        return respond_error(
            request,
            &ApiError::of_failure(FailureKind::Internal, "the request ended unanswered".into()),
        );
    }
    let name = format!("chatcmpl-{id}");
    let outcome = if prepared.stream {
        stream(request, &events, &name, &prepared, shared)
    } else {
        whole(request, &events, &name, &prepared, shared)
    };
    match outcome {
        Outcome::Done(completion) => {
            lock(&shared.answers).remember(&completion.text, &completion.history_text);
            log(
                id,
                &format!(
                    "200 {}{} images ({} from cache), {} prompt ({} reused) + {} tokens, {:?}",
                    if prepared.stream { "stream, " } else { "" },
                    prepared.images,
                    completion.stats.images_from_cache,
                    completion.stats.prompt.total,
                    completion.stats.reused_positions,
                    completion.stats.generated_tokens,
                    completion.stop
                ),
            );
        }
        Outcome::Gone => {
            let _ = lock(&shared.jobs).send(Job::Cancel(id));
            // Wait for the engine to stop it, so the log says what was generated.
            let tokens = loop {
                match events.recv() {
                    Ok(Event::Finished { completion, .. }) => {
                        break completion.stats.generated_tokens.to_string()
                    }
                    Ok(Event::Failed { .. }) | Err(_) => break "?".into(),
                    Ok(_) => {}
                }
            };
            log(
                id,
                &format!("cancelled: the client went away ({tokens} tokens generated)"),
            );
        }
        Outcome::Failed(e) => log(id, &format!("{} {}", e.status, e.message)),
    }
}

enum Outcome {
    Done(Completion),
    /// The client closed the connection.
    Gone,
    Failed(ApiError),
}

fn log(id: RequestId, what: &str) {
    eprintln!("huatuo serve: chatcmpl-{id}: {what}");
}

/// Checks a chat request and builds the turn as the reference's `chat()` would.
fn prepare(
    body: &[u8],
    shared: &Shared,
    info: &ModelInfo,
    dir: &Path,
) -> Result<Prepared, ApiError> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "invalid_json",
            format!("the request is not valid JSON for a chat completion: {e}"),
        )
    })?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("invalid_n", "n must be 1"));
    }
    if let Some(model) = req.model.as_deref().filter(|m| !m.is_empty()) {
        if model != shared.served {
            return Err(ApiError {
                status: 404,
                kind: "not_found_error",
                code: "model_not_found",
                message: format!(
                    "model {model:?} is not served here; this server serves {:?}",
                    shared.served
                ),
            });
        }
    }
    let overrides = request_overrides(&req, shared, info)?;

    // System messages: HuatuoGPT-Vision was trained without one.
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<ImageRef>, Option<String>)> = Vec::new();
    let mut image_no = 0usize;
    let single = req.messages.iter().filter(|m| m.role == "user").count() == 1;
    let limit = if single {
        MAX_IMAGES_INFERENCE
    } else {
        MAX_IMAGES_PER_TURN
    };
    for (i, message) in req.messages.iter().enumerate() {
        let (text, urls) = message.content.split();
        let n = i + 1;
        match message.role.as_str() {
            "system" | "developer" => {
                if !urls.is_empty() {
                    return Err(ApiError::bad("invalid_message", format!("message {n}: a system message cannot carry images")));
                }
                if text.trim().is_empty() {
                    continue;
                }
                if shared.system == SystemPrompt::Refuse {
                    return Err(ApiError::bad(
                        "system_prompt_unsupported",
                        format!(
                            "message {n}: HuatuoGPT-Vision was trained without a system prompt, so this server refuses one (send it inside the first user message, or start the server with --system-prompt prepend)"
                        ),
                    ));
                }
                if !turns.is_empty() {
                    return Err(ApiError::bad("invalid_message", format!("message {n}: a system message must come before the conversation")));
                }
                system.push(text);
            }
            "user" => {
                if turns.last().is_some_and(|t| t.2.is_none()) {
                    return Err(ApiError::bad("invalid_message", format!("message {n}: two user messages in a row (the conversation must alternate user and assistant)")));
                }
                if urls.len() > limit {
                    return Err(ApiError::bad(
                        "too_many_images",
                        format!("message {n}: {} images: at most {limit} per message ({MAX_IMAGES_INFERENCE} in a single question, as the reference's inference(); {MAX_IMAGES_PER_TURN} per turn of a conversation, as its chat(); the model sees 576 positions per image)", urls.len()),
                    ));
                }
                let mut images = Vec::with_capacity(urls.len());
                for (j, url) in urls.iter().enumerate() {
                    image_no += 1;
                    images.push(image(url, n, j + 1, image_no, dir, shared)?);
                }
                turns.push((text, images, None));
            }
            "assistant" => {
                let Some(last) = turns.last_mut().filter(|t| t.2.is_none()) else {
                    return Err(ApiError::bad("invalid_message", format!("message {n}: an assistant message must follow a user message")));
                };
                if !urls.is_empty() {
                    return Err(ApiError::bad("invalid_message", format!("message {n}: an assistant message cannot carry images")));
                }
                last.2 = Some(lock(&shared.answers).history_text(&text));
            }
            other => {
                return Err(ApiError::bad(
                    "invalid_message",
                    format!("message {n}: role {other:?} is not supported (user, assistant, or an empty system)"),
                ))
            }
        }
    }
    let Some((text, images, None)) = turns.pop() else {
        return Err(ApiError::bad(
            "invalid_message",
            "the messages must end with a user message",
        ));
    };
    let mut prompt_note = None;
    let mut session = Session::new("");
    let mut all = turns;
    all.push((text, images, None));
    if !system.is_empty() {
        all[0].0 = format!("{}\n{}", system.join("\n"), all[0].0);
        prompt_note = Some(
            "a system message was prepended to the first user turn: the prompt is not the reference's"
                .to_string(),
        );
    }
    let (text, images, _) = all.pop().expect("the last turn");
    let count = all.iter().map(|t| t.1.len()).sum::<usize>() + images.len();
    for (text, images, answer) in all {
        session.turns.push(Turn {
            user: user_text(&text, images.len()),
            text,
            images,
            answer: answer.unwrap_or_default(),
            interrupted: false,
            stop: None,
            record: None,
            model: None,
            settings: None,
            time: 0,
        });
    }
    let (request, turn) = session
        .next_turn(
            &text,
            images,
            &overrides,
            &shared.served,
            &ImageStore::transient(),
        )
        .map_err(|e| ApiError::bad("invalid_image", e.to_string()))?;
    Ok(Prepared {
        request,
        turn,
        earlier: session.turns,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        prompt_note,
        images: count,
    })
}

/// The request's sampling fields over the server's settings; unset ones take the model's
/// defaults (the reference CLI's).
fn request_overrides(
    req: &ChatRequest,
    shared: &Shared,
    info: &ModelInfo,
) -> Result<SamplingOverrides, ApiError> {
    let mut overrides = SamplingOverrides {
        temperature: req.temperature,
        top_k: req.top_k.map(|k| usize::try_from(k).unwrap_or(0)),
        top_p: req.top_p,
        repetition_penalty: req.repetition_penalty,
        max_new_tokens: req.max_completion_tokens.or(req.max_tokens),
        seed: req.seed,
        min_new_tokens: req.min_tokens,
    }
    .or(&shared.overrides);
    if req.ignore_eos == Some(true) {
        // transformers' min_new_tokens masks the end-of-sequence token until that many
        // tokens: set to the maximum, the answer runs to it.
        overrides.min_new_tokens = Some(info.defaults.with(&overrides).max_new_tokens);
    }
    let params = info.defaults.with(&overrides);
    params
        .validate()
        .map_err(|e| ApiError::bad("invalid_sampling", e.replace("-", "_")))?;
    if params.max_new_tokens > info.context_length.max(1) {
        return Err(ApiError::bad(
            "invalid_sampling",
            format!(
                "max_tokens {} is more than the context window ({} positions)",
                params.max_new_tokens, info.context_length
            ),
        ));
    }
    Ok(overrides)
}

/// One image of message `n` (its `j`-th), written where the engine reads it.
fn image(
    url: &str,
    n: usize,
    j: usize,
    image_no: usize,
    dir: &Path,
    shared: &Shared,
) -> Result<ImageRef, ApiError> {
    let what = format!("message {n}, image {j}");
    let bad = |code: &'static str, why: String| ApiError::bad(code, format!("{what}: {why}"));
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let bytes = if lower.starts_with("data:") {
        openai::parse_data_url(url)
            .map_err(|e| bad("invalid_image", e.to_string()))?
            .1
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        if !shared.allow_remote {
            return Err(bad("image_url_refused", "this server does not fetch images from URLs (send the image as a data: URL, or start the server with --allow-remote-images)".into()));
        }
        fetch(url).map_err(|e| bad("invalid_image", e))?
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if !shared.allow_files {
            return Err(bad("image_url_refused", "this server does not read files named by clients (send the image as a data: URL, or start the server with --allow-file-images)".into()));
        }
        preprocess::read_file(Path::new(path)).map_err(|e| bad("invalid_image", e.to_string()))?
    };
    // Decoded once here, so a bad image is refused before the request queues, by its place
    // in the request (never by a path of this server).
    preprocess::load_rgb_bytes(Path::new(&what), &bytes, &ImageOptions::default())
        .map_err(|e| ApiError::bad("invalid_image", e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| {
        ApiError::of_failure(FailureKind::Internal, format!("cannot keep the image: {e}"))
    })?;
    let path = dir.join(format!("image-{image_no}"));
    std::fs::write(&path, &bytes).map_err(|e| {
        ApiError::of_failure(FailureKind::Internal, format!("cannot keep the image: {e}"))
    })?;
    Ok(ImageRef {
        path,
        ..ImageRef::default()
    })
}

fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| format!("cannot fetch it: {e}"))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_REMOTE_IMAGE)
        .read_to_vec()
        .map_err(|e| format!("cannot fetch it: {e}"))
}

fn usage(completion: &Completion) -> Usage {
    Usage::new(
        completion.stats.prompt.total,
        completion.stats.generated_tokens,
    )
}

fn extension(completion: &Completion, prepared: &Prepared, info: Option<&ModelInfo>) -> Extension {
    let mut turn = prepared.turn.clone();
    turn.finish(completion, info, &prepared.earlier);
    let mut record = turn.record.map(Box::new);
    if let Some(r) = record.as_mut() {
        r.prompt_note = prepared.prompt_note.clone();
    }
    Extension {
        history_text: completion.history_text.clone(),
        stop: completion.stop,
        prompt_note: prepared.prompt_note.clone(),
        record,
    }
}

/// A non-streamed answer: headers once the engine has started, a space each second while it
/// generates (so a client that went away is noticed), then the JSON.
fn whole(
    request: tiny_http::Request,
    events: &Receiver<Event>,
    name: &str,
    prepared: &Prepared,
    shared: &Shared,
) -> Outcome {
    let Ok(mut out) = start_response(request, "application/json") else {
        return Outcome::Gone;
    };
    let mut last = Instant::now();
    loop {
        let event = match events.recv_timeout(HEARTBEAT) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                if write_chunk(&mut out, b" ").is_err() {
                    return Outcome::Gone;
                }
                last = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let e =
                    ApiError::of_failure(FailureKind::Internal, "the model worker stopped".into());
                let _ =
                    write_chunk(&mut out, e.body().as_bytes()).and_then(|()| end_chunks(&mut out));
                return Outcome::Failed(e);
            }
        };
        match event {
            Event::Token { .. } if last.elapsed() >= HEARTBEAT => {
                if write_chunk(&mut out, b" ").is_err() {
                    return Outcome::Gone;
                }
                last = Instant::now();
            }
            Event::Finished { completion, .. } => {
                let info = lock(&shared.state).info.clone();
                let response = ChatResponse {
                    id: name.to_string(),
                    object: "chat.completion".into(),
                    created: unix_now(),
                    model: shared.served.clone(),
                    choices: vec![Choice {
                        index: 0,
                        message: Message {
                            role: "assistant".into(),
                            content: Content::Text(completion.text.clone()),
                        },
                        finish_reason: openai::finish_reason(completion.stop).map(str::to_string),
                    }],
                    usage: usage(&completion),
                    huatuo: Some(extension(&completion, prepared, info.as_ref())),
                };
                let body = serde_json::to_string(&response).unwrap_or_default();
                if write_chunk(&mut out, body.as_bytes())
                    .and_then(|()| end_chunks(&mut out))
                    .is_err()
                {
                    return Outcome::Gone;
                }
                return Outcome::Done(completion);
            }
            Event::Failed { kind, error, .. } => {
                // The status is sent already: the error object is the body.
                let e = ApiError::of_failure(kind, error);
                let _ =
                    write_chunk(&mut out, e.body().as_bytes()).and_then(|()| end_chunks(&mut out));
                return Outcome::Failed(e);
            }
            _ => {}
        }
    }
}

/// A streamed answer: one `data:` event per piece of text, a last chunk with the finish
/// reason (and huatuo's extension), the usage chunk when asked for, then `data: [DONE]`.
fn stream(
    request: tiny_http::Request,
    events: &Receiver<Event>,
    name: &str,
    prepared: &Prepared,
    shared: &Shared,
) -> Outcome {
    let Ok(mut out) = start_response(request, "text/event-stream") else {
        return Outcome::Gone;
    };
    let created = unix_now();
    let usage_field = |u: Option<Usage>| prepared.include_usage.then_some(u);
    let chunk = |delta: Delta, finish: Option<&str>, ext: Option<Extension>| Chunk {
        id: name.to_string(),
        object: "chat.completion.chunk".into(),
        created,
        model: shared.served.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_string),
        }],
        usage: usage_field(None),
        huatuo: ext,
    };
    let send = |out: &mut Box<dyn Write + Send>, value: &Chunk| -> std::io::Result<()> {
        let line = format!(
            "data: {}\n\n",
            serde_json::to_string(value).unwrap_or_default()
        );
        write_chunk(out, line.as_bytes())
    };
    let first = chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
        None,
    );
    if send(&mut out, &first).is_err() {
        return Outcome::Gone;
    }
    loop {
        let Ok(event) = events.recv() else {
            let e = ApiError::of_failure(FailureKind::Internal, "the model worker stopped".into());
            let line = format!("data: {}\n\n", e.body());
            let _ = write_chunk(&mut out, line.as_bytes());
            return Outcome::Failed(e);
        };
        match event {
            Event::Token { text, .. } => {
                let piece = chunk(
                    Delta {
                        role: None,
                        content: Some(text),
                    },
                    None,
                    None,
                );
                if send(&mut out, &piece).is_err() {
                    return Outcome::Gone;
                }
            }
            Event::Finished { completion, .. } => {
                let info = lock(&shared.state).info.clone();
                let last = chunk(
                    Delta::default(),
                    Some(openai::finish_reason(completion.stop).unwrap_or("stop")),
                    Some(extension(&completion, prepared, info.as_ref())),
                );
                let mut result = send(&mut out, &last);
                if prepared.include_usage {
                    let mut u = chunk(Delta::default(), None, None);
                    u.choices.clear();
                    u.usage = Some(Some(usage(&completion)));
                    result = result.and_then(|()| send(&mut out, &u));
                }
                if result
                    .and_then(|()| write_chunk(&mut out, b"data: [DONE]\n\n"))
                    .and_then(|()| end_chunks(&mut out))
                    .is_err()
                {
                    return Outcome::Gone;
                }
                return Outcome::Done(completion);
            }
            Event::Failed { kind, error, .. } => {
                let e = ApiError::of_failure(kind, error);
                let line = format!("data: {}\n\n", e.body());
                let _ = write_chunk(&mut out, line.as_bytes()).and_then(|()| end_chunks(&mut out));
                return Outcome::Failed(e);
            }
            _ => {}
        }
    }
}

/// Writes a 200 status line and headers on the raw connection, for a body sent in chunks as
/// it is produced; the connection closes after it.
fn start_response(
    request: tiny_http::Request,
    content_type: &str,
) -> std::io::Result<Box<dyn Write + Send>> {
    let mut out = request.into_writer();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"
    )?;
    out.flush()?;
    Ok(out)
}

fn write_chunk(out: &mut Box<dyn Write + Send>, data: &[u8]) -> std::io::Result<()> {
    write!(out, "{:x}\r\n", data.len())?;
    out.write_all(data)?;
    out.write_all(b"\r\n")?;
    out.flush()
}

fn end_chunks(out: &mut Box<dyn Write + Send>) -> std::io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

fn respond_json(request: tiny_http::Request, status: u16, body: &str) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("a valid header");
    let response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}

fn respond_error(request: tiny_http::Request, error: &ApiError) {
    respond_json(request, error.status, &error.body());
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sent_back_stripped_get_their_history_text() {
        let mut a = Answers::default();
        a.remember("Answer.", " Answer.\n");
        a.remember("same", "same");
        assert_eq!(a.history_text("Answer."), " Answer.\n");
        assert_eq!(a.history_text(" Answer.\n"), " Answer.\n");
        assert_eq!(a.history_text("same"), "same");
        assert_eq!(a.history_text("other"), "other");
        for i in 0..ANSWER_MEMORY + 1 {
            a.remember(&format!("x{i}"), &format!(" x{i}"));
        }
        assert_eq!(a.raw.len(), ANSWER_MEMORY);
        assert_eq!(a.history_text("Answer."), "Answer.");
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_bytes(b"k1", b"k1"));
        assert!(!same_bytes(b"k1", b"k2"));
        assert!(!same_bytes(b"k1", b"k12"));
    }
}
