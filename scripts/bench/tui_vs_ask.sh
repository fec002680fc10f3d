#!/bin/bash
# The chat's decode speed against ask's on the same seeded question (issue 20): five rounds,
# each `ask --json`, then the chat in tmux (160x45) reading tok/s from its status line.
#
#   scripts/bench/tui_vs_ask.sh target/release/huatuo CHECKPOINT_DIR
#
# A tiny checkpoint: `target/debug/huatuo dev tiny-checkpoint --family qwen2 \
#   --tokenizer tests/fixtures/tokenizers/qwen2 /tmp/tiny-qwen2` (a test-support build).
set -eu
H=${1:?huatuo binary}
MODEL=${2:?checkpoint directory}
TMP=$(mktemp -d)
export HUATUO_CONFIG_DIR=$TMP/config HUATUO_DATA_DIR=$TMP/data HUATUO_CACHE_DIR=$TMP/cache HF_HUB_CACHE=$TMP/hub
ARGS="--model $MODEL --temperature 1 --seed 7 --max-new-tokens 400"
Q="Describe a chest X-ray."
for i in 1 2 3 4 5; do
  a=$($H ask $ARGS --json "$Q" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['timings']['decode_tokens_per_s'],1))")
  tmux kill-session -t huatuo-bench 2>/dev/null || true
  tmux new-session -d -s huatuo-bench -x 160 -y 45 "$H chat $ARGS"
  sleep 3
  tmux send-keys -t huatuo-bench "$Q" Enter
  t=""
  for _ in $(seq 120); do
    sleep 0.5
    # The status line shows tok/s once the answer is done ("answering: N tokens" before).
    t=$(tmux capture-pane -p -t huatuo-bench | grep -o "[0-9.]* tok/s" | tail -1 || true)
    [ -n "$t" ] && break
  done
  echo "round $i: ask $a tok/s, chat $t"
  tmux kill-session -t huatuo-bench
done
rm -rf "$TMP"
