"""Fixtures for `huatuo eval` (issue 19): a small evaluation set in the authors' format, the
reference's greedy answers to it, and the authors' scores.

Usage (from the project root, after `cargo build --features test-support`):
    python3 scripts/reference/eval_check.py [--huatuo target/debug/huatuo]

Writes tests/fixtures/eval/:
  - data.json: items in the format of FreedomIntelligence/Medical_Multimodal_Evaluation_Data
    (options as lists and as strings holding Python lists, an open item, an item without
    options, a "?" answer, a two-image item, an unreadable image), image paths relative to it;
  - reference_<family>.json: for each scored item, the reference's greedy answer
    (`inference()` of cli.py as huatuo_ref.py restates it: unreadable images dropped, the
    authors' prompt, repetition penalty 1.2, 16 new tokens) on the tiny checkpoint, and the
    authors' scores of those answers (eval_scorer.py);
  - evalpy_output.json and evalpy_scores.json: an eval.py-style output with tricky answers
    and the authors' scores of it (for `huatuo eval --score`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import eval_scorer  # noqa: E402
import huatuo_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "eval")
FAMILIES = {"qwen2": (1, "qwen2"), "yi": (2, "yi-tiny")}
MAX_NEW = 16
CELL, HUBBLE, BROKEN = "../images/cell.png", "../images/hubble_deep_field.jpg", "broken.tif"

DATA = [
    {"question": "Is there an abnormality in the image?", "options": ["yes", "no"], "answer": "yes",
     "image": [CELL], "dataset": "VQA-RAD_test", "subset": ""},
    {"question": "Which organ is shown?", "options": "['Lung', 'Heart', \"Liver's lobe\"]",
     "answer": "Heart", "image": [CELL], "dataset": "SLAKE_test", "subset": ""},
    {"question": "图中显示的是哪个器官？", "options": ["肺", "心脏", "肝脏", "肾脏"], "answer": "肝脏",
     "image": [HUBBLE], "dataset": "SLAKE_test", "subset": ""},
    {"question": "What stain is used?", "options": ["H&E", "PAS", "Gram"], "answer": "?",
     "image": [CELL], "dataset": "PathVQA_test", "subset": ""},
    {"question": "Compare the two images. Which is the histology slide?",
     "options": ["The first", "The second", "Both", "Neither"], "answer": "The first",
     "image": [CELL, HUBBLE], "dataset": "PMC-VQA_test", "subset": ""},
    {"question": "What modality is this?", "options": ["X-Ray", "CT", "MRI", "Ultrasound"],
     "answer": "X-Ray", "image": [BROKEN], "dataset": "OmniMedVQA", "subset": "X-Ray"},
    {"question": "Is the lesion malignant?", "options": "['benign', 'malignant']",
     "answer": "malignant", "image": [HUBBLE], "dataset": "OmniMedVQA",
     "subset": "CT(Computed Tomography)"},
    {"question": "Which structure is highlighted in <image 1>?",
     "options": ["Nucleus", "Mitochondrion", "Ribosome", "Golgi apparatus", "Lysosome"],
     "answer": "Nucleus", "image": [CELL, CELL], "dataset": "MMMU_Medical_Validation",
     "subset": "Basic_Medical_Science", "question_type": "multiple-choice"},
    {"question": "Describe the findings.", "options": [], "answer": "A normal chest",
     "image": [CELL], "dataset": "MMMU_Medical_Validation", "subset": "Clinical_Medicine",
     "question_type": "open"},
    {"question": "What is shown?", "options": [], "answer": "a cell", "image": [CELL],
     "dataset": "PathVQA_test", "subset": ""},
    {"question": "Is this a fundus photograph?", "options": ["yes", "no"], "answer": "no",
     "image": [], "dataset": "VQA-RAD_test", "subset": ""},
]

TRICKY = ["(a)", "答案是B", "**C**", "D", "I think a lung", "The answer is A.", "b",
          "no letter", "Answer: A\n", "is B", "#F"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--huatuo", default=os.path.join(ROOT, "target", "debug", "huatuo"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "data.json"), "w") as f:
        json.dump(DATA, f, ensure_ascii=False, indent=1)
        f.write("\n")

    for family, (seed, tok) in FAMILIES.items():
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            subprocess.run([args.huatuo, "dev", "tiny-checkpoint", "--family", family, "--seed",
                            str(seed), "--tokenizer", os.path.join(FIX, "tokenizers", tok), ckpt],
                           check=True)
            ref = huatuo_ref.Reference(ckpt, torch.float32)
            outputs = []
            for test_id, item in enumerate(copy.deepcopy(DATA), start=1):
                # eval.py: the prompt (options parsed), inference() on every item.
                options = item["options"]
                if isinstance(options, str):
                    import ast
                    options = ast.literal_eval(options)
                    item["options"] = options
                option_str = "\n".join(f"{l}. {o}" for l, o in zip(eval_scorer.OPT_TITLE, options))
                query = f"{item['question']}\n{option_str}\nAnswer with the option's letter from the given choices directly."
                images, errors = [], []
                for p in item["image"]:
                    path = os.path.join(OUT, p)
                    try:
                        Image.open(path).convert("RGB")
                        images.append(path)
                    except Exception:  # noqa: BLE001 - inference() drops any failure
                        errors.append(p)
                images = images[:6]
                text = huatuo_ref.with_placeholders(huatuo_ref.sanitize(query), len(images))
                ids = huatuo_ref.prompt_ids(ref.tokenizer, [], text)
                new = ref.generate(ids, images, MAX_NEW, repetition_penalty=1.2)
                item["model_output"] = ref.answer(new)
                item["test_id"] = test_id
                item["image_errors"] = errors
                item["index"] = test_id - 1
                outputs.append(item)
            res, scored = eval_scorer.score_mix_llava(copy.deepcopy(outputs))
            fixture = {
                "family": family,
                "max_new_tokens": MAX_NEW,
                "items": [{"index": d["index"], "model_output": d["model_output"],
                           "pred": d["pred"], "gold": d["gold"], "correct": d["is_correct"],
                           "image_errors": len(d["image_errors"])} for d in scored],
                "scores": res,
                "generated_by": "scripts/reference/eval_check.py",
            }
            with open(os.path.join(OUT, f"reference_{family}.json"), "w") as f:
                json.dump(fixture, f, ensure_ascii=False, indent=1)
                f.write("\n")
            print(family, json.dumps(res, ensure_ascii=False))

    # An eval.py output with tricky answers (and an open item, a duplicate test_id).
    evalpy = []
    for i, output in enumerate(TRICKY):
        base = copy.deepcopy(DATA[i % 8])
        base["test_id"] = i + 1
        base["model_output"] = output
        evalpy.append(base)
    dup = copy.deepcopy(evalpy[0])
    dup["model_output"] = "B"
    evalpy.append(dup)
    open_item = copy.deepcopy(DATA[8])
    open_item["test_id"] = 100
    open_item["model_output"] = "A"
    evalpy.append(open_item)
    with open(os.path.join(OUT, "evalpy_output.json"), "w") as f:
        json.dump(evalpy, f, ensure_ascii=False, indent=1)
        f.write("\n")
    res, scored = eval_scorer.score_mix_llava(copy.deepcopy(evalpy))
    with open(os.path.join(OUT, "evalpy_scores.json"), "w") as f:
        json.dump({"scores": res, "preds": [d["pred"] for d in scored],
                   "correct": [d["is_correct"] for d in scored]}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("eval.py output", json.dumps(res, ensure_ascii=False))


if __name__ == "__main__":
    main()
