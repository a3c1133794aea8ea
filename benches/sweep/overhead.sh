#!/usr/bin/env bash
# The cost of running each run of a sweep in its own process, N at a time: the sweep's wall
# time against the pure training time (the runs' own `wall_s`) divided by the concurrency.
# Usage: benches/sweep/overhead.sh [JOBS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
xp="${CARGO_TARGET_DIR:-target}/release/xp"
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
printf '%-5s %6s %10s %12s %14s %9s\n' jobs runs wall_s sum_train_s train_s/jobs overhead
for jobs in "${@:-1 2}"; do
    for j in $jobs; do
        start=$(date +%s.%N)
        "$xp" run benches/sweep/overhead.kdl --runs-dir "$runs/j$j" --jobs "$j" -q > /dev/null
        end=$(date +%s.%N)
        python3 - "$runs/j$j/overhead/current/results.json" "$start" "$end" "$j" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
jobs = int(sys.argv[4])
train = sum(r["wall_s"] for r in rows)
ideal = train / jobs
print(f"{jobs:<5} {len(rows):>6} {wall:>10.2f} {train:>12.2f} {ideal:>14.2f} {100 * (wall / ideal - 1):>8.1f}%")
PY
    done
done
