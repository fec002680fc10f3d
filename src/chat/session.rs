//! Saved conversations (`ask --session NAME`, the TUI's `/save` and `/load`): one JSON file per
//! session under the data directory, written atomically (temporary file, fsync, rename) so a
//! crash or `kill -9` mid-write leaves either the old file or the new one, never half of one.
//!
//! A session holds what the reference's multi-turn `chat()` holds (huatuo-reference.md §3.1):
//! each turn's text with its image placeholders, the answer exactly as history keeps it
//! (unstripped), and every image in order; plus what people need to read it later (the text as
//! typed, image hashes, the model, whether an answer was interrupted).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::images::ImageStore;
use crate::protocol::{Exchange, ImageRef, Record, Stop};
use crate::text::py_strip;

/// Current file format.
pub const SESSION_VERSION: u32 = 1;

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The text as the user typed it.
    pub text: String,
    /// Sanitised text with one `<image>\n` per image: what the prompt's history uses.
    pub user: String,
    #[serde(default)]
    pub images: Vec<ImageRef>,
    /// The answer as the reference's chat() keeps it in history (unstripped).
    pub answer: String,
    /// The answer was cut short (Ctrl-C, a crash, an error); `answer` is the partial text.
    #[serde(default)]
    pub interrupted: bool,
    /// Why the answer ended (`context`: the window was full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Exactly what produced the answer (absent in sessions of earlier versions, and for
    /// an answer cut short by an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// The model that answered (`7b`, a repo id or a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Generation settings used, for the record (free-form JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// Unix seconds.
    #[serde(default)]
    pub time: u64,
}

/// A saved conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub version: u32,
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    pub turns: Vec<Turn>,
}

impl Session {
    /// An empty session named `name`.
    pub fn new(name: &str) -> Self {
        let now = now();
        Self {
            version: SESSION_VERSION,
            name: name.to_string(),
            created: now,
            updated: now,
            turns: Vec::new(),
        }
    }

    /// The exchanges and images the next prompt is built from, in order.
    pub fn history(&self) -> (Vec<Exchange>, Vec<ImageRef>) {
        let exchanges = self
            .turns
            .iter()
            .map(|t| Exchange {
                user: t.user.clone(),
                answer: t.answer.clone(),
            })
            .collect();
        let images = self.turns.iter().flat_map(|t| t.images.clone()).collect();
        (exchanges, images)
    }

    /// The conversation as Markdown, for `sessions show` and `/export`.
    pub fn to_markdown(&self) -> String {
        let mut md = format!("# Session {}\n\n", self.name);
        let mut image_no = 0;
        for (i, turn) in self.turns.iter().enumerate() {
            md.push_str(&format!("## Turn {}\n\n", i + 1));
            for img in &turn.images {
                image_no += 1;
                let name = img
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // In angle brackets a destination may hold spaces and parentheses.
                let dest = img.path.display().to_string().replace('>', "%3E");
                md.push_str(&format!("![img{image_no}: {name}](<{dest}>)\n"));
            }
            if !turn.images.is_empty() {
                md.push('\n');
            }
            md.push_str(&format!("**User:** {}\n\n", py_strip(&turn.text)));
            let model = answer_label(turn);
            md.push_str(&format!("**{model}:** {}\n", py_strip(&turn.answer)));
            if turn.interrupted {
                md.push_str("\n*(answer interrupted)*\n");
            } else if turn.stop == Some(Stop::Context) {
                md.push_str("\n*(context full: the answer was cut at the context window)*\n");
            }
            if let Some(r) = &turn.record {
                md.push_str(&record_footer(r));
            } else if let Some(settings) = &turn.settings {
                // Sessions of earlier versions kept the settings without the record.
                md.push_str(&format!("\n<sub>settings: {settings}</sub>\n"));
            }
            md.push('\n');
        }
        md
    }
}

