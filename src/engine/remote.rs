//! A remote engine: the same commands and events as the local worker, answered by a serving
//! engine behind an OpenAI-compatible endpoint (vLLM, SGLang, llama-server, `huatuo serve`).
//! Front ends cannot tell the difference, so the TUI, `ask` and `eval` work alike whether the
//! model runs here or on a GPU server.
//!
//! What is sent makes any LLaVA-1.5 server compute the reference's pixels and prompt:
//! - each image as a PNG `data:` URL of exactly the 336×336 RGB the model must see (DICOM
//!   rendered, padded with the CLIP mean, Pillow-bicubic resized: what `huatuo render`
//!   writes); a server's processor resizes a 336 square to itself and crops nothing;
//! - each user turn as its images followed by its text, the text as the reference's history
//!   keeps it (sanitised); each earlier answer as the history keeps it (unstripped);
//! - every sampling setting explicitly (`temperature`, `top_p`, `top_k`, `repetition_penalty`,
//!   `max_tokens`, `min_tokens`, `seed`), so the server's own defaults never apply.
//!
//! Answers stream (`stream: true`); a cancel closes the connection at the next chunk. A
//! server error or a stream that ends before `[DONE]` fails the request, with the partial
//! answer. Connecting is retried a few times; nothing else is.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::preprocess::{self, ImageOptions, ProcessorConfig};
use crate::protocol::openai::{
    self, ChatRequest, Chunk, Content, ErrorResponse, ImageUrl, Message, ModelList, Part,
    StreamOptions,
};
use crate::protocol::{
    Command, Completion, EngineBuild, Event, FailureKind, GenerateRequest, GenerationStats,
    ImageRef, ModelInfo, ModelSpec, PromptStats, RequestId, SamplingParams, Stop,
};
use crate::text::{py_strip, IMAGE_PLACEHOLDER};

use super::worker::Signals;

/// Where a remote engine is and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct Remote {
    /// The API base, e.g. `http://gpu-box:8000/v1` (no trailing slash).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer …`; never printed.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Remote {
    /// `endpoint` checked (`http://` or `https://`) and without a trailing `/`.
    pub fn new(endpoint: &str, api_key: Option<String>) -> Result<Self, String> {
        let endpoint = endpoint.trim().trim_end_matches('/');
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "endpoint {endpoint:?} is not an http:// or https:// URL (e.g. http://gpu-box:8000/v1)"
            ));
        }
        Ok(Self {
            endpoint: endpoint.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }
}

/// Connection attempts before a request fails, and the pause after the first failure
/// (doubling).
const CONNECT_ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(300);
/// An error body is read up to this size.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// One `data:` line of a stream is at most this long (a chunk of a few tokens is far less).
const MAX_LINE: usize = 1 << 20;
/// Rendered images kept for the next turns of the conversation (each is ~200 KB of PNG).
const PNG_CACHE: usize = 32;

/// The model being served and what the front ends were told about it.
struct Served {
    id: String,
    info: ModelInfo,
}

pub(super) struct RemoteWorker {
    remote: Remote,
    agent: ureq::Agent,
    served: Option<Served>,
    events: Sender<Event>,
    signals: Arc<Signals>,
    /// PNG data URLs by the image's bytes and view, so earlier turns' images are not rendered
    /// again at every turn.
    pngs: HashMap<(u128, Option<String>, Option<u32>), Arc<String>>,
}

/// A request that failed, with its kind and the answer so far.
struct Failure {
    kind: FailureKind,
    error: String,
    partial: String,
}

impl Failure {
    fn new(kind: FailureKind, error: impl Into<String>) -> Self {
        Self {
            kind,
            error: error.into(),
            partial: String::new(),
        }
    }
}

