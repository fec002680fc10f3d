//! `huatuo eval`: the paper's benchmark on the authors' evaluation data, locally or against a
//! serving engine (`--endpoint`, with `--concurrency` requests in flight), and `--score` for
//! an output file of the authors' eval.py. The rules (prompt, extraction, accuracies) are in
//! [`crate::eval`].
//!
//! Each item is asked as the reference's `inference()`: one turn, its readable images (up to
//! 6; an unreadable one is left out, reported, and the item still answered). Each result is a
//! line of `results.jsonl`, appended as it finishes, so a run stopped by Ctrl-C (or killed)
//! resumes where it stopped when the same command runs again with the same `--output`. Once
//! every item is answered the lines are rewritten in data order, and `summary.json`,
//! lmms-eval's `results.json` and a Markdown table on stdout follow.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::chat::images::ImageStore;
use crate::chat::session::Session;
use crate::cli::EvalArgs;
use crate::config::{Dirs, Settings};
use crate::engine::EngineHandle;
use crate::eval::{self, Item, Summary};
use crate::model::preprocess::{self, ImageOptions};
use crate::protocol::{Command, Event, ImageRef, ModelInfo, SamplingOverrides};
use crate::term::TermFacts;

/// eval.py's `--max_new_tokens` default.
const EVAL_MAX_NEW_TOKENS: usize = 256;
const LOAD_ID: u64 = 1;

