"""Write tests/fixtures/prompts/<tokenizer>.json: prompt ids and decodes from the Python reference.

For each tokenizer directory under tests/fixtures/tokenizers (qwen2 = the real Qwen2 / 7B
tokenizer, yi-tiny = a small tokenizer in the style of Yi / 34B), using
AutoTokenizer.from_pretrained(dir) like cli.py and huatuo_ref's sanitize / with_placeholders /
prompt_ids:

* "prompts": conversations (history of raw user text + image count + unstripped answer, the
  current raw user text and its image count) with the user text after sanitation and
  placeholders, the full prompt string and the expected ids (-200 per image);
* "encode": single chunks and their `tokenizer(text, add_special_tokens=False)` ids;
* "decode": id lists (random ones, slices of encoded texts that cut characters in the middle,
  special tokens inserted) with `tokenizer.decode(ids, skip_special_tokens=True)`, its
  `.strip()` (cli.py inference()), and what cli.py chat() stores in its history: the
  concatenated output of TextStreamer(skip_prompt=True, skip_special_tokens=True) fed one id
  at a time, as generate() does.

Deterministic (fixed seed). Run: python scripts/reference/prompts.py
"""

from __future__ import annotations

import json
import os
import random
import sys

import tokenizers
import torch
import transformers
from transformers import AutoTokenizer, TextStreamer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from huatuo_ref import prompt_ids, sanitize, with_placeholders  # noqa: E402

TOKENIZERS = ["qwen2", "yi-tiny"]
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "prompts")

A1 = " The X-ray shows the bones of the left hand; no fracture is visible.\n"


def conversation_cases() -> list[dict]:
    """(name, history [(raw user, n_images, answer)], raw user, n_images)."""
    long_answer = " ".join(f"word{i % 97}" for i in range(2600))  # > 4096 tokens
    return [
        dict(name="no_image", history=[], user="What does the picture show?", n_images=0),
        dict(name="one_image", history=[], user="What does the picture show?", n_images=1),
        dict(name="three_images", history=[],
             user="Compare these three scans. Which one shows a fracture?", n_images=3),
        dict(name="worked_example_turn_2",
             history=[("What does the picture show?", 1, A1)],
             user="Is there a fracture?", n_images=0),
        dict(name="three_turn_history",
             history=[
                 ("  Describe both images.  ", 2,
                  "  The first image is a chest X-ray.\nThe second one is a CT scan.  \n"),
                 ("Is it normal?", 0, "\n\nYes, it looks normal. "),
                 ("\nAnd this one?\n", 1, "This one shows a small nodule in the right lung.\n\n"),
             ],
             user="Thank you. What should I do next?", n_images=0),
        dict(name="chinese", history=[], user="这张胸部X光片显示了什么？有没有骨折？", n_images=1),
        dict(name="chinese_history",
             history=[("这是什么检查？", 1, "这是一张胸部CT。\n")],
             user="有没有骨折？请详细说明 🩻。", n_images=0),
        dict(name="banned_markers", history=[],
             user="Look at <image> this <s>scan</s> please <<image>s> ok</s>", n_images=1),
        dict(name="banned_markers_in_history",
             history=[("<image>first <s>question</s>", 1, "An <image> answer with </s> kept.")],
             user="<ima<s>ge> second", n_images=0),
        dict(name="special_tokens_in_text", history=[],
             user="What is <|endoftext|> and <|im_start|>user or <|startoftext|><unk>?",
             n_images=0),
        dict(name="whitespace_around_user", history=[],
             user=" \n\t What is this?\u3000 \n", n_images=1),
        dict(name="blank_user_with_image", history=[], user=" ", n_images=1),
        dict(name="spaces_inside", history=[],
             user="two  spaces,   three, and\ttab\nnew line  end", n_images=2),
        dict(name="cleanup_patterns", history=[("Why ?", 0, " I do n't know , it 's fine . ")],
             user="Are n't they 're ok ?", n_images=0),
        dict(name="long_answer_truncated", history=[("Say many words.", 0, long_answer)],
             user="Thanks.", n_images=0),
    ]


def encode_texts() -> list[str]:
    return [
        "",
        " ",
        "\n",
        "<|user|>\n",
        "\nWhat does the picture show?\n<|assistant|>\n",
        "<|assistant|>\n The answer. \n",
        "这张胸部X光片显示了什么？有没有骨折？",
        "emoji 🩻🦴👩‍⚕️ and accents: café naïve",
        "  leading and trailing  ",
        "tabs\tand\r\nwindows newlines",
        "<|endoftext|><|endoftext|>x",
        "▁ already has a metaspace ▁▁",
        "mixed 中文 and English 混合 text.",
    ]


