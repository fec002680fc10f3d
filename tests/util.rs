//! Helpers shared by the test suites: fixture paths, tiny checkpoints built once per test
//! process by the same generator the parity fixtures were computed from, and driving the
//! engine on them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use huatuo::engine::{local_resolver, Engine, EngineHandle, Faults};
use huatuo::protocol::{
    Command, DType, DevicePref, Event, ImageRef, LoadStage, ModelInfo, ModelSpec, RequestId,
    SamplingParams,
};
use huatuo::tiny::{write_checkpoint, TinySpec};
use serde_json::Value;

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(rel)
}

/// The tiny checkpoint of `family` ("qwen2" seed 1, "yi" seed 2, as scripts/reference/model.py
/// uses), written once per test process under cargo's target tmp dir.
pub fn tiny_checkpoint(family: &str) -> &'static Path {
    static QWEN2: OnceLock<PathBuf> = OnceLock::new();
    static YI: OnceLock<PathBuf> = OnceLock::new();
    let (cell, spec, tok) = match family {
        "qwen2" => (&QWEN2, TinySpec::qwen2(1), "qwen2"),
        "yi" => (&YI, TinySpec::yi(2), "yi-tiny"),
        other => panic!("no tiny family {other}"),
    };
    cell.get_or_init(|| {
        let dir = process_dir(&format!("tiny-{family}"));
        write_checkpoint(&spec, &fixture(&format!("tokenizers/{tok}")), &dir)
            .expect("writing tiny checkpoint");
        dir
    })
}

/// Long enough for a debug build on a busy machine, short enough to fail a hung test.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Loading a local checkpoint on the CPU in f32, offline.
pub fn spec(source: &str) -> ModelSpec {
    ModelSpec {
        source: source.to_string(),
        revision: None,
        device: DevicePref::Cpu,
        dtype: DType::F32,
        offline: true,
        quant: None,
    }
}

/// [`spec`] of the tiny checkpoint of `family`.
pub fn spec_of(family: &str) -> ModelSpec {
    spec(&tiny_checkpoint(family).to_string_lossy())
}

/// Greedy decoding of at most `max_new_tokens`, the reference's other settings.
pub fn greedy(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        ..SamplingParams::default()
    }
}

/// The sampling settings of a reference fixture (`tests/fixtures/chat/*.json` `params`).
pub fn fixture_params(fx: &Value) -> SamplingParams {
    let p = &fx["params"];
    SamplingParams {
        temperature: p["temperature"].as_f64().expect("t") as f32,
        max_new_tokens: p["max_new_tokens"].as_u64().expect("n") as usize,
        repetition_penalty: p["repetition_penalty"].as_f64().expect("r") as f32,
        min_new_tokens: p["min_new_tokens"].as_u64().expect("m") as usize,
        ..SamplingParams::default()
    }
}

/// A fixture image (`tests/fixtures/images/<name>`).
pub fn image(name: &str) -> ImageRef {
    image_at(fixture(&format!("images/{name}")))
}

pub fn image_at(path: PathBuf) -> ImageRef {
    ImageRef {
        path,
        ..ImageRef::default()
    }
}

/// The engine's next event, failing the test after [`TIMEOUT`].
#[track_caller]
pub fn next(engine: &EngineHandle) -> Event {
    engine
        .events()
        .recv_timeout(TIMEOUT)
        .expect("an event from the engine")
}

/// Loads a model; returns the progress events and the info.
#[track_caller]
pub fn load(
    engine: &EngineHandle,
    id: RequestId,
    spec: ModelSpec,
) -> (Vec<(LoadStage, u64, u64)>, ModelInfo) {
    engine.send(Command::Load { id, spec }).expect("send");
    let mut progress = Vec::new();
    loop {
        match next(engine) {
            Event::LoadProgress {
                id: i,
                stage,
                done,
                total,
            } if i == id => progress.push((stage, done, total)),
            Event::Loaded { id: i, info } if i == id => return (progress, info),
            other => panic!("unexpected event while loading: {other:?}"),
        }
    }
}

/// An engine (with `faults`) with the tiny checkpoint of `family` loaded as request 1.
pub fn loaded(family: &str, faults: Faults) -> EngineHandle {
    let engine = Engine::spawn_with_faults(local_resolver(), faults);
    load(&engine, 1, spec_of(family));
    engine
}

/// The huatuo binary with every directory it writes under `home` (config, data, caches, the
/// hub cache), so a test never touches the user's files, and no test hook inherited.
pub fn huatuo(home: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("huatuo").expect("binary");
    cmd.env("HUATUO_CONFIG_DIR", home.join("config"))
        .env("HUATUO_DATA_DIR", home.join("data"))
        .env("HUATUO_CACHE_DIR", home.join("cache"))
        .env("HF_HUB_CACHE", home.join("hub"))
        .env_remove("NO_COLOR")
        .env_remove("HUATUO_TEST_TOKEN_DELAY_MS");
    cmd
}

/// `ask` on `model`, greedy, at most `max_new_tokens`, in f32.
pub fn greedy_args(model: &Path, max_new_tokens: u32) -> Vec<String> {
    vec![
        "ask".into(),
        "--model".into(),
        model.display().to_string(),
        "--temperature".into(),
        "0".into(),
        "--max-new-tokens".into(),
        max_new_tokens.to_string(),
        "--dtype".into(),
        "f32".into(),
    ]
}

/// An empty directory `<prefix>-<pid>` under cargo's target tmp dir for this test process.
///
/// Statics are never dropped, so a test process cannot delete what it wrote there; instead
/// each claim removes the `<prefix>-<pid>` directories of processes that no longer run (on
/// Linux, where `/proc` tells), so repeated test runs do not fill the disk (the k-quant
/// checkpoint is 165 MB).
pub fn process_dir(prefix: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let proc = Path::new("/proc/self");
    if proc.exists() {
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-'))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A fresh copy of a tiny checkpoint that a test may damage.
pub fn tiny_copy(family: &str, into: &Path) -> PathBuf {
    let src = tiny_checkpoint(family);
    let dst = into.join(format!("tiny-{family}"));
    copy_dir(src, &dst);
    dst
}

/// Copies a directory tree (fixtures into a test's own temporary folder).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}
