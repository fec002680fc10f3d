//! The hub client against the stand-in hub on 127.0.0.1 (`huatuo::hub::stand_in`), which serves
//! the tiny 7B-like checkpoint under the real repo name with the real headers: full pulls in
//! huggingface_hub's cache layout, resume after a dropped connection and after a killed
//! process, SHA-256 verification, retries, revision pins, the token, offline mode, the memory
//! preflight; and pull → list → rm through the binary (`binary.rs`). Every test has its own
//! cache in a temp dir.

mod binary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use huatuo::hub::memory::{self, WeightFormat};
use huatuo::hub::stand_in::{is_lfs, read_tree, sha256_hex, Fault, Request, StandIn, Target};
use huatuo::hub::{self, HubError, HubOptions, ModelRef, NoProgress, Resolved, REPO_7B};
use huatuo::model::decoder::PREFILL_CHUNK;
use serde_json::Value;

use crate::util::tiny_checkpoint;

/// Files the real repo has that huatuo must not download.
const EXTRAS: [&str; 3] = [
    "README.md",
    ".gitattributes",
    "vit/clip_vit_large_patch14_336/pytorch_model.bin",
];

struct Hub {
    server: StandIn,
    tmp: tempfile::TempDir,
    files: BTreeMap<String, Vec<u8>>,
    sha: String,
}

impl Hub {
    fn new() -> Self {
        let server = StandIn::start().expect("stand-in hub");
        let mut files = read_tree(tiny_checkpoint("qwen2")).expect("tiny checkpoint");
        files.insert(EXTRAS[0].into(), b"# HuatuoGPT-Vision-7B (tiny)\n".to_vec());
        files.insert(EXTRAS[1].into(), b"*.safetensors filter=lfs\n".to_vec());
        files.insert(EXTRAS[2].into(), vec![7u8; 64 * 1024]);
        let sha = server.add_files(REPO_7B, "main", files.clone());
        Self {
            server,
            tmp: tempfile::tempdir().expect("tempdir"),
            files,
            sha,
        }
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("hub")
    }

    fn repo_dir(&self) -> PathBuf {
        self.cache()
            .join("models--FreedomIntelligence--HuatuoGPT-Vision-7B")
    }

    fn opts(&self) -> HubOptions {
        HubOptions {
            endpoint: self.server.url().to_string(),
            token: None,
            cache_dir: self.cache(),
            offline: false,
            revision: None,
        }
    }

    fn pull_with(&self, opts: &HubOptions) -> Result<Resolved, HubError> {
        let model = ModelRef::Repo {
            repo: REPO_7B.to_string(),
        };
        hub::resolve(&model, opts, &mut NoProgress)
    }

    fn pull(&self) -> Result<Resolved, HubError> {
        self.pull_with(&self.opts())
    }

    /// The content GETs of `file` (from the hub or the CDN).
    fn gets(&self, file: &str) -> Vec<Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.file.as_deref() == Some(file))
            .filter(|r| r.server == "cdn" || !is_lfs(file))
            .collect()
    }

    /// The binary with its environment pointed at this hub and temp dirs only.
    fn huatuo(&self) -> Command {
        let mut cmd = Command::cargo_bin("huatuo").expect("binary");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        for k in UNSET {
            cmd.env_remove(k);
        }
        cmd
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let t = self.tmp.path();
        vec![
            ("HF_ENDPOINT", self.server.url().to_string()),
            ("HF_HUB_CACHE", self.cache().display().to_string()),
            ("HF_HOME", t.join("hf-home").display().to_string()),
            ("HUATUO_CONFIG_DIR", t.join("config").display().to_string()),
            ("HUATUO_DATA_DIR", t.join("data").display().to_string()),
            (
                "HUATUO_CACHE_DIR",
                t.join("huatuo-cache").display().to_string(),
            ),
        ]
    }
}

const UNSET: [&str; 6] = [
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HUGGINGFACE_HUB_CACHE",
];

/// The files inference needs (everything served but the extras).
fn needed(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    files
        .keys()
        .filter(|f| !EXTRAS.contains(&f.as_str()))
        .cloned()
        .collect()
}

fn shards(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    files
        .keys()
        .filter(|f| f.ends_with(".safetensors"))
        .cloned()
        .collect()
}

