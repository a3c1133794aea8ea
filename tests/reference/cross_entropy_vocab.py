"""Cross-entropy over large vocabularies in float64, for tests/it/ops.rs
(`cross_entropy_matches_float64_on_large_vocabularies`).

The logits are made by a formula both sides evaluate exactly in float32:
x[j] = ((j * 7919 + r * 104729) % 1000) / 100 - 5, and for the peaked rows x[t] = 20, so that
the probability mass off the target is a sum of tens of thousands of tiny terms (the case a
term-by-term float32 sum rounds away). Prints the float64 losses as JSON.

    python tests/reference/cross_entropy_vocab.py
"""

import json

import torch
import torch.nn.functional as F

CASES = [
    # (vocabulary, rows: (target, peaked))
    (50_000, [(123, True), (49_999, False), (7, True)]),
    (150_000, [(149_000, True), (0, False)]),
]


def logits(vocab, rows):
    j = torch.arange(vocab, dtype=torch.int64)
    out = []
    for r, (t, peaked) in enumerate(rows):
        x = ((j * 7919 + r * 104729) % 1000).to(torch.float32) / 100 - 5
        if peaked:
            x[t] = 20.0
        out.append(x)
    return torch.stack(out)


result = []
for vocab, rows in CASES:
    x = logits(vocab, rows).to(torch.float64)
    t = torch.tensor([t for t, _ in rows])
    loss = F.cross_entropy(x, t, reduction="none")
    result.append({"vocab": vocab, "losses": loss.tolist()})
print(json.dumps(result, indent=1))
