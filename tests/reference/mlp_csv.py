"""Reference losses for training an mlp on a CSV file: xp against the same model in PyTorch.

Writes the inputs under tests/fixtures/parity/ (two CSV files, initial weights as safetensors
and one experiment .kdl per case) and the expected per-step training losses to
tests/reference/mlp_csv.json, which tests/it/parity.rs checks `xp run` against. Run from the
repository root with PyTorch, transformers, safetensors and NumPy installed:

    python tests/reference/mlp_csv.py

Everything is deterministic: the data from NumPy's PCG64 with fixed seeds, the initial weights
from `torch.manual_seed` and nn.Linear's own initialisation. Training is float32 on CPU and
follows xp's contract for `data "csv" ... shuffle=#false` (DESIGN.md §3, src/train.rs):

- The model is an `nn.ModuleList` of `nn.Linear` under `layers` (names `layers.{i}.weight`,
  `layers.{i}.bias`), the activation after every hidden layer, no dropout.
- Validation is the last round(n × fraction) rows; training rows keep the file's order.
- An optimizer step takes the next batch-size × gradient-accumulation training rows, split in
  consecutive micro-batches of batch-size; an epoch is floor(n_train / (batch-size ×
  gradient-accumulation)) steps, the rows left over at its end are skipped and the next epoch
  starts again at the first row.
- The loss is mean squared error over batch × outputs (regression) or mean cross-entropy
  (classification), class ids being the distinct target values in numeric order. With
  gradient accumulation each micro-batch's summed loss is divided by the step's whole batch,
  the gradients add up, and the step's loss is the sum of the micro-batches' (the mean over
  the whole batch).
- torch.nn.utils.clip_grad_norm_ on all parameters, then the torch.optim optimizer (CPU,
  single-tensor: foreach=False) with weight decay on the 2-D weights only, then the HF
  schedule's `scheduler.step()`. The lr of step k is the schedule's value before its k-th
  advance.
- `train/loss` of step k is the loss computed for update k, before that update; `train/lr`
  its lr and `train/grad_norm` the global L2 norm of its gradients before clipping.

Losses are written as Python floats of the float32 values (sums of them, with accumulation).
"""

import json
import pathlib

import numpy as np
import safetensors.torch
import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "parity"
OUT = ROOT / "tests" / "reference" / "mlp_csv.json"

ROWS = 64
VALIDATION_FRACTION = 0.25

# Each case: the experiment as xp reads it, and what PyTorch needs to train it the same way.
CASES = [
    {
        "name": "sgd-momentum-clip",
        "data": "regression.csv",
        "task": "regression",
        "weights": "regression-tanh.safetensors",
        "hidden": [16, 8],
        "activation": "tanh",
        "steps": 24,
        "batch": 8,
        "accumulation": 1,
        "optimizer": {"kind": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": None,
        "grad_clip": 1.5,
    },
    {
        "name": "adamw-cosine",
        "data": "classification.csv",
        "task": "classification",
        "weights": "classification-relu.safetensors",
        "hidden": [12],
        "activation": "relu",
        "steps": 30,
        "batch": 8,
        "accumulation": 1,
        "optimizer": {"kind": "adamw", "lr": 0.02, "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": 4},
        "grad_clip": None,
    },
    {
        # 48 training rows, 10 a step: 4 steps an epoch, 8 rows skipped at its end.
        "name": "adam-accumulation",
        "data": "regression.csv",
        "task": "regression",
        "weights": "regression-silu.safetensors",
        "hidden": [16, 8],
        "activation": "silu",
        "steps": 14,
        "batch": 5,
        "accumulation": 2,
        "optimizer": {"kind": "adam", "lr": 0.01, "weight_decay": 0.01},
        "schedule": {"kind": "linear", "warmup_steps": 2},
        "grad_clip": 1.0,
    },
    {
        # 48 training rows, 12 a step: 4 steps an epoch, none left over.
        "name": "sgd-nesterov-accumulation",
        "data": "classification.csv",
        "task": "classification",
        "weights": "classification-gelu.safetensors",
        "hidden": [10, 6],
        "activation": "gelu",
        "steps": 12,
        "batch": 4,
        "accumulation": 3,
        "optimizer": {
            "kind": "sgd",
            "lr": 0.1,
            "momentum": 0.8,
            "nesterov": True,
            "weight_decay": 0.02,
        },
        "schedule": None,
        "grad_clip": None,
    },
]


def text(x):
    """The shortest decimal that reads back as float32 `x`."""
    s = np.format_float_positional(np.float32(x), unique=True, trim="-")
    assert np.float32(float(s)) == np.float32(x), s
    return s


def write_csv(path, header, rows):
    with open(path, "w", newline="\n") as f:
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join(row) + "\n")


