//! `huatuo serve` and `--endpoint` (issue 17): the OpenAI-compatible API in both directions.
//! A real `huatuo serve` runs on a tiny checkpoint on loopback and is spoken to with plain
//! HTTP (ureq, and raw TCP where a client must vanish mid-answer); `huatuo ask --endpoint`
//! talks to it and to a recording stand-in server written here.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::{fixture, greedy_args, huatuo, tiny_checkpoint};

/// A `huatuo serve` child on a free loopback port; killed on drop.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    _home: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Serves the tiny `family` checkpoint greedily (f32, at most `max_new` tokens) with
    /// `extra` flags and environment.
    fn start(family: &str, max_new: u32, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let home = tempfile::tempdir().expect("tmp");
        let mut cmd = Process::new(assert_cmd::cargo::cargo_bin("huatuo"));
        cmd.args([
            "serve",
            "--port",
            "0",
            "--dtype",
            "f32",
            "--temperature",
            "0",
        ])
        .args(["--max-new-tokens", &max_new.to_string()])
        .args(["--model", &tiny_checkpoint(family).display().to_string()])
        .args(extra)
        .env("HUATUO_CONFIG_DIR", home.path().join("config"))
        .env("HUATUO_DATA_DIR", home.path().join("data"))
        .env("HUATUO_CACHE_DIR", home.path().join("cache"))
        .env_remove("HUATUO_API_KEY")
        .env_remove("HUATUO_TEST_TOKEN_DELAY_MS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let log = Arc::clone(&log);
            let stderr = BufReader::new(child.stderr.take().expect("stderr"));
            std::thread::spawn(move || {
                for line in stderr.lines().map_while(Result::ok) {
                    log.lock().expect("log").push(line);
                }
            });
        }
        let mut url = String::new();
        stdout.read_line(&mut url).expect("the URL line");
        let url = url.trim().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
            "serve printed {url:?}"
        );
        Self {
            child,
            url,
            log,
            _home: home,
        }
    }

    fn base(&self) -> &str {
        self.url.trim_end_matches("/v1")
    }

    /// Waits for /health to say the model is loaded.
    fn ready(self) -> Self {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = get(&format!("{}/health", self.base()), None) {
                return self;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "never ready: {:?}",
                self.log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(url: &str, key: Option<&str>) -> Result<(u16, Value), ureq::Error> {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req.call()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// POSTs `body` to /v1/chat/completions; returns the status and the raw body text.
fn post(server: &Server, body: &str, key: Option<&str>) -> (u16, String) {
    let mut req = agent()
        .post(format!("{}/chat/completions", server.url))
        .header("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req.send(body).expect("post");
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("body");
    (status, text)
}

fn data_url(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("image");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn user(text: &str, images: &[&Path]) -> Value {
    if images.is_empty() {
        return json!({"role": "user", "content": text});
    }
    let mut parts: Vec<Value> = images
        .iter()
        .map(|p| json!({"type": "image_url", "image_url": {"url": data_url(p)}}))
        .collect();
    parts.push(json!({"type": "text", "text": text}));
    json!({"role": "user", "content": parts})
}

/// The answer of a plain response, or of a stream (its deltas joined), with the response's
/// (or last chunk's) `huatuo` field, finish reason and usage.
struct Answer {
    content: String,
    huatuo: Value,
    finish: String,
    usage: Value,
}

fn ask_plain(server: &Server, messages: &[Value], key: Option<&str>) -> Answer {
    let (status, body) = post(server, &json!({"messages": messages}).to_string(), key);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(body.trim()).expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    Answer {
        content: v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .into(),
        huatuo: v["huatuo"].clone(),
        finish: v["choices"][0]["finish_reason"]
            .as_str()
            .unwrap_or_default()
            .into(),
        usage: v["usage"].clone(),
    }
}

fn ask_stream(server: &Server, messages: &[Value]) -> Answer {
    let body = json!({"messages": messages, "stream": true,
        "stream_options": {"include_usage": true}});
    let (status, text) = post(server, &body.to_string(), None);
    assert_eq!(status, 200, "{text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data line")).expect("chunk"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut content = String::new();
    let mut finish = String::new();
    let mut huatuo = Value::Null;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(choice) = c["choices"].get(0) {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = f.into();
                huatuo = c["huatuo"].clone();
            }
        }
    }
    // The usage chunk comes last, with no choices.
    let usage = chunks.last().expect("chunks");
    assert!(usage["choices"].as_array().expect("choices").is_empty());
    Answer {
        content,
        huatuo,
        finish,
        usage: usage["usage"].clone(),
    }
}

fn chat_reference(family: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("chat/{family}.json"))).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

/// Acceptance 1: a three-turn conversation with images, plain and streamed, each answer the
/// reference's; the client sends back what it received (the stripped `content`), and the
/// server still builds the reference's history (its unstripped answers).
#[test]
fn a_three_turn_conversation_over_http_answers_like_the_reference() {
    for family in ["qwen2", "yi"] {
        let reference = chat_reference(family);
        let max_new = reference["params"]["max_new_tokens"].as_u64().expect("max") as u32;
        let server = Server::start(family, max_new, &[], &[]).ready();
        for streamed in [false, true] {
            let mut messages = Vec::new();
            for (i, turn) in reference["turns"]
                .as_array()
                .expect("turns")
                .iter()
                .enumerate()
            {
                let images: Vec<_> = turn["images"]
                    .as_array()
                    .expect("images")
                    .iter()
                    .map(|n| fixture(&format!("images/{}", n.as_str().expect("name"))))
                    .collect();
                let refs: Vec<&Path> = images.iter().map(|p| p.as_path()).collect();
                messages.push(user(turn["user"].as_str().expect("user"), &refs));
                let answer = if streamed {
                    ask_stream(&server, &messages)
                } else {
                    ask_plain(&server, &messages, None)
                };
                let what = format!("{family} turn {} streamed {streamed}", i + 1);
                assert_eq!(
                    answer.content,
                    turn["answer"].as_str().expect("answer"),
                    "{what}"
                );
                assert_eq!(
                    answer.huatuo["history_text"], turn["history_answer"],
                    "{what}"
                );
                assert_eq!(answer.finish, "length", "{what}");
                assert_eq!(answer.usage["completion_tokens"], max_new, "{what}");
                let prompt = answer.usage["prompt_tokens"].as_u64().expect("prompt");
                assert_eq!(
                    answer.usage["total_tokens"].as_u64(),
                    Some(prompt + u64::from(max_new))
                );
                let record = &answer.huatuo["record"];
                assert_eq!(record["tokens"]["prompt_total"], prompt, "{what}");
                assert_eq!(record["engine"]["name"], "huatuo");
                // The caches carry over between requests of a conversation: a later turn
                // runs only its new positions and encodes only its new images.
                if i > 0 {
                    assert!(
                        record["tokens"]["reused_positions"].as_u64() > Some(500),
                        "{what}: {record}"
                    );
                    let new = if streamed { 0 } else { refs.len() };
                    assert_eq!(record["tokens"]["images_encoded"], new, "{what}");
                }
                messages.push(json!({"role": "assistant", "content": answer.content}));
            }
        }
        // The server's log says the same of the last request.
        wait_for_log(&server, "chatcmpl-7: 200 stream, 2 images (2 from cache)");
    }
}

#[test]
fn keys_are_required_when_set_and_health_is_open() {
    let server = Server::start("qwen2", 4, &["--api-key", "sk-right"], &[]).ready();
    assert_eq!(
        get(&format!("{}/health", server.base()), None).expect("health"),
        (200, json!({"status": "ok"}))
    );
    let (status, body) = get(&format!("{}/models", server.url), None).expect("models");
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("Bearer"));
    let (status, body) = get(&format!("{}/models", server.url), Some("sk-wrong")).expect("models");
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("invalid_api_key"))
    );
    let (status, body) = get(&format!("{}/models", server.url), Some("sk-right")).expect("models");
    assert_eq!(status, 200);
    let name = tiny_checkpoint("qwen2")
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(body["data"][0]["id"], name.as_str());
    assert_eq!(body["data"][0]["huatuo"]["defaults"]["temperature"], 0.0);
    let msgs = [user("Hello?", &[])];
    let (status, _) = post(&server, &json!({"messages": msgs}).to_string(), None);
    assert_eq!(status, 401);
    let (status, _) = post(
        &server,
        &json!({"messages": msgs}).to_string(),
        Some("sk-wrong"),
    );
    assert_eq!(status, 401);
    let answer = ask_plain(&server, &msgs, Some("sk-right"));
    assert!(!answer.content.is_empty());
    assert!(!server.log_text().contains("sk-right"));
}