impl RemoteWorker {
    pub(super) fn new(remote: Remote, events: Sender<Event>, signals: Arc<Signals>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            remote,
            agent,
            served: None,
            events,
            signals,
            pngs: HashMap::new(),
        }
    }

    pub(super) fn run(mut self, commands: Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            if self.signals.shutdown.load(Ordering::SeqCst) {
                break;
            }
            match command {
                Command::Load { id, spec } => {
                    let event = match self.load(&spec) {
                        Ok(info) => Event::Loaded { id, info },
                        Err(f) => failed(id, f),
                    };
                    let _ = self.events.send(event);
                }
                Command::Generate { id, request } => {
                    let event = match self.generate(id, &request) {
                        Ok(completion) => Event::Finished { id, completion },
                        Err(f) => failed(id, f),
                    };
                    let _ = self.events.send(event);
                }
                Command::Cancel { id } => self.signals.forget(id),
                Command::Reset => self.pngs.clear(),
                Command::Unload => {
                    self.served = None;
                    let _ = self.events.send(Event::Unloaded);
                }
                Command::Shutdown => break,
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.remote.endpoint)
    }

    fn with_key<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.remote.api_key {
            Some(key) => request.header("Authorization", format!("Bearer {key}")),
            None => request,
        }
    }

    /// Calls `send` until it connects (at most [`CONNECT_ATTEMPTS`] times).
    fn call(
        &self,
        what: &str,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut pause = FIRST_RETRY;
        let mut attempt = 1;
        loop {
            match send() {
                Ok(response) => return Ok(response),
                Err(e) if attempt < CONNECT_ATTEMPTS && is_connect_error(&e) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Failure::new(
                        FailureKind::Model,
                        format!("cannot reach {} ({what}): {e}", self.remote.endpoint),
                    ))
                }
            }
        }
    }

    /// Checks that the endpoint serves the model asked for (`spec.source`; empty: the first
    /// it lists) and describes it.
    fn load(&mut self, spec: &ModelSpec) -> Result<ModelInfo, Failure> {
        let url = self.url("models");
        let mut response = self.call("listing its models", || {
            self.with_key(self.agent.get(&url)).call()
        })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(http_failure(&self.remote.endpoint, status, &mut response));
        }
        let list: ModelList = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_json_lossy()
            .map_err(|e| {
                Failure::new(
                    FailureKind::Model,
                    format!("{url} did not answer a model list: {e}"),
                )
            })?;
        let names: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
        let entry = if spec.source.is_empty() {
            list.data.first()
        } else {
            list.data.iter().find(|m| m.id == spec.source)
        };
        let Some(entry) = entry else {
            return Err(Failure::new(
                FailureKind::Model,
                if names.is_empty() {
                    format!("{} serves no model", self.remote.endpoint)
                } else {
                    format!(
                        "{} does not serve {:?}; it serves: {} (give one with --model)",
                        self.remote.endpoint,
                        spec.source,
                        names.join(", ")
                    )
                },
            ));
        };
        let own = entry.huatuo.as_ref();
        let info = ModelInfo {
            source: entry.id.clone(),
            path: PathBuf::new(),
            repo: None,
            revision: None,
            // Not told by an OpenAI-compatible server.
            family: "unknown".into(),
            dtype: "unknown".into(),
            device: "remote".into(),
            quantization: "unknown".into(),
            context_length: own
                .map(|o| o.context_length)
                .or(entry.max_model_len)
                .unwrap_or(0),
            tokens_per_image: own.map_or(576, |o| o.tokens_per_image),
            // A huatuo server says what its checkpoint's defaults are; other engines get the
            // reference CLI's, sent explicitly.
            defaults: own.map_or_else(SamplingParams::default, |o| o.defaults.clone()),
            files: Vec::new(),
            quant_file: None,
            engine: EngineBuild {
                name: if entry.owned_by.is_empty() {
                    "openai-compatible".into()
                } else {
                    entry.owned_by.clone()
                },
                version: String::new(),
                git_commit: None,
                endpoint: Some(self.remote.endpoint.clone()),
            },
        };
        self.served = Some(Served {
            id: entry.id.clone(),
            info: info.clone(),
        });
        Ok(info)
    }

    fn generate(
        &mut self,
        id: RequestId,
        request: &GenerateRequest,
    ) -> Result<Completion, Failure> {
        let Some(served) = &self.served else {
            return Err(Failure::new(FailureKind::Model, "no model is loaded"));
        };
        let (model, info) = (served.id.clone(), served.info.clone());
        let limit = crate::protocol::max_images(&request.history);
        if request.images.len() > limit {
            return Err(Failure::new(
                FailureKind::BadInput,
                format!(
                    "{} images given: at most {limit} per question",
                    request.images.len()
                ),
            ));
        }
        let params = info.defaults.with(&request.sampling);
        params
            .validate()
            .map_err(|e| Failure::new(FailureKind::BadInput, e))?;
        let messages = self.messages(request)?;
        let body = ChatRequest {
            model: Some(model),
            messages,
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            temperature: Some(params.temperature),
            top_p: Some(params.top_p),
            max_tokens: Some(params.max_new_tokens),
            max_completion_tokens: None,
            seed: Some(params.seed),
            n: None,
            top_k: Some(if params.top_k == 0 {
                -1
            } else {
                params.top_k as i64
            }),
            repetition_penalty: Some(params.repetition_penalty),
            min_tokens: Some(params.min_new_tokens),
            ignore_eos: None,
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
        if self.signals.stop_requested(id) {
            return Ok(cancelled(params, String::new()));
        }
        let url = self.url("chat/completions");
        let start = Instant::now();
        let mut response = self.call("sending the question", || {
            self.with_key(self.agent.post(&url))
                .header("Content-Type", "application/json")
                .header("Accept", "text/event-stream")
                .send(body.as_str())
        })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(http_failure(&self.remote.endpoint, status, &mut response));
        }
        let _ = self.events.send(Event::Started {
            id,
            prompt: PromptStats {
                context_length: info.context_length,
                ..PromptStats::default()
            },
            params: params.clone(),
        });
        let lines = read_lines(response.into_body());
        self.stream(id, lines, params, start, &info)
    }

    /// Reads the answer's chunks as they come, streaming the stripped answer as `Token`s.
    fn stream(
        &self,
        id: RequestId,
        lines: Receiver<Result<String, String>>,
        params: SamplingParams,
        start: Instant,
        info: &ModelInfo,
    ) -> Result<Completion, Failure> {
        let mut raw = String::new();
        let mut emitted = String::new();
        let mut finish: Option<String> = None;
        let mut usage = None;
        let mut extension = None;
        let mut chunks = 0usize;
        let mut first_token: Option<Instant> = None;
        let endpoint = &self.remote.endpoint;
        let cut = |emitted: &str, why: String| Failure {
            kind: FailureKind::Internal,
            error: why,
            partial: emitted.to_string(),
        };
        loop {
            if self.signals.stop_requested(id) {
                // Dropping `lines` closes the connection when its reader next wakes.
                return Ok(cancelled(params, emitted));
            }
            let line = match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => {
                    return Err(cut(
                        &emitted,
                        format!("the answer from {endpoint} was cut off: {e}"),
                    ))
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(cut(
                        &emitted,
                        format!(
                            "the answer from {endpoint} ended before it was complete (no [DONE])"
                        ),
                    ))
                }
            };
            let Some(data) = line.strip_prefix("data:") else {
                continue; // comments, `event:` and `id:` lines, blank separators
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let value: serde_json::Value = serde_json::from_str(data).map_err(|e| {
                cut(
                    &emitted,
                    format!("{endpoint} sent a chunk that is not JSON: {e}"),
                )
            })?;
            if let Some(error) = value.get("error") {
                let message = error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("unknown error");
                return Err(cut(
                    &emitted,
                    format!("{endpoint} failed mid-answer: {message}"),
                ));
            }
            let chunk: Chunk = serde_json::from_value(value).map_err(|e| {
                cut(
                    &emitted,
                    format!("{endpoint} sent a chunk that is not a chat completion chunk: {e}"),
                )
            })?;
            if let Some(Some(u)) = chunk.usage {
                usage = Some(u);
            }
            if chunk.huatuo.is_some() {
                extension = chunk.huatuo;
            }
            for choice in chunk.choices.iter().filter(|c| c.index == 0) {
                if let Some(text) = &choice.delta.content {
                    if !text.is_empty() {
                        chunks += 1;
                        first_token.get_or_insert_with(Instant::now);
                        raw.push_str(text);
                        // What `ask` prints: the answer stripped, whitespace at its end held
                        // back until more text follows it.
                        let stable = py_strip(&raw);
                        if let Some(piece) = stable.strip_prefix(emitted.as_str()) {
                            if !piece.is_empty() {
                                let piece = piece.to_string();
                                emitted.push_str(&piece);
                                let _ = self.events.send(Event::Token { id, text: piece });
                            }
                        }
                    }
                }
                if choice.finish_reason.is_some() {
                    finish = choice.finish_reason.clone();
                }
            }
        }
        let text = py_strip(&raw).to_string();
        if let Some(rest) = text
            .strip_prefix(emitted.as_str())
            .filter(|r| !r.is_empty())
        {
            let _ = self.events.send(Event::Token {
                id,
                text: rest.to_string(),
            });
        }
        let (history_text, stop) = match extension {
            Some(ext) => (ext.history_text, ext.stop),
            None => (raw, openai::stop_of(finish.as_deref().or(Some("stop")))),
        };
        let generated = usage.map_or(chunks, |u| u.completion_tokens);
        let prompt_total = usage.map_or(0, |u| u.prompt_tokens);
        let ttft = first_token.map_or(start.elapsed(), |t| t - start);
        let decode = first_token
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        Ok(Completion {
            text,
            history_text,
            stop,
            stats: GenerationStats {
                prompt: PromptStats {
                    total: prompt_total,
                    context_length: info.context_length,
                    ..PromptStats::default()
                },
                generated_tokens: generated,
                time_to_first_token_ms: ttft.as_secs_f64() * 1e3,
                decode_tokens_per_s: if decode > 0.0 && generated > 1 {
                    (generated - 1) as f64 / decode
                } else {
                    0.0
                },
                ..GenerationStats::default()
            },
            params,
        })
    }

    /// The conversation as OpenAI messages: each user turn its images (as PNG data URLs of
    /// the model's input) then its text; each earlier answer as the history keeps it.
    fn messages(&mut self, request: &GenerateRequest) -> Result<Vec<Message>, Failure> {
        let mut earlier = request.history_images.iter();
        let mut messages = Vec::with_capacity(2 * request.history.len() + 1);
        for exchange in &request.history {
            let (count, text) = split_placeholders(&exchange.user);
            let images: Vec<&ImageRef> = earlier.by_ref().take(count).collect();
            if images.len() != count {
                return Err(Failure::new(
                    FailureKind::BadInput,
                    "the conversation names more images than it holds",
                ));
            }
            messages.push(self.user_message(text, &images)?);
            messages.push(Message {
                role: "assistant".into(),
                content: Content::Text(exchange.answer.clone()),
            });
        }
        let (count, text) = split_placeholders(&request.user);
        let images: Vec<&ImageRef> = request.images.iter().collect();
        if count != images.len() {
            return Err(Failure::new(
                FailureKind::BadInput,
                format!(
                    "the question has {count} image placeholders for {} images",
                    images.len()
                ),
            ));
        }
        messages.push(self.user_message(text, &images)?);
        Ok(messages)
    }

    fn user_message(&mut self, text: &str, images: &[&ImageRef]) -> Result<Message, Failure> {
        if images.is_empty() {
            return Ok(Message {
                role: "user".into(),
                content: Content::Text(text.to_string()),
            });
        }
        let mut parts = Vec::with_capacity(images.len() + 1);
        for image in images {
            parts.push(Part::ImageUrl {
                image_url: ImageUrl {
                    url: self.png_url(image)?.to_string(),
                },
            });
        }
        parts.push(Part::Text {
            text: text.to_string(),
        });
        Ok(Message {
            role: "user".into(),
            content: Content::Parts(parts),
        })
    }

    /// The image as a PNG data URL of the 336×336 RGB the model sees.
    fn png_url(&mut self, image: &ImageRef) -> Result<Arc<String>, Failure> {
        let bad = |e: String| {
            Failure::new(
                FailureKind::BadInput,
                format!("image {}: {e}", image.path.display()),
            )
        };
        let bytes = preprocess::read_file(&image.path).map_err(|e| bad(e.to_string()))?;
        let key = (
            xxhash_rust::xxh3::xxh3_128(&bytes),
            image.window.clone(),
            image.frame,
        );
        if let Some(url) = self.pngs.get(&key) {
            return Ok(Arc::clone(url));
        }
        let window = match &image.window {
            None => None,
            Some(w) => Some(w.parse().map_err(|e| bad(format!("window {w:?}: {e}")))?),
        };
        let opts = ImageOptions {
            window,
            frame: image.frame,
        };
        let png = model_input_png(&image.path, &bytes, &opts).map_err(bad)?;
        let url = Arc::new(openai::data_url("image/png", &png));
        if self.pngs.len() >= PNG_CACHE {
            self.pngs.clear();
        }
        self.pngs.insert(key, Arc::clone(&url));
        Ok(url)
    }
}