/// Every needed file is in the snapshot with the served bytes, as a relative link to a blob
/// named by its ETag (the sha256 for LFS files); no extras, no unfinished downloads.
#[track_caller]
fn assert_snapshot(h: &Hub, snapshot: &Path) {
    for f in needed(&h.files) {
        let path = snapshot.join(&f);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(bytes == h.files[&f], "{f}: bytes differ from the hub's");
        let link = std::fs::read_link(&path).expect("a symlink");
        let depth = f.split('/').count() + 1;
        let ups: Vec<_> = link.components().take(depth).collect();
        assert!(
            ups.iter().all(|c| c.as_os_str() == ".."),
            "{f} -> {}",
            link.display()
        );
        let blob = link
            .file_name()
            .expect("blob")
            .to_string_lossy()
            .into_owned();
        if is_lfs(&f) {
            assert_eq!(
                blob,
                sha256_hex(&h.files[&f]),
                "{f}: blob not named by its sha256"
            );
        }
    }
    for extra in EXTRAS {
        assert!(
            !snapshot.join(extra).exists(),
            "{extra} should not be downloaded"
        );
    }
    assert_no_partial_or_bad_blobs(h);
}

/// No `.incomplete` left, and every LFS-named blob hashes to its name.
#[track_caller]
fn assert_no_partial_or_bad_blobs(h: &Hub) {
    for e in std::fs::read_dir(h.repo_dir().join("blobs")).expect("blobs") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".incomplete"), "left behind: {name}");
        if name.len() == 64 {
            let bytes = std::fs::read(h.repo_dir().join("blobs").join(&name)).expect("blob");
            assert_eq!(sha256_hex(&bytes), name, "corrupt blob");
        }
    }
}

#[test]
fn pull_writes_the_huggingface_layout_and_never_downloads_twice() {
    let h = Hub::new();
    let r = h.pull().expect("pull");
    assert_eq!(r.dir, h.repo_dir().join("snapshots").join(&h.sha));
    assert_eq!(r.repo.as_deref(), Some(REPO_7B));
    assert_eq!(r.revision.as_deref(), Some(h.sha.as_str()));
    let main = std::fs::read_to_string(h.repo_dir().join("refs/main")).expect("refs/main");
    assert_eq!(main, h.sha);
    assert_snapshot(&h, &r.dir);
    huatuo::model::Checkpoint::open(&r.dir).expect("the snapshot loads as a checkpoint");
    let requests = h.server.requests();
    for extra in EXTRAS {
        assert!(
            requests.iter().all(|q| q.file.as_deref() != Some(extra)),
            "{extra} was requested"
        );
    }
    // LFS files come from the CDN through the hub's redirect.
    for shard in shards(&h.files) {
        assert_eq!(h.gets(&shard).len(), 1, "{shard}");
    }

    h.server.clear_requests();
    let again = h.pull().expect("second pull");
    assert_eq!(again, r);
    let requests = h.server.requests();
    assert_eq!(requests.len(), 1, "only the revision lookup: {requests:?}");
    assert!(requests[0]
        .path
        .starts_with("/api/models/FreedomIntelligence/HuatuoGPT-Vision-7B"));
}

#[test]
fn a_dropped_connection_resumes_with_range() {
    let h = Hub::new();
    let shard = shards(&h.files)[0].clone();
    h.server
        .fault(Target::Get(shard.clone()), Fault::DropAfter(1_000_000));
    let r = h.pull().expect("pull completes after the drop");
    let gets = h.gets(&shard);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=1000000-"));
    assert_eq!(gets[1].status, 206);
    assert_snapshot(&h, &r.dir);
}

#[test]
fn bytes_that_do_not_match_the_sha256_are_refused_and_deleted() {
    let h = Hub::new();
    let shard = shards(&h.files)[1].clone();
    h.server.fault(Target::Get(shard.clone()), Fault::Corrupt);
    let err = h.pull().expect_err("corrupt bytes must fail");
    match &err {
        HubError::ChecksumMismatch { file, expected, .. } => {
            assert_eq!(file, &shard);
            assert_eq!(expected, &sha256_hex(&h.files[&shard]));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&shard) && msg.contains("SHA-256") && msg.contains("deleted"),
        "{msg}"
    );
    // Nothing corrupt anywhere a later run would load it.
    let snapshot = h.repo_dir().join("snapshots").join(&h.sha);
    assert!(
        !snapshot.join(&shard).exists(),
        "the bad shard is in the snapshot"
    );
    assert!(!h
        .repo_dir()
        .join("blobs")
        .join(sha256_hex(&h.files[&shard]))
        .exists());
    assert_no_partial_or_bad_blobs(&h);
    let offline = HubOptions {
        offline: true,
        ..h.opts()
    };
    assert!(matches!(
        h.pull_with(&offline),
        Err(HubError::Incomplete { ref missing, .. }) if missing == &vec![shard.clone()]
    ));

    let r = h.pull().expect("a clean retry succeeds");
    assert_snapshot(&h, &r.dir);
}

