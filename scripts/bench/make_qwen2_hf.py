"""Writes a random Qwen2 checkpoint at the HuatuoGPT-Vision-7B language-model geometry
(optionally fewer layers) in the Hugging Face layout, for llama.cpp's convert_hf_to_gguf.py:
the llama.cpp column of BENCHMARKS.md runs the same shape as `huatuo bench --shape 7b`.

Usage:
    python3 scripts/bench/make_qwen2_hf.py --layers 4 --out /tmp/qwen2-7b-4l
The tokenizer files come from tests/fixtures/tokenizers/qwen2 (Qwen2's own tokenizer).
"""

from __future__ import annotations

import argparse
import os
import shutil

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    config = Qwen2Config(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=args.layers,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=151643,
        eos_token_id=151643,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    tok = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "qwen2")
    for name in os.listdir(tok):
        shutil.copy(os.path.join(tok, name), os.path.join(args.out, name))
    print(args.out)


if __name__ == "__main__":
    main()
