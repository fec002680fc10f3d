"""Medians and ratios of the JSON files scripts/bench/rounds.sh writes (BENCHMARKS.md).

    python3 scripts/bench/summarize_rounds.py /tmp/rounds

Prints one table row per measure (each round, then the median) and the ratios of medians:
huatuo against llama.cpp and PyTorch, and this huatuo against an older one on the AVX2 loops.
"""
import json, glob, statistics, os, sys
R = sys.argv[1] if len(sys.argv) > 1 else '/tmp/rounds'
def load(p):
    try: return json.load(open(p))
    except Exception: return None
rounds = sorted({int(os.path.basename(p).split('-')[-1].split('.')[0]) for p in glob.glob(f'{R}/huatuo-q4k-*.json')})
rows = {}
def add(k, i, v):
    rows.setdefault(k, {})[i] = v
for i in rounds:
    for q in ['q4k', 'q8_0']:
        d = load(f'{R}/huatuo-{q}-{i}.json')
        if d:
            add(f'huatuo {q} prefill', i, d['prefill_tok_s']); add(f'huatuo {q} decode', i, d['decode_tok_s'])
            add(f'huatuo {q} image encode ms', i, d['image_encode_ms']); add(f'huatuo {q} first turn ms', i, d['first_turn_ttft_ms'])
    for t in ['Q4_K_M', 'Q8_0']:
        for kind in ['pp', 'tg']:
            d = load(f'{R}/llama-{t}-{kind}-{i}.json')
            if d: add(f'llama {t} {kind}', i, d[0]['avg_ts'])
    d = load(f'{R}/torch-{i}.json')
    if d:
        for k in ['prefill_tok_s', 'decode_tok_s', 'image_encode_ms', 'first_turn_ttft_ms']:
            add(f'torch {k}', i, d[k])
    for w in ['old', 'new']:
        for q in ['q4k', 'q8_0']:
            d = load(f'{R}/{w}-avx2-{q}-{i}.json')
            if d:
                add(f'{w} avx2 {q} prefill', i, d['prefill_tok_s']); add(f'{w} avx2 {q} decode', i, d['decode_tok_s'])
                add(f'{w} avx2 {q} image encode ms', i, d['image_encode_ms'])
med = {}
for k, v in rows.items():
    vals = [v.get(i) for i in rounds]
    m = statistics.median([x for x in vals if x is not None])
    med[k] = m
    print(f'| {k} | ' + ' | '.join(f'{x:.1f}' if x is not None else '-' for x in vals) + f' | {m:.1f} |')
def ratio(a, b):
    if a in med and b in med: print(f'{a} / {b}: {med[a]/med[b]:.2f}x')
ratio('huatuo q4k prefill', 'llama Q4_K_M pp'); ratio('huatuo q4k decode', 'llama Q4_K_M tg')
ratio('huatuo q8_0 prefill', 'llama Q8_0 pp'); ratio('huatuo q8_0 decode', 'llama Q8_0 tg')
ratio('huatuo q4k prefill', 'torch prefill_tok_s'); ratio('huatuo q4k decode', 'torch decode_tok_s')
ratio('torch image_encode_ms', 'huatuo q4k image encode ms')
for q in ['q4k', 'q8_0']:
    for m in ['prefill', 'decode']:
        ratio(f'new avx2 {q} {m}', f'old avx2 {q} {m}')
    ratio(f'old avx2 {q} image encode ms', f'new avx2 {q} image encode ms')