#[test]
fn server_errors_are_retried() {
    let h = Hub::new();
    let shard = shards(&h.files)[0].clone();
    h.server.fault(Target::Api, Fault::Status(500));
    h.server
        .fault(Target::Head("config.json".into()), Fault::Status(502));
    h.server
        .fault(Target::Get("tokenizer.json".into()), Fault::Status(500));
    h.server
        .fault(Target::Get(shard.clone()), Fault::Status(503));
    let r = h.pull().expect("pull succeeds after retries");
    assert_snapshot(&h, &r.dir);
    let statuses = |pred: &dyn Fn(&Request) -> bool| -> Vec<u16> {
        h.server
            .requests()
            .iter()
            .filter(|q| pred(q))
            .map(|q| q.status)
            .collect()
    };
    assert_eq!(statuses(&|q| q.path.starts_with("/api/")), [500, 200]);
    assert_eq!(
        statuses(&|q| q.method == "HEAD" && q.file.as_deref() == Some("config.json")),
        [502, 200]
    );
    assert_eq!(
        h.gets("tokenizer.json")
            .iter()
            .map(|q| q.status)
            .collect::<Vec<_>>(),
        [500, 200]
    );
    assert_eq!(
        h.gets(&shard).iter().map(|q| q.status).collect::<Vec<_>>(),
        [503, 200]
    );
}

#[test]
fn a_revision_pin_fetches_that_commit() {
    let h = Hub::new();
    let first = h.sha.clone();
    let mut files = h.files.clone();
    let new_gen = b"{\"bos_token_id\": 151643, \"eos_token_id\": 151643, \"top_k\": 7}\n".to_vec();
    files.insert("generation_config.json".into(), new_gen.clone());
    let second = h.server.add_files(REPO_7B, "main", files.clone());
    assert_ne!(first, second);

    let pinned = HubOptions {
        revision: Some(first.clone()),
        ..h.opts()
    };
    let r = h.pull_with(&pinned).expect("pinned pull");
    assert_eq!(r.revision.as_deref(), Some(first.as_str()));
    assert_eq!(r.dir, h.repo_dir().join("snapshots").join(&first));
    assert_eq!(
        std::fs::read(r.dir.join("generation_config.json")).expect("read"),
        h.files["generation_config.json"]
    );
    assert!(
        !h.repo_dir().join("refs/main").exists(),
        "a commit pin writes no ref"
    );

    h.server.clear_requests();
    let latest = h.pull().expect("main");
    assert_eq!(latest.revision.as_deref(), Some(second.as_str()));
    assert_eq!(
        std::fs::read(latest.dir.join("generation_config.json")).expect("read"),
        new_gen
    );
    let main = std::fs::read_to_string(h.repo_dir().join("refs/main")).expect("refs/main");
    assert_eq!(main, second);
    let downloads: Vec<_> = h
        .server
        .requests()
        .into_iter()
        .filter(|q| q.method == "GET" && q.file.is_some())
        .collect();
    assert_eq!(downloads.len(), 1, "only the changed file: {downloads:?}");
    assert_eq!(downloads[0].file.as_deref(), Some("generation_config.json"));

    // A branch name is recorded under refs/, as Python does.
    let third = h.server.add_files(REPO_7B, "v1.0", h.files.clone());
    let branch = HubOptions {
        revision: Some("v1.0".into()),
        ..h.opts()
    };
    assert_eq!(
        h.pull_with(&branch).expect("branch").revision.as_deref(),
        Some(third.as_str())
    );
    let v1 = std::fs::read_to_string(h.repo_dir().join("refs/v1.0")).expect("refs/v1.0");
    assert_eq!(v1, third);
}

