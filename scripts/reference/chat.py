"""Multi-turn chat fixtures: what the reference's `chat()` answers, turn by turn.

Usage (from the project root, after `cargo build --features test-support`):
    python3 scripts/reference/chat.py [--huatuo target/debug/huatuo] [--family qwen2 ...]

cli.py's `HuatuoChatbot.chat(text, images)` (huatuo-reference.md §3.1, §3.3, §3.4) keeps
`self.history` ([human text with this turn's `<image>\\n` placeholders, answer]) and
`self.images` (every image of every turn, in order). Each turn it sanitises the text, prepends
one placeholder per new image, builds the prompt from the whole history (preprocess_huatuo),
re-encodes *all* images, generates with a `TextIteratorStreamer(skip_prompt=True,
skip_special_tokens=True)` and stores the streamer's concatenated text, unstripped, as the
answer. This script replays a three-turn conversation (an image in turn 1, none in turn 2 and
a new image in turn 3) on the tiny checkpoints of both families, greedy (temperature 0) with
the CLI's other processors (repetition penalty 1.2 over generated tokens, min_new_tokens 1,
stop at EOS), and writes tests/fixtures/chat/<family>.json:
  - per turn: the raw text and new images, the text with placeholders, the prompt ids,
    the generated ids, the stripped answer (what `inference()` would print) and the stored
    history answer (the streamer's text, taken from transformers' TextIteratorStreamer itself
    attached to `generate`).
The engine tests (tests/engine.rs) replay the same turns through the engine and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import TextIteratorStreamer

sys.path.insert(0, os.path.dirname(__file__))
import huatuo_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

FAMILIES = {
    # family: (seed, tokenizer fixture dir), as scripts/reference/model.py
    "qwen2": (1, "qwen2"),
    "yi": (2, "yi-tiny"),
}
# (raw user text, new images of the turn). Turn 2 has a stray "<image>" that sanitation removes.
TURNS = [
    ("What does the picture show?", ["cell.png"]),
    ("Is there anything <image>abnormal? 有异常吗？", []),
    ("Compare it with the first image.", ["hubble_deep_field.jpg"]),
]
MAX_NEW_TOKENS = 16
REPETITION_PENALTY = 1.2


def make_checkpoint(huatuo: str, family: str, out: str) -> None:
    seed, tok = FAMILIES[family]
    subprocess.run([huatuo, "dev", "tiny-checkpoint", "--family", family, "--seed", str(seed),
                    "--tokenizer", os.path.join(FIX, "tokenizers", tok), out], check=True)


@torch.inference_mode()
def generate_streamed(ref: huatuo_ref.Reference, ids: list[int], images: list[str]):
    """Greedy generate as huatuo_ref.Reference.generate, with cli.py chat()'s streamer attached.

    Returns (new ids with EOS when produced, the streamer's concatenated text). The streamer's
    queue is unbounded, so generation may run to the end before the text is read.
    """
    tok = ref.tokenizer
    eos = tok.eos_token_id
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    out = ref.lm.generate(
        inputs_embeds=ref.embeds(ids, images),
        attention_mask=None,
        do_sample=False,
        num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS,
        min_new_tokens=1,
        repetition_penalty=REPETITION_PENALTY,
        eos_token_id=eos,
        pad_token_id=eos,
        use_cache=True,
        streamer=streamer,
    )
    text = "".join(streamer)
    return out[0].tolist(), text


def replay(ref: huatuo_ref.Reference) -> list[dict]:
    """cli.py chat(), turn by turn."""
    history: list[tuple[str, str]] = []
    all_images: list[str] = []
    turns = []
    for text, new_images in TURNS:
        user = huatuo_ref.with_placeholders(huatuo_ref.sanitize(text), len(new_images))
        all_images += [os.path.join(FIX, "images", n) for n in new_images]
        ids = huatuo_ref.prompt_ids(ref.tokenizer, history, user)
        assert ids.count(huatuo_ref.IMAGE_TOKEN_INDEX) == len(all_images)
        new_ids, streamed = generate_streamed(ref, ids, all_images)
        turns.append({
            "user": text,
            "images": new_images,
            "user_with_placeholders": user,
            "prompt_ids": ids,
            "ids": new_ids,
            "answer": ref.answer(new_ids),
            "history_answer": streamed,
        })
        history.append((user, streamed))
    return turns


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--huatuo", default=os.path.join(ROOT, "target", "debug", "huatuo"))
    ap.add_argument("--family", choices=sorted(FAMILIES), action="append",
                    help="only these families (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(os.path.join(FIX, "chat"), exist_ok=True)
    for family in args.family or FAMILIES:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            make_checkpoint(args.huatuo, family, ckpt)
            ref = huatuo_ref.Reference(ckpt, torch.float32)
            turns = replay(ref)
        meta = {
            "family": family,
            "seed": FAMILIES[family][0],
            "tokenizer": FAMILIES[family][1],
            "params": {
                "temperature": 0.0,
                "max_new_tokens": MAX_NEW_TOKENS,
                "repetition_penalty": REPETITION_PENALTY,
                "min_new_tokens": 1,
            },
            "turns": turns,
            "generated_by": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }
        with open(os.path.join(FIX, "chat", f"{family}.json"), "w") as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
            f.write("\n")
        for i, t in enumerate(turns, 1):
            print(family, "turn", i, "prompt", len(t["prompt_ids"]), "ids", t["ids"],
                  "history", repr(t["history_answer"]))


if __name__ == "__main__":
    main()