/// Who answered a turn, for people: the hub repo with its revision when known, else the
/// model's short name (`7b`, or a checkpoint directory's own name), never a whole path.
fn answer_label(turn: &Turn) -> String {
    if let Some(r) = &turn.record {
        if let Some(repo) = &r.model.repo {
            return match &r.model.revision {
                Some(rev) => format!("{repo}@{}", &rev[..rev.len().min(12)]),
                None => repo.clone(),
            };
        }
    }
    match turn.model.as_deref() {
        Some(m) => model_name(m),
        None => "assistant".into(),
    }
}

/// A model source as people name it: `7b` or a repo id as given; a directory by its own name.
fn model_name(source: &str) -> String {
    if source.contains(std::path::MAIN_SEPARATOR) && std::path::Path::new(source).is_absolute()
        || source.starts_with('.')
        || source.starts_with('~')
    {
        let trimmed = source.trim_end_matches('/');
        return trimmed.rsplit('/').next().unwrap_or(trimmed).to_string();
    }
    source.to_string()
}

/// One compact line under an answer: what produced it (model and revision or folder,
/// quantization, dtype, device, sampling with the seed, images by hash, tokens, time).
pub fn record_footer(r: &Record) -> String {
    let model = match (&r.model.repo, &r.model.revision) {
        (Some(repo), Some(rev)) => format!("{repo}@{}", &rev[..rev.len().min(12)]),
        (Some(repo), None) => repo.clone(),
        _ => model_name(&r.model.source),
    };
    let s = &r.sampling;
    let images: Vec<String> = r
        .images
        .iter()
        .map(|i| {
            let sha = i.sha256.as_deref().unwrap_or("?");
            format!("img{} {}", i.turn, &sha[..sha.len().min(12)])
        })
        .collect();
    let mut line = format!(
        "\n<sub>{} {} · {model} · {} {} {} · T {} top-k {} top-p {} rep {} max {} seed {}",
        r.engine.name,
        r.engine.version,
        r.quantization,
        r.dtype,
        r.device,
        s.temperature,
        s.top_k,
        s.top_p,
        s.repetition_penalty,
        s.max_new_tokens,
        s.seed
    );
    if !images.is_empty() {
        line.push_str(&format!(" · {}", images.join(", ")));
    }
    line.push_str(&format!(
        " · {} + {} tokens · {:.1} s to first token</sub>\n",
        r.tokens.prompt_total,
        r.tokens.generated,
        r.timings.time_to_first_token_ms / 1000.0
    ));
    line
}

/// What went wrong with a session file.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "invalid session name {0:?}: use letters, digits, '.', '_' and '-' (at most 64, not starting with '.')"
    )]
    BadName(String),
    #[error("no session named {name} (in {dir})")]
    NotFound { name: String, dir: PathBuf },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid session file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("session {name} is in use by another huatuo (a turn is being answered); try again when it is done, or leave out --no-wait to wait for it")]
    Busy { name: String },
    #[error("{path} is {size} bytes: more than a session file can be ({MAX_SESSION_BYTES} bytes)")]
    TooLarge { path: PathBuf, size: u64 },
}

/// The largest session file read: a long conversation with its records is a few hundred
/// kilobytes, so 64 MiB is far beyond any real one and bounds the memory a file can take.
pub const MAX_SESSION_BYTES: u64 = 64 << 20;

/// An exclusive hold on one session for a whole turn (reading it, answering, writing it), so
/// two turns asked at once cannot both build on the same history and lose one of them.
/// Released when dropped (and by the system if the process dies).
#[derive(Debug)]
pub struct SessionLock {
    _file: std::fs::File,
}

/// A line of `sessions` listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub name: String,
    pub turns: usize,
    pub images: usize,
    pub updated: u64,
    /// The model of the last turn (`7b`, a repo id or a path).
    pub model: Option<String>,
    /// The first question, as typed.
    pub first_question: Option<String>,
    /// Why the file could not be read, when it could not (it is listed, not skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
}