#[test]
fn the_token_is_sent_as_a_bearer_header_to_the_hub_only() {
    let h = Hub::new();
    let secret = "hf_standin_0123456789secret";
    h.server.require_token(Some(secret));

    let err = h.pull().expect_err("a gated repo needs a token");
    assert!(
        matches!(
            err,
            HubError::Unauthorized {
                token_sent: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let wrong = HubOptions {
        token: Some("hf_wrong_token_value".into()),
        ..h.opts()
    };
    let err = h.pull_with(&wrong).expect_err("a wrong token is refused");
    assert!(
        matches!(
            err,
            HubError::Unauthorized {
                token_sent: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("hf_wrong_token_value"), "{err}");
    assert!(!format!("{wrong:?}").contains("hf_wrong_token_value"));

    h.server.clear_requests();
    let opts = HubOptions {
        token: Some(secret.into()),
        ..h.opts()
    };
    let r = h.pull_with(&opts).expect("pull with the token");
    assert_snapshot(&h, &r.dir);
    let requests = h.server.requests();
    let bearer = format!("Bearer {secret}");
    let (hub_side, cdn): (Vec<_>, Vec<_>) = requests.iter().partition(|q| q.server == "hub");
    assert!(!hub_side.is_empty() && !cdn.is_empty());
    for q in hub_side {
        assert_eq!(q.authorization.as_deref(), Some(bearer.as_str()), "{q:?}");
    }
    for q in cdn {
        assert_eq!(q.authorization, None, "the token went to the CDN: {q:?}");
    }
}

#[test]
fn offline_uses_the_cache_only_and_names_what_is_missing() {
    let h = Hub::new();
    let offline = HubOptions {
        offline: true,
        ..h.opts()
    };
    let err = h.pull_with(&offline).expect_err("nothing cached");
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    assert!(err.to_string().contains("huatuo pull 7b"), "{err}");
    assert!(
        h.server.requests().is_empty(),
        "offline touched the network"
    );

    let online = h.pull().expect("pull");
    h.server.clear_requests();
    let r = h
        .pull_with(&offline)
        .expect("offline with a complete cache");
    assert_eq!(r, online);
    assert!(
        h.server.requests().is_empty(),
        "offline touched the network"
    );

    let shard = shards(&h.files)[0].clone();
    std::fs::remove_file(r.dir.join(&shard)).expect("rm");
    let err = h.pull_with(&offline).expect_err("incomplete");
    match &err {
        HubError::Incomplete { missing, .. } => assert_eq!(missing, &vec![shard.clone()]),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&shard) && msg.contains("huatuo pull 7b"),
        "{msg}"
    );
    assert!(
        h.server.requests().is_empty(),
        "offline touched the network"
    );

    // Back online, the blob is still there: it is linked again without a download.
    h.pull().expect("repair");
    assert!(h.gets(&shard).is_empty());
}

#[test]
fn an_unreachable_hub_falls_back_to_a_complete_cache() {
    let h = Hub::new();
    let r = h.pull().expect("pull");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dead = HubOptions {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..h.opts()
    };
    let started = Instant::now();
    assert_eq!(h.pull_with(&dead).expect("fallback"), r);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retries before the fallback"
    );
}

#[test]
fn a_partial_download_left_by_another_run_is_resumed() {
    let h = Hub::new();
    let shard = shards(&h.files)[0].clone();
    let bytes = &h.files[&shard];
    let blobs = h.repo_dir().join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let partial = blobs.join(format!("{}.incomplete", sha256_hex(bytes)));
    std::fs::write(&partial, &bytes[..123_456]).expect("write");
    let r = h.pull().expect("pull");
    let gets = h.gets(&shard);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range.as_deref(), Some("bytes=123456-"));
    assert_snapshot(&h, &r.dir);
}

#[test]
fn repos_that_are_missing_or_not_checkpoints_are_named() {
    let h = Hub::new();
    let mut files = BTreeMap::new();
    files.insert("config.json".to_string(), b"{}".to_vec());
    files.insert("README.md".to_string(), b"hi".to_vec());
    h.server.add_files("someone/not-llava", "main", files);
    let resolve = |repo: &str| {
        hub::resolve(
            &ModelRef::Repo { repo: repo.into() },
            &h.opts(),
            &mut NoProgress,
        )
    };
    let err = resolve("someone/not-llava").expect_err("not a checkpoint");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("model.safetensors.index.json"),
        "{msg}"
    );
    let err = resolve("someone/missing").expect_err("no such repo");
    assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("someone/missing"), "{err}");
    let pinned = HubOptions {
        revision: Some("no-such-branch".into()),
        ..h.opts()
    };
    let err = h.pull_with(&pinned).expect_err("no such revision");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}

