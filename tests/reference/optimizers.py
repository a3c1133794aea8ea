"""Reference values for src/optim.rs: torch.optim's CPU single-tensor optimizers, and Lion.

Writes tests/reference/optimizers.json, which tests/it/optimizers.rs replays. Run from the
repository root with PyTorch and NumPy installed:

    python tests/reference/optimizers.py

Every case trains the same two float32 parameters: a (4, 8) weight in a param group with the
case's weight decay (index 0, `decay: true`) and a (32,) bias in a group with none (index 1,
`decay: false`). Both sizes are multiples of 32, so on an AVX2 or AVX-512 machine every element
goes through ATen's vectorised kernels (FMA included) rather than their scalar tails. Five
steps use the same fixed gradients for every case (with a few exact zeros, for Lion's sign) and
a learning rate that changes each step. The JSON holds the inputs, the parameters after each
step and the final state buffers, named `{index}.{buffer}` as `Optimizer::state` names them.

PyTorch's CPU float32 `sqrt` goes through MKL's vector math where MKL is built in, and that is
not correctly rounded (it is off by up to an ulp about one time in five); xp's is. So every case
is run a second time with `Tensor.sqrt` and `sqrt_` correctly rounded (through float64, exact
for float32), and its final parameters and state are written under `exact-sqrt`: xp must match
those bit for bit, and the plain ones within a tolerance.

Numbers are written as Python floats: the exact value of each float32, so nothing is lost on
the way back. Learning rates and hyperparameters are short decimals, which every JSON reader
parses exactly.
"""

import contextlib
import json
import pathlib
import re

import numpy as np
import torch

STEPS = 5
SHAPES = [(4, 8), (32,)]
DECAY = [True, False]
LRS = {
    "sgd": [0.1, 0.05, 0.2, 0.125, 0.03],
    "adam": [0.01, 0.005, 0.02, 0.0125, 0.003],
    "rmsprop": [0.01, 0.005, 0.02, 0.0125, 0.003],
    "adagrad": [0.1, 0.05, 0.2, 0.125, 0.03],
    "lion": [0.001, 0.0005, 0.002, 0.00125, 0.0003],
}

