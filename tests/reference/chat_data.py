"""Writes the small instruction dataset in tests/fixtures/chat/: train.jsonl and valid.jsonl.

Four made-up string tasks (reverse a word, add two numbers, upper-case a word, count its
letters), each line a chat (`messages`, a system message on every third) or, on every fifth
line, a prompt/response pair. Deterministic from the seed below; the words are drawn from a
short list written here. Used by the HF/LoRA parity tests (tests/reference/hf.py) and by
experiments/lora-sweep.kdl. Run from the repository root:

    python tests/reference/chat_data.py
"""

import json
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/chat"

WORDS = """apple river stone cloud maple tiger lemon orbit pixel candle
garden rocket silver planet violet basket marble thunder window copper
falcon meadow puzzle harbor lantern velvet walnut cactus glacier ember""".split()

SYSTEM = "You are a careful assistant. Answer with the result only."


def example(rng):
    task = rng.randrange(4)
    word = rng.choice(WORDS)
    if task == 0:
        return f"Reverse the word: {word}", word[::-1]
    if task == 1:
        a, b = rng.randrange(10, 90), rng.randrange(1, 10)
        return f"Add {a} and {b}.", str(a + b)
    if task == 2:
        return f"Write in capitals: {word}", word.upper()
    return f"How many letters are in {word}?", str(len(word))


def line(rng, i):
    prompt, answer = example(rng)
    if i % 5 == 4:
        return {"prompt": f"Q: {prompt}\nA: ", "response": answer}
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    if i % 3 == 0:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    if i % 7 == 6:
        follow, answer2 = example(rng)
        messages += [{"role": "user", "content": follow}, {"role": "assistant", "content": answer2}]
    return {"messages": messages}


def main():
    rng = random.Random(20261121)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, count in [("train.jsonl", 96), ("valid.jsonl", 24)]:
        with open(OUT / name, "w") as f:
            for i in range(count):
                f.write(json.dumps(line(rng, i)) + "\n")


if __name__ == "__main__":
    main()
