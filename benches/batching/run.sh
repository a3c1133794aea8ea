#!/usr/bin/env bash
# Real (non-padding) tokens per second and the padding ratio of fixed batches against token
# budgets (`batch-tokens`) on a jsonl instruction set with long-tailed lengths (generate.py).
# Usage: benches/batching/run.sh [EXAMPLES] [STEPS]   (default: 2000 40)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
xp="${CARGO_TARGET_DIR:-target}/release/xp"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The same experiment twice: batches of 8 examples, and token budgets of 4096 tokens.
cp benches/batching/batching.kdl "$work/fixed.kdl"
sed 's/batch-size 8/batch-tokens 4096/; s/"fixed-8"/"tokens-4096"/' \
    benches/batching/batching.kdl > "$work/tokens.kdl"
python3 benches/batching/generate.py "${1:-2000}" 1 > "$work/data.jsonl"
steps="${2:-40}"
printf '%-12s %6s %8s %12s %14s %8s\n' run steps wall_s real_tokens real_tokens/s padding
for kind in fixed tokens; do
    "$xp" run "$work/$kind.kdl" --runs-dir "$work/$kind" -q --set "train.steps=$steps" > /dev/null
    python3 - "$work/$kind/batching/current" <<'PY'
import glob, json, sys
run = glob.glob(f"{sys.argv[1]}/*/metrics.jsonl")[0].rsplit("/", 1)[0]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
summary = json.load(open(f"{run}/summary.json"))
logged = [r for r in rows if "train/tokens" in r]
tokens = sum(r["train/tokens"] for r in logged)
positions = sum(r["train/tokens"] / (1 - r["train/padding_ratio"]) for r in logged)
wall = summary["wall_s"]
print(f"{summary['name']:<12} {summary['steps']:>6} {wall:>8.2f} {tokens:>12.0f} {tokens / wall:>14.0f} {1 - tokens / positions:>8.1%}")
PY
done