/// Every refusal is an OpenAI error object with the right status, and the server answers the
/// next request.
#[test]
fn bad_requests_get_error_objects_and_the_server_lives_on() {
    let server = Server::start("qwen2", 4, &[], &[]).ready();
    let cell = fixture("images/cell.png");
    let six: Vec<&Path> = vec![cell.as_path(); 6];
    let seven: Vec<&Path> = vec![cell.as_path(); 7];
    let bad_image = json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}},
        {"type": "text", "text": "What is it?"}]});
    let remote = json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}},
        {"type": "text", "text": "What is it?"}]});
    let local = json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": cell.display().to_string()}},
        {"type": "text", "text": "What is it?"}]});
    let long = "word ".repeat(5000);
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("{not json".into(), 400, "invalid_json", "not valid JSON"),
        (
            json!({"messages": [bad_image]}).to_string(),
            400,
            "invalid_image",
            "message 1, image 1",
        ),
        // A single question may carry 6 images, as the reference's inference(); a turn of a
        // conversation 5, as its chat().
        (
            json!({"messages": [user("Seven?", &seven)]}).to_string(),
            400,
            "too_many_images",
            "at most 6",
        ),
        (
            json!({"messages": [user("Hi", &[]), {"role": "assistant", "content": "Hello"},
                user("Six?", &six)]})
            .to_string(),
            400,
            "too_many_images",
            "at most 5",
        ),
        (
            json!({"messages": [user(&long, &[&cell])]}).to_string(),
            400,
            "context_length_exceeded",
            "image",
        ),
        (
            json!({"messages": [{"role": "system", "content": "You are a radiologist."},
                user("Hi", &[])]})
            .to_string(),
            400,
            "system_prompt_unsupported",
            "without a system prompt",
        ),
        (
            json!({"messages": [remote]}).to_string(),
            400,
            "image_url_refused",
            "--allow-remote-images",
        ),
        (
            json!({"messages": [local]}).to_string(),
            400,
            "image_url_refused",
            "--allow-file-images",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "Hi"}]}).to_string(),
            400,
            "invalid_message",
            "must follow a user message",
        ),
        (
            json!({"messages": [user("Hi", &[])], "model": "gpt-4"}).to_string(),
            404,
            "model_not_found",
            "gpt-4",
        ),
        (
            json!({"messages": [user("Hi", &[])], "temperature": -1}).to_string(),
            400,
            "invalid_sampling",
            "temperature",
        ),
    ];
    for (body, status, code, says) in cases {
        let (got, text) = post(&server, &body, None);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(got, status, "{code}: {text}");
        assert_eq!(v["error"]["code"], code, "{text}");
        let message = v["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{code}: {message}");
        assert!(v["error"]["type"].is_string());
    }
    // The context error names the text and image token counts.
    let (_, text) = post(
        &server,
        &json!({"messages": [user(&long, &[&cell])]}).to_string(),
        None,
    );
    assert!(text.contains("576"), "{text}");
    // An empty system message is no system prompt; the server is still answering.
    let answer = ask_plain(
        &server,
        &[json!({"role": "system", "content": ""}), user("Hi", &[])],
        None,
    );
    assert!(!answer.content.is_empty());
}

