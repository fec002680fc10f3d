#!/bin/sh
# Side-by-side rounds on one machine (BENCHMARKS.md, issue 21): in each round, one after the
# other, huatuo q4k, llama.cpp Q4_K_M (prefill 512, then 64 decode steps at depth 512),
# huatuo q8_0, llama.cpp Q8_0, PyTorch f32, and, when OLD is set, an older huatuo binary
# against this one on the AVX2 kernels (HUATUO_KERNELS=avx2), q4k and q8_0 each. Every
# engine runs with 2 threads and 3 repetitions; each writes its JSON to $OUT/<name>-<round>.json
# beside the CPU's flags and the load average.
#
#   LB=path/to/llama-bench GG=/dir/with/ggufs [OLD=path/to/old/huatuo] [TORCH=python3] \
#     OUT=/tmp/rounds ROUNDS=3 sh scripts/bench/rounds.sh
#
# GG holds qwen2-7b-4l-Q4_K_M.gguf and qwen2-7b-4l-Q8_0.gguf (scripts/bench/make_qwen2_gguf.py,
# then llama-quantize). TORCH is a python with torch and transformers (leave it empty to skip).
set -eu
H=${H:-target/release/huatuo}
OUT=${OUT:-/tmp/rounds}
ROUNDS=${ROUNDS:-3}
TORCH=${TORCH:-}
OLD=${OLD:-}
mkdir -p "$OUT"
grep -m1 'model name' /proc/cpuinfo > "$OUT/cpu.txt"
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E 'avx|fma|f16c|vnni|bf16|amx' | tr '\n' ' ' >> "$OUT/cpu.txt"
bench() { "$1" bench --shape 7b --layers 4 --quant "$2" --threads 2 --runs 3 --json; }
llama() {
  "$LB" -m "$GG/qwen2-7b-4l-$1.gguf" -p 512 -n 0 -t 2 -r 3 -o json > "$OUT/llama-$1-pp-$2.json"
  "$LB" -m "$GG/qwen2-7b-4l-$1.gguf" -p 0 -n 64 -d 512 -t 2 -r 3 -o json > "$OUT/llama-$1-tg-$2.json"
}
for i in $(seq 1 "$ROUNDS"); do
  uptime >> "$OUT/uptime.txt"
  bench "$H" q4k > "$OUT/huatuo-q4k-$i.json"
  llama Q4_K_M "$i"
  bench "$H" q8_0 > "$OUT/huatuo-q8_0-$i.json"
  llama Q8_0 "$i"
  if [ -n "$TORCH" ]; then
    OMP_NUM_THREADS=2 "$TORCH" scripts/bench/torch_bench.py --layers 4 --threads 2 --runs 3 \
      --json > "$OUT/torch-$i.json"
  fi
  if [ -n "$OLD" ]; then
    for q in q4k q8_0; do
      HUATUO_KERNELS=avx2 bench "$OLD" $q > "$OUT/old-avx2-$q-$i.json"
      HUATUO_KERNELS=avx2 bench "$H" $q > "$OUT/new-avx2-$q-$i.json"
    done
  fi
done
uptime >> "$OUT/uptime.txt"
