"""Reference values for HF model directories, LoRA and chat data (src/model/hf.rs, lora.rs,
src/data/chat.rs, tokenizer.rs), checked by tests/it/hf.rs.

Writes two tiny HF model directories with transformers, each with a byte-level BPE
tokenizer.json (trained here on tests/fixtures/chat/, which tests/reference/chat_data.py
writes), a tokenizer_config.json with a chat template, and a PEFT adapter beside it:

- tests/fixtures/models/tiny-llama-hf: LlamaForCausalLM, vocab 320, hidden 32, intermediate 64,
  2 layers, 4 heads of 8 with 2 key/value heads, 128 positions, RoPE with llama3 scaling
  (factor 4, low 1, high 4, original 64: frequencies in all three bands), untied lm_head; a
  BOS-adding tokenizer and Llama 2's chat template ([INST], `.strip()`, raise_exception).
  Adapter: r 4, alpha 8, on q_proj, v_proj, down_proj.
- tests/fixtures/models/tiny-qwen2-hf: Qwen2ForCausalLM, the same sizes, q/k/v biases, tied
  embeddings, a sliding window of 4 on layer 1 (use_sliding_window, max_window_layers 1);
  a ChatML template with a default system prompt and `{% generation %}` blocks. Adapter: r 4,
  alpha 6, rsLoRA, on k_proj, o_proj, gate_proj and the (tied) lm_head.

HF's initialisation gives near-uniform logits that would hide mistakes, so every parameter is
redrawn (as tests/reference/llama.py does), and so are both adapter matrices (PEFT's B starts at
zero, which would leave A without a gradient).

tests/reference/hf.json then holds, per model: the logits of a fixed (2, 12) batch; with the
adapter, the logits, the mean cross-entropy against fixed targets (three ignored) and every
adapter gradient; PEFT's trainable and total parameter counts; and every line of
tests/fixtures/chat/valid.jsonl as xp must tokenize it for that model (inputs and targets,
-100 where nothing is learned), with messages rendered by `apply_chat_template` and assistant
turns as transformers' assistant mask gives them where the template has `{% generation %}`
blocks (the qwen2 one: the content and <|im_end|>, not the newline after it), else found by
prefix renderings. For the llama model also three AdamW steps of PEFT training
on tests/fixtures/chat/train.jsonl as one batch (tests/fixtures/hf/lora-llama.kdl asks xp for
the same): the loss and gradient norm of each step and the adapter after them.

Run from the repository root with torch, transformers, peft and tokenizers installed:

    python tests/reference/hf.py
"""

import json
import math
import pathlib
import shutil
import struct

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests/fixtures/models"
CHAT = ROOT / "tests/fixtures/chat"
OUT = pathlib.Path(__file__).with_suffix(".json")

VOCAB = 320
SPECIAL = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

LLAMA_TEMPLATE = """{% if messages[0]['role'] == 'system' %}
    {% set loop_messages = messages[1:] %}
    {% set system_message = messages[0]['content'] %}
{% else %}
    {% set loop_messages = messages %}
    {% set system_message = false %}
{% endif %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if loop.index0 == 0 and system_message != false %}
        {% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}
    {% else %}
        {% set content = message['content'] %}
    {% endif %}
    {% if message['role'] == 'user' %}
        {{- bos_token + '[INST] ' + content.strip() + ' [/INST]' }}
    {% elif message['role'] == 'assistant' %}
        {{- ' '  + content.strip() + ' ' + eos_token }}
    {% endif %}
{% endfor %}
"""

QWEN_TEMPLATE = """{%- for message in messages %}
    {%- if loop.first and messages[0]['role'] != 'system' %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
    {%- if message['role'] == 'assistant' %}
        {{- '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] | trim + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

CASES = {
    "tiny-llama-hf": dict(
        seed=11,
        lora=dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    ),
    "tiny-qwen2-hf": dict(
        seed=12,
        lora=dict(
            r=4,
            lora_alpha=6,
            use_rslora=True,
            target_modules=["k_proj", "o_proj", "gate_proj", "lm_head"],
        ),
    ),
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


def lines(name):
    return [json.loads(l) for l in (CHAT / name).read_text().splitlines() if l.strip()]


def corpus():
    for row in lines("train.jsonl") + lines("valid.jsonl"):
        if "messages" in row:
            for m in row["messages"]:
                yield m["content"]
        else:
            yield row["prompt"] + row["response"]


def tokenizer(name):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus()) * 3, trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    if name == "tiny-llama-hf":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
        )
        fast.chat_template = LLAMA_TEMPLATE
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>"
        )
        fast.chat_template = QWEN_TEMPLATE
    return fast


def config(name):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        attn_implementation="eager",
        dtype=torch.float32,
    )
    if name == "tiny-llama-hf":
        return LlamaConfig(
            **common,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        )
    return Qwen2Config(
        **common,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
        eos_token_id=4,
    )


def redraw(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.3 * torch.randn_like(p))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn_like(p))
            else:
                scale = 2.0 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
                p.copy_(torch.randn_like(p) * scale / math.sqrt(p.shape[1]))


def ranges(tok, messages):
    """The rendered chat and each assistant turn's character range, by prefix renderings."""
    full = tok.apply_chat_template(messages, tokenize=False)
    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            before = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        except Exception:
            if i:
                raise
            before = ""  # as xp: a template that cannot render an empty conversation
        through = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        assert full.startswith(before) and full.startswith(through)
        out.append((len(before), len(through)))
    return full, out