#[test]
fn a_system_message_can_be_prepended_and_is_recorded() {
    let server = Server::start("qwen2", 4, &["--system-prompt", "prepend"], &[]).ready();
    let answer = ask_plain(
        &server,
        &[
            json!({"role": "system", "content": "Be brief."}),
            user("Hi", &[]),
        ],
        None,
    );
    let note = answer.huatuo["prompt_note"].as_str().expect("note");
    assert!(note.contains("not the reference"), "{note}");
    assert_eq!(answer.huatuo["record"]["prompt_note"], note);
}

#[test]
fn health_is_503_while_loading() {
    let server = Server::start("qwen2", 4, &[], &[("HUATUO_TEST_LOAD_DELAY_MS", "3000")]);
    let (status, body) = get(&format!("{}/health", server.base()), None).expect("health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "model_loading");
    let (status, text) = post(
        &server,
        &json!({"messages": [user("Hi", &[])]}).to_string(),
        None,
    );
    assert_eq!(status, 503, "{text}");
    let server = server.ready();
    assert!(!ask_plain(&server, &[user("Hi", &[])], None)
        .content
        .is_empty());
}

/// Writes a raw chat request and returns the connection after the response has begun.
fn raw_request(server: &Server, body: &str) -> TcpStream {
    let addr = server
        .base()
        .strip_prefix("http://")
        .expect("http")
        .to_string();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    tcp
}

fn wait_for_log(server: &Server, what: &str) -> String {
    let start = Instant::now();
    loop {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.contains(what)) {
            return line.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {what:?} in {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that goes away cancels its answer (streamed: at the next token; plain: at the
/// next heartbeat), and the server goes on answering others.
#[test]
fn a_client_that_goes_away_cancels_its_generation() {
    let server = Server::start("qwen2", 400, &[], &[("HUATUO_TEST_TOKEN_DELAY_MS", "30")]).ready();
    let body = json!({"messages": [user("Describe it at length.", &[])], "stream": true,
        "ignore_eos": true})
    .to_string();
    let tcp = raw_request(&server, &body);
    let mut reader = BufReader::new(tcp);
    let mut deltas = 0;
    let mut line = String::new();
    while deltas < 3 {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "stream ended"
        );
        if line.contains("\"content\":\"") && !line.contains("\"content\":\"\"") {
            deltas += 1;
        }
    }
    drop(reader);
    let cancelled = wait_for_log(&server, "cancelled: the client went away");
    let tokens: usize = cancelled
        .split('(')
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a token count");
    assert!((3..400).contains(&tokens), "{cancelled}");

    // Not streamed: noticed at a heartbeat.
    let body =
        json!({"messages": [user("Describe it again.", &[])], "ignore_eos": true}).to_string();
    let mut tcp = raw_request(&server, &body);
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).expect("status line");
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(tcp);
    let start = Instant::now();
    while server.log_text().matches("cancelled").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log_text();
    let second = log
        .lines()
        .filter(|l| l.contains("cancelled"))
        .nth(1)
        .expect("line");
    assert!(!second.contains("(400 tokens"), "{second}");
    assert!(!ask_plain(&server, &[user("Hi", &[])], None)
        .content
        .is_empty());
}

/// Two clients at once: both answers are the ones each gets alone.
#[test]
fn concurrent_clients_each_get_their_own_answer() {
    let server =
        Arc::new(Server::start("qwen2", 12, &[], &[("HUATUO_TEST_TOKEN_DELAY_MS", "5")]).ready());
    let cell = fixture("images/cell.png");
    let hubble = fixture("images/hubble_deep_field.jpg");
    let a = vec![user("What does the picture show?", &[&cell])];
    let b = vec![user("Is there anything abnormal?", &[&hubble])];
    let alone_a = ask_plain(&server, &a, None).content;
    let alone_b = ask_stream(&server, &b).content;
    assert_ne!(alone_a, alone_b);
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let server = Arc::clone(&server);
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                if i == 0 {
                    ask_stream(&server, &a).content
                } else {
                    ask_plain(&server, &b, None).content
                }
            })
        })
        .collect();
    let got: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(got, [alone_a, alone_b]);
}

