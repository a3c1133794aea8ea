"""Reference values for src/ops.rs: each op's output and input gradients, from PyTorch and HF.

Writes tests/reference/ops.json, which tests/it/ops.rs replays with candle. Run from the
repository root with PyTorch and transformers installed:

    python tests/reference/ops.py

Every case feeds fixed float32 inputs (torch.manual_seed) to the PyTorch or HF definition of
the op, then backpropagates loss = (out * w).sum() for a fixed random w of the output's shape,
so every element of the output carries its own weight into the gradient. Gradients are taken
with respect to every floating input, norm weights and biases included. The definitions:

- softmax, log_softmax: torch.softmax / F.log_softmax over the last dimension
- rms_norm: HF LlamaRMSNorm (transformers.models.llama.modeling_llama)
- layer_norm: F.layer_norm over the last dimension
- rope_tables, rope: HF LlamaRotaryEmbedding (default rope type) and apply_rotary_pos_emb
- causal_attention: HF repeat_kv, then F.scaled_dot_product_attention(is_causal=True)
- silu, swiglu, gelu: F.silu, F.silu(gate) * up, F.gelu (exact erf form)
- cross_entropy: F.cross_entropy(ignore_index=-100), the mean over counted targets
- cross_entropy_sum: F.cross_entropy(ignore_index=-100, reduction="sum") and the count
- squared_error_sum: F.mse_loss(reduction="sum")

Inputs are scaled so the softmax-based ops see values far past exp's float32 range (the max
shift must be there) and the activations see both tails. Each float32 is written as the
shortest decimal that reads back as exactly that float32 (checked here), so nothing is lost on
the way back and the file stays small.
"""

import json
import math
import pathlib
import struct

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)

OUT = pathlib.Path(__file__).with_suffix(".json")

torch.manual_seed(0)


def randn(*shape, scale=1.0, shift=0.0):
    return (torch.randn(shape) * scale + shift).float()


