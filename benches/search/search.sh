#!/usr/bin/env bash
# xp's TPE and random search against Optuna's TPESampler driving the same training: the best
# validation accuracy after 16 and 32 trials, median over seeds (one trial at a time each).
# Usage: benches/search/search.sh [SEEDS] [TRIALS]   (default: 5 32)
# Optuna is installed from PyPI into a virtual environment under the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
work="${XP_BENCH_DIR:-target/bench-search}"
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet optuna
fi
"$work/venv/bin/python" benches/search/bench.py \
    --xp "${CARGO_TARGET_DIR:-target}/release/xp" --work "$work" \
    --seeds "${1:-5}" --trials "${2:-32}"