/// Acceptance 2: `ask --endpoint` against `huatuo serve` prints what local `ask` prints, for
/// one image and for a continued session.
#[test]
fn ask_through_the_endpoint_prints_what_local_ask_prints() {
    let reference = chat_reference("qwen2");
    let max_new = reference["params"]["max_new_tokens"].as_u64().expect("max") as u32;
    let server = Server::start("qwen2", max_new, &[], &[]).ready();
    let local_home = tempfile::tempdir().expect("tmp");
    let remote_home = tempfile::tempdir().expect("tmp");
    let cell = fixture("images/cell.png").display().to_string();
    let turns: [(&str, Option<&str>); 3] = [
        ("What does the picture show?", Some(cell.as_str())),
        ("Is there anything <image>abnormal? 有异常吗？", None),
        ("Compare it with the first image.", Some(cell.as_str())),
    ];
    for (session, count) in [(None, 1), (Some("s"), 3)] {
        for (text, image) in turns.iter().take(count) {
            let mut local = huatuo(local_home.path());
            local.args(greedy_args(tiny_checkpoint("qwen2"), max_new));
            let mut remote = huatuo(remote_home.path());
            remote.args([
                "ask",
                "--endpoint",
                &server.url,
                "--temperature",
                "0",
                "--max-new-tokens",
                &max_new.to_string(),
            ]);
            for cmd in [&mut local, &mut remote] {
                if let Some(img) = image {
                    cmd.args(["--image", img]);
                }
                if let Some(s) = session {
                    cmd.args(["--session", s]);
                }
                cmd.args(["--", text]);
            }
            let (l, r) = (
                local.output().expect("local"),
                remote.output().expect("remote"),
            );
            assert!(l.status.success(), "{}", String::from_utf8_lossy(&l.stderr));
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
            assert!(!l.stdout.is_empty());
            assert_eq!(
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&l.stdout),
                "{session:?}: {text}"
            );
        }
    }
    // The remote session keeps the unstripped answers, as a local one does.
    let show = |home: &Path| -> Value {
        let out = huatuo(home)
            .args(["sessions", "show", "s", "--json"])
            .output()
            .expect("show");
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let (l, r) = (show(local_home.path()), show(remote_home.path()));
    for i in 0..3 {
        assert_eq!(r["turns"][i]["answer"], l["turns"][i]["answer"]);
        assert_eq!(r["turns"][i]["user"], l["turns"][i]["user"]);
    }
    assert_eq!(
        r["turns"][0]["record"]["engine"]["endpoint"],
        server.url.as_str()
    );
}

