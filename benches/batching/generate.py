#!/usr/bin/env python3
"""Writes a jsonl instruction set with long-tailed lengths for benches/batching/run.sh.

Each line is {"prompt": ..., "response": ...} whose text is `length` bytes, `length` drawn from
a log-normal (median 96 bytes, sigma 0.9) and clipped to 16..1024; xp reads it as byte-level
tokens, so an example is `length` tokens (plus the end token, less the last, which is only a
target). The prompt is 60% of the text, the response the rest. Deterministic from the seed.

Usage: generate.py EXAMPLES SEED > data.jsonl
"""

import json
import math
import random
import sys

MEDIAN, SIGMA, SHORTEST, LONGEST = 96, 0.9, 16, 1024
WORDS = "the a of to in model data loss step batch token memory train learn rate layer".split()


def text(rng, length):
    out = []
    while len(" ".join(out)) < length:
        out.append(rng.choice(WORDS))
    return " ".join(out)[:length]


def main():
    examples, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    for _ in range(examples):
        length = round(rng.lognormvariate(math.log(MEDIAN), SIGMA))
        length = min(max(length, SHORTEST), LONGEST)
        prompt = round(length * 0.6)
        body = text(rng, length)
        print(json.dumps({"prompt": body[:prompt], "response": body[prompt:]}))


if __name__ == "__main__":
    main()