SAMPLE_TEXTS = [
    "The chest X-ray shows clear lung fields.\nNo fracture is seen.",
    "  Leading spaces and trailing newline.\n\n",
    "这张胸部X光片显示双肺纹理清晰，未见明显实变影。",
    "Mixed 中文 text with emoji 🩻🦴 and café.",
    "I do n't know , it 's fine . They 're here , are n't they ?",
    "Line one\n - item two\n\n  indented three",
    "\n\n 回答：无骨折。 \n",
    "😀😃😄😁 emoji only 🧑‍⚕️",
    "a ' b ' c 've 're 'm 's n't",
    "Numbers 150/95 mmHg, 37.5°C, 5 × 10^9/L.",
]


def streamed(tok, ids: list[int]) -> str:
    """cli.py chat(): concatenated TextIteratorStreamer output (same put/end logic)."""
    pieces: list[str] = []

    class Collect(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            pieces.append(text)

    s = Collect(tok, skip_prompt=True, skip_special_tokens=True)
    s.put(torch.empty((1, 0), dtype=torch.long))  # generate() first puts the (empty) prompt
    for i in ids:
        s.put(torch.tensor([i]))
    s.end()
    return "".join(pieces)


def decode_cases(tok, rng: random.Random) -> list[dict]:
    specials = sorted(set(tok.all_special_ids))
    n = len(tok)
    cases: list[list[int]] = []
    names: list[str] = []
    # Whole texts, then random slices (cutting multi-byte characters), specials sprinkled in.
    for k, text in enumerate(SAMPLE_TEXTS):
        ids = tok(text, add_special_tokens=False).input_ids
        cases.append(ids)
        names.append(f"text_{k}")
        for j in range(3):
            a = rng.randrange(0, len(ids))
            b = rng.randrange(a + 1, len(ids) + 1)
            part = ids[a:b]
            if j == 2:
                for _ in range(rng.randrange(1, 3)):
                    part.insert(rng.randrange(0, len(part) + 1), rng.choice(specials))
            cases.append(part)
            names.append(f"text_{k}_slice_{j}")
    # Random ids over the whole vocabulary, with specials.
    for k in range(12):
        length = rng.randrange(1, 24)
        ids = [rng.randrange(0, n) for _ in range(length)]
        if k % 3 == 0:
            ids.insert(rng.randrange(0, len(ids) + 1), rng.choice(specials))
        cases.append(ids)
        names.append(f"random_{k}")
    cases.append(specials)
    names.append("only_specials")
    cases.append([])
    names.append("empty")
    out = []
    for name, ids in zip(names, cases):
        text = tok.decode(ids, skip_special_tokens=True)
        out.append(dict(name=name, ids=ids, text=text, stripped=text.strip(),
                        streamed=streamed(tok, ids)))
    return out


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    for name in TOKENIZERS:
        rng = random.Random(f"huatuo-prompts-{name}")
        tok_dir = os.path.join(ROOT, "tests", "fixtures", "tokenizers", name)
        tok = AutoTokenizer.from_pretrained(tok_dir)
        assert tok.is_fast
        prompts = []
        for case in conversation_cases():
            history = [(with_placeholders(sanitize(u), k), a) for u, k, a in case["history"]]
            user = with_placeholders(sanitize(case["user"]), case["n_images"])
            ids = prompt_ids(tok, history, user)
            text = "".join(f"<|user|>\n{h.strip()}\n<|assistant|>\n{a} \n" for h, a in history)
            text += f"<|user|>\n{user.strip()}\n<|assistant|>\n"
            prompts.append(dict(
                name=case["name"],
                history=[dict(user=u, n_images=k, answer=a) for u, k, a in case["history"]],
                user=case["user"],
                n_images=case["n_images"],
                history_with_placeholders=[h for h, _ in history],
                user_with_placeholders=user,
                prompt_text=text,
                ids=ids,
            ))
        encodes = [dict(text=t, ids=tok(t, add_special_tokens=False).input_ids)
                   for t in encode_texts()]
        doc = dict(
            tokenizer=name,
            generated_by="scripts/reference/prompts.py",
            transformers=transformers.__version__,
            tokenizers=tokenizers.__version__,
            vocab_size=len(tok),
            eos_id=tok.eos_token_id,
            bos_id=tok.bos_token_id,
            all_special_ids=sorted(set(tok.all_special_ids)),
            clean_up_tokenization_spaces=tok.clean_up_tokenization_spaces,
            model_max_length=tok.model_max_length,
            prompts=prompts,
            encode=encodes,
            decode=decode_cases(tok, rng),
        )
        path = os.path.join(OUT_DIR, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        differ = sum(d["streamed"] != d["text"] for d in doc["decode"])
        print(f"wrote {os.path.relpath(path, ROOT)}: {len(prompts)} prompts, "
              f"{len(encodes)} encodes, {len(doc['decode'])} decodes "
              f"({differ} where the streamed history text differs from decode)")


if __name__ == "__main__":
    main()
