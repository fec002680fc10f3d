"""Checks `huatuo export --format llava-hf` with Python transformers (issue 18).

Usage (from the project root, after `cargo build --features test-support`):
    python3 scripts/reference/export_check.py [--huatuo target/debug/huatuo]

For each tiny checkpoint (qwen2 = 7B-like, yi = 34B-like, the seeds of model.py) it has huatuo
write the checkpoint and export it (`--shard-size-mb 1`, so the export is sharded), then:
  1. loads the export with transformers' LlavaForConditionalGeneration and AutoProcessor, and
     checks that its greedy answer (no repetition penalty) equals the reference's greedy answer
     (scripts/reference/huatuo_ref.py on the original checkpoint), with one and with two
     images. The images given to the processor are the 336x336 PNGs `huatuo render` writes:
     what `huatuo --endpoint` sends to a server (transformers' CLIPImageProcessor does not pad
     to a square; resizing a 336 square to 336 changes nothing);
  2. applies the exported chat template (transformers' apply_chat_template) to the three-turn
     conversation of tests/fixtures/chat/<family>.json and compares the ids with the
     reference's prompt ids of its third turn;
and writes tests/fixtures/export/<family>.json: the SHA-256 of every exported file (the Rust
tests export again and must write the same bytes), the answers, and the comparisons.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import huatuo_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
FAMILIES = {"qwen2": (1, "qwen2"), "yi": (2, "yi-tiny")}
CASES = [
    (["cell.png"], "What does the picture show?"),
    (["cell.png", "hubble_deep_field.jpg"], "Compare the two images. 有什么不同？"),
]
MAX_NEW = 24


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--huatuo", default=os.path.join(ROOT, "target", "debug", "huatuo"))
    args = ap.parse_args()
    os.makedirs(os.path.join(FIX, "export"), exist_ok=True)
    for family, (seed, tok) in FAMILIES.items():
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            out = os.path.join(tmp, "export")
            subprocess.run([args.huatuo, "dev", "tiny-checkpoint", "--family", family,
                            "--seed", str(seed), "--tokenizer",
                            os.path.join(FIX, "tokenizers", tok), ckpt], check=True)
            subprocess.run([args.huatuo, "export", "--model", ckpt, "--shard-size-mb", "1", out],
                           check=True, stdout=subprocess.DEVNULL)
            files = {name: sha256(os.path.join(out, name)) for name in sorted(os.listdir(out))}

            ref = huatuo_ref.Reference(ckpt, torch.float32)
            model = transformers.LlavaForConditionalGeneration.from_pretrained(
                out, torch_dtype=torch.float32).eval()
            model.config.text_config._attn_implementation = "eager"
            processor = transformers.AutoProcessor.from_pretrained(out)
            image_id = model.config.image_token_index
            eos = ref.tokenizer.eos_token_id
            cases = []
            for images, text in CASES:
                paths = [os.path.join(FIX, "images", n) for n in images]
                user = huatuo_ref.with_placeholders(huatuo_ref.sanitize(text), len(images))
                ids = huatuo_ref.prompt_ids(ref.tokenizer, [], user)
                reference = ref.generate(ids, paths, MAX_NEW, repetition_penalty=1.0)

                rendered = []
                for i, p in enumerate(paths):
                    png = os.path.join(tmp, f"render-{i}.png")
                    subprocess.run([args.huatuo, "render", p, "-o", png], check=True)
                    rendered.append(Image.open(png).convert("RGB"))
                messages = [{"role": "user", "content": user}]
                prompt = processor.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False)
                inputs = processor(images=rendered, text=prompt, return_tensors="pt")
                prompt_ids = inputs["input_ids"][0].tolist()
                with torch.inference_mode():
                    generated = model.generate(
                        **inputs, do_sample=False, num_beams=1, max_new_tokens=MAX_NEW,
                        min_new_tokens=1, repetition_penalty=1.0, eos_token_id=eos,
                        pad_token_id=eos, use_cache=True)
                exported = generated[0][len(prompt_ids):].tolist()
                # The prompt as the reference builds it, with each image's 576 positions.
                expanded = []
                for t in ids:
                    expanded += [image_id] * model.config.image_seq_length if t == -200 else [t]
                cases.append({
                    "images": images,
                    "text": text,
                    "reference_ids": reference,
                    "export_ids": exported,
                    "answer": ref.answer(reference),
                    "answers_equal": exported == reference,
                    "prompt_equal": prompt_ids == expanded,
                })
                print(f"{family} {len(images)} image(s): answers equal {exported == reference},"
                      f" prompt equal {prompt_ids == expanded}")

            chat = json.load(open(os.path.join(FIX, "chat", f"{family}.json")))
            turns = chat["turns"]
            messages = []
            for t in turns[:-1]:
                messages.append({"role": "user", "content": t["user_with_placeholders"]})
                messages.append({"role": "assistant", "content": t["history_answer"]})
            messages.append({"role": "user", "content": turns[-1]["user_with_placeholders"]})
            templated = processor.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True)
            templated = [-200 if t == image_id else t for t in templated]
            template_equal = templated == turns[-1]["prompt_ids"]
            print(f"{family} three-turn chat template: ids equal {template_equal}")

            fixture = {
                "family": family,
                "seed": seed,
                "max_new_tokens": MAX_NEW,
                "image_token_index": image_id,
                "files": files,
                "cases": cases,
                "template_three_turn": {"ids": templated, "equal": template_equal},
                "generated_by": f"scripts/reference/export_check.py (transformers "
                                f"{transformers.__version__}, torch {torch.__version__})",
            }
            path = os.path.join(FIX, "export", f"{family}.json")
            with open(path, "w") as f:
                json.dump(fixture, f, ensure_ascii=False, indent=1)
                f.write("\n")


if __name__ == "__main__":
    main()
