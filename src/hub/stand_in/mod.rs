//! A stand-in for the Hugging Face hub on 127.0.0.1, for the tests and for checking
//! interoperability with Python's huggingface_hub (`huatuo dev hub-server`). Not used by the
//! client itself.
//!
//! It answers what the real hub answers to the requests huatuo and huggingface_hub make:
//! - `GET /api/models/{org}/{name}[/revision/{rev}]` → `id`, `sha`, `siblings` (with sizes and
//!   LFS info under `?blobs=true`);
//! - `HEAD|GET /{org}/{name}/resolve/{rev}/{file}` → for small files the bytes with `ETag`
//!   (a 40-hex id), `X-Repo-Commit`, Range support; for LFS files (`*.safetensors`, `*.bin`,
//!   `*.model`, …) a `302` to a second listener (the "CDN", another origin) with
//!   `X-Linked-Etag` (the sha256), `X-Linked-Size` and `X-Repo-Commit`;
//! - `GET /lfs/{sha256}/{file}` on the CDN → the bytes, with Range support.
//!
//! Scripted faults ([`Fault`]) hit the next matching request once; every request is recorded
//! ([`Request`], also as JSON at `GET /_stand_in/requests`); bodies can be slowed down
//! ([`StandIn::throttle`], or `GET /_stand_in/throttle?bytes_per_sec=N`). The server stops when
//! dropped.

mod http;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use self::http::{parse_range, percent_decode, read_head, write_reply, Head, Reply};

