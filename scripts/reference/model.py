"""Model parity fixtures: logits and greedy answers of the Python reference on tiny checkpoints.

Usage (from the project root, after `cargo build --features test-support`):
    python3 scripts/reference/model.py [--huatuo target/debug/huatuo]

For each family (qwen2 = 7B-like, yi = 34B-like) it has huatuo write the tiny checkpoint
(`huatuo dev tiny-checkpoint`, deterministic from the seed below), loads it with
scripts/reference/huatuo_ref.py (transformers classes + the reference glue), and writes
tests/fixtures/parity/<family>.json and <family>.safetensors:
  - the prompt ids of a two-image Chinese+English question,
  - logits at every prompt position, summarised so the fixture stays small: the log-sum-exp
    and maximum over the whole vocabulary, the 8 largest (ids and values) and 64 fixed
    columns, all f32,
  - the greedy answer ids for 32 new tokens (reference CLI processors: repetition penalty 1.2
    over generated tokens, min_new_tokens 1, stop at EOS),
  - the answer text of `ask` with one image and 24 new tokens, greedy.
The tests rebuild the same checkpoints in Rust and compare (tests/parity.rs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import huatuo_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

FAMILIES = {
    # family: (seed, tokenizer fixture dir)
    "qwen2": (1, "qwen2"),
    "yi": (2, "yi-tiny"),
}
IMAGES = ["cell.png", "hubble_deep_field.jpg"]
TWO_IMAGE_PROMPT = "这两张医学图像分别显示了什么？请比较它们。What do they show?"
ASK_IMAGE = "cell.png"
ASK_PROMPT = "What does the picture show?"
N_COLS = 64
TOP = 8


def make_checkpoint(huatuo: str, family: str, out: str) -> None:
    seed, tok = FAMILIES[family]
    subprocess.run([huatuo, "dev", "tiny-checkpoint", "--family", family, "--seed", str(seed),
                    "--tokenizer", os.path.join(FIX, "tokenizers", tok), out], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--huatuo", default=os.path.join(ROOT, "target", "debug", "huatuo"))
    ap.add_argument("--family", choices=sorted(FAMILIES), action="append",
                    help="only these families (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(os.path.join(FIX, "parity"), exist_ok=True)
    for family in args.family or FAMILIES:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            make_checkpoint(args.huatuo, family, ckpt)
            ref = huatuo_ref.Reference(ckpt, torch.float32)
            tok = ref.tokenizer
            images = [os.path.join(FIX, "images", n) for n in IMAGES]

            user = huatuo_ref.with_placeholders(huatuo_ref.sanitize(TWO_IMAGE_PROMPT), len(images))
            ids = huatuo_ref.prompt_ids(tok, [], user)
            logits = ref.logits(ids, images)  # [L, V]
            vocab = logits.shape[1]
            cols = torch.linspace(0, vocab - 1, N_COLS).round().long()
            top_vals, top_ids = logits.topk(TOP, dim=-1)
            greedy = ref.generate(ids, images, max_new_tokens=32)

            ask_user = huatuo_ref.with_placeholders(huatuo_ref.sanitize(ASK_PROMPT), 1)
            ask_ids = huatuo_ref.prompt_ids(tok, [], ask_user)
            ask_new = ref.generate(ask_ids, [os.path.join(FIX, "images", ASK_IMAGE)],
                                   max_new_tokens=24)

            save_file({
                "lse": torch.logsumexp(logits, -1).contiguous(),
                "max": logits.max(-1).values.contiguous(),
                "top_ids": top_ids.contiguous(),
                "top_vals": top_vals.contiguous(),
                "cols": cols.contiguous(),
                "col_vals": logits[:, cols].contiguous(),
            }, os.path.join(FIX, "parity", f"{family}.safetensors"))
            meta = {
                "family": family,
                "seed": FAMILIES[family][0],
                "tokenizer": FAMILIES[family][1],
                "images": IMAGES,
                "prompt": TWO_IMAGE_PROMPT,
                "prompt_ids": ids,
                "positions": logits.shape[0],
                "vocab": vocab,
                "greedy_ids": greedy,
                "ask": {
                    "image": ASK_IMAGE,
                    "prompt": ASK_PROMPT,
                    "max_new_tokens": 24,
                    "ids": ask_new,
                    "answer": ref.answer(ask_new),
                },
                "generated_by": {
                    "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__,
                },
            }
            with open(os.path.join(FIX, "parity", f"{family}.json"), "w") as f:
                json.dump(meta, f, ensure_ascii=False, indent=1)
                f.write("\n")
            print(family, "positions", logits.shape[0], "greedy", greedy[:8], "...",
                  "answer", repr(meta["ask"]["answer"]))


if __name__ == "__main__":
    main()
