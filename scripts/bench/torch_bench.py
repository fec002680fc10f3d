"""PyTorch f32 baseline for `huatuo bench --shape 7b` (BENCHMARKS.md).

Builds transformers' Qwen2ForCausalLM and CLIPVisionModel with random weights at the
HuatuoGPT-Vision-7B geometry (optionally fewer decoder layers) and times what `huatuo bench`
times, the way the reference (HuatuoGPT-Vision cli.py) computes it:

  - image encode: CLIPVisionModel (all 24 layers, output_hidden_states, layer -2 without
    CLS, as llava's CLIPVisionTower does) + the mlp2x_gelu projector, one 336x336 image;
  - prefill: 512 random token ids, logits of the last position only;
  - decode: 64 greedy steps with the KV cache;
  - first turn: time to first token of a one-image question (image + 40 text tokens);
  - second turn: the same conversation plus a 48-token answer and a 24-token follow-up,
    recomputed from scratch (the reference re-encodes every image and re-reads the prompt);
  - peak RSS (ru_maxrss).

Usage:
    python3 scripts/bench/torch_bench.py --layers 4 --threads 2 --runs 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM

PREFILL_TOKENS = 512
DECODE_TOKENS = 64
QUESTION_TOKENS = 40
ANSWER_TOKENS = 48
FOLLOW_UP_TOKENS = 24
IMAGE_TOKENS = 576


def qwen2_7b(layers: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=layers,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        torch_dtype="float32",
    )


def clip_l_336() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


class Vision(torch.nn.Module):
    """CLIP tower + mlp2x_gelu projector, as llava's encode_images."""

    def __init__(self) -> None:
        super().__init__()
        self.tower = CLIPVisionModel(clip_l_336())
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(1024, 3584), torch.nn.GELU(), torch.nn.Linear(3584, 3584)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.tower(pixels, output_hidden_states=True)
        feats = out.hidden_states[-2][:, 1:]
        return self.projector(feats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t = time.perf_counter()
    lm = Qwen2ForCausalLM(qwen2_7b(args.layers)).eval()
    vision = Vision().eval()
    load_s = time.perf_counter() - t
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters()) + sum(
        p.numel() * p.element_size() for p in vision.parameters()
    )
    embed = lm.get_input_embeddings()
    g = torch.Generator().manual_seed(7)

    def ids(n: int) -> torch.Tensor:
        return torch.randint(100, 30000, (1, n), generator=g)

    pixels = torch.randn(1, 3, 336, 336, generator=g)
    prompt = ids(PREFILL_TOKENS)
    question = ids(QUESTION_TOKENS)
    answer = ids(ANSWER_TOKENS)
    follow_up = ids(FOLLOW_UP_TOKENS)

    def turn(text_after_image: list[torch.Tensor]) -> float:
        t = time.perf_counter()
        image = vision(pixels)
        parts = [embed(question[:, :8]), image, embed(question[:, 8:])]
        parts += [embed(x) for x in text_after_image]
        out = lm(inputs_embeds=torch.cat(parts, 1), use_cache=True, num_logits_to_keep=1)
        out.logits[:, -1].argmax(-1)
        return time.perf_counter() - t

    encode, prefill, decode, first, second = [], [], [], [], []
    with torch.inference_mode():
        for _ in range(args.runs):
            t = time.perf_counter()
            vision(pixels)
            encode.append(time.perf_counter() - t)

            t = time.perf_counter()
            out = lm(prompt, use_cache=True, num_logits_to_keep=1)
            prefill.append(time.perf_counter() - t)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t = time.perf_counter()
            for _ in range(DECODE_TOKENS):
                out = lm(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            decode.append(time.perf_counter() - t)
            del past, out

            first.append(turn([]))
            second.append(turn([answer, follow_up]))

    med = statistics.median
    report = {
        "engine": f"pytorch {torch.__version__} f32",
        "layers": args.layers,
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "load_s": load_s,
        "weight_bytes": weight_bytes,
        "image_encode_ms": med(encode) * 1e3,
        "prefill_tokens": PREFILL_TOKENS,
        "prefill_tok_s": PREFILL_TOKENS / med(prefill),
        "decode_tokens": DECODE_TOKENS,
        "decode_tok_s": DECODE_TOKENS / med(decode),
        "first_turn_positions": QUESTION_TOKENS + IMAGE_TOKENS,
        "first_turn_ttft_ms": med(first) * 1e3,
        "second_turn_positions": QUESTION_TOKENS + IMAGE_TOKENS + ANSWER_TOKENS + FOLLOW_UP_TOKENS,
        "second_turn_ttft_ms": med(second) * 1e3,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:24} {v:.2f}" if isinstance(v, float) else f"{k:24} {v}")


if __name__ == "__main__":
    main()
