#!/usr/bin/env bash
# The one-shot GPU check: on a machine with an NVIDIA GPU and no Rust toolchain, given an `xp`
# built with `--features cuda` (and, optionally, test binaries built the same way), it
#   1. probes the device (the driver, the libraries the binary needs, a short CUDA run);
#   2. runs the test binaries' ignored CUDA tests (kernels against their CPU references,
#      forward and backward): every test whose name contains `cuda`;
#   3. trains the quickstart on the CPU, and on CUDA in f32 and bf16, and compares each CUDA
#      loss curve with the CPU's (largest relative difference under 0.15, the tolerance the
#      CPU's own bf16 test uses);
#   4. runs benches/gpu/compare.py: tokens/s and peak memory of the SmolLM2-135M shape, full
#      fine-tune and LoRA, against PyTorch eager and PEFT on the same shapes (skipped, and said
#      so, where Python has no torch);
# and writes everything to one file. Run it from the repository root:
#
#   scripts/gpu-check.sh --xp ./xp [--tests ./xp-tests]... [--out gpu-check.txt] [--steps 30]
#
# Build the binaries elsewhere: `source scripts/cuda-env.sh`, then
#   CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda
#   CARGO_TARGET_DIR=target/cuda cargo test --release --features cuda --no-run   # test binaries
# and strip them (`strip`) so they are small to carry.
#
# Exit status: 0 when every check passed, 1 when one failed, 2 when there is no usable device
# (nothing was run; the file says why), 64 for a usage error.
set -uo pipefail

xp=""
tests=()
out="gpu-check.txt"
steps=30
usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
    case "$1" in
        --xp) xp=${2:-}; shift 2 ;;
        --tests) tests+=("${2:-}"); shift 2 ;;
        --out) out=${2:-}; shift 2 ;;
        --steps) steps=${2:-}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu-check: unknown argument \`$1\` (see --help)" >&2; exit 64 ;;
    esac
done
if [ -z "$xp" ] || [ ! -x "$xp" ]; then
    echo "gpu-check: give the cuda build of xp with --xp PATH (an executable file)" >&2
    exit 64
fi
for t in "${tests[@]}"; do
    if [ ! -x "$t" ]; then
        echo "gpu-check: the test binary \`$t\` is not an executable file" >&2
        exit 64
    fi
done
case "$steps" in
    '' | *[!0-9]*) echo "gpu-check: --steps takes a whole number, not \`$steps\`" >&2; exit 64 ;;
esac
if [ ! -f experiments/quickstart.kdl ]; then
    echo "gpu-check: run it from the repository root (experiments/quickstart.kdl is missing)" >&2
    exit 64
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: > "$out"
say() { echo "$@" | tee -a "$out"; }
failed=0
fail() {
    say "FAILED: $*"
    failed=1
}
# Runs a command, its output into the results file.
record() {
    "$@" 2>&1 | tee -a "$out"
    return "${PIPESTATUS[0]}"
}

say "# xp GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "xp: $("$xp" --version 2>&1)"

say "## 1. device"
missing=$(ldd "$xp" 2> /dev/null | grep 'not found')
if [ -n "$missing" ]; then
    say "no device: the binary misses libraries:"
    say "$missing"
    exit 2
fi
if ! command -v nvidia-smi > /dev/null 2>&1; then
    say "no device: nvidia-smi is not installed (no NVIDIA driver on this machine)"
    exit 2
fi
if ! record nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv; then
    say "no device: nvidia-smi found no usable GPU"
    exit 2
fi
if ! record "$xp" run experiments/quickstart.kdl --device cuda --set train.steps=21 \
    --axis lr=0.01 --runs-dir "$work/probe" -q; then
    say "no device: a one-step CUDA run failed (above)"
    exit 2
fi

say "## 2. CUDA tests"
if [ ${#tests[@]} -eq 0 ]; then
    say "no test binaries given (--tests): skipped"
fi
for t in "${tests[@]}"; do
    say "### $t"
    record "$t" --ignored cuda --test-threads 1 || fail "CUDA tests of $t"
done

say "## 3. the quickstart's loss curves: CUDA f32 and bf16 against the CPU"
curve_ok=1
for side in "cpu f32" "cuda f32" "cuda bf16"; do
    set -- $side
    start=$SECONDS
    if ! record "$xp" run experiments/quickstart.kdl --device "$1" --set precision="$2" \
        --runs-dir "$work/$1-$2" -q; then
        fail "the quickstart on $1 in $2"
        curve_ok=0
    fi
    say "$1 $2: $((SECONDS - start)) s"
done
if [ "$curve_ok" = 1 ]; then
    record python3 - "$work" <<'PY' || fail "a CUDA loss curve left the CPU's"
import json, pathlib, sys

work = pathlib.Path(sys.argv[1])

def curves(side):
    sweep = work / side / "quickstart" / "current"
    out = {}
    for run in sorted(p for p in sweep.iterdir() if (p / "metrics.jsonl").is_file()):
        lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        out[run.name] = [l["train/loss"] for l in lines if "train/loss" in l]
    return out

cpu = curves("cpu-f32")
bad = False
for side in ["cuda-f32", "cuda-bf16"]:
    for name, curve in curves(side).items():
        ref = cpu[name]
        worst = max(abs(a - b) / abs(b) for a, b in zip(curve, ref))
        ok = len(curve) == len(ref) and worst < 0.15
        bad |= not ok
        print(f"{side} {name}: {len(curve)} logged steps, largest relative difference "
              f"from the CPU {worst:.4f} {'ok' if ok else 'TOO LARGE'}")
sys.exit(1 if bad else 0)
PY
fi

say "## 4. SmolLM2-135M shape, full and LoRA, against PyTorch eager and PEFT"
if python3 -c "import torch, transformers, peft" > /dev/null 2>&1; then
    record python3 benches/gpu/compare.py --xp "$xp" --steps "$steps" --warmup 5 --batch 8 ||
        fail "benches/gpu/compare.py"
else
    say "python3 has no torch, transformers and peft: the side-by-side benchmark is skipped"
    for kind in full lora; do
        record "$xp" run "benches/gpu/smollm-$kind.kdl" --set train.steps="$steps" \
            --runs-dir "$work/smollm" -q || fail "xp on the SmolLM2-135M shape ($kind)"
    done
    record python3 - "$work/smollm" <<'PY'
import json, pathlib, sys
for summary in sorted(pathlib.Path(sys.argv[1]).glob("*/current/*/summary.json")):
    s = json.loads(summary.read_text())
    print(f"{s['experiment']}: {s['status']}, {s.get('tokens_per_s') or 0:.0f} tokens/s, "
          f"peak memory {s.get('peak_memory_bytes')} bytes, precision {s.get('precision')}")
PY
fi

if [ "$failed" = 0 ]; then
    say "every check passed"
else
    say "some checks FAILED (above)"
fi
exit "$failed"
