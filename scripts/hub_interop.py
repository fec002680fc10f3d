#!/usr/bin/env python3
"""Issue 3, acceptance 2: huatuo and Python's huggingface_hub share one model cache.

Against the hub stand-in (`huatuo dev hub-server`) serving a tiny checkpoint under the real
FreedomIntelligence/HuatuoGPT-Vision-7B name (plus a README and vit's pytorch_model.bin, which
huatuo must not fetch), it checks, each in a fresh cache:

  1. Python `snapshot_download` fills the cache; `huatuo pull 7b` then resolves it offline
     (HF_HUB_OFFLINE=1) with no request at all, and online with the revision lookup only.
  2. `huatuo pull 7b` fills the cache; Python loads every file with `local_files_only=True`
     (no request), and online `hf_hub_download` finds them all cached (HEADs, no GET).
  3. A download Python was killed in the middle of is resumed by huatuo with `Range`.
  4. A download huatuo was killed in the middle of is resumed by Python with `Range`.

Usage (no network needed; `pip install huggingface_hub`):

    cargo build --features test-support && python3 scripts/hub_interop.py [--huatuo target/debug/huatuo]

Prints one line per check and exits 0 when all pass.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = "FreedomIntelligence/HuatuoGPT-Vision-7B"
FOLDER = "models--FreedomIntelligence--HuatuoGPT-Vision-7B"
EXTRAS = ["README.md", "vit/clip_vit_large_patch14_336/pytorch_model.bin"]
ROOT = Path(__file__).resolve().parent.parent


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Server:
    """`huatuo dev hub-server` in the background, with its request log."""

    def __init__(self, huatuo, root):
        self.proc = subprocess.Popen(
            [huatuo, "dev", "hub-server", "--root", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"hub-server did not start: {self.url!r}")

    def requests(self):
        with urllib.request.urlopen(f"{self.url}/_stand_in/requests", timeout=10) as r:
            return json.load(r)

    def throttle(self, bytes_per_sec):
        urllib.request.urlopen(
            f"{self.url}/_stand_in/throttle?bytes_per_sec={bytes_per_sec}", timeout=10
        ).read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def clean_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_", "HUATUO_"))
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def huatuo_pull(huatuo, server, cache, offline=False, endpoint=None):
    env = clean_env(
        HF_ENDPOINT=endpoint or server.url,
        HF_HUB_CACHE=cache,
        HUATUO_CONFIG_DIR=Path(cache).parent / "config",
        HUATUO_DATA_DIR=Path(cache).parent / "data",
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run(
        [huatuo, "pull", "7b"], env=env, capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        raise AssertionError(f"huatuo pull failed: {out.stderr}")
    return out.stdout.strip()


PY_DOWNLOAD = """
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3]))
"""


def python_snapshot(cache, endpoint, **popen):
    """snapshot_download in a child process (so that it can be killed)."""
    args = [sys.executable, "-c", PY_DOWNLOAD, REPO, str(cache), endpoint]
    return subprocess.Popen(args, env=clean_env(HF_HUB_DISABLE_PROGRESS_BARS=1), **popen)


def wait_partial(cache, proc, min_bytes=1_000_000, timeout=120):
    """The first LFS `.incomplete` in the cache that reached `min_bytes`."""
    blobs = Path(cache) / FOLDER / "blobs"
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in blobs.glob("*.incomplete") if blobs.is_dir() else []:
            if len(p.name) == 64 + len(".incomplete") and p.stat().st_size >= min_bytes:
                return p
        if proc.poll() is not None:
            raise AssertionError("the download ended before a large file was half done")
        time.sleep(0.02)
    raise AssertionError("no large download started")


def content_gets(requests, digest):
    return [
        r for r in requests if r["server"] == "cdn" and digest in r["path"] and r["method"] == "GET"
    ]


def needed_files(source):
    files = []
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source).as_posix()
        if p.is_file() and rel not in EXTRAS:
            files.append(rel)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--huatuo", default=str(ROOT / "target" / "debug" / "huatuo"))
    args = ap.parse_args()
    huatuo = args.huatuo
    import huggingface_hub
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()

    tmp = Path(tempfile.mkdtemp(prefix="hub-interop-"))
    server = None
    try:
        source = tmp / "root" / REPO
        subprocess.run(
            [huatuo, "dev", "tiny-checkpoint", "--family", "qwen2", "--seed", "1",
             "--tokenizer", str(ROOT / "tests/fixtures/tokenizers/qwen2"), str(source)],
            check=True,
        )
        (source / EXTRAS[0]).write_text("# tiny HuatuoGPT-Vision-7B\n")
        (source / EXTRAS[1]).write_bytes(b"\x07" * 65536)
        needed = needed_files(source)
        server = Server(huatuo, tmp / "root")
        print(f"huggingface_hub {huggingface_hub.__version__}, stand-in at {server.url}")

        # 1. Python writes, huatuo reads.
        cache = tmp / "py-first" / "hub"
        py_dir = snapshot_download(REPO, cache_dir=cache, endpoint=server.url)
        before = len(server.requests())
        got = huatuo_pull(huatuo, server, cache, offline=True, endpoint="http://127.0.0.1:9")
        assert got == py_dir, (got, py_dir)
        assert len(server.requests()) == before, "huatuo offline made a request"
        got = huatuo_pull(huatuo, server, cache)
        new = server.requests()[before:]
        assert got == py_dir, (got, py_dir)
        assert [r["path"].startswith("/api/models/") for r in new] == [True], new
        print(f"ok 1: Python's snapshot used by huatuo: offline 0 requests, online {len(new)} "
              f"(the revision lookup), {len(needed)} files, no download")

        # 2. huatuo writes, Python reads.
        cache = tmp / "huatuo-first" / "hub"
        ours = huatuo_pull(huatuo, server, cache)
        assert not any((Path(ours) / e).exists() for e in EXTRAS), "huatuo fetched an extra"
        before = len(server.requests())
        assert snapshot_download(REPO, cache_dir=cache, local_files_only=True) == ours
        for f in needed:
            path = hf_hub_download(REPO, f, cache_dir=cache, local_files_only=True)
            assert Path(path).read_bytes() == (source / f).read_bytes(), f
        assert len(server.requests()) == before, "local_files_only made a request"
        for f in needed:
            hf_hub_download(REPO, f, cache_dir=cache, endpoint=server.url)
        new = server.requests()[before:]
        assert new and all(r["method"] == "HEAD" for r in new), new
        print(f"ok 2: huatuo's snapshot used by Python: local_files_only 0 requests, "
              f"online {len(new)} HEADs and no GET for {len(needed)} files")

        # 3. Python killed mid-file, huatuo resumes.
        cache = tmp / "py-killed" / "hub"
        server.throttle(4_000_000)
        proc = python_snapshot(cache, server.url, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        partial = wait_partial(cache, proc)
        proc.kill()
        proc.wait()
        kept = partial.stat().st_size
        digest = partial.name.removesuffix(".incomplete")
        server.throttle(0)
        before = len(server.requests())
        ours = huatuo_pull(huatuo, server, cache)
        gets = content_gets(server.requests()[before:], digest)
        assert [g["range"] for g in gets] == [f"bytes={kept}-"], gets
        blob = Path(cache) / FOLDER / "blobs" / digest
        assert sha256(blob) == digest
        print(f"ok 3: huatuo resumed Python's partial {digest[:12]}… at byte {kept}; "
              f"sha256 verified")

        # 4. huatuo killed mid-file, Python resumes.
        cache = tmp / "huatuo-killed" / "hub"
        server.throttle(4_000_000)
        env = clean_env(HF_ENDPOINT=server.url, HF_HUB_CACHE=cache,
                        HUATUO_CONFIG_DIR=tmp / "c", HUATUO_DATA_DIR=tmp / "d")
        proc = subprocess.Popen([huatuo, "pull", "7b"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial = wait_partial(cache, proc)
        proc.kill()
        proc.wait()
        kept = partial.stat().st_size
        digest = partial.name.removesuffix(".incomplete")
        server.throttle(0)
        before = len(server.requests())
        py_dir = snapshot_download(REPO, cache_dir=cache, endpoint=server.url)
        gets = content_gets(server.requests()[before:], digest)
        assert [g["range"] for g in gets] == [f"bytes={kept}-"], gets
        assert sha256(Path(cache) / FOLDER / "blobs" / digest) == digest
        assert huatuo_pull(huatuo, server, cache, offline=True) == py_dir
        print(f"ok 4: Python resumed huatuo's partial {digest[:12]}… at byte {kept}; "
              f"sha256 verified")
        print("all interop checks passed")
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