/// Runs `eval`.
pub fn run(args: EvalArgs, facts: TermFacts) -> Result<()> {
    if let Some(file) = &args.score {
        return score(file, args.output.as_deref());
    }
    let data = args
        .data
        .clone()
        .ok_or_else(|| anyhow!("give the evaluation data with --data PATH (or an eval.py output file with --score FILE)"))?;
    let dirs = Dirs::from_env()?;
    let settings = Settings::load(&dirs.config_file())?;
    let mut overrides = super::sampling(&args.sampling, &settings)?;
    overrides.max_new_tokens = overrides.max_new_tokens.or(Some(EVAL_MAX_NEW_TOKENS));
    let remote = super::remote(&args.remote, &settings)?;
    let spec = super::spec_for(remote.as_ref(), &args.model, &args.runtime, &settings)?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }

    let (items, skipped) = select(&data, &args)?;
    let out = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "huatuo-eval-{}",
            crate::chat::session::date_stamp(crate::chat::session::now())
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // The settings of the run; a rerun into the same folder must have the same.
    let data_bytes =
        std::fs::read(&data).with_context(|| format!("cannot read {}", data.display()))?;
    let run = json!({
        "data_sha256": crate::chat::images::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&data_bytes))),
        "model": spec.source,
        "endpoint": remote.as_ref().map(|r| r.endpoint.clone()),
        "quant": spec.quant.map(|q| q.to_string()),
        "dtype": spec.dtype.to_string(),
        "sampling": overrides,
        "datasets": args.datasets,
        "limit": args.limit,
    });
    let run_file = out.join("run.json");
    if run_file.is_file() {
        let before: Value = serde_json::from_str(&std::fs::read_to_string(&run_file)?)
            .with_context(|| format!("{} is not JSON", run_file.display()))?;
        if before != run {
            bail!(
                "{} holds a run with other settings (data, model or sampling): give another --output to start a new run",
                out.display()
            );
        }
    } else {
        write_atomic(&run_file, &serde_json::to_vec_pretty(&run)?)?;
    }
    let results_file = out.join("results.jsonl");
    let mut done = read_results(&results_file)?;
    let wanted: HashSet<usize> = items.iter().map(|i| i.index).collect();
    done.retain(|index, _| wanted.contains(index));
    let todo: VecDeque<Item> = items
        .iter()
        .filter(|i| !done.contains_key(&i.index))
        .cloned()
        .collect();
    if !done.is_empty() {
        eprintln!(
            "huatuo eval: resuming in {}: {} of {} items already answered",
            out.display(),
            done.len(),
            items.len()
        );
    } else {
        eprintln!(
            "huatuo eval: {} items ({} open and {} without options skipped); writing to {} (run the same command again to resume)",
            items.len(),
            skipped.0,
            skipped.1,
            out.display()
        );
    }

    // Engines: one locally (the model answers one request at a time, with its caches); with
    // an endpoint, one connection per request in flight.
    let workers = if remote.is_some() {
        args.concurrency
    } else {
        1
    };
    let mut engines = Vec::with_capacity(workers);
    let mut info: Option<ModelInfo> = None;
    let interrupts = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupts);
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    for _ in 0..workers.min(todo.len().max(1)) {
        let engine = super::engine_with(remote.as_ref(), facts.stderr_tty);
        engine.send(Command::Load {
            id: LOAD_ID,
            spec: spec.clone(),
        })?;
        let loaded = wait_loaded(&engine, &interrupts)?;
        info.get_or_insert(loaded);
        engines.push(engine);
    }
    let info = info.expect("an engine");
    let params = info.defaults.with(&overrides);
    let model_name = spec.source.clone();

    let (tx, rx) = mpsc::channel::<Value>();
    let queue = Arc::new(Mutex::new(todo));
    let next_id = Arc::new(AtomicU64::new(LOAD_ID + 1));
    let data_dir = data
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut threads = Vec::new();
    for engine in engines {
        let (queue, tx, stop, next_id) = (
            Arc::clone(&queue),
            tx.clone(),
            Arc::clone(&interrupts),
            Arc::clone(&next_id),
        );
        let (overrides, model_name, data_dir) =
            (overrides.clone(), model_name.clone(), data_dir.clone());
        threads.push(std::thread::spawn(move || {
            answer_items(
                engine,
                &queue,
                &tx,
                &stop,
                &next_id,
                &overrides,
                &model_name,
                &data_dir,
            )
        }));
    }
    drop(tx);

    let mut summary = Summary::default();
    for line in done.values() {
        tally(&mut summary, line);
    }
    let bar = progress_bar(facts.stderr_tty, items.len(), done.len());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_file)
        .with_context(|| format!("cannot write {}", results_file.display()))?;
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // One whole line per item, flushed: a killed run loses at most the line being written.
        let mut text = serde_json::to_string(&line)?;
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", results_file.display()))?;
        tally(&mut summary, &line);
        if !line["error"].is_null() {
            let message = format!(
                "huatuo eval: item {}: {}",
                line["index"],
                line["error"].as_str().unwrap_or_default()
            );
            match &bar {
                Some(b) => b.println(message),
                None => eprintln!("{message}"),
            }
        }
        let index = line["index"].as_u64().unwrap_or_default() as usize;
        done.insert(index, line);
        if let Some(b) = &bar {
            b.set_position(done.len() as u64);
            b.set_message(format!("accuracy {:.1}%", summary.total.accuracy()));
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow!("an evaluation thread panicked"))??;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if interrupts.load(Ordering::SeqCst) || done.len() < items.len() {
        eprintln!(
            "huatuo eval: stopped after {} of {} items; run the same command again to go on",
            done.len(),
            items.len()
        );
        return Err(super::Interrupted.into());
    }

    // Complete: the results in data order, the summaries, the table.
    let mut sorted = String::new();
    for line in done.values() {
        sorted.push_str(&serde_json::to_string(line)?);
        sorted.push('\n');
    }
    write_atomic(&results_file, sorted.as_bytes())?;
    let image_errors: usize = done
        .values()
        .map(|l| l["image_errors"].as_array().map_or(0, Vec::len))
        .sum();
    let mut summary_json = summary.json();
    summary_json["model"] = serde_json::to_value(&info)?;
    summary_json["sampling"] = serde_json::to_value(&params)?;
    summary_json["reproducible"] = json!(params.is_greedy());
    if !params.is_greedy() {
        summary_json["note"] = json!("sampled answers (temperature > 0): torch's sampling cannot be reproduced bit for bit; --temperature 0 (greedy) is the reproducible mode");
    }
    summary_json["skipped"] = json!({"open": skipped.0, "no_options": skipped.1});
    summary_json["image_errors"] = json!(image_errors);
    summary_json["engine_errors"] = json!(done.values().filter(|l| !l["error"].is_null()).count());
    write_atomic(
        &out.join("summary.json"),
        &serde_json::to_vec_pretty(&summary_json)?,
    )?;
    write_atomic(
        &out.join("results.json"),
        &serde_json::to_vec_pretty(&summary.lmms_results())?,
    )?;
    if image_errors > 0 {
        eprintln!(
            "huatuo eval: {} could not be read; {} answered without {} (image_errors in results.jsonl)",
            crate::text::count(image_errors, "image", "images"),
            if image_errors == 1 { "its item was" } else { "their items were" },
            if image_errors == 1 { "it" } else { "them" }
        );
    }
    eprintln!(
        "huatuo eval: {} (temperature {}, top-k {}, repetition penalty {}, {} new tokens, seed {}); results in {}",
        info.source,
        params.temperature,
        params.top_k,
        params.repetition_penalty,
        params.max_new_tokens,
        params.seed,
        out.display()
    );
    print!("{}", summary.markdown());
    std::io::stdout().flush()?;
    Ok(())
}

