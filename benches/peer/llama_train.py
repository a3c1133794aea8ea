"""PyTorch peer of benches/train.rs: trains the same Llama-architecture model (HF
LlamaForCausalLM, float32, eager attention) on random tokens with AdamW and prints the
training throughput as one JSON line. Run by `cargo bench --bench train`. With `--lora R`, PEFT's
LoRA of rank R (alpha 2R, no dropout) on q_proj and v_proj trains and the base is frozen."""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=1)
p.add_argument("--vocab", type=int, default=256)
p.add_argument("--context", type=int, default=128)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--dim", type=int, default=128)
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--lora", type=int, default=0)
a = p.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=a.vocab, hidden_size=a.dim, intermediate_size=a.hidden, num_hidden_layers=a.layers,
    num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=a.context,
    tie_word_embeddings=False, attn_implementation="eager",
)
model = LlamaForCausalLM(config).float().train()
if a.lora:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(model, lora).train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
g = torch.Generator().manual_seed(1)
batches = [torch.randint(0, a.vocab, (a.batch, a.context + 1), generator=g) for _ in range(a.warmup + a.steps)]


def step(tokens):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(input_ids=inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, a.vocab), targets.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


for t in batches[: a.warmup]:
    step(t)
start = time.perf_counter()
for t in batches[a.warmup :]:
    loss = step(t)
elapsed = time.perf_counter() - start
print(json.dumps({"tokens_per_s": a.steps * a.batch * a.context / elapsed, "steps_per_s": a.steps / elapsed, "loss": loss, "threads": a.threads,
                  "torch": torch.__version__}))