/// The PNG bytes of the 336×336 RGB image the model receives from `bytes` (what `huatuo
/// render` writes).
pub fn model_input_png(
    path: &std::path::Path,
    bytes: &[u8],
    opts: &ImageOptions,
) -> Result<Vec<u8>, String> {
    let rgb = preprocess::load_rgb_bytes(path, bytes, opts).map_err(|e| e.to_string())?;
    let input = preprocess::model_input(&rgb, &ProcessorConfig::clip_vit_large_336())
        .map_err(|e| e.to_string())?;
    let mut png = Vec::new();
    input
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode it as PNG: {e}"))?;
    Ok(png)
}

/// The number of `<image>\n` placeholders in front of a history text, and the text after them.
fn split_placeholders(user: &str) -> (usize, &str) {
    let prefix = format!("{IMAGE_PLACEHOLDER}\n");
    let mut rest = user;
    let mut count = 0;
    while let Some(r) = rest.strip_prefix(prefix.as_str()) {
        rest = r;
        count += 1;
    }
    (count, rest)
}

/// The lines of a streamed body, read on their own thread so a cancel is seen at once; the
/// thread ends (closing the connection) at the next line after the receiver is gone.
fn read_lines(body: ureq::Body) -> Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("huatuo-remote-stream".into())
        .spawn(move || {
            let mut reader = BufReader::new(body.into_reader());
            loop {
                let mut line = Vec::new();
                match (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) => return,
                    Ok(_) if line.len() >= MAX_LINE => {
                        let _ = tx.send(Err("a line of the stream is over 1 MiB".into()));
                        return;
                    }
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        if tx.send(Ok(text)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(Err(format!("cannot start a reader thread: {e}")));
        return rx;
    }
    rx
}

use std::io::Read as _;

fn is_connect_error(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Timeout(_)
    ) || matches!(e, ureq::Error::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    ))
}

