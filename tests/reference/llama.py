"""Reference values for src/model/llama.rs: a tiny HF LlamaForCausalLM, its logits, loss and
gradients.

Writes tests/fixtures/models/tiny-llama.safetensors and tiny-llama-tied.safetensors (the
weights) and tests/reference/llama.json (what HF computes with them), which tests/it/llama.rs
checks xp's model against. Run from the repository root with PyTorch, transformers and
safetensors installed:

    python tests/reference/llama.py

Each model is transformers' LlamaForCausalLM, float32, eager attention: vocab 32, hidden 16,
intermediate 40, 2 layers, 4 heads of 4 with 2 key/value heads (grouped-query attention),
16 positions, rope_theta 10000, rms_norm_eps 1e-5. HF's own initialisation (normal(0, 0.02),
norms at one) gives near-uniform logits that would hide mistakes, so every parameter is
redrawn: embeddings normal(0, 1), projections normal(0, 1/sqrt(fan_in)) (q and k doubled, so
attention is far from uniform), norm weights 1 + normal(0, 0.2). The tied variant shares
lm_head with the embeddings; its file has no lm_head.weight, as HF's save_pretrained writes it.

A fixed (2, 8) batch of token ids goes through the model; the loss is
F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100) against fixed targets
with three ignored positions (no shift: xp's data pipeline shifts, not the loss). The JSON
holds the logits, the loss, the gradients of a few named parameters in full, and the L2 norm
of every parameter's gradient. Each float32 is written as the shortest decimal that reads back
as exactly that float32 (checked here).
"""

import json
import math
import pathlib
import re
import struct

import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures/models"
OUT = pathlib.Path(__file__).with_suffix(".json")

VOCAB, BATCH, SEQ = 32, 2, 8
GRADS = {
    False: [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ],
    True: [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.norm.weight",
    ],
}


def f32(v):
    """The shortest decimal that reads back (through float64, as serde_json reads) as v."""
    exact = struct.unpack("f", struct.pack("f", v))[0]
    assert math.isfinite(exact), v
    for digits in range(1, 10):
        short = float(f"{exact:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == exact:
            return short
    raise AssertionError(f"{exact} has no 9-digit form")


def values(t):
    return [f32(v) for v in t.detach().reshape(-1).tolist()]


def config(tied):
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        attn_implementation="eager",
        torch_dtype=torch.float32,
    )


def model(tied, seed):
    torch.manual_seed(seed)
    m = LlamaForCausalLM(config(tied)).float().eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name == "model.embed_tokens.weight":
                p.copy_(torch.randn_like(p))
            else:
                scale = 2.0 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
                p.copy_(torch.randn_like(p) * scale / math.sqrt(p.shape[1]))
    assert (m.lm_head.weight is m.model.embed_tokens.weight) == tied
    return m


def case(name, tied, seed):
    m = model(tied, seed)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    targets = torch.randint(0, VOCAB, (BATCH, SEQ))
    targets[0, SEQ - 1] = -100
    targets[1, :2] = -100

    logits = m(input_ids=tokens).logits  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()

    file = FIXTURES / f"{name}.safetensors"
    state = {k: v.detach().contiguous() for k, v in m.state_dict().items()}
    if tied:
        del state["lm_head.weight"]
    safetensors.torch.save_file(state, file, metadata={"format": "pt"})

    params = dict(m.named_parameters())
    c = m.config
    return {
        "name": name,
        "weights": str(file.relative_to(ROOT)),
        "config": {
            "vocab": c.vocab_size,
            "dim": c.hidden_size,
            "hidden": c.intermediate_size,
            "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads,
            "context": c.max_position_embeddings,
            "rope_theta": c.rope_parameters["rope_theta"],
            "rms_eps": c.rms_norm_eps,
            "tie_embeddings": tied,
        },
        "tokens": tokens.tolist(),
        "targets": targets.tolist(),
        "logits": values(logits),
        "loss": f32(loss.item()),
        "grads": {n: values(params[n].grad) for n in GRADS[tied]},
        "grad_norms": {n: f32(p.grad.norm().item()) for n, p in sorted(params.items())},
    }


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    cases = [case("tiny-llama", tied=False, seed=1), case("tiny-llama-tied", tied=True, seed=2)]
    reference = {
        "script": "tests/reference/llama.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cases": cases,
    }
    # Indented, but each list of numbers on one line.
    text = json.dumps(reference, indent=1)
    text = re.sub(r"\[\s+([-+0-9.,e\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
