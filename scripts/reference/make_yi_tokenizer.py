"""Build tests/fixtures/tokenizers/yi-tiny: a small tokenizer in the exact style of Yi's.

Yi's tokenizer.json (like Llama-2's) is transformers' LlamaConverter output for a
sentencepiece BPE model (convert_slow_tokenizer.py, legacy=True, add_prefix_space unset):

    normalizer     Sequence[Prepend("▁"), Replace(" ", "▁")]
    pre_tokenizer  null
    model          BPE, byte_fallback=true, fuse_unk=true, unk_token "<unk>"
    decoder        Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]
    added_tokens   ids 0 <unk>, 1 <|startoftext|>, 2 <|endoftext|>, special, not normalized
    post_processor TemplateProcessing (what LlamaTokenizerFast.update_post_processor sets;
                   add_bos_token=false, so "$A" only)

Vocabulary: 0 <unk>, 1 <|startoftext|>, 2 <|endoftext|>, 3..258 the byte tokens <0x00>..<0xFF>,
then the characters and merges learned (train() below) on yi_corpus.txt
(English + Chinese medical sentences), about 2000 entries in all. Characters left out of the
alphabet (and "\\n", which never occurs inside a corpus line) go through byte fallback, as in
the real tokenizer.

The output is deterministic; run from anywhere:
    python scripts/reference/make_yi_tokenizer.py
and check the result loads as a fast tokenizer (the script does it):
    AutoTokenizer.from_pretrained("tests/fixtures/tokenizers/yi-tiny")
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "yi_corpus.txt")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "yi-tiny")

VOCAB_SIZE = 2000
LIMIT_ALPHABET = 400
SPECIALS = ["<unk>", "<|startoftext|>", "<|endoftext|>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
SPIECE = "\u2581"  # ▁


def train() -> tuple[dict[str, int], list[str]]:
    """Learn the vocabulary and merges; ids 0..258 are the specials and byte tokens.

    A plain sentencepiece-style BPE trainer: text normalized as the tokenizer does ("▁" in
    front, spaces to "▁"), split before each "▁" (sentencepiece's split_by_whitespace), the
    LIMIT_ALPHABET most frequent characters kept (the others never merge: byte fallback),
    then the most frequent adjacent pair merged until the vocabulary is full. Ties go to the
    smallest pair, so the result is deterministic (the `tokenizers` BpeTrainer breaks ties by
    hash-map order and is not).
    """
    with open(CORPUS, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    words: Counter[str] = Counter()
    for line in lines:
        normalized = SPIECE + line.replace(" ", SPIECE)
        words.update(re.findall(f"{SPIECE}[^{SPIECE}]*|[^{SPIECE}]+", normalized))
    chars: Counter[str] = Counter()
    for word, n in words.items():
        for ch in word:
            chars[ch] += n
    alphabet = sorted(chars, key=lambda ch: (-chars[ch], ch))[:LIMIT_ALPHABET]
    vocab_list = SPECIALS + BYTES + sorted(alphabet)
    known = set(vocab_list)
    # None marks a character outside the alphabet: it never takes part in a merge.
    seqs = {w: [ch if ch in known else None for ch in w] for w in sorted(words)}
    merges: list[str] = []
    while len(vocab_list) < VOCAB_SIZE:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, seq in seqs.items():
            for a, b in zip(seq, seq[1:]):
                if a is not None and b is not None:
                    pairs[(a, b)] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        if merged not in known:
            known.add(merged)
            vocab_list.append(merged)
        for word, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[word] = out
    return {t: i for i, t in enumerate(vocab_list)}, merges


def tokenizer_json(vocab: dict[str, int], merges: list[str]) -> dict:
    def added(i: int, content: str) -> dict:
        return {
            "id": i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(i, t) for i, t in enumerate(SPECIALS)],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": SPIECE},
                {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPIECE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])),
            "merges": merges,
        },
    }


def added_tokens_decoder() -> dict:
    return {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIALS)
    }


# Yi-34B / Yi-1.5-34B tokenizer_config.json as published (LlamaTokenizer, no BOS added,
# legacy, model_max_length 4096), with the special tokens of HuatuoGPT-Vision-34B's
# special_tokens_map.json (pad <|endoftext|>, reference §1.6). One deliberate difference:
# clean_up_tokenization_spaces is true here so that the clean-up path of decode is tested.
TOKENIZER_CONFIG = {
    "add_bos_token": False,
    "add_eos_token": False,
    "added_tokens_decoder": added_tokens_decoder(),
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "eos_token": "<|endoftext|>",
    "legacy": True,
    "model_max_length": 4096,
    "pad_token": "<|endoftext|>",
    "padding_side": "right",
    "sp_model_kwargs": {},
    "spaces_between_special_tokens": False,
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
    "use_default_system_prompt": False,
}


def special(content: str) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


SPECIAL_TOKENS_MAP = {
    "bos_token": special("<|startoftext|>"),
    "eos_token": special("<|endoftext|>"),
    "pad_token": special("<|endoftext|>"),
    "unk_token": special("<unk>"),
}


def write_json(name: str, obj: dict, compact: bool = False) -> None:
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, indent=2)
        else:
            json.dump(obj, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def check() -> None:
    from transformers import AutoTokenizer, LlamaTokenizerFast

    tok = AutoTokenizer.from_pretrained(OUT)
    assert isinstance(tok, LlamaTokenizerFast), type(tok)
    assert tok.is_fast and tok.vocab_file is None
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert tok.clean_up_tokenization_spaces is True
    # The tokenizer.json normalizer is kept (no slow conversion happened).
    assert tok.backend_tokenizer.normalizer.__class__.__name__ == "Sequence"
    text = "<|user|>\n这张胸部X光片显示了什么？ 🩻 ok"
    ids = tok(text, add_special_tokens=False).input_ids
    back = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
    assert ids == back.encode(text, add_special_tokens=False).ids
    assert any(3 <= i <= 258 for i in ids), "byte fallback not exercised"
    print(f"len(tok) = {len(tok)}; {text!r} -> {tok.convert_ids_to_tokens(ids)}")


def main() -> None:
    vocab, merges = train()
    os.makedirs(OUT, exist_ok=True)
    write_json("tokenizer.json", tokenizer_json(vocab, merges), compact=True)
    write_json("tokenizer_config.json", TOKENIZER_CONFIG)
    write_json("special_tokens_map.json", SPECIAL_TOKENS_MAP)
    check()


if __name__ == "__main__":
    main()