/// A non-200 answer as one line: the status and the server's own message.
fn http_failure(
    endpoint: &str,
    status: u16,
    response: &mut ureq::http::Response<ureq::Body>,
) -> Failure {
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_string()
        .unwrap_or_default();
    let message = serde_json::from_str::<ErrorResponse>(&body)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| {
            body.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect()
        });
    let kind = match status {
        400 | 413 | 422 => FailureKind::BadInput,
        401 | 403 | 404 => FailureKind::Model,
        _ => FailureKind::Internal,
    };
    let hint = match status {
        401 | 403 => " (give the key with --api-key, HUATUO_API_KEY or OPENAI_API_KEY)",
        _ => "",
    };
    Failure::new(
        kind,
        format!("{endpoint} answered HTTP {status}: {message}{hint}"),
    )
}

fn cancelled(params: SamplingParams, text: String) -> Completion {
    Completion {
        history_text: text.clone(),
        text,
        stop: Stop::Cancelled,
        stats: GenerationStats::default(),
        params,
    }
}

fn failed(id: RequestId, f: Failure) -> Event {
    Event::Failed {
        id,
        kind: f.kind,
        error: f.error.replace('\n', " "),
        partial: f.partial,
    }
}

/// `read_json` that names what was wrong in one line.
trait ReadJsonLossy {
    fn read_json_lossy<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}

impl ReadJsonLossy for ureq::BodyWithConfig<'_> {
    fn read_json_lossy<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        let text = self.read_to_string().map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_counted_from_the_front_only() {
        assert_eq!(split_placeholders("<image>\n<image>\nhi"), (2, "hi"));
        assert_eq!(split_placeholders("hi <image>\n"), (0, "hi <image>\n"));
        assert_eq!(split_placeholders(""), (0, ""));
    }

    #[test]
    fn endpoints_must_be_http_urls_and_keys_never_show() {
        let r = Remote::new("http://h:8000/v1/", Some("sk-secret".into())).expect("ok");
        assert_eq!(r.endpoint, "http://h:8000/v1");
        assert!(!format!("{r:?}").contains("secret"));
        assert!(Remote::new("gpu-box:8000", None)
            .expect_err("no scheme")
            .contains("http://"));
    }
}