# Each case: (name, the optimizer as `spec::OptimizerConfig` serializes it). `lr` there is the base
# learning rate; the steps use LRS[kind].
SGD = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight-decay": 0.0}
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "amsgrad": False, "weight-decay": 0.0}
RMSPROP = {"alpha": 0.99, "eps": 1e-08, "momentum": 0.0, "centered": False, "weight-decay": 0.0}
ADAGRAD = {"lr-decay": 0.0, "eps": 1e-10, "initial-accumulator": 0.0, "weight-decay": 0.0}
LION = {"beta1": 0.9, "beta2": 0.99, "weight-decay": 0.0}
CASES = [
    ("sgd", "sgd", SGD),
    ("sgd-weight-decay", "sgd", {**SGD, "weight-decay": 0.05}),
    ("sgd-momentum", "sgd", {**SGD, "momentum": 0.9}),
    ("sgd-momentum-dampening", "sgd", {**SGD, "momentum": 0.9, "dampening": 0.1, "weight-decay": 0.05}),
    ("sgd-nesterov", "sgd", {**SGD, "momentum": 0.9, "nesterov": True, "weight-decay": 0.01}),
    ("adam", "adam", ADAM),
    ("adam-weight-decay", "adam", {**ADAM, "weight-decay": 0.01}),
    ("adam-amsgrad", "adam", {**ADAM, "amsgrad": True, "weight-decay": 0.1, "beta1": 0.8, "beta2": 0.99, "eps": 1e-06}),
    # 1 - beta1 >= 0.5 takes lerp's other branch.
    ("adam-low-beta1", "adam", {**ADAM, "beta1": 0.3, "beta2": 0.9}),
    ("adamw", "adamw", {**ADAM, "weight-decay": 0.01}),
    ("adamw-no-decay", "adamw", ADAM),
    ("adamw-amsgrad", "adamw", {**ADAM, "amsgrad": True, "weight-decay": 0.1, "beta1": 0.85, "beta2": 0.95}),
    ("rmsprop", "rmsprop", RMSPROP),
    ("rmsprop-weight-decay", "rmsprop", {**RMSPROP, "weight-decay": 0.01}),
    ("rmsprop-centered", "rmsprop", {**RMSPROP, "centered": True}),
    ("rmsprop-momentum", "rmsprop", {**RMSPROP, "momentum": 0.9}),
    # alpha < 0.5: the centred average's lerp takes its other branch.
    ("rmsprop-centered-momentum", "rmsprop", {**RMSPROP, "alpha": 0.4, "eps": 1e-06, "centered": True, "momentum": 0.5, "weight-decay": 0.05}),
    ("adagrad", "adagrad", ADAGRAD),
    ("adagrad-options", "adagrad", {"lr-decay": 0.01, "eps": 1e-08, "initial-accumulator": 0.1, "weight-decay": 0.01}),
    ("lion", "lion", LION),
    ("lion-weight-decay", "lion", {"beta1": 0.95, "beta2": 0.98, "weight-decay": 0.1}),
]


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") as lucidrains'
    lion-pytorch writes it, op for op."""

    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg, grad = state["exp_avg"], p.grad
                p.mul_(1.0 - lr * wd)
                update = exp_avg.clone().mul_(beta1).add(grad, alpha=1.0 - beta1).sign_()
                p.add_(update, alpha=-lr)
                exp_avg.mul_(beta2).add_(grad, alpha=1.0 - beta2)


def optimizer(kind, options, params, lr):
    wd = options["weight-decay"]
    groups = [{"params": [p], "weight_decay": wd if d else 0.0} for p, d in zip(params, DECAY)]
    if kind == "sgd":
        o = options
        return torch.optim.SGD(groups, lr=lr, momentum=o["momentum"], dampening=o["dampening"], nesterov=o["nesterov"], foreach=False)
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        o = options
        return cls(groups, lr=lr, betas=(o["beta1"], o["beta2"]), eps=o["eps"], amsgrad=o["amsgrad"], foreach=False)
    if kind == "rmsprop":
        o = options
        return torch.optim.RMSprop(groups, lr=lr, alpha=o["alpha"], eps=o["eps"], momentum=o["momentum"], centered=o["centered"], foreach=False)
    if kind == "adagrad":
        o = options
        return torch.optim.Adagrad(groups, lr=lr, lr_decay=o["lr-decay"], eps=o["eps"], initial_accumulator_value=o["initial-accumulator"], foreach=False)
    if kind == "lion":
        return Lion(groups, lr=lr, betas=(options["beta1"], options["beta2"]), weight_decay=0.0)
    raise ValueError(kind)


def floats(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


SQRT_CALLS = 0


@contextlib.contextmanager
def exact_sqrt():
    """`Tensor.sqrt` and `sqrt_` correctly rounded: float32 -> float64 -> sqrt -> float32 rounds
    once in effect (float64 has more than twice float32's precision)."""
    sqrt, sqrt_ = torch.Tensor.sqrt, torch.Tensor.sqrt_

    def exact(t):
        global SQRT_CALLS
        SQRT_CALLS += 1
        assert t.dtype == torch.float32
        return sqrt(t.double()).float()

    torch.Tensor.sqrt = exact
    torch.Tensor.sqrt_ = lambda t: t.copy_(exact(t))
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.sqrt_ = sqrt, sqrt_


def train(kind, options, lrs, initial, grads):
    """The parameters after each step, and the final state by `{index}.{buffer}`."""
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in initial]
    opt = optimizer(kind, options, params, lrs[0])
    after = []
    for step in range(STEPS):
        for p, g in zip(params, grads[step]):
            p.grad = torch.from_numpy(g.copy())
        for group in opt.param_groups:
            group["lr"] = lrs[step]
        opt.step()
        after.append([floats(p) for p in params])
    state = {}
    for index, p in enumerate(params):
        for buffer, value in opt.state[p].items():
            if value is not None:
                state[f"{index}.{buffer}"] = floats(value)
    return after, dict(sorted(state.items()))


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(20240611)
    initial = [(0.5 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]
    grads = []
    for step in range(STEPS):
        scale = [1.0, 0.3, 2.0, 0.05, 1.0][step]
        g = [(scale * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]
        # Exact zeros: Lion's sign(0) is 0, and a zero first gradient leaves its momentum at 0.
        g[0].reshape(-1)[[0, 5]] = 0.0
        g[1][step] = 0.0
        grads.append(g)

    cases = []
    for name, kind, options in CASES:
        lrs = LRS["adam" if kind == "adamw" else kind]
        after, state = train(kind, options, lrs, initial, grads)
        calls = SQRT_CALLS
        with exact_sqrt():
            exact_after, exact_state = train(kind, options, lrs, initial, grads)
        assert (SQRT_CALLS > calls) == (kind not in ("sgd", "lion")), name
        cases.append({
            "name": name,
            "optimizer": {"lr": lrs[0], "decay-all": False, "kind": {"kind": kind, **options}},
            "lrs": lrs,
            "params": after,
            "state": state,
            "exact-sqrt": {"params": exact_after[-1], "state": exact_state},
        })

    out = {
        "script": "tests/reference/optimizers.py",
        "torch": torch.__version__,
        "cpu-capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "shapes": SHAPES,
        "decay": DECAY,
        "initial": [floats(torch.from_numpy(p)) for p in initial],
        "grads": [[floats(torch.from_numpy(g)) for g in step] for step in grads],
        "cases": cases,
    }
    text = json.dumps(out, indent=1)
    # One line per list of numbers.
    text = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    path = pathlib.Path(__file__).with_suffix(".json")
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