def regression_data():
    """Five features in [-2, 2] and y, a smooth function of them plus noise (float32)."""
    rng = np.random.default_rng(20240601)
    x = rng.uniform(-2.0, 2.0, size=(ROWS, 5)).astype(np.float32)
    noise = rng.normal(0.0, 0.1, size=ROWS)
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 3] ** 2 + 0.2 * x[:, 4] + noise
    y = y.astype(np.float32)
    # The values as the file holds them, read back exactly.
    x = np.array([[np.float32(text(v)) for v in row] for row in x], dtype=np.float32)
    y = np.array([np.float32(text(v)) for v in y], dtype=np.float32)
    header = ["x1", "x2", "x3", "x4", "x5", "y"]
    rows = [[text(v) for v in x[i]] + [text(y[i])] for i in range(ROWS)]
    write_csv(FIXTURES / "regression.csv", header, rows)
    return x, y.reshape(-1, 1)


def classification_data():
    """Four features and a label among 2, 7 and 10 (numeric order differs from text order),
    in the middle column, so the target is not the last one."""
    rng = np.random.default_rng(20240602)
    labels = np.array([2, 7, 10])
    centres = rng.normal(0.0, 1.5, size=(3, 4))
    which = rng.integers(0, 3, size=ROWS)
    x = (centres[which] + rng.normal(0.0, 1.0, size=(ROWS, 4))).astype(np.float32)
    x = np.array([[np.float32(text(v)) for v in row] for row in x], dtype=np.float32)
    header = ["a", "b", "label", "c", "d"]
    rows = [
        [text(x[i, 0]), text(x[i, 1]), str(labels[which[i]]), text(x[i, 2]), text(x[i, 3])]
        for i in range(ROWS)
    ]
    write_csv(FIXTURES / "classification.csv", header, rows)
    # Class ids: the distinct labels in numeric order.
    classes = sorted(set(int(v) for v in labels[which]))
    assert classes == [2, 7, 10], classes
    ids = np.array([classes.index(int(v)) for v in labels[which]], dtype=np.int64)
    return x, ids


class Mlp(torch.nn.Module):
    def __init__(self, sizes, activation):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.activation = {
            "tanh": torch.tanh,
            "relu": torch.relu,
            "silu": torch.nn.functional.silu,
            "gelu": torch.nn.functional.gelu,
        }[activation]

    def forward(self, x):  # (B, F) -> (B, O)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = self.activation(x)
        return x


def optimizer_for(model, spec):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    wd = spec.get("weight_decay", 0.0)
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    lr = spec["lr"]
    if spec["kind"] == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=spec.get("momentum", 0.0),
            nesterov=spec.get("nesterov", False),
            foreach=False,
        )
    if spec["kind"] == "adam":
        return torch.optim.Adam(groups, lr=lr, foreach=False)
    if spec["kind"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, foreach=False)
    raise ValueError(spec["kind"])


def scheduler_for(optimizer, spec, steps):
    if spec is None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    kind = {"cosine": "cosine", "linear": "linear"}[spec["kind"]]
    return transformers.get_scheduler(
        kind,
        optimizer,
        num_warmup_steps=spec["warmup_steps"],
        num_training_steps=steps,
    )