def f32(v):
    """The shortest decimal that reads back (through float64, as serde_json reads) as v."""
    exact = struct.unpack("f", struct.pack("f", v))[0]
    assert math.isfinite(exact), v
    for digits in range(1, 10):
        short = float(f"{exact:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == exact:
            return short
    raise AssertionError(f"{exact} has no 9-digit form")


def tensor_json(t):
    return {"shape": list(t.shape), "data": [f32(v) for v in t.detach().reshape(-1).tolist()]}


def case(name, op, fn, inputs, **extra):
    """Runs fn(*inputs) with gradients, weights its output with a fixed random w."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(**leaves)
    w = randn(*out.shape)
    (out * w).sum().backward()
    return {
        "name": name,
        "op": op,
        "inputs": [
            {"name": k, **tensor_json(inputs[k]), "grad": tensor_json(leaves[k].grad)["data"]} for k in inputs
        ],
        "weight": tensor_json(w),
        "output": tensor_json(out),
        **extra,
    }


def hf_rope(seq_len, head_dim, theta):
    config = LlamaConfig(
        hidden_size=head_dim,
        num_attention_heads=1,
        max_position_embeddings=seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
    )
    rotary = LlamaRotaryEmbedding(config)
    x = torch.zeros(1, seq_len, head_dim)
    cos, sin = rotary(x, torch.arange(seq_len)[None])
    return cos[0], sin[0]  # (T, D)


def rms_norm(eps):
    def fn(x, weight):
        # HF's module, with `weight` standing in for its parameter so the gradient lands on it.
        norm = LlamaRMSNorm(x.shape[-1], eps=eps)
        return torch.func.functional_call(norm, {"weight": weight}, (x,))

    return fn


def attention(q, k, v):
    groups = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=True)


def rope(theta):
    def fn(x):
        cos, sin = hf_rope(x.shape[2], x.shape[3], theta)
        # apply_rotary_pos_emb takes (B, T, D) tables and unsqueezes the head dimension.
        out, _ = apply_rotary_pos_emb(x, x, cos[None], sin[None])
        return out

    return fn


def main():
    cases = []
    # Rows from ordinary to far past float32 exp's range (e^89 overflows), and one row with
    # ties at the max.
    logits = torch.cat(
        [
            randn(2, 7),
            randn(2, 7, scale=30.0, shift=200.0),
            randn(1, 7, scale=50.0, shift=-300.0),
            torch.tensor([[3.0, 3.0, -1.0, 3.0, 0.5, -2.0, 1.0]]),
        ]
    )
    cases.append(case("softmax", "softmax", lambda x: torch.softmax(x, dim=-1), {"x": logits}))
    cases.append(case("log_softmax", "log_softmax", lambda x: F.log_softmax(x, dim=-1), {"x": logits}))

    x = randn(2, 3, 8, scale=3.0)
    for eps in [1e-5, 1e-6]:
        cases.append(
            case(
                f"rms_norm/eps={eps}",
                "rms_norm",
                rms_norm(eps),
                {"x": x, "weight": randn(8, scale=0.5, shift=1.0)},
                eps=eps,
            )
        )
    # A row of near-zero values, where eps dominates.
    small = torch.cat([randn(1, 8), randn(1, 8, scale=1e-3)])
    cases.append(
        case("rms_norm/small", "rms_norm", rms_norm(1e-5), {"x": small, "weight": randn(8, shift=1.0)}, eps=1e-5)
    )
    cases.append(
        case(
            "layer_norm",
            "layer_norm",
            lambda x, weight, bias: F.layer_norm(x, (x.shape[-1],), weight, bias, eps=1e-5),
            {"x": randn(2, 3, 8, scale=2.0, shift=1.5), "weight": randn(8, scale=0.5, shift=1.0), "bias": randn(8)},
            eps=1e-5,
        )
    )

    # rope: (B, H, T, D) with the tables of a longer context narrowed to T, as the model does.
    for theta, (b, h, t, d) in [(10000.0, (2, 3, 5, 8)), (500000.0, (1, 1, 16, 16))]:
        cos, sin = hf_rope(16, d, theta)
        cases.append(
            case(
                f"rope/theta={theta:g}",
                "rope",
                rope(theta),
                {"x": randn(b, h, t, d, scale=2.0)},
                theta=theta,
                context=16,
                cos=tensor_json(cos),
                sin=tensor_json(sin),
            )
        )

    for name, (b, heads, kv, t, d) in [("gqa", (2, 4, 2, 6, 8)), ("mha", (1, 2, 2, 5, 4))]:
        cases.append(
            case(
                f"causal_attention/{name}",
                "causal_attention",
                attention,
                {
                    "q": randn(b, heads, t, d, scale=2.0),
                    "k": randn(b, kv, t, d, scale=2.0),
                    "v": randn(b, kv, t, d),
                },
            )
        )

    wide = torch.cat([randn(3, 8, scale=3.0), torch.tensor([[-90.0, -20.0, -6.0, -1e-3, 0.0, 1e-3, 6.0, 20.0]])])
    cases.append(case("silu", "silu", lambda x: F.silu(x), {"x": wide}))
    cases.append(case("gelu", "gelu", lambda x: F.gelu(x), {"x": wide}))
    cases.append(
        case(
            "swiglu",
            "swiglu",
            lambda gate, up: F.silu(gate) * up,
            {"gate": randn(3, 8, scale=3.0), "up": randn(3, 8, scale=2.0)},
        )
    )

    # Cross-entropy: large logits in some rows, two ignored targets.
    ce_logits = torch.cat([randn(4, 6, scale=2.0), randn(2, 6, scale=40.0, shift=150.0), randn(2, 6)])
    targets = [2, -100, 0, 5, 3, 1, -100, 4]
    t = torch.tensor(targets)
    cases.append(
        case(
            "cross_entropy",
            "cross_entropy",
            lambda logits: F.cross_entropy(logits, t, ignore_index=-100),
            {"logits": ce_logits},
            targets=targets,
        )
    )
    cases.append(
        case(
            "cross_entropy_sum",
            "cross_entropy_sum",
            lambda logits: F.cross_entropy(logits, t, ignore_index=-100, reduction="sum"),
            {"logits": ce_logits},
            targets=targets,
            count=sum(1 for v in targets if v != -100),
        )
    )
    cases.append(
        case(
            "squared_error_sum",
            "squared_error_sum",
            lambda pred, target: F.mse_loss(pred, target, reduction="sum"),
            {"pred": randn(3, 5), "target": randn(3, 5)},
        )
    )

    reference = {
        "script": "tests/reference/ops.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cases": cases,
    }
    # One case a line: small, and a regenerated file diffs case by case.
    compact = {"separators": (",", ":")}
    head = ",".join(f"{json.dumps(k)}:{json.dumps(v, **compact)}" for k, v in reference.items() if k != "cases")
    lines = ",\n".join(json.dumps(c, **compact) for c in cases)
    OUT.write_text(f"{{{head},\n\"cases\":[\n{lines}\n]}}\n")


if __name__ == "__main__":
    main()