/// Which request a [`Fault`] hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The next `/api/models/...` request.
    Api,
    /// The next `HEAD .../resolve/.../{file}`.
    Head(String),
    /// The next `GET` of `{file}`'s bytes (from the hub for small files, the CDN for LFS).
    Get(String),
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status instead.
    Status(u16),
    /// Announce the whole length, send this many bytes, then drop the connection.
    DropAfter(u64),
    /// Send other bytes of the same length (the SHA-256 will not match).
    Corrupt,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Request {
    /// `hub` or `cdn`.
    pub server: &'static str,
    pub method: String,
    pub path: String,
    /// The repo file this request was about, when it was about one.
    pub file: Option<String>,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct Repo {
    /// commit sha → files.
    commits: BTreeMap<String, BTreeMap<String, Arc<Vec<u8>>>>,
    /// branch or tag → commit sha.
    refs: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    /// sha256 → bytes, for the CDN.
    lfs: HashMap<String, Arc<Vec<u8>>>,
    faults: Vec<(Target, Fault)>,
    log: Vec<Request>,
    throttle: Option<u64>,
    token: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    stop: Arc<AtomicBool>,
    hub_url: String,
    cdn_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running stand-in hub. Dropping it stops it.
pub struct StandIn {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Starts on free ports of 127.0.0.1.
    pub fn start() -> io::Result<Self> {
        Self::start_on(0)
    }

    /// Starts the hub on `port` (0: any free port) and its CDN on a free port.
    pub fn start_on(port: u16) -> io::Result<Self> {
        let hub = TcpListener::bind(("127.0.0.1", port))?;
        let cdn = TcpListener::bind(("127.0.0.1", 0))?;
        hub.set_nonblocking(true)?;
        cdn.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: Arc::new(AtomicBool::new(false)),
            hub_url: format!("http://{}", hub.local_addr()?),
            cdn_url: format!("http://{}", cdn.local_addr()?),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || accept_loop(&s, &hub, &cdn));
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, the value for `HF_ENDPOINT`.
    pub fn url(&self) -> &str {
        &self.shared.hub_url
    }

    /// Publishes the files under `dir` as a new commit of `repo` on `branch`; returns its sha.
    pub fn add_dir(&self, repo: &str, branch: &str, dir: &Path) -> io::Result<String> {
        Ok(self.add_files(repo, branch, read_tree(dir)?))
    }

    /// Publishes `files` (repo path → bytes) as a new commit of `repo` on `branch`.
    pub fn add_files(&self, repo: &str, branch: &str, files: BTreeMap<String, Vec<u8>>) -> String {
        let mut h = Sha256::new();
        h.update(format!("{repo}\n{branch}\n"));
        for (path, bytes) in &files {
            h.update(format!("{path} {}\n", sha256_hex(bytes)));
        }
        let sha = hex(&h.finalize())[..40].to_string();
        let mut st = self.shared.lock();
        let mut commit = BTreeMap::new();
        for (path, bytes) in files {
            let bytes = Arc::new(bytes);
            if is_lfs(&path) {
                st.lfs.insert(sha256_hex(&bytes), Arc::clone(&bytes));
            }
            commit.insert(path, bytes);
        }
        let entry = st.repos.entry(repo.to_string()).or_default();
        entry.commits.insert(sha.clone(), commit);
        entry.refs.insert(branch.to_string(), sha.clone());
        sha
    }

    /// Queues a fault for the next request matching `target`.
    pub fn fault(&self, target: Target, fault: Fault) {
        self.shared.lock().faults.push((target, fault));
    }

    /// Sends file bodies at about `bytes_per_sec` (None: full speed).
    pub fn throttle(&self, bytes_per_sec: Option<u64>) {
        self.shared.lock().throttle = bytes_per_sec;
    }

    /// Requires `Authorization: Bearer <token>` on the hub (as a gated repo does).
    pub fn require_token(&self, token: Option<&str>) {
        self.shared.lock().token = token.map(str::to_string);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// Blocks until the process is killed (for `huatuo dev hub-server`).
    pub fn serve_forever(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Files whose bytes the hub keeps in LFS (and serves through the CDN).
pub fn is_lfs(path: &str) -> bool {
    [".safetensors", ".bin", ".model", ".pt", ".gguf"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 40-hex id for a small file, standing in for its git blob id.
fn git_id(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("blob {}\0", bytes.len()));
    h.update(bytes);
    hex(&h.finalize())[..40].to_string()
}

/// Every file under `dir`, by `/`-separated relative path.
pub fn read_tree(dir: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    collect(dir, "", &mut files)?;
    Ok(files)
}

fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &format!("{name}/"), out)?;
        } else {
            out.insert(name, std::fs::read(entry.path())?);
        }
    }
    Ok(())
}

fn accept_loop(shared: &Arc<Shared>, hub: &TcpListener, cdn: &TcpListener) {
    while !shared.stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for (listener, server) in [(hub, "hub"), (cdn, "cdn")] {
            if let Ok((stream, _)) = listener.accept() {
                idle = false;
                let s = Arc::clone(shared);
                std::thread::spawn(move || serve(&s, server, stream));
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn serve(shared: &Shared, server: &'static str, mut stream: TcpStream) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .is_err()
    {
        return;
    }
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    if let Some(reply) = control(shared, &head) {
        let _ = write_reply(&mut stream, &reply, &head.method, None, &shared.stop);
        return;
    }
    let (reply, file) = if server == "hub" {
        route_hub(shared, &head)
    } else {
        route_cdn(shared, &head)
    };
    let throttle = {
        let mut st = shared.lock();
        st.log.push(Request {
            server,
            method: head.method.clone(),
            path: head.path.clone(),
            file,
            range: head.header("range").map(str::to_string),
            authorization: head.header("authorization").map(str::to_string),
            status: reply.status,
        });
        st.throttle
    };
    let _ = write_reply(&mut stream, &reply, &head.method, throttle, &shared.stop);
}

/// The stand-in's own endpoints (not recorded): `/_stand_in/requests` (the log as JSON) and
/// `/_stand_in/throttle?bytes_per_sec=N` (0: full speed), for scripts driving the dev server.
fn control(shared: &Shared, head: &Head) -> Option<Reply> {
    match head.path.as_str() {
        "/_stand_in/requests" => {
            let log = serde_json::to_string(&shared.lock().log).unwrap_or_default();
            Some(Reply::new(200).text("application/json", log))
        }
        "/_stand_in/throttle" => {
            let rate = head
                .query
                .strip_prefix("bytes_per_sec=")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n > 0);
            shared.lock().throttle = rate;
            Some(Reply::new(200).text("text/plain", "ok"))
        }
        _ => None,
    }
}

/// Pops the first queued fault for `target`.
fn take_fault(shared: &Shared, target: &Target) -> Option<Fault> {
    let mut st = shared.lock();
    let i = st.faults.iter().position(|(t, _)| t == target)?;
    Some(st.faults.remove(i).1)
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::new(status)
        .header("X-Error-Code", code)
        .header("X-Error-Message", message)
        .text("application/json", json!({ "error": message }).to_string())
}

/// `{org}/{name}` and the rest of a path after them.
fn split_repo(rest: &str) -> Option<(String, &str)> {
    let mut it = rest.splitn(3, '/');
    let org = it.next()?;
    let name = it.next()?;
    Some((format!("{org}/{name}"), it.next().unwrap_or("")))
}

fn route_hub(shared: &Shared, head: &Head) -> (Reply, Option<String>) {
    let st = shared.lock();
    if let Some(token) = &st.token {
        let expected = format!("Bearer {token}");
        match head.header("authorization") {
            None => {
                return (
                    error(
                        401,
                        "GatedRepo",
                        "Access to this model is restricted: log in",
                    ),
                    None,
                )
            }
            Some(h) if h != expected => {
                return (
                    error(
                        401,
                        "InvalidCredentials",
                        "Invalid credentials in Authorization header",
                    ),
                    None,
                )
            }
            Some(_) => {}
        }
    }
    drop(st);
    if let Some(rest) = head.path.strip_prefix("/api/models/") {
        if let Some(Fault::Status(s)) = take_fault(shared, &Target::Api) {
            return (error(s, "StandInFault", "scripted failure"), None);
        }
        let Some((repo, tail)) = split_repo(rest) else {
            return (error(404, "RepoNotFound", "Repository not found"), None);
        };
        let rev = tail
            .strip_prefix("revision/")
            .map(percent_decode)
            .unwrap_or_else(|| "main".to_string());
        return (
            repo_info(shared, &repo, &rev, head.query.contains("blobs=true")),
            None,
        );
    }
    let Some((repo, tail)) = split_repo(head.path.trim_start_matches('/')) else {
        return (error(404, "EntryNotFound", "Not found"), None);
    };
    let Some((rev, file)) = tail
        .strip_prefix("resolve/")
        .and_then(|t| t.split_once('/'))
    else {
        return (error(404, "EntryNotFound", "Not found"), None);
    };
    let (rev, file) = (percent_decode(rev), percent_decode(file));
    let target = if head.method == "HEAD" {
        Target::Head(file.clone())
    } else {
        Target::Get(file.clone())
    };
    let fault = if head.method == "HEAD" || !is_lfs(&file) {
        take_fault(shared, &target)
    } else {
        None
    };
    if let Some(Fault::Status(s)) = fault {
        return (error(s, "StandInFault", "scripted failure"), Some(file));
    }
    let reply = resolve(shared, head, &repo, &rev, &file, fault);
    (reply, Some(file))
}

fn lookup(st: &State, repo: &str, rev: &str) -> Result<String, Reply> {
    let r = st
        .repos
        .get(repo)
        .ok_or_else(|| error(404, "RepoNotFound", "Repository not found"))?;
    if let Some(sha) = r.refs.get(rev) {
        return Ok(sha.clone());
    }
    if r.commits.contains_key(rev) {
        return Ok(rev.to_string());
    }
    Err(error(404, "RevisionNotFound", "Invalid rev id"))
}

fn repo_info(shared: &Shared, repo: &str, rev: &str, blobs: bool) -> Reply {
    let st = shared.lock();
    let sha = match lookup(&st, repo, rev) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let files = st.repos.get(repo).and_then(|r| r.commits.get(&sha));
    let siblings: Vec<_> = files
        .into_iter()
        .flatten()
        .map(|(path, bytes)| {
            if !blobs {
                return json!({ "rfilename": path });
            }
            let mut s = json!({ "rfilename": path, "size": bytes.len(), "blobId": git_id(bytes) });
            if is_lfs(path) {
                s["lfs"] =
                    json!({ "sha256": sha256_hex(bytes), "size": bytes.len(), "pointerSize": 134 });
            }
            s
        })
        .collect();
    let body = json!({
        "_id": "stand-in",
        "id": repo,
        "modelId": repo,
        "author": repo.split('/').next(),
        "sha": sha,
        "lastModified": "2024-07-01T00:00:00.000Z",
        "private": false,
        "gated": false,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "library_name": "transformers",
        "siblings": siblings,
    });
    Reply::new(200).text("application/json; charset=utf-8", body.to_string())
}

fn resolve(
    shared: &Shared,
    head: &Head,
    repo: &str,
    rev: &str,
    file: &str,
    fault: Option<Fault>,
) -> Reply {
    let st = shared.lock();
    let sha = match lookup(&st, repo, rev) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let Some(bytes) = st
        .repos
        .get(repo)
        .and_then(|r| r.commits.get(&sha))
        .and_then(|c| c.get(file))
        .cloned()
    else {
        return error(404, "EntryNotFound", "Entry not found");
    };
    if is_lfs(file) {
        let digest = sha256_hex(&bytes);
        let location = format!(
            "{}/lfs/{digest}/{file}?X-Amz-Signature=stand-in",
            shared.cdn_url
        );
        return Reply::new(302)
            .header("Location", location.clone())
            .header("X-Repo-Commit", sha)
            .header("X-Linked-Etag", format!("\"{digest}\""))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("ETag", format!("\"{}\"", git_id(digest.as_bytes())))
            .text(
                "text/plain; charset=utf-8",
                format!("Found. Redirecting to {location}"),
            );
    }
    let etag = format!("\"{}\"", git_id(&bytes));
    let reply = Reply::new(200)
        .header("X-Repo-Commit", sha)
        .header("ETag", etag)
        .header("Accept-Ranges", "bytes");
    body_reply(reply, bytes, head, fault)
}

fn route_cdn(shared: &Shared, head: &Head) -> (Reply, Option<String>) {
    let Some((digest, file)) = head
        .path
        .strip_prefix("/lfs/")
        .and_then(|p| p.split_once('/'))
    else {
        return (Reply::new(404).text("text/plain", "NoSuchKey"), None);
    };
    let file = percent_decode(file);
    let Some(bytes) = shared.lock().lfs.get(digest).cloned() else {
        return (Reply::new(404).text("text/plain", "NoSuchKey"), Some(file));
    };
    let fault = if head.method == "GET" {
        take_fault(shared, &Target::Get(file.clone()))
    } else {
        None
    };
    if let Some(Fault::Status(s)) = fault {
        return (
            Reply::new(s).text("text/plain", "scripted failure"),
            Some(file),
        );
    }
    let reply = Reply::new(200)
        .header(
            "ETag",
            format!("\"{}\"", &sha256_hex(digest.as_bytes())[..32]),
        )
        .header("Accept-Ranges", "bytes");
    (body_reply(reply, bytes, head, fault), Some(file))
}

/// The bytes, or the requested range of them, with the fault applied.
fn body_reply(mut reply: Reply, bytes: Arc<Vec<u8>>, head: &Head, fault: Option<Fault>) -> Reply {
    let len = bytes.len() as u64;
    match parse_range(head.header("range"), len) {
        Ok(None) => {}
        Ok(Some((start, end))) => {
            reply.status = 206;
            reply = reply.header("Content-Range", format!("bytes {start}-{}/{len}", end - 1));
            reply.range = Some((start, end));
        }
        Err(()) => {
            return Reply::new(416)
                .header("Content-Range", format!("bytes */{len}"))
                .text("text/plain", "Range Not Satisfiable");
        }
    }
    reply = reply.header("Content-Type", "application/octet-stream");
    reply.body = bytes;
    match fault {
        Some(Fault::DropAfter(n)) => reply.drop_after = Some(n),
        Some(Fault::Corrupt) => reply.corrupt = true,
        _ => {}
    }
    reply
}
