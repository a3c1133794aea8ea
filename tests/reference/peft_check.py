"""Loads what `xp run` wrote with transformers and PEFT, for tests/it/hf.rs.

Reads a JSON request on stdin:

    {"tokens": [[...], ...], "adapter": DIR or null, "merged": DIR or null, "model": DIR or null}

- adapter: a PEFT adapter directory; its base model is the adapter_config.json's
  base_model_name_or_path, loaded with AutoModelForCausalLM, the adapter with
  PeftModel.from_pretrained;
- merged, model: HF model directories, loaded with AutoModelForCausalLM (and the tokenizer
  with AutoTokenizer, which must load too);

and prints {"adapter": logits, "merged": logits, "model": logits} (float32 logits of the
tokens, flattened; null for what was not asked). Needs torch, transformers and peft.
"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path):
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens).logits.reshape(-1).tolist()


def main():
    request = json.load(sys.stdin)
    tokens = torch.tensor(request["tokens"])
    out = {"adapter": None, "merged": None, "model": None}
    if request.get("adapter"):
        with open(f"{request['adapter']}/adapter_config.json") as f:
            base = json.load(f)["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load(base), request["adapter"]).eval()
        out["adapter"] = logits(model, tokens)
    for key in ["merged", "model"]:
        if request.get(key):
            AutoTokenizer.from_pretrained(request[key])
            out[key] = logits(load(request[key]), tokens)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
