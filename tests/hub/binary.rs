//! `huatuo pull`, `list`, `rm` and `info` as a user runs them, against the stand-in hub, with
//! `HF_HUB_CACHE`, `HF_HOME` and `HUATUO_*` pointed at the test's temp dir: a full pull, list,
//! rm and the refusals; and a pull killed mid-file that the next run resumes with `Range`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use huatuo::hub::stand_in::sha256_hex;
use huatuo::hub::REPO_7B;
use serde_json::Value;

use super::{assert_snapshot, needed, Hub};

#[test]
fn pull_list_rm_and_info_through_the_binary() {
    let h = Hub::new();
    let out = h.huatuo().args(["pull", "7b"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let snapshot = h.repo_dir().join("snapshots").join(&h.sha);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        snapshot.display().to_string()
    );
    assert!(stderr.contains("pulled"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no bar when stderr is not a terminal: {stderr:?}"
    );
    assert_snapshot(&h, &snapshot);

    let again = h.huatuo().args(["pull", "7b"]).output().expect("run");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to download"));
    let offline = h
        .huatuo()
        .args(["pull", "7b"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("run");
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );

    let table = h.huatuo().arg("list").output().expect("run");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(REPO_7B) && table.contains(&h.sha[..8]),
        "{table}"
    );
    assert!(
        table.contains("complete") && table.contains("7b"),
        "{table}"
    );

    let json = h.huatuo().args(["list", "--json"]).output().expect("run");
    let list: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let m = &list[0];
    assert_eq!(m["repo"], REPO_7B);
    assert_eq!(m["revision"], h.sha.as_str());
    assert_eq!(m["complete"], true);
    let size: usize = needed(&h.files).iter().map(|f| h.files[f].len()).sum();
    assert_eq!(m["size_bytes"].as_u64(), Some(size as u64));

    let info = h.huatuo().args(["info", "--json"]).output().expect("run");
    let info: Value = serde_json::from_slice(&info.stdout).expect("JSON");
    assert_eq!(info["hub_cache"], h.cache().display().to_string());
    assert_eq!(info["hub_endpoint"], h.server.url());
    let config = h.tmp.path().join("config").display().to_string();
    assert_eq!(info["config_dir"], config);
    assert_eq!(info["cached_models"], 1);

    let refused = h
        .huatuo()
        .args(["rm", "./no/such/dir"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a hub model"));
    let rm = h.huatuo().args(["rm", "7b"]).output().expect("run");
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(!h.repo_dir().exists());
    let json = h.huatuo().args(["list", "--json"]).output().expect("run");
    let list: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(list, Value::Array(vec![]));
    let twice = h.huatuo().args(["rm", "7b"]).output().expect("run");
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("not in the cache"));
}

#[test]
fn a_killed_pull_resumes_mid_file() {
    let h = Hub::new();
    h.server.throttle(Some(4_000_000));
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_huatuo"))
            .args(["pull", "7b"])
            .envs(h.env())
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let blobs = h.repo_dir().join("blobs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.len() == 64 + ".incomplete".len()
                    && name.ends_with(".incomplete")
                    && e.metadata().is_ok_and(|m| m.len() >= 1_000_000)
            });
        if let Some(e) = found {
            break e.path();
        }
        assert!(Instant::now() < deadline, "no LFS download started");
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "pull ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.0.kill().expect("kill");
    child.0.wait().expect("reap");
    let kept = std::fs::metadata(&partial).expect("partial kept").len();
    let digest = partial
        .file_name()
        .expect("name")
        .to_string_lossy()
        .trim_end_matches(".incomplete")
        .to_string();
    let (shard, bytes) = h
        .files
        .iter()
        .find(|(_, b)| sha256_hex(b) == digest)
        .expect("a served shard");
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");

    h.server.throttle(None);
    h.server.clear_requests();
    let out = h.huatuo().args(["pull", "7b"]).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gets = h.gets(shard);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].range,
        Some(format!("bytes={kept}-")),
        "restarted from 0?"
    );
    assert_snapshot(&h, &h.repo_dir().join("snapshots").join(&h.sha));
}