#[test]
fn memory_preflight_refuses_with_a_suggestion() {
    let dir = tiny_checkpoint("qwen2");
    let est = memory::estimate(dir, WeightFormat::F32, 4096, PREFILL_CHUNK).expect("estimate");
    let index: Value = serde_json::from_slice(
        &std::fs::read(dir.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    let total = index["metadata"]["total_size"]
        .as_u64()
        .expect("total_size");
    assert_eq!(est.params, total / 2);
    assert_eq!(est.weights_bytes, total * 2, "f32 is twice the bf16 bytes");
    assert!(est.total_bytes > est.weights_bytes + est.kv_cache_bytes);

    let err = memory::check(
        dir,
        WeightFormat::F32,
        4096,
        PREFILL_CHUNK,
        est,
        est.total_bytes - 1,
    )
    .expect_err("does not fit");
    let msg = err.to_string();
    assert!(msg.contains("f32") && msg.contains("available"), "{msg}");
    assert!(
        msg.contains("bf16") && msg.contains("q4k"),
        "smaller formats fit: {msg}"
    );
    let err = memory::check(dir, WeightFormat::F32, 4096, PREFILL_CHUNK, est, 1)
        .expect_err("nothing fits");
    assert!(err.to_string().contains("no smaller"), "{err}");
    assert!(memory::check(
        dir,
        WeightFormat::F32,
        4096,
        PREFILL_CHUNK,
        est,
        est.total_bytes
    )
    .is_ok());
}

/// A token with a control character (here an escape pasted with it) is named as invalid at
/// once, without the token, instead of "could not reach … after 5 attempts".
#[test]
fn a_token_with_a_control_character_is_called_invalid() {
    let h = Hub::new();
    let secret = "hf_abc\u{1b}[201~def";
    let opts = HubOptions {
        token: Some(secret.into()),
        ..h.opts()
    };
    let started = Instant::now();
    let err = h.pull_with(&opts).expect_err("an invalid token");
    let msg = err.to_string();
    assert!(matches!(err, HubError::InvalidToken { .. }), "{err:?}");
    assert!(msg.contains("token") && msg.contains("invalid"), "{msg}");
    assert!(!msg.contains("hf_abc") && !msg.contains("def"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(2), "no retries");
    assert!(h.server.requests().is_empty(), "nothing was sent");
}

/// A blob truncated after its download: the cache is no longer "complete" (`list`), an
/// offline load refuses it by name instead of failing deep in the loader, and `pull`
/// downloads that file again instead of saying there is nothing to download (issue 15).
#[test]
fn a_truncated_blob_is_noticed_and_repaired_by_pull() {
    let h = Hub::new();
    let r = h.pull().expect("pull");
    let shard = shards(&h.files)[0].clone();
    let blob = h
        .repo_dir()
        .join("blobs")
        .join(sha256_hex(&h.files[&shard]));
    let len = std::fs::metadata(&blob).expect("blob").len();
    std::fs::File::options()
        .write(true)
        .open(&blob)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");

    let listed = hub::list_cached(&h.cache()).expect("list");
    assert!(!listed[0].complete, "{listed:?}");
    assert_eq!(listed[0].damaged.len(), 1, "{listed:?}");
    assert!(listed[0].damaged[0].contains(&shard), "{listed:?}");
    let offline = HubOptions {
        offline: true,
        ..h.opts()
    };
    let err = h
        .pull_with(&offline)
        .expect_err("a truncated shard must not load");
    assert!(matches!(err, HubError::Damaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shard) && msg.contains("truncated"), "{msg}");

    h.server.clear_requests();
    let again = h.pull().expect("repairing pull");
    assert_eq!(again, r);
    assert_eq!(h.gets(&shard).len(), 1, "the shard is downloaded again");
    assert_snapshot(&h, &r.dir);
    assert!(hub::list_cached(&h.cache()).expect("list")[0].complete);
}