/// What a stand-in OpenAI server saw, and how it answers.
#[derive(Default)]
struct Recorded {
    requests: Vec<(String, HashMap<String, String>, Value)>,
}

#[derive(Clone, Copy)]
enum Mode {
    Answer,
    ServerError,
    CutStream,
}

/// A loopback server that lists one model, records each chat request and answers per `mode`.
fn stand_in(mode: Mode) -> (String, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let rec = Arc::clone(&recorded);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                continue;
            }
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).expect("body");
            let mut out = stream;
            if request_line.starts_with("GET /v1/models") {
                let list = json!({"object": "list", "data": [
                    {"id": "huatuo-7b", "object": "model", "owned_by": "vllm", "max_model_len": 4096},
                    {"id": "huatuo-34b", "object": "model", "owned_by": "vllm", "max_model_len": 4096}]})
                .to_string();
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{list}",
                    list.len()
                );
                continue;
            }
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            rec.lock()
                .expect("rec")
                .requests
                .push((request_line.clone(), headers, value));
            let chunk = |text: &str| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "x", "object": "chat.completion.chunk", "created": 0,
                        "model": "huatuo-7b",
                        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
                )
            };
            match mode {
                Mode::Answer => {
                    let end = json!({"id": "x", "object": "chat.completion.chunk", "created": 0,
                        "model": "huatuo-7b",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                    let body = format!(
                        "{}{}{}data: {end}\n\ndata: [DONE]\n\n",
                        chunk(" The"),
                        chunk(" lungs are clear."),
                        chunk("\n")
                    );
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{body}"
                    );
                }
                Mode::ServerError => {
                    let e = json!({"error": {"message": "CUDA out of memory", "type": "server_error", "code": 500}}).to_string();
                    let _ = write!(
                        out,
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}",
                        e.len()
                    );
                }
                Mode::CutStream => {
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{}",
                        chunk("The lungs")
                    );
                }
            }
        }
    });
    (url, recorded)
}