impl Summary {
    fn of(name: String, s: &Session) -> Self {
        Self {
            name,
            turns: s.turns.len(),
            images: s.turns.iter().map(|t| t.images.len()).sum(),
            updated: s.updated,
            model: s.turns.iter().rev().find_map(|t| t.model.clone()),
            first_question: s.turns.first().map(|t| t.text.clone()),
            corrupt: None,
        }
    }

    fn corrupt(name: String, why: &SessionError) -> Self {
        Self {
            name,
            turns: 0,
            images: 0,
            updated: 0,
            model: None,
            first_question: None,
            corrupt: Some(why.to_string()),
        }
    }

    /// `name · 2026-12-03 08:41 · 3 turns · 7b · "first question…"` (the question on one
    /// line, shortened).
    pub fn line(&self) -> String {
        if let Some(why) = &self.corrupt {
            return format!("{} · corrupt: {why}", self.name);
        }
        let mut line = format!(
            "{} · {} · {} turn{}",
            self.name,
            date_time(self.updated),
            self.turns,
            if self.turns == 1 { "" } else { "s" }
        );
        if let Some(model) = &self.model {
            line.push_str(&format!(" · {}", short(model, 24)));
        }
        if let Some(q) = &self.first_question {
            let q: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
            line.push_str(&format!(" · \"{}\"", short(&q, 48)));
        }
        line
    }
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The name an automatic save gives a conversation: `chat-` and the date (`chat-2026-12-03-0841`,
/// `-2`, `-3`… when taken).
pub fn dated_name(unix: u64) -> String {
    format!("chat-{}", date_stamp(unix))
}

/// Whether `name` is one [`dated_name`] makes (possibly with a `-N` suffix).
pub fn is_dated_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("chat-") else {
        return false;
    };
    let b = rest.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let stamp = b.len() >= 15
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'-'
        && digits(11..15);
    stamp && (b.len() == 15 || (b[15] == b'-' && digits(16..b.len()) && b.len() > 16))
}

/// `2026-12-03 08:41` (UTC) from Unix seconds.
pub fn date_time(unix: u64) -> String {
    let stamp = date_stamp(unix);
    // "YYYY-MM-DD-HHMM"
    format!("{} {}:{}", &stamp[..10], &stamp[11..13], &stamp[13..15])
}

/// The sessions directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The images of these sessions (`<dir>/images/`), kept by content.
    pub fn images(&self) -> ImageStore {
        ImageStore::new(self.dir.join("images"))
    }

    /// The file of session `name`, after checking the name cannot escape the directory.
    pub fn path(&self, name: &str) -> Result<PathBuf, SessionError> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Takes the lock of session `name` for a turn. If another process holds it, `wait`
    /// says whether to wait for it (`on_wait` runs once, e.g. to say so) or to refuse.
    pub fn lock(
        &self,
        name: &str,
        wait: bool,
        on_wait: impl FnOnce(),
    ) -> Result<SessionLock, SessionError> {
        validate_name(name)?;
        let path = self.dir.join(format!(".{name}.lock"));
        let io = |source| SessionError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match fs4::FileExt::try_lock(&file) {
            // A filesystem without locks: proceed unlocked.
            Ok(()) | Err(fs4::TryLockError::Error(_)) => Ok(SessionLock { _file: file }),
            Err(fs4::TryLockError::WouldBlock) if !wait => Err(SessionError::Busy {
                name: name.to_string(),
            }),
            Err(fs4::TryLockError::WouldBlock) => {
                on_wait();
                fs4::FileExt::lock(&file).map_err(io)?;
                Ok(SessionLock { _file: file })
            }
        }
    }