def train(case, x, y):
    torch.manual_seed(0)
    n_train = len(x) - round(len(x) * VALIDATION_FRACTION)
    x, y = torch.from_numpy(x[:n_train]), torch.from_numpy(y[:n_train])
    outputs = 1 if case["task"] == "regression" else int(y.max()) + 1
    model = Mlp([x.shape[1], *case["hidden"], outputs], case["activation"])
    model.load_state_dict(safetensors.torch.load_file(FIXTURES / case["weights"]))
    optimizer = optimizer_for(model, case["optimizer"])
    scheduler = scheduler_for(optimizer, case["schedule"], case["steps"])
    micro, accum = case["batch"], case["accumulation"]
    per_step = micro * accum
    steps_per_epoch = n_train // per_step
    losses, lrs, norms, clipped = [], [], [], 0
    for step in range(case["steps"]):
        start = (step % steps_per_epoch) * per_step
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        loss = 0.0
        for m in range(accum):
            rows = slice(start + m * micro, start + (m + 1) * micro)
            out = model(x[rows])
            if case["task"] == "regression":
                part = torch.nn.functional.mse_loss(out, y[rows], reduction="sum")
                part = part / (per_step * outputs)
            else:
                part = torch.nn.functional.cross_entropy(out, y[rows], reduction="sum")
                part = part / per_step
            part.backward()
            loss += part.item()
        # Without clipping, an infinite bound only measures the norm (the grads are scaled by 1).
        bound = case["grad_clip"] if case["grad_clip"] is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), bound).item()
        norms.append(norm)
        clipped += int(norm > bound)
        optimizer.step()
        scheduler.step()
        losses.append(loss)
    return losses, lrs, norms, clipped


def kdl(case):
    """The experiment xp runs for a case."""
    opt = case["optimizer"]
    options = [f'"{opt["kind"]}"', f'lr={opt["lr"]}']
    for key in ("momentum", "weight_decay"):
        if key in opt:
            options.append(f'{key.replace("_", "-")}={opt[key]}')
    if opt.get("nesterov"):
        options.append("nesterov=#true")
    lines = [
        "// Written by tests/reference/mlp_csv.py; checked by tests/it/parity.rs.",
        f'experiment "{case["name"]}" {{',
        '    device "cpu"',
        '    model "mlp" {',
        f'        hidden {" ".join(str(h) for h in case["hidden"])}',
        f'        activation "{case["activation"]}"',
        "        dropout 0.0",
        "    }",
        f'    init-from "{case["weights"]}"',
        f'    data "csv" path="{case["data"]}" target="{"y" if case["task"] == "regression" else "label"}" '
        f'task="{case["task"]}" validation-fraction={VALIDATION_FRACTION} shuffle=#false',
        "    train {",
        f'        steps {case["steps"]}',
        f'        batch-size {case["batch"]}',
    ]
    if case["accumulation"] != 1:
        lines.append(f'        gradient-accumulation {case["accumulation"]}')
    lines.append(f'        optimizer {" ".join(options)}')
    if case["schedule"] is not None:
        s = case["schedule"]
        lines.append(f'        schedule "{s["kind"]}" warmup-steps={s["warmup_steps"]}')
    if case["grad_clip"] is not None:
        lines.append(f'        grad-clip {case["grad_clip"]}')
    lines += ["        log every=1", "    }", "}", ""]
    return "\n".join(lines)


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    data = {"regression": regression_data(), "classification": classification_data()}
    results = []
    for seed, case in enumerate(CASES, start=1):
        x, y = data[case["task"]]
        outputs = 1 if case["task"] == "regression" else int(y.max()) + 1
        torch.manual_seed(seed)
        initial = Mlp([x.shape[1], *case["hidden"], outputs], case["activation"])
        safetensors.torch.save_file(
            {k: v.contiguous() for k, v in initial.state_dict().items()},
            FIXTURES / case["weights"],
        )
        (FIXTURES / f'{case["name"]}.kdl').write_text(kdl(case))
        losses, lrs, norms, clipped = train(case, x, y)
        if case["grad_clip"] is not None:
            # Both ways through the clipping, or the case tests less than it says.
            assert 0 < clipped < case["steps"], f'{case["name"]}: clipped {clipped} steps'
        results.append(
            {
                "name": case["name"],
                "experiment": f'{case["name"]}.kdl',
                "clipped_steps": clipped,
                "loss": losses,
                "lr": lrs,
                "grad_norm": norms,
            }
        )
    OUT.write_text(
        json.dumps(
            {
                "script": "tests/reference/mlp_csv.py",
                "torch": torch.__version__,
                "cases": results,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