fn png_pixels(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .expect("a PNG")
        .to_rgb8()
}

/// Acceptance 3: the client sends the 336×336 PNG the model must see (as `huatuo render`
/// writes it, DICOM windowed included), every sampling field explicitly, the key as a Bearer
/// token; a 500 or a cut stream ends with one line on stderr and exit 2.
#[test]
fn the_client_sends_the_model_input_and_explicit_sampling() {
    let (url, recorded) = stand_in(Mode::Answer);
    let home = tempfile::tempdir().expect("tmp");
    let cell = fixture("images/cell.png");
    let ct = fixture("dicom/ct_explicit_le.dcm");
    let out = huatuo(home.path())
        .env("OPENAI_API_KEY", "sk-from-env")
        .args([
            "ask",
            "--endpoint",
            &url,
            "--api-key",
            "sk-test",
            "--seed",
            "7",
        ])
        .args(["--image", &cell.display().to_string()])
        .args(["--image", &format!("{}@lung", ct.display())])
        .arg("What does the picture show?")
        .output()
        .expect("ask");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "The lungs are clear.\n"
    );
    assert!(!stderr.contains("sk-test"));

    let recorded = recorded.lock().expect("rec");
    assert_eq!(recorded.requests.len(), 1);
    let (line, headers, body) = &recorded.requests[0];
    assert!(line.starts_with("POST /v1/chat/completions"), "{line}");
    assert_eq!(headers["authorization"], "Bearer sk-test");
    assert_eq!(body["model"], "huatuo-7b");
    assert_eq!(body["stream"], true);
    assert_eq!(body["temperature"], json!(0.2));
    assert_eq!(body["top_p"], 1.0);
    assert_eq!(body["top_k"], 50);
    assert_eq!(body["repetition_penalty"], json!(1.2));
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["seed"], 7);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1);
    let parts = messages[0]["content"].as_array().expect("parts");
    assert_eq!(parts.len(), 3);
    assert_eq!(
        parts[2],
        json!({"type": "text", "text": "What does the picture show?"})
    );
    for (part, (image, window)) in parts.iter().zip([(&cell, None), (&ct, Some("lung"))]) {
        let url = part["image_url"]["url"].as_str().expect("url");
        let b64 = url
            .strip_prefix("data:image/png;base64,")
            .expect("a PNG data URL");
        let sent = png_pixels(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64"),
        );
        assert_eq!(sent.dimensions(), (336, 336));
        let rendered = home.path().join("rendered.png");
        let mut render = huatuo(home.path());
        render
            .args(["render", &image.display().to_string(), "-o"])
            .arg(&rendered);
        if let Some(w) = window {
            render.args(["--window", w]);
        }
        assert!(render.output().expect("render").status.success());
        let expected = png_pixels(&std::fs::read(&rendered).expect("read"));
        assert!(
            sent == expected,
            "{} differs from huatuo render",
            image.display()
        );
    }

    for (mode, says) in [
        (Mode::ServerError, "HTTP 500: CUDA out of memory"),
        (Mode::CutStream, "ended before it was complete"),
    ] {
        let (url, _) = stand_in(mode);
        let out = huatuo(home.path())
            .args(["ask", "--endpoint", &url, "Hello?"])
            .output()
            .expect("ask");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains(&url), "{stderr}");
    }
}