    /// Loads `name`, or `None` if it does not exist yet. The file's name is the session's
    /// identity: a `name` inside that differs is replaced by it.
    pub fn load(&self, name: &str) -> Result<Option<Session>, SessionError> {
        let path = self.path(name)?;
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SessionError::Io { path, source }),
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > MAX_SESSION_BYTES {
            return Err(SessionError::TooLarge { path, size });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_SESSION_BYTES + 1),
            &mut text,
        )
        .map_err(|source| SessionError::Io {
            path: path.clone(),
            source,
        })?;
        let mut session: Session =
            serde_json::from_str(&text).map_err(|e| SessionError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        session.name = name.to_string();
        if session.version > SESSION_VERSION {
            return Err(SessionError::Corrupt {
                path,
                reason: format!(
                    "format version {} is newer than this huatuo understands ({SESSION_VERSION})",
                    session.version
                ),
            });
        }
        Ok(Some(session))
    }

    /// Loads `name` or fails naming it.
    pub fn get(&self, name: &str) -> Result<Session, SessionError> {
        self.load(name)?.ok_or_else(|| SessionError::NotFound {
            name: name.to_string(),
            dir: self.dir.clone(),
        })
    }

    /// Writes the session atomically, stamping `updated`.
    pub fn save(&self, session: &mut Session) -> Result<PathBuf, SessionError> {
        let path = self.path(&session.name)?;
        session.updated = now();
        let io = |source| SessionError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let json = serde_json::to_string_pretty(session).map_err(|e| SessionError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self
            .dir
            .join(format!(".{}.json.tmp-{}", session.name, std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Ok(d) = std::fs::File::open(&self.dir) {
                // Make the rename itself durable; not every platform can fsync a directory.
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        Ok(path)
    }

    /// Every session, most recently updated first. Unreadable files are skipped.
    pub fn list(&self) -> Result<Vec<Summary>, SessionError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SessionError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out: Vec<Summary> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let name = name.strip_suffix(".json")?.to_string();
                validate_name(&name).ok()?;
                match self.load(&name) {
                    Ok(Some(s)) => Some(Summary::of(name, &s)),
                    Ok(None) => None,
                    Err(e) => Some(Summary::corrupt(name, &e)),
                }
            })
            .collect();
        out.sort_by(|a, b| b.updated.cmp(&a.updated).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Deletes session `name` and the stored images no other session uses; returns the
    /// bytes of images freed.
    pub fn remove(&self, name: &str) -> Result<u64, SessionError> {
        let path = self.path(name)?;
        let hashes = |s: &Session| -> HashSet<String> {
            s.turns
                .iter()
                .flat_map(|t| &t.images)
                .filter_map(|i| i.sha256.clone())
                .collect()
        };
        let candidates = self.load(name)?.as_ref().map(hashes).unwrap_or_default();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                // Only images this session used, and only those no other session refers to
                // (a session that cannot be read keeps everything: nothing is freed).
                let mut in_use = HashSet::new();
                for other in self.list()? {
                    match self.load(&other.name) {
                        Ok(Some(s)) => in_use.extend(hashes(&s)),
                        _ => return Ok(0),
                    }
                }
                Ok(self.images().release(&candidates, &in_use))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SessionError::NotFound {
                name: name.to_string(),
                dir: self.dir.clone(),
            }),
            Err(source) => Err(SessionError::Io { path, source }),
        }
    }
}