/// A child process that is killed if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 3, acceptance 3: `huatuo pull 7b`, then `ask --model 7b --offline` answers from the
/// cache without the network, exactly as it answers from the checkpoint directory.
#[test]
fn pull_then_ask_offline_by_name() {
    let h = Hub::new();
    let out = h.huatuo().args(["pull", "7b"]).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let question = [
        "--temperature",
        "0",
        "--max-new-tokens",
        "24",
        "--dtype",
        "f32",
        "What does the picture show?",
    ];
    let image = crate::util::fixture("images/cell.png");
    let offline = h
        .huatuo()
        .args(["ask", "--model", "7b", "--offline", "--image"])
        .arg(&image)
        .args(question)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("run");
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    let expected = crate::cli::reference_answer("qwen2");
    assert_eq!(
        String::from_utf8_lossy(&offline.stdout).trim_end(),
        expected
    );

    // Without the cache, offline names what is missing and how to get it.
    h.huatuo().args(["rm", "7b"]).output().expect("run");
    let missing = h
        .huatuo()
        .args(["ask", "--model", "7b", "--offline", "hi"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("huatuo pull 7b"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `ask` downloads a missing model on first use, then never again.
#[test]
fn ask_downloads_on_first_use() {
    let h = Hub::new();
    let ask = |h: &Hub| {
        h.huatuo()
            .args([
                "ask",
                "--model",
                "7b",
                "--temperature",
                "0",
                "--max-new-tokens",
                "4",
            ])
            .arg("hello")
            .output()
            .expect("run")
    };
    let first = ask(&h);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(h.repo_dir().join("snapshots").join(&h.sha).is_dir());
    let second = ask(&h);
    assert!(second.status.success());
    assert_eq!(first.stdout, second.stdout);
}

/// `huatuo verify` re-hashes every file: a flipped byte (same size, so only the SHA-256
/// shows it) and a truncated blob are both reported, it exits 2, `list` calls the model
/// damaged, and `huatuo pull` downloads both again, after which `verify` passes (issue 15).
#[test]
fn verify_finds_a_flipped_byte_and_a_truncated_blob_and_pull_repairs_them() {
    let h = Hub::new();
    let pulled = h.huatuo().args(["pull", "7b"]).output().expect("run");
    assert!(pulled.status.success());
    let ok = h.huatuo().args(["verify", "7b"]).output().expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("sha256"));

    let shards: Vec<String> = needed(&h.files)
        .into_iter()
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() >= 2, "the test needs two shards: {shards:?}");
    let blob = |f: &str| h.repo_dir().join("blobs").join(sha256_hex(&h.files[f]));
    let mut bytes = std::fs::read(blob(&shards[0])).expect("read");
    let at = bytes.len() - 100;
    bytes[at] ^= 0x01;
    std::fs::write(blob(&shards[0]), &bytes).expect("flip");
    let len = h.files[&shards[1]].len() as u64;
    std::fs::File::options()
        .write(true)
        .open(blob(&shards[1]))
        .and_then(|f| f.set_len(len - 1))
        .expect("truncate");

    let bad = h.huatuo().args(["verify", "7b"]).output().expect("run");
    let stdout = String::from_utf8_lossy(&bad.stdout);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stdout}{stderr}");
    for shard in &shards[..2] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("DAMAGED") && l.contains(shard.as_str())),
            "{shard}: {stdout}"
        );
    }
    assert!(
        stdout.contains("SHA-256") && stdout.contains("truncated"),
        "{stdout}"
    );
    assert!(stderr.contains("huatuo pull 7b"), "{stderr}");
    let json = h
        .huatuo()
        .args(["verify", "7b", "--json"])
        .output()
        .expect("run");
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(report["ok"], false);

    let list = h.huatuo().args(["list", "--json"]).output().expect("run");
    let list: Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(list[0]["complete"], false, "{list}");
    let offline = h
        .huatuo()
        .args(["pull", "7b"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run");
    assert_eq!(offline.status.code(), Some(2), "offline refuses damage");
    assert!(String::from_utf8_lossy(&offline.stderr).contains("damaged"));

    let repair = h.huatuo().args(["pull", "7b"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&repair.stderr);
    assert!(repair.status.success(), "{stderr}");
    assert!(!stderr.contains("nothing to download"), "{stderr}");
    let snapshot = h.repo_dir().join("snapshots").join(&h.sha);
    assert_snapshot(&h, &snapshot);
    let ok = h.huatuo().args(["verify", "7b"]).output().expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}