/// An endpoint nobody answers fails after the retries, naming it.
/// Issue 20: `ask --model A --model B` works with `--endpoint` models too: each model served
/// there is asked in turn (named in its request), and both answers are printed labelled, or as
/// a JSON array.
#[test]
fn compare_asks_each_served_model() {
    let (url, recorded) = stand_in(Mode::Answer);
    let home = tempfile::tempdir().expect("tmp");
    let cell = fixture("images/cell.png");
    let out = huatuo(home.path())
        .args([
            "ask",
            "--endpoint",
            &url,
            "--model",
            "huatuo-7b",
            "--model",
            "huatuo-34b",
        ])
        .arg("--image")
        .arg(&cell)
        .arg("What does the picture show?")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let a = stdout.find("## huatuo-7b").expect("first label");
    let b = stdout.find("## huatuo-34b").expect("second label");
    assert!(a < b, "{stdout}");
    assert_eq!(
        stdout.matches("The lungs are clear.").count(),
        2,
        "{stdout}"
    );
    let models: Vec<String> = recorded
        .lock()
        .expect("rec")
        .requests
        .iter()
        .map(|(_, _, body)| body["model"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(models, ["huatuo-7b", "huatuo-34b"]);

    let out = huatuo(home.path())
        .args([
            "ask",
            "--endpoint",
            &url,
            "--model",
            "huatuo-7b",
            "--model",
            "huatuo-34b",
        ])
        .args(["--json", "Any effusion?"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let answers: Vec<&str> = v
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["answer"].as_str().expect("answer"))
        .collect();
    assert_eq!(answers, ["The lungs are clear.", "The lungs are clear."]);
}

#[test]
fn an_unreachable_endpoint_is_one_clear_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let home = tempfile::tempdir().expect("tmp");
    let url = format!("http://127.0.0.1:{port}/v1");
    let out = huatuo(home.path())
        .args(["ask", "--endpoint", &url, "Hello?"])
        .output()
        .expect("ask");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains(&url),
        "{stderr}"
    );
}

/// `huatuo eval --endpoint` with two requests in flight answers every item as the local
/// engine does (the reference's answers of tests/fixtures/eval).
#[test]
fn eval_through_the_endpoint_with_requests_in_flight() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("eval/reference_qwen2.json")).expect("fixture"),
    )
    .expect("json");
    let server = Server::start("qwen2", 16, &[], &[]).ready();
    let home = tempfile::tempdir().expect("tmp");
    let out = home.path().join("run");
    let result = huatuo(home.path())
        .args(["eval", "--data"])
        .arg(fixture("eval/data.json"))
        .args(["--endpoint", &server.url, "--concurrency", "2"])
        .args(["--temperature", "0", "--max-new-tokens", "16", "--output"])
        .arg(&out)
        .output()
        .expect("eval");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .expect("results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    let items = reference["items"].as_array().expect("items");
    assert_eq!(lines.len(), items.len());
    for (line, want) in lines.iter().zip(items) {
        assert_eq!(line["index"], want["index"]);
        assert_eq!(
            line["model_output"], want["model_output"],
            "item {}",
            want["index"]
        );
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("s"))
            .expect("json");
    assert_eq!(summary["model"]["engine"]["endpoint"], server.url.as_str());
    // Every item was one request to the server.
    let start = Instant::now();
    while server.log_text().matches(": 200 ").count() < items.len() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.log_text().matches(": 200 ").count(), items.len());
}