def marked(tok, messages):
    """Inputs and targets of a chat whose template marks assistant text with `{% generation %}`:
    the tokens of transformers' assistant mask (what TRL's assistant-only loss learns)."""
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, learned = list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
    return ids[:-1], [t if l else -100 for t, l in zip(ids[1:], learned[1:])]


def example(tok, row):
    """What xp must make of a jsonl line: inputs and targets."""
    if "messages" in row and tok.chat_template and "generation %}" in tok.chat_template:
        return marked(tok, row["messages"])
    if "messages" in row and tok.chat_template:
        text, learn = ranges(tok, row["messages"])
        special, templated = False, True
    else:
        if "messages" in row:
            raise AssertionError("both fixtures have templates")
        text = row["prompt"] + row["response"]
        learn = [(len(row["prompt"]), len(text))]
        special, templated = True, False
    assert text.isascii(), "byte and character offsets agree on ASCII"
    enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    learned = [b > a and any(a < e and b > s for s, e in learn) for a, b in enc["offset_mapping"]]
    if templated:
        assert ids == list(tok.apply_chat_template(row["messages"], tokenize=True)["input_ids"]), row
    elif ids[-1] != tok.eos_token_id:
        ids.append(tok.eos_token_id)
        learned.append(True)
    return ids[:-1], [t if l else -100 for t, l in zip(ids[1:], learned[1:])]


def batch(tok, rows):
    pairs = [example(tok, r) for r in rows]
    longest = max(len(i) for i, _ in pairs)
    inputs = torch.tensor([i + [tok.pad_token_id] * (longest - len(i)) for i, _ in pairs])
    targets = torch.tensor([t + [-100] * (longest - len(t)) for _, t in pairs])
    return inputs, targets


def loss_of(model, inputs, targets):
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)


def lora_params(model):
    return {
        n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n
    }


def train_steps(base_dir, adapter_dir, tok, steps=3):
    """PEFT training as tests/fixtures/hf/lora-llama.kdl asks xp for it."""
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    model.train()
    params = lora_params(model)
    opt = torch.optim.AdamW(list(params.values()), lr=0.01, weight_decay=0.1)
    inputs, targets = batch(tok, lines("train.jsonl"))
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model, inputs, targets)
        loss.backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values()))
        losses.append(loss.item())
        norms.append(norm.item())
        opt.step()
    return {
        "loss": losses,
        "grad_norm": norms,
        "adapter": {n: values(p) for n, p in sorted(params.items())},
    }


def case(name, spec):
    directory = MODELS / name
    shutil.rmtree(directory, ignore_errors=True)
    torch.manual_seed(spec["seed"])
    tok = tokenizer(name)
    model = AutoModelForCausalLM.from_config(config(name)).float().eval()
    redraw(model)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    # Read back as any user would, so what is checked is what the files say.
    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()

    g = torch.Generator().manual_seed(spec["seed"])
    tokens = torch.randint(0, VOCAB, (2, 12), generator=g)
    targets = torch.randint(0, VOCAB, (2, 12), generator=g)
    targets[0, 0] = targets[1, 5] = targets[1, 11] = -100
    with torch.no_grad():
        logits = model(input_ids=tokens).logits

    lora = LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **spec["lora"])
    peft = get_peft_model(model, lora)
    with torch.no_grad():
        for p in lora_params(peft).values():
            p.copy_(0.1 * torch.randn_like(p))
    trainable, total = peft.get_nb_trainable_parameters()
    adapter_dir = MODELS / f"{name}-adapter"
    shutil.rmtree(adapter_dir, ignore_errors=True)
    peft.save_pretrained(adapter_dir)
    (adapter_dir / "README.md").unlink(missing_ok=True)
    config_path = adapter_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = f"../{name}"
    # PEFT keeps target_modules as a set: sorted, so the file is the same from run to run.
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    peft.eval()
    lora_logits = peft(input_ids=tokens).logits
    loss = F.cross_entropy(lora_logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    grads = {n: values(p.grad) for n, p in sorted(lora_params(peft).items())}

    valid = lines("valid.jsonl")
    out = {
        "name": name,
        "tokens": tokens.tolist(),
        "targets": targets.tolist(),
        "logits": values(logits),
        "lora_logits": values(lora_logits),
        "lora_loss": f32(loss.item()),
        "lora_grads": grads,
        "trainable_params": trainable,
        "total_params": total,
        "chat": [
            {"inputs": i, "targets": t} for i, t in (example(tok, row) for row in valid)
        ],
    }
    if name == "tiny-llama-hf":
        out["training"] = train_steps(directory, adapter_dir, tok)
    return out


def main():
    torch.set_num_threads(1)
    cases = [case(name, spec) for name, spec in CASES.items()]
    OUT.write_text(json.dumps({"cases": cases}) + "\n")
    for f in MODELS.glob("tiny-*-hf*/*"):
        f.chmod(0o644)


if __name__ == "__main__":
    main()
