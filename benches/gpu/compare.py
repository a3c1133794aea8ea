"""Side-by-side GPU training benchmark: xp against PyTorch eager HF LlamaForCausalLM.

Both train the same SmolLM-135M-shaped Llama (hidden 576, 30 layers, 9 heads, 3 key/value heads,
intermediate 1536, vocabulary 49152, tied embeddings, random init) on 1024-token sequences of the
copy task (512 random tokens, a separator, the same 512 again; loss on the copy), with AdamW
(betas 0.9/0.95, weight decay 0.1 on weight matrices, gradient clipping at 1.0), for N steps:

  full   all parameters train (xp: smollm-full.kdl; PyTorch: lr 3e-4)
  lora   LoRA r=16, alpha 32 on q_proj and v_proj, the base frozen (xp: smollm-lora.kdl;
         PyTorch: PEFT; lr 1e-3)

PyTorch runs with bf16 autocast over float32 master weights, SDPA attention and fused AdamW.
xp runs as its experiment files say (precision "bf16"); what it actually computed in is printed
from its summary.json. Each side runs in its own process. For each it prints training tokens/s
(over the steps after the warm-up, from the step times xp logs in metrics.jsonl and from CUDA
events in PyTorch), the peak GPU memory of the process (nvidia-smi, the same measure for both;
PyTorch's allocator peak too), the training loss of step N, and the ratios xp / PyTorch.

Usage (on the GPU machine, with the xp binary built with `--features cuda` next to it):
  python3 benches/gpu/compare.py --xp ./xp --steps 50 --warmup 10 --batch 8
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTEXT = 1024
COPY_LENGTH = 512
VOCAB = 49152
SEP = VOCAB - 1
LR = {"full": 3e-4, "lora": 1e-3}


class GpuMemory:
    """Polls nvidia-smi for the peak GPU memory of one process (or, where per-process figures
    are not available, of the whole GPU above what it used before)."""

    def __init__(self, pid, gpu=0, interval=0.05):
        self.pid, self.gpu, self.interval = pid, gpu, interval
        self.peak_process = 0
        self.peak_total = 0
        self.baseline = self._total()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _query(self, args):
        try:
            out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout if out.returncode == 0 else ""

    def _total(self):
        out = self._query(["-i", str(self.gpu), "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        try:
            return int(out.strip().splitlines()[0]) * 2**20
        except (ValueError, IndexError):
            return 0

    def _process(self):
        out = self._query(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                return int(parts[1]) * 2**20
        return 0

    def _poll(self):
        while not self._stop.is_set():
            self.peak_process = max(self.peak_process, self._process())
            self.peak_total = max(self.peak_total, self._total())
            self._stop.wait(self.interval)

    def set_pid(self, pid):
        self.pid = pid

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self):
        if self.peak_process:
            return self.peak_process, "process"
        return max(self.peak_total - self.baseline, 0), "gpu-total-minus-baseline"


def throughput(times, tokens_per_step, warmup):
    """Tokens/s over the steps after `warmup`, from the time at the end of each step."""
    steps = sorted(times)
    last = steps[-1]
    if warmup < 1 or warmup >= last or warmup not in times:
        raise SystemExit(f"--warmup must be between 1 and the steps - 1 (steps {last})")
    return (last - warmup) * tokens_per_step / (times[last] - times[warmup])


def run_xp(args, mode, workdir):
    kdl = HERE / f"smollm-{mode}.kdl"
    runs = workdir / f"xp-{mode}"
    cmd = [
        args.xp, "run", str(kdl), "--runs-dir", str(runs), "--quiet",
        "--set", f"train.steps={args.steps}", "--set", f"train.batch-size={args.batch}",
    ]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    with GpuMemory(pid=-1, gpu=args.gpu) as mem:
        proc = subprocess.Popen(cmd)
        mem.set_pid(proc.pid)
        rc = proc.wait()
    summaries = list(runs.glob("*/current/*/summary.json"))
    if not summaries:
        raise SystemExit(f"xp ({mode}) exited with {rc} and wrote no run")
    summary = json.loads(summaries[0].read_text())
    if summary.get("status") != "completed":
        raise SystemExit(f"xp ({mode}) run {summary.get('status')}: {summary.get('reason')}")
    times, loss = {}, None
    for line in (summaries[0].parent / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if "train/loss" in m:
            times[m["step"]] = m["time_s"]
            loss = m["train/loss"]
    peak, how = mem.peak()
    return {
        "tokens_per_s": throughput(times, args.batch * CONTEXT, args.warmup),
        "peak_gpu_bytes": peak,
        "peak_gpu_measure": how,
        "loss": loss,
        "device": summary.get("device"),
        "precision": summary.get("precision"),
        "params": summary.get("params"),
    }


def torch_worker(args, mode):
    """One PyTorch run in this process; prints its result as one JSON line."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    device = torch.device("cuda", args.gpu)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=CONTEXT,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).to(device=device, dtype=torch.float32).train()
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
        ))
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": 0.1},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, lr=LR[mode], betas=(0.9, 0.95), eps=1e-8, fused=True)
    gen = torch.Generator(device=device).manual_seed(2)

    def batch():
        xs = torch.randint(0, SEP, (args.batch, COPY_LENGTH), generator=gen, device=device)
        sep = torch.full((args.batch, 1), SEP, device=device)
        seq = torch.cat([xs, sep, xs], dim=1)  # (B, 1025)
        inputs, labels = seq[:, :-1], seq[:, 1:].clone()
        labels[:, :COPY_LENGTH] = -100
        return inputs, labels

    def step(inputs, labels):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().view(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats(device)
    events = {}
    loss = None
    for s in range(1, args.steps + 1):
        loss = step(*batch())
        if s >= args.warmup:
            events[s] = torch.cuda.Event(enable_timing=True)
            events[s].record()
    torch.cuda.synchronize(device)
    first = events[args.warmup]
    times = {s: first.elapsed_time(e) / 1000.0 for s, e in events.items()}
    print(json.dumps({
        "tokens_per_s": throughput(times, args.batch * CONTEXT, args.warmup),
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
        "loss": float(loss.item()),
        "precision": "bf16 autocast, f32 weights",
        "params": {
            "total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in trainable),
        },
        "torch": torch.__version__,
    }), flush=True)


def run_torch(args, mode):
    cmd = [
        sys.executable, __file__, "--worker", mode, "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--batch", str(args.batch), "--gpu", str(args.gpu),
    ]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    with GpuMemory(pid=-1, gpu=args.gpu) as mem:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        mem.set_pid(proc.pid)
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"PyTorch ({mode}) exited with {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_gpu_bytes"], result["peak_gpu_measure"] = mem.peak()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xp", default="./xp", help="the xp binary built with --features cuda")
    p.add_argument("--steps", type=int, default=50, help="training steps of each run (N)")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the throughput")
    p.add_argument("--batch", type=int, default=8, help="sequences of 1024 tokens a step")
    p.add_argument("--modes", default="full,lora", help="full, lora or both")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--keep", help="keep xp's run directories here (default: a temporary directory)")
    p.add_argument("--worker", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        torch_worker(args, args.worker)
        return
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in LR for m in modes):
        raise SystemExit("--modes takes full, lora or full,lora")
    if not 1 <= args.warmup < args.steps:
        raise SystemExit("--warmup must be at least 1 and less than --steps")
    if shutil.which(args.xp) is None and not Path(args.xp).is_file():
        raise SystemExit(f"no xp binary at {args.xp}")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="xp-gpu-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for mode in modes:
        results[f"xp-{mode}"] = run_xp(args, mode, workdir)
        results[f"torch-{mode}"] = run_torch(args, mode)
    mib = 2**20
    print(f"\n{args.steps} steps of {args.batch} x {CONTEXT} tokens, throughput after {args.warmup} warm-up steps")
    print(f"{'run':<12} {'tokens/s':>10} {'peak GPU MiB':>13} {'loss@N':>8}  precision")
    for name, r in results.items():
        print(f"{name:<12} {r['tokens_per_s']:>10.0f} {r['peak_gpu_bytes'] / mib:>13.0f} {r['loss']:>8.4f}  {r['precision']}")
    ratios = {}
    for mode in modes:
        x, t = results[f"xp-{mode}"], results[f"torch-{mode}"]
        ratios[mode] = {
            "tokens_per_s": x["tokens_per_s"] / t["tokens_per_s"],
            "peak_gpu_bytes": x["peak_gpu_bytes"] / t["peak_gpu_bytes"] if t["peak_gpu_bytes"] else None,
            "loss": x["loss"] / t["loss"] if t["loss"] else None,
        }
        r = ratios[mode]
        memory = f"{r['peak_gpu_bytes']:.2f}x" if r["peak_gpu_bytes"] is not None else "n/a"
        print(f"xp / PyTorch ({mode}): throughput {r['tokens_per_s']:.2f}x, peak memory {memory}, loss {r['loss']:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "ratios": ratios}, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