fn validate_name(name: &str) -> Result<(), SessionError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadName(name.to_string()))
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-08-30-1412` (UTC) from Unix seconds.
pub fn date_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}-{:02}{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_stamps() {
        assert_eq!(date_stamp(0), "1970-01-01-0000");
        assert_eq!(date_stamp(951_782_400 + 3_660), "2000-02-29-0101");
        assert_eq!(date_stamp(1_788_000_000), "2026-08-29-1040");
    }

    #[test]
    fn dated_names() {
        let name = dated_name(1_788_000_000);
        assert_eq!(name, "chat-2026-08-29-1040");
        assert!(is_dated_name(&name) && is_dated_name("chat-2026-08-29-1040-2"));
        for other in [
            "case-1",
            "chat-",
            "chat-2026-08-29",
            "chat-2026-08-29-1040-",
            "chat-2026-08-29-1040x",
        ] {
            assert!(!is_dated_name(other), "{other}");
        }
    }

    use super::*;

    fn turn(text: &str, images: &[&str], answer: &str) -> Turn {
        Turn {
            text: text.into(),
            user: format!("{}{text}", "<image>\n".repeat(images.len())),
            images: images
                .iter()
                .map(|p| ImageRef {
                    path: PathBuf::from(p),
                    sha256: None,
                    ..ImageRef::default()
                })
                .collect(),
            answer: answer.into(),
            interrupted: false,
            stop: None,
            record: None,
            model: Some("7b".into()),
            settings: None,
            time: 1,
        }
    }

    #[test]
    fn save_load_list_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path().join("sessions"));
        assert!(store.load("a").expect("load").is_none());
        let mut s = Session::new("a");
        s.turns.push(turn("What is it?", &["x.png"], " A cell. "));
        s.turns.push(turn("Sure?", &[], "Yes."));
        store.save(&mut s).expect("save");
        assert_eq!(store.get("a").expect("get"), s);
        let list = store.list().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].turns, list[0].images), (2, 1));
        store.remove("a").expect("rm");
        assert!(matches!(
            store.remove("a"),
            Err(SessionError::NotFound { .. })
        ));
        let leftovers: Vec<_> = std::fs::read_dir(store.dir()).expect("dir").collect();
        assert!(leftovers.is_empty(), "no temporary files are left behind");
    }

    #[test]
    fn history_keeps_placeholders_answers_and_image_order() {
        let mut s = Session::new("h");
        s.turns.push(turn("one", &["a.png", "b.png"], " first \n"));
        s.turns.push(turn("two", &["c.png"], "second"));
        let (ex, imgs) = s.history();
        assert_eq!(ex[0].user, "<image>\n<image>\none");
        assert_eq!(ex[0].answer, " first \n");
        let paths: Vec<_> = imgs.iter().map(|a| a.path.display().to_string()).collect();
        assert_eq!(paths, ["a.png", "b.png", "c.png"]);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let store = Store::new(PathBuf::from("/tmp/x"));
        for bad in ["", "../etc", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(
                matches!(store.path(bad), Err(SessionError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(store.path("case-12_b.v2").is_ok());
    }

    #[test]
    fn markdown_numbers_images_and_marks_interruptions() {
        let mut s = Session::new("m");
        s.turns.push(turn("one", &["/d/a.png"], " A. "));
        let mut t = turn("two", &["/d/b.png"], "B");
        t.interrupted = true;
        s.turns.push(t);
        let mut spaced = turn("three", &["/d/my scans/c (1).png"], "C");
        spaced.model = Some("/models/tiny-qwen2/".into());
        spaced.settings = Some(serde_json::json!({"temperature": 0.0}));
        s.turns.push(spaced);
        let md = s.to_markdown();
        assert!(md.contains("![img1: a.png](</d/a.png>)"), "{md}");
        assert!(md.contains("![img2: b.png](</d/b.png>)"), "{md}");
        assert!(md.contains("**7b:** A.\n"), "{md}");
        assert!(md.contains("*(answer interrupted)*"), "{md}");
        // A path with spaces and parentheses stays one link; a directory model is named by
        // its own name; settings without a record are still shown.
        assert!(
            md.contains("![img3: c (1).png](</d/my scans/c (1).png>)"),
            "{md}"
        );
        assert!(md.contains("**tiny-qwen2:** C"), "{md}");
        assert!(md.contains("settings: {\"temperature\":0.0}"), "{md}");
        let events: Vec<_> = pulldown_cmark::Parser::new(&md)
            .filter_map(|e| match e {
                pulldown_cmark::Event::Start(pulldown_cmark::Tag::Image { dest_url, .. }) => {
                    Some(dest_url.to_string())
                }
                _ => None,
            })
            .collect();
        assert_eq!(events, ["/d/a.png", "/d/b.png", "/d/my scans/c (1).png"]);
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path().to_path_buf());
        std::fs::write(dir.path().join("bad.json"), "{ not json").expect("write");
        let err = store.load("bad").expect_err("corrupt");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
