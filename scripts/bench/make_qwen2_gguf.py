"""A random Qwen2 language model at HuatuoGPT-Vision-7B's shape, with N decoder layers, as an
f16 GGUF that llama.cpp loads (for llama-quantize and llama-bench), written with llama.cpp's own
gguf-py and numpy only: no torch, no transformers (issue 21's side-by-side rounds).

    PYTHONPATH=path/to/llama.cpp/gguf-py python3 scripts/bench/make_qwen2_gguf.py \
        --layers 4 --tokenizer tests/fixtures/tokenizers/qwen2/tokenizer.json OUT.gguf

The vocabulary is the real Qwen2 tokenizer's, padded to the 7B's 152,064 rows as
convert_hf_to_gguf.py pads it; the weights are N(0, 0.02), the norms 1.
"""
import argparse
import json

import numpy as np
import gguf

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 3584, 18944, 28, 4, 152064


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("out")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    w = gguf.GGUFWriter(args.out, "qwen2")
    w.add_name("qwen2-7b-shape-random")
    w.add_context_length(32768)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_block_count(args.layers)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    tok = json.load(open(args.tokenizer, encoding="utf-8"))
    vocab = dict(tok["model"]["vocab"])
    special = {t["id"]: t["content"] for t in tok.get("added_tokens", [])}
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(VOCAB):
        if i in special:
            tokens.append(special[i])
            types.append(gguf.TokenType.CONTROL)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(151643)
    w.add_eos_token_id(151645)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    def ones(n):
        return np.ones(n, dtype=np.float32)

    w.add_tensor("token_embd.weight", rand(VOCAB, HIDDEN))
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(args.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(HIDDEN))
        w.add_tensor(p + "attn_q.weight", rand(HIDDEN, HIDDEN))
        w.add_tensor(p + "attn_q.bias", np.zeros(HIDDEN, dtype=np.float32))
        w.add_tensor(p + "attn_k.weight", rand(kv, HIDDEN))
        w.add_tensor(p + "attn_k.bias", np.zeros(kv, dtype=np.float32))
        w.add_tensor(p + "attn_v.weight", rand(kv, HIDDEN))
        w.add_tensor(p + "attn_v.bias", np.zeros(kv, dtype=np.float32))
        w.add_tensor(p + "attn_output.weight", rand(HIDDEN, HIDDEN))
        w.add_tensor(p + "ffn_norm.weight", ones(HIDDEN))
        w.add_tensor(p + "ffn_gate.weight", rand(FFN, HIDDEN))
        w.add_tensor(p + "ffn_up.weight", rand(FFN, HIDDEN))
        w.add_tensor(p + "ffn_down.weight", rand(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", ones(HIDDEN))
    w.add_tensor("output.weight", rand(VOCAB, HIDDEN))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
