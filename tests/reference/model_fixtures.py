"""Writes the HF model directories the diagnostic fixtures in tests/fixtures/validate/ point at
(tests/fixtures/validate/model/files/): a tiny valid Llama (1 layer, hidden 8, vocab 16), the
same with a chat template that does not compile, weights that do not match their config, a
config with an unsupported RoPE scaling, and a directory with only a PyTorch checkpoint.
Run from the repository root with numpy, safetensors and tokenizers installed:

    python tests/reference/model_fixtures.py
"""

import json
import pathlib
import shutil

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/validate/model/files"

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 16,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 32,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "tie_word_embeddings": False,
}


def weights():
    rng = np.random.default_rng(0)
    shapes = {
        "model.embed_tokens.weight": (16, 8),
        "model.layers.0.input_layernorm.weight": (8,),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.k_proj.weight": (4, 8),
        "model.layers.0.self_attn.v_proj.weight": (4, 8),
        "model.layers.0.self_attn.o_proj.weight": (8, 8),
        "model.layers.0.post_attention_layernorm.weight": (8,),
        "model.layers.0.mlp.gate_proj.weight": (16, 8),
        "model.layers.0.mlp.up_proj.weight": (16, 8),
        "model.layers.0.mlp.down_proj.weight": (8, 16),
        "model.norm.weight": (8,),
        "lm_head.weight": (16, 8),
    }
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def directory(name, config=CONFIG, tensors=None):
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tensors is not None:
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def main():
    directory("tiny", tensors=weights())

    d = directory("bad-template", tensors=weights())
    vocab = {c: i for i, c in enumerate("<unk> a b c d e f g h i j k l m n o".split())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "o"}) + "\n")
    (d / "chat_template.jinja").write_text(
        "{% for message in messages %}\n{{ message['role'] }}: {{ message['content'] }}\n{% endfro %}\n"
    )

    w = weights()
    del w["model.layers.0.mlp.up_proj.weight"]
    w["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 8), np.float32)
    w["model.layers.0.self_attn.rotary.weight"] = np.zeros((4,), np.float32)
    directory("wrong-weights", tensors=w)

    config = dict(CONFIG)
    config["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 8,
    }
    directory("yarn", config=config)

    d = directory("bin-only")
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a checkpoint")


if __name__ == "__main__":
    main()
