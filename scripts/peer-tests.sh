#!/usr/bin/env bash
# The tests that need the Python peers (torch, transformers, peft): they load what `xp run`
# writes with transformers and PEFT and compare the logits with xp's. CI does not install the
# peers (gigabytes); the pinned reference values in tests/reference/*.json stand in for them
# there. Run this where the peers can be installed:
#
#   bash scripts/peer-tests.sh            # a venv in target/peer-venv, then the ignored tests
#   XP_REFERENCE_PYTHON=/path/python bash scripts/peer-tests.sh   # a Python that has them
set -euo pipefail
cd "$(dirname "$0")/.."

python=${XP_REFERENCE_PYTHON:-}
if [ -z "$python" ]; then
    venv=target/peer-venv
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -c "import torch, transformers, peft" 2> /dev/null ||
        "$venv/bin/pip" install --quiet torch transformers peft
    python=$venv/bin/python
fi
XP_REFERENCE_PYTHON=$python cargo test --release --test main -- --ignored hf::peft
