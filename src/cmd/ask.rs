//! `huatuo ask`: one question for scripts and pipelines. The answer alone goes to stdout,
//! streamed and flushed per piece, with no escape codes when stdout is not a terminal;
//! progress and errors go to stderr. The prompt can come from arguments, stdin, or both;
//! `--session` continues a saved conversation exactly as the reference's multi-turn `chat()`.
//! Ctrl-C stops at once (exit 130, the partial answer kept); a closed stdout ends quietly.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::Interrupted;
use crate::chat::conversation::TurnError;
use crate::chat::images::ImageStore;
use crate::chat::session::{self, Session, Store};
use crate::cli::AskArgs;
use crate::config::{Dirs, Settings};
use crate::dicom::Window;
use crate::protocol::{
    Command, Completion, Event, FailureKind, ImageRef, ModelInfo, Record, Stop, MAX_IMAGES_PER_TURN,
};
use crate::term::{printable, sanitize, TermFacts};

const LOAD_ID: u64 = 1;
const ASK_ID: u64 = 2;
/// How often a session with an answer in progress is rewritten, so a crash keeps most of it.
const SESSION_SAVE_EVERY: Duration = Duration::from_secs(2);

/// Runs `ask`.
///
/// With `--json`, an error is also printed on stdout as `{"error": {"message", "kind"}}`
/// (`kind`: `bad_input`, `model`, `internal` or `interrupted`), so a script reading stdout
/// always gets one JSON object; the one-line message still goes to stderr and the exit status
/// is 2 (130 after Ctrl-C).
pub fn run(args: AskArgs, facts: TermFacts) -> Result<()> {
    let json = args.json;
    let result = ask(args, facts);
    if let (true, Err(e)) = (json, &result) {
        let kind = if e.downcast_ref::<Interrupted>().is_some() {
            "interrupted"
        } else if let Some(f) = e.downcast_ref::<EngineFailure>() {
            match f.kind {
                FailureKind::BadInput => "bad_input",
                FailureKind::Model => "model",
                FailureKind::Internal => "internal",
            }
        } else if e.chain().any(|c| c.is::<std::io::Error>()) {
            "internal"
        } else {
            "bad_input"
        };
        let value = serde_json::json!({
            "error": { "message": crate::text::error_line(e.chain()), "kind": kind }
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        let _ = out.flush();
    }
    result
}

/// An engine request that failed, with the engine's kind of failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct EngineFailure {
    kind: FailureKind,
    message: String,
}

fn ask(args: AskArgs, facts: TermFacts) -> Result<()> {
    if args.model.model.len() > 1 {
        return compare(args, facts);
    }
    let Prepared {
        prompt,
        images,
        dirs,
        settings,
        sampling,
        remote,
    } = prepare(&args, facts)?;
    let spec = super::spec_for(remote.as_ref(), &args.model, &args.runtime, &settings)?;
    let store = Store::new(dirs.sessions());
    // One turn at a time per session, from reading its history to writing this turn.
    let _lock = match &args.session {
        Some(name) => Some(store.lock(name, !args.no_wait, || {
            eprintln!(
                "huatuo: session {name} is in use by another huatuo; waiting for its turn to end"
            )
        })?),
        None => None,
    };
    let mut session = match &args.session {
        Some(name) => Some(store.load(name)?.unwrap_or_else(|| Session::new(name))),
        None => None,
    };
    // The turn as it will be saved; written first with an empty answer marked interrupted,
    // then rewritten as the answer grows, so a crash keeps every earlier turn and most of this.
    // A session keeps its images by content; a one-shot question reads them in place.
    let image_store = match &session {
        Some(_) => store.images(),
        None => ImageStore::transient(),
    };
    let (request, mut turn) = session.as_ref().unwrap_or(&Session::new("")).next_turn(
        &prompt,
        images,
        &sampling,
        &spec.source,
        &image_store,
    )?;
    turn.interrupted = true;

    let interrupts = install_interrupt_handler();
    let engine = super::engine_with(remote.as_ref(), facts.stderr_tty);
    engine.send(Command::Load {
        id: LOAD_ID,
        spec: spec.clone(),
    })?;
    let info = wait_loaded(&engine, LOAD_ID, &interrupts, facts)?;

    if facts.stdout_tty && !args.no_images && !args.json {
        show_images(&turn.images);
    }
    engine.send(Command::Generate {
        id: ASK_ID,
        request: Box::new(request),
    })?;

    let save = |session: &mut Option<Session>, turn: &session::Turn| -> Result<()> {
        if let Some(s) = session.as_mut() {
            let mut copy = s.clone();
            copy.turns.push(turn.clone());
            store.save(&mut copy)?;
        }
        Ok(())
    };

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut partial = String::new();
    let mut broken_pipe = false;
    let mut cancelled_by_user = false;
    let mut last_save = Instant::now();
    let completion: Completion = loop {
        if interrupts.load(Ordering::SeqCst) > 0 && !cancelled_by_user {
            cancelled_by_user = true;
            engine.cancel(ASK_ID);
        }
        let event = match engine.events().recv_timeout(Duration::from_millis(50)) {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the model worker stopped unexpectedly")
            }
        };
        match event {
            Event::Started { id, params, .. } if id == ASK_ID => {
                turn.started(&params);
                save(&mut session, &turn)?;
            }
            Event::Token { id, text } if id == ASK_ID => {
                partial.push_str(&text);
                if !args.json && !broken_pipe {
                    let text = printable(&text);
                    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            return Err(e.into());
                        }
                        broken_pipe = true;
                        engine.cancel(ASK_ID);
                    }
                }
                if session.is_some() && last_save.elapsed() >= SESSION_SAVE_EVERY {
                    turn.answer = partial.clone();
                    save(&mut session, &turn)?;
                    last_save = Instant::now();
                }
            }
            Event::Finished { id, completion } if id == ASK_ID => break completion,
            Event::Failed {
                id,
                error,
                partial,
                kind,
            } if id == ASK_ID => {
                if !partial.is_empty() {
                    turn.cut_short(&partial);
                    save(&mut session, &turn)?;
                }
                return Err(EngineFailure {
                    kind,
                    message: error,
                }
                .into());
            }
            _ => {}
        }
    };
    let _ = engine.send(Command::Shutdown);

    let earlier = session.as_ref().map_or(&[][..], |s| &s.turns[..]);
    turn.finish(&completion, Some(&info), earlier);
    let record = turn.record.clone();
    if let Some(s) = session.as_mut() {
        s.turns.push(turn);
        store.save(s)?;
    }
    if broken_pipe {
        return Ok(());
    }
    if args.json {
        let lossy_paths = record.as_ref().is_some_and(|r| {
            crate::protocol::is_lossy(&r.model.path)
                || r.images.iter().any(|i| crate::protocol::is_lossy(&i.path))
        });
        let report = Report {
            answer: &completion.text,
            session: args.session.as_deref(),
            lossy_paths,
            record: record.as_ref(),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else if !completion.text.is_empty() {
        out.write_all(b"\n")?;
    }
    if completion.stop == Stop::Context && !args.json {
        eprintln!(
            "huatuo: the answer stopped at the context window ({} positions): the conversation is full",
            info.context_length
        );
    }
    out.flush()?;
    if cancelled_by_user {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// `ask --model A --model B`: the same question to each model in turn (one loaded at a time,
/// so two that do not fit in memory together still compare), each answer under its model's
/// name; with `--json`, an array of the reports `ask --json` prints.
/// What a question needs before any model is looked for, read and checked the same way for
/// one model and for a comparison.
struct Prepared {
    prompt: String,
    images: Vec<ImageRef>,
    dirs: Dirs,
    settings: Settings,
    sampling: crate::protocol::SamplingOverrides,
    remote: Option<super::Remote>,
}

/// The prompt, the images (at most [`MAX_IMAGES_PER_TURN`], counted before any file is read;
/// the conversation core checks the same rule) with their DICOM facts on stderr, config.toml,
/// the sampling overrides and the endpoint.
fn prepare(args: &AskArgs, facts: TermFacts) -> Result<Prepared> {
    let prompt = read_prompt(&args.prompt, facts)?;
    if args.images.len() > MAX_IMAGES_PER_TURN {
        return Err(TurnError::TooManyImages(args.images.len()).into());
    }
    let images = args
        .images
        .iter()
        .map(|p| attach(p, args.window.as_ref(), args.frame))
        .collect::<Result<Vec<_>>>()?;
    describe_dicom(&images);
    let dirs = Dirs::from_env()?;
    let settings = Settings::load(&dirs.config_file())?;
    let sampling = super::sampling(&args.sampling, &settings)?;
    let remote = super::remote(&args.remote, &settings)?;
    Ok(Prepared {
        prompt,
        images,
        dirs,
        settings,
        sampling,
        remote,
    })
}

fn compare(args: AskArgs, facts: TermFacts) -> Result<()> {
    if args.session.is_some() {
        bail!(
            "--session continues one conversation with one model: compare models without --session"
        );
    }
    let Prepared {
        prompt,
        images,
        settings,
        sampling,
        remote,
        ..
    } = prepare(&args, facts)?;
    let specs = args
        .model
        .model
        .iter()
        .map(|name| {
            super::spec_for(
                remote.as_ref(),
                &args.model.with(name),
                &args.runtime,
                &settings,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let (request, turn) = Session::new("").next_turn(
        &prompt,
        images,
        &sampling,
        &specs[0].source,
        &ImageStore::transient(),
    )?;
    let interrupts = install_interrupt_handler();
    let engine = super::engine_with(remote.as_ref(), facts.stderr_tty);
    if facts.stdout_tty && !args.no_images && !args.json {
        show_images(&turn.images);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut reports = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (load_id, ask_id) = (10 + 2 * i as u64, 11 + 2 * i as u64);
        engine.send(Command::Load {
            id: load_id,
            spec: spec.clone(),
        })?;
        let info = wait_loaded(&engine, load_id, &interrupts, facts)?;
        if !args.json {
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "## {}", printable(&spec.source))?;
            out.flush()?;
        }
        engine.send(Command::Generate {
            id: ask_id,
            request: Box::new(request.clone()),
        })?;
        let mut cancelled = false;
        let completion = loop {
            if interrupts.load(Ordering::SeqCst) > 0 && !cancelled {
                cancelled = true;
                engine.cancel(ask_id);
            }
            let event = match engine.events().recv_timeout(Duration::from_millis(50)) {
                Ok(e) => e,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the model worker stopped unexpectedly")
                }
            };
            match event {
                Event::Token { id, text } if id == ask_id && !args.json => {
                    out.write_all(printable(&text).as_bytes())?;
                    out.flush()?;
                }
                Event::Finished { id, completion } if id == ask_id => break completion,
                Event::Failed {
                    id, error, kind, ..
                } if id == ask_id => {
                    return Err(EngineFailure {
                        kind,
                        message: format!("{}: {error}", spec.source),
                    }
                    .into())
                }
                _ => {}
            }
        };
        if cancelled {
            if !args.json {
                writeln!(out)?;
            }
            return Err(Interrupted.into());
        }
        if !args.json {
            writeln!(out)?;
        }
        let mut turn = turn.clone();
        turn.model = Some(spec.source.clone());
        turn.finish(&completion, Some(&info), &[]);
        reports.push((completion.text, turn.record));
    }
    let _ = engine.send(Command::Shutdown);
    if args.json {
        let reports: Vec<Report> = reports
            .iter()
            .map(|(answer, record)| Report {
                answer,
                session: None,
                lossy_paths: record.as_ref().is_some_and(|r| {
                    crate::protocol::is_lossy(&r.model.path)
                        || r.images.iter().any(|i| crate::protocol::is_lossy(&i.path))
                }),
                record: record.as_ref(),
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?;
    }
    out.flush()?;
    Ok(())
}

/// The prompt from the arguments and/or stdin (`-` alone: stdin only). A terminal stdin is
/// never read, so `ask` cannot hang waiting for input nobody types.
fn read_prompt(words: &[String], facts: TermFacts) -> Result<String> {
    let stdin_only = words.len() == 1 && words[0] == "-";
    let args_text = if stdin_only {
        String::new()
    } else {
        words.join(" ")
    };
    let mut piped = String::new();
    if stdin_only || facts.stdin_readable {
        if stdin_only && facts.stdin_tty {
            bail!("`-` reads the prompt from stdin, but stdin is a terminal: pipe the text in");
        }
        // Never more than the engine could take: 4 MiB cannot fit any supported model's
        // context window (4096 positions of tokens shorter than 512 bytes), and reading and
        // tokenizing more would cost memory in proportion. The engine then applies the
        // loaded model's own, smaller bound before tokenizing (`Pipeline::max_text_bytes`).
        const MAX_PROMPT_BYTES: usize = 4 << 20;
        let limit = MAX_PROMPT_BYTES;
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the prompt from stdin")?;
        if bytes.len() + args_text.len() > limit {
            bail!(
                "the prompt is more than {limit} bytes, more than any model's context window can take: shorten it"
            );
        }
        piped = String::from_utf8(bytes)
            .map_err(|_| anyhow!("stdin is not UTF-8 text: convert it first (e.g. iconv)"))?;
    }
    let prompt = match (args_text.trim().is_empty(), piped.trim().is_empty()) {
        (false, false) => format!("{args_text}\n{}", piped.trim_end()),
        (false, true) => args_text,
        (true, false) => piped.trim_end().to_string(),
        (true, true) => bail!("no prompt: give a question as arguments or on stdin"),
    };
    Ok(prompt)
}

/// An image named on the command line, by its absolute path, with its DICOM window and frame:
/// `PATH@WINDOW[:FRAME]` or `PATH@:FRAME` when `PATH` (without the suffix) is the file and the
/// whole text is not, else the global `--window`/`--frame`. The conversation core reads,
/// checks and hashes the file.
fn attach(arg: &Path, window: Option<&Window>, frame: Option<u32>) -> Result<ImageRef> {
    let (path, own_window, own_frame) = split_view(arg)?;
    Ok(ImageRef {
        path: std::path::absolute(&path).unwrap_or(path),
        sha256: None,
        window: own_window.or(window.cloned()).map(|w| w.to_string()),
        frame: own_frame.or(frame),
    })
}

/// Splits `PATH@WINDOW[:FRAME]` (only when that reading names an existing file and the whole
/// argument does not).
fn split_view(arg: &Path) -> Result<(std::path::PathBuf, Option<Window>, Option<u32>)> {
    let whole = arg.to_path_buf();
    let Some(text) = arg.to_str() else {
        return Ok((whole, None, None));
    };
    let Some((file, view)) = text.rsplit_once('@') else {
        return Ok((whole, None, None));
    };
    if whole.exists() || !Path::new(file).is_file() {
        return Ok((whole, None, None));
    }
    let (window, frame) = match view.rsplit_once(':') {
        Some((w, f)) => (w, Some(f)),
        None => (view, None),
    };
    let window = match window {
        "" => None,
        w => Some(
            w.parse::<Window>()
                .map_err(|e| anyhow!("image {file}: window {w:?}: {e}"))?,
        ),
    };
    let frame = match frame {
        None => None,
        Some(f) => match f.parse::<u32>() {
            Ok(n) if n >= 1 => Some(n),
            _ => bail!("image {file}: frame {f:?}: give a frame number from 1"),
        },
    };
    Ok((std::path::PathBuf::from(file), window, frame))
}

/// For each DICOM image, one line on stderr with its safe technical facts (modality, size,
/// frames, the window that applies) and any warning about text burned into the pixels; never
/// an identifying tag.
fn describe_dicom(images: &[ImageRef]) {
    for image in images {
        // Regular files only, bounded (never /dev/zero or a FIFO); not DICOM, or
        // unreadable: the turn itself will say so.
        let Ok(bytes) = crate::chat::images::read_image(&image.path) else {
            continue;
        };
        if !crate::dicom::is_dicom(&bytes) {
            continue;
        }
        let Ok(dicom) = crate::dicom::from_bytes(&image.path, &bytes) else {
            continue;
        };
        let name = sanitize(
            &image
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
        )
        .into_owned();
        let frames = dicom.frames();
        let mut line = format!("{name}: {}", dicom.meta());
        line.push_str(&format!(
            " · frame {} of {frames}",
            image.frame.unwrap_or(1)
        ));
        if let Some(w) = &image.window {
            line.push_str(&format!(" · window {w}"));
        }
        eprintln!("huatuo: {line}");
        for warning in dicom.meta().warnings() {
            eprintln!("huatuo: warning: {name}: {warning}");
        }
    }
}

/// Counts Ctrl-C presses: the first cancels the answer, the second exits at once.
fn install_interrupt_handler() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    // If a handler is already installed (tests calling run twice), keep the first one.
    let _ = ctrlc::set_handler(move || {
        if seen.fetch_add(1, Ordering::SeqCst) >= 1 {
            std::process::exit(130);
        }
    });
    count
}

/// Waits for the model to load, drawing progress on stderr when it is a terminal.
fn wait_loaded(
    engine: &crate::engine::EngineHandle,
    load_id: u64,
    interrupts: &AtomicUsize,
    facts: TermFacts,
) -> Result<ModelInfo> {
    let mut shown = false;
    loop {
        if interrupts.load(Ordering::SeqCst) > 0 {
            return Err(Interrupted.into());
        }
        let event = match engine.events().recv_timeout(Duration::from_millis(50)) {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the model worker stopped unexpectedly")
            }
        };
        match event {
            Event::LoadProgress {
                id,
                stage,
                done,
                total,
            } if id == load_id && facts.stderr_tty => {
                let pct = (done * 100).checked_div(total).unwrap_or(0);
                eprint!("\r\x1b[2Kloading model: {stage:?} {pct}%");
                shown = true;
            }
            Event::Loaded { id, info } if id == load_id => {
                if shown {
                    eprint!("\r\x1b[2K");
                }
                return Ok(info);
            }
            Event::Failed {
                id, error, kind, ..
            } if id == load_id => {
                if shown {
                    eprintln!();
                }
                return Err(EngineFailure {
                    kind,
                    message: error,
                }
                .into());
            }
            _ => {}
        }
    }
}

/// Shows each image inline (kitty / iTerm2 / sixel / half blocks) with its name; only called
/// when stdout is a terminal. A picture that cannot be drawn is named instead.
fn show_images(images: &[ImageRef]) {
    for (i, img) in images.iter().enumerate() {
        let name = img
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        // viuer asks the terminal whether it speaks the kitty protocol and, outside raw mode,
        // the terminal's answer is echoed onto the screen; only let it ask a terminal that
        // says it is kitty. iTerm2 is detected from the environment without a query.
        let config = viuer::Config {
            width: Some(32),
            absolute_offset: false,
            use_kitty: says_kitty(),
            ..Default::default()
        };
        let drawn = image::open(&img.path)
            .ok()
            .and_then(|pic| viuer::print(&pic, &config).ok());
        match drawn {
            Some((w, h)) => println!(
                "[img{}] {} ({w}×{h} cells)",
                i + 1,
                sanitize(&name.unwrap_or_default())
            ),
            None => println!("[img{}] {}", i + 1, sanitize(&name.unwrap_or_default())),
        }
    }
}

/// Whether the environment says the terminal is kitty (or a kitty-protocol terminal that
/// advertises itself the same way).
fn says_kitty() -> bool {
    std::env::var_os("KITTY_WINDOW_ID").is_some()
        || std::env::var("TERM").is_ok_and(|t| t.contains("kitty"))
        || std::env::var("TERM_PROGRAM").is_ok_and(|t| t == "ghostty" || t == "WezTerm")
}

/// The `--json` object (documented in README.md): the answer and the turn's record, fields
/// serialised as they are (floats at their shortest: `0.2`, not `0.20000000298023224`).
#[derive(serde::Serialize)]
struct Report<'a> {
    answer: &'a str,
    session: Option<&'a str>,
    /// Some path below is not UTF-8 and is shown lossily (invalid bytes as U+FFFD).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    lossy_paths: bool,
    #[serde(flatten)]
    record: Option<&'a Record>,
}
