#!/usr/bin/env bash
# Pruning against the full grid: trains experiments/search-demo.kdl's whole grid, then the same
# grid with `prune "asha"`, and prints for each the best objective (val/accuracy, the best any
# run reached) and the total optimizer steps trained. The goal: within 1% of the full grid's
# best at no more than 35% of its steps. On the CPU, a few minutes in all.
#
#     cargo build --release && benches/search/prune.sh
#     MIN_STEPS=40 REDUCTION=3 benches/search/prune.sh     # the pruner's settings
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
xp=${XP:-$root/target/release/xp}
min_steps=${MIN_STEPS:-40}
reduction=${REDUCTION:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/asha.kdl" <<KDL
experiment "search-demo-asha" {
    extends "$root/experiments/search-demo.kdl"
    sweep {
        prune "asha" min-steps=$min_steps reduction=$reduction
    }
}
KDL

"$xp" run "$root/experiments/search-demo.kdl" --runs-dir "$work/runs" -q >/dev/null
"$xp" run "$work/asha.kdl" --runs-dir "$work/runs" -q >/dev/null

python3 - "$work/runs" "$min_steps" "$reduction" <<'PY'
import json, sys
runs, min_steps, reduction = sys.argv[1:]
def tally(experiment):
    rows = json.load(open(f"{runs}/{experiment}/current/results.json"))
    best = max(r["best:val/accuracy"] for r in rows if r["best:val/accuracy"] is not None)
    steps = sum(r["steps"] for r in rows)
    pruned = sum(r["status"] == "pruned" for r in rows)
    return best, steps, pruned, len(rows)
full, asha = tally("search-demo"), tally("search-demo-asha")
print(f"{'sweep':<36} {'runs':>5} {'pruned':>7} {'best val/accuracy':>18} {'steps':>7}")
print(f"{'full grid':<36} {full[3]:>5} {full[2]:>7} {full[0]:>18.4f} {full[1]:>7}")
label = f'prune "asha" min-steps={min_steps} reduction={reduction}'
print(f"{label:<36} {asha[3]:>5} {asha[2]:>7} {asha[0]:>18.4f} {asha[1]:>7}")
gap = (full[0] - asha[0]) / full[0] * 100
share = asha[1] / full[1] * 100
met = gap <= 1.0 and share <= 35.0
print(f"asha: {gap:.2f}% below the full grid's best, at {share:.1f}% of its steps "
      f"(goal: within 1% at <= 35%: {'met' if met else 'not met'})")
PY