/// The items to answer: scored ones (not open, with options), of `--datasets`, the first
/// `--limit`; and how many were skipped as open and as without options.
fn select(data: &Path, args: &EvalArgs) -> Result<(Vec<Item>, (usize, usize))> {
    let text = std::fs::read_to_string(data)
        .with_context(|| format!("cannot read the evaluation data {}", data.display()))?;
    let list: Vec<Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the authors' evaluation data (a JSON list of items)",
            data.display()
        )
    })?;
    let datasets: Option<HashSet<&str>> = args.datasets.as_ref().map(|d| {
        d.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let mut items = Vec::new();
    let (mut open, mut no_options) = (0, 0);
    for (i, value) in list.iter().enumerate() {
        let item = Item::from_value(i, value).map_err(|e| anyhow!("{}: {e}", data.display()))?;
        if datasets
            .as_ref()
            .is_some_and(|d| !d.contains(item.dataset.as_str()))
        {
            continue;
        }
        if item.question_type.as_deref() == Some("open") {
            open += 1;
            continue;
        }
        if item.options.is_empty() {
            no_options += 1;
            continue;
        }
        items.push(item);
    }
    if let Some(names) = &datasets {
        let known: HashSet<&str> = list.iter().filter_map(|v| v["dataset"].as_str()).collect();
        let unknown: Vec<&&str> = names.iter().filter(|n| !known.contains(**n)).collect();
        if !unknown.is_empty() {
            let mut known: Vec<&&str> = known.iter().collect();
            known.sort();
            bail!(
                "no dataset named {}; the data has: {}",
                unknown
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                known
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if let Some(limit) = args.limit {
        items.truncate(limit);
    }
    Ok((items, (open, no_options)))
}

/// The earlier results of this folder, by item index. A last line cut short by a kill is
/// dropped (and cut from the file), so the rerun answers that item again.
fn read_results(path: &Path) -> Result<BTreeMap<usize, Value>> {
    let mut done = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(done);
    };
    let mut good = 0usize;
    for line in text.split_inclusive('\n') {
        let complete = line.ends_with('\n');
        match serde_json::from_str::<Value>(line.trim_end()) {
            Ok(v) if complete => {
                let index = v["index"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("{}: a line without an index", path.display()))?;
                done.entry(index as usize).or_insert(v);
                good += line.len();
            }
            _ => break,
        }
    }
    if good < text.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot repair {}", path.display()))?;
        file.set_len(good as u64)?;
    }
    Ok(done)
}

/// Answers items from `queue` with `engine` until it is empty or Ctrl-C; each finished item
/// goes to `tx` as its result line.
#[allow(clippy::too_many_arguments)]
fn answer_items(
    engine: EngineHandle,
    queue: &Mutex<VecDeque<Item>>,
    tx: &mpsc::Sender<Value>,
    stop: &AtomicBool,
    next_id: &AtomicU64,
    overrides: &SamplingOverrides,
    model: &str,
    data_dir: &Path,
) -> Result<()> {
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(item) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
            break;
        };
        let started = Instant::now();
        let prompt = item.prompt();
        // inference(): images that do not open are left out (and reported).
        let mut images = Vec::new();
        let mut image_errors = Vec::new();
        for name in &item.images {
            let path = data_dir.join(name);
            let readable = preprocess::read_file(&path).and_then(|bytes| {
                preprocess::load_rgb_bytes(&path, &bytes, &ImageOptions::default())
            });
            match readable {
                Ok(_) => images.push(ImageRef {
                    path,
                    ..ImageRef::default()
                }),
                Err(e) => image_errors.push(json!({"image": name, "error": e.to_string()})),
            }
        }
        let mut line = result_line(&item, &prompt, image_errors);
        let request =
            Session::inference(&prompt, images, overrides, model, &ImageStore::transient());
        let request = match request {
            Ok((request, _)) => request,
            Err(e) => {
                line["error"] = json!(e.to_string());
                finish(&mut line, &item, "", started, 0, 0);
                let _ = tx.send(line);
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        engine.send(Command::Generate {
            id,
            request: Box::new(request),
        })?;
        let mut cancelled = false;
        loop {
            if stop.load(Ordering::SeqCst) && !cancelled {
                engine.cancel(id);
                cancelled = true;
            }
            let event = match engine.events().recv_timeout(Duration::from_millis(100)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => bail!("the model worker stopped"),
            };
            match event {
                Event::Finished {
                    id: got,
                    completion,
                } if got == id => {
                    if completion.stop != crate::protocol::Stop::Cancelled {
                        finish(
                            &mut line,
                            &item,
                            &completion.text,
                            started,
                            completion.stats.prompt.total,
                            completion.stats.generated_tokens,
                        );
                        let _ = tx.send(line);
                    }
                    break;
                }
                Event::Failed { id: got, error, .. } if got == id => {
                    if !cancelled {
                        line["error"] = json!(error);
                        finish(&mut line, &item, "", started, 0, 0);
                        let _ = tx.send(line);
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    engine.shutdown();
    Ok(())
}

/// An item's result line before its answer: its own fields (options as a list, as eval.py
/// leaves them), its index and prompt, and the images that could not be read.
fn result_line(item: &Item, prompt: &str, image_errors: Vec<Value>) -> Value {
    let mut line = Value::Object(item.fields.clone());
    line["options"] = json!(item.options);
    line["index"] = json!(item.index);
    line["prompt"] = json!(prompt);
    line["image_errors"] = json!(image_errors);
    line["error"] = Value::Null;
    line
}

fn finish(
    line: &mut Value,
    item: &Item,
    output: &str,
    started: Instant,
    prompt_tokens: usize,
    generated_tokens: usize,
) {
    let pred = eval::match_choice3(output);
    let gold = item.gold();
    line["model_output"] = json!(output);
    line["pred"] = json!(pred.map(String::from));
    line["gold"] = json!(gold.map(String::from));
    line["correct"] = json!(pred.is_some() && pred == gold);
    line["prompt_tokens"] = json!(prompt_tokens);
    line["generated_tokens"] = json!(generated_tokens);
    line["seconds"] = json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
}

fn tally(summary: &mut Summary, line: &Value) {
    summary.add(
        line["dataset"].as_str().unwrap_or_default(),
        line["subset"].as_str().unwrap_or_default(),
        line["correct"].as_bool().unwrap_or(false),
    );
}

fn progress_bar(tty: bool, total: usize, done: usize) -> Option<indicatif::ProgressBar> {
    if !tty {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} items · {msg} · {elapsed_precise} elapsed, ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(done as u64);
    Some(bar)
}

fn wait_loaded(engine: &EngineHandle, interrupts: &AtomicBool) -> Result<ModelInfo> {
    loop {
        if interrupts.load(Ordering::SeqCst) {
            return Err(super::Interrupted.into());
        }
        match engine.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Loaded { id: LOAD_ID, info }) => return Ok(info),
            Ok(Event::Failed {
                id: LOAD_ID, error, ..
            }) => bail!("{error}"),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the model worker stopped unexpectedly"),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `--score FILE`: the authors' scoring of an eval.py output file (their items, each with
/// `model_output`), without a model.
fn score(file: &Path, out: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let list: Vec<Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an eval.py output (a JSON list of items)",
            file.display()
        )
    })?;
    let mut summary = Summary::default();
    let mut seen = HashSet::new();
    let mut lines = String::new();
    for (i, value) in list.iter().enumerate() {
        let item = Item::from_value(i, value).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        if !item.is_scored() {
            continue;
        }
        // score_mix_llava counts each test_id once.
        if let Some(id) = value.get("test_id").filter(|v| !v.is_null()) {
            if !seen.insert(id.to_string()) {
                continue;
            }
        }
        let output = value["model_output"].as_str().ok_or_else(|| {
            anyhow!(
                "{}: item {i} has no model_output: is it an output of eval.py?",
                file.display()
            )
        })?;
        let pred = eval::match_choice3(output);
        let gold = item.gold();
        let correct = pred.is_some() && pred == gold;
        summary.add(&item.dataset, &item.subset, correct);
        let mut line = Value::Object(item.fields.clone());
        line["index"] = json!(i);
        line["pred"] = json!(pred.map(String::from));
        line["gold"] = json!(gold.map(String::from));
        line["correct"] = json!(correct);
        lines.push_str(&serde_json::to_string(&line)?);
        lines.push('\n');
    }
    if let Some(out) = out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        write_atomic(&out.join("results.jsonl"), lines.as_bytes())?;
        let mut summary_json = summary.json();
        summary_json["scored_file"] = json!(file.display().to_string());
        write_atomic(
            &out.join("summary.json"),
            &serde_json::to_vec_pretty(&summary_json)?,
        )?;
        write_atomic(
            &out.join("results.json"),
            &serde_json::to_vec_pretty(&summary.lmms_results())?,
        )?;
    }
    print!("{}", summary.markdown());
    std::io::stdout().flush()?;
    Ok(())
}
