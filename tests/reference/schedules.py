"""Reference values for src/schedule.rs: HF transformers' `get_scheduler` and
torch.optim.lr_scheduler, driven as a training loop drives them.

Writes tests/reference/schedules.json, which tests/it/schedules.rs replays. Run from the
repository root with PyTorch and transformers installed:

    python tests/reference/schedules.py

Every case trains one float64 parameter with plain SGD (no momentum) at the case's lr. Each
optimizer step k zeroes the parameter, sets its gradient to 1 and calls `optimizer.step()`, so
the parameter afterwards is exactly -lr: the lr recorded for step k is what the optimizer used
(`lrs[k - 1]`).
After the step come the case's evaluation (`observations`: reduce-on-plateau's
`scheduler.step(value)`) and then `scheduler.step()`, after every step or, with
`interval "epoch"`, after the last step of every epoch.

What this script takes from xp rather than from HF or torch (the contract of src/schedule.rs):

- The counts: the run's length and the warmup in advances of the schedule (optimizer steps,
  or epochs with `interval "epoch"`), computed by `counts` below; ratios round up as HF's
  `math.ceil(num_training_steps * warmup_ratio)`, and the decaying HF-style kinds warm up for
  a ratio of 0.1 when no warmup is given.
- `min-lr-ratio` r on `linear` and `cosine-with-restarts` (HF has it only for cosine, as
  `cosine_with_min_lr`'s `min_lr_rate`): HF's own lambda f becomes f * (1 - r) + r after the
  warmup, in a LambdaLR.
- A warmup on the torch kinds. torch has no warmup that starts at 0: `SequentialLR(LinearLR)`
  cannot (LinearLR needs start_factor > 0), and SequentialLR refuses ReduceLROnPlateau and
  restarts the next scheduler through `_update_lr(0)`, which OneCycleLR and
  CosineAnnealingWarmRestarts do not support. So the ramp is set by hand, as HF's: during the
  first W advances the lr is lr * (t / W). When the warmup ends the optimizer's lr is set back
  to lr and only then is the torch scheduler made, so its position 0 is the first advance after
  the warmup; it counts the W fewer advances that are left (the default t-max of
  cosine-annealing and one-cycle's total_steps), and reduce-on-plateau sees only the
  evaluations after the warmup.
- one-cycle never cycles momentum (`cycle_momentum=False`); its max-lr defaults to the lr.
- reduce-on-plateau's mode defaults to the objective's direction.
"""

import json
import math
import pathlib
import warnings

import torch
import transformers
from torch.optim import lr_scheduler
from transformers import get_scheduler
from transformers.optimization import (
    _get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda as hf_restarts_lambda,
    _get_linear_schedule_with_warmup_lr_lambda as hf_linear_lambda,
)

HF_KINDS = {"constant", "linear", "cosine", "cosine-with-restarts", "polynomial", "inverse-sqrt"}
DEFAULT_WARMUP_RATIO = 0.1
WARMS_UP_BY_DEFAULT = {
    "linear",
    "cosine",
    "cosine-with-restarts",
    "polynomial",
    "inverse-sqrt",
    "exponential",
}


def case(name, kind, lr=0.1, steps=None, epochs=None, steps_per_epoch=10, interval="step",
         warmup=None, objective="minimize", observations=()):
    """A case as `spec::Train` serializes its parts: `length`, `schedule` (interval, warmup,
    kind with its options) and the objective's direction."""
    return {
        "name": name,
        "lr": lr,
        "length": {"steps": steps} if steps is not None else {"epochs": epochs},
        "steps-per-epoch": steps_per_epoch,
        "objective": objective,
        "schedule": {"interval": interval, "warmup": warmup, "kind": kind},
        "observations": [list(o) for o in observations],
    }


def linear(r=0.0):
    return {"kind": "linear", "min-lr-ratio": r}


def cosine(r=0.0):
    return {"kind": "cosine", "min-lr-ratio": r}


def restarts(cycles, r=0.0):
    return {"kind": "cosine-with-restarts", "cycles": cycles, "min-lr-ratio": r}


def one_cycle(max_lr=None, pct_start=0.3, anneal="cos", div=25.0, final_div=1e4, three=False):
    return {
        "kind": "one-cycle",
        "max-lr": max_lr,
        "pct-start": pct_start,
        "anneal": anneal,
        "div-factor": div,
        "final-div-factor": final_div,
        "three-phase": three,
    }


def plateau(mode=None, factor=0.5, patience=2, threshold=1e-4, threshold_mode="rel",
            cooldown=0, min_lr=0.0, eps=1e-8):
    return {
        "kind": "reduce-on-plateau",
        "mode": mode,
        "factor": factor,
        "patience": patience,
        "threshold": threshold,
        "threshold-mode": threshold_mode,
        "cooldown": cooldown,
        "min-lr": min_lr,
        "eps": eps,
    }


def every(n, values):
    """Evaluations after steps n, 2n, … with these objective values."""
    return [(n * (i + 1), v) for i, v in enumerate(values)]


LOSSES = [1.0, 0.9, 0.9, 0.9, 0.95, 0.89995, 0.85, 0.85, 0.86, 0.87, 0.88, 0.5, 0.6, 0.6, 0.6,
          0.6, 0.6, 0.6, 0.6, 0.6]
SCORES = [0.1, 0.2, 0.205, 0.2, 0.3, 0.305, 0.31, 0.29, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]

CASES = [
    case("constant", {"kind": "constant"}, steps=20),
    case("constant-warmup", {"kind": "constant"}, steps=20, warmup={"steps": 5}),
    case("constant-epoch-warmup-epochs", {"kind": "constant"}, epochs=6, steps_per_epoch=4,
         interval="epoch", warmup={"epochs": 1.5}),
    case("linear-default-warmup", linear(), steps=30),
    # 100 * 0.07 is 7.000000000000001 in floating point: HF warms up for 8 steps.
    case("linear-ratio-rounds-up", linear(), steps=100, warmup={"ratio": 0.07}),
    case("linear-no-warmup", linear(), steps=25, warmup={"steps": 0}),
    case("linear-min-lr", linear(0.1), steps=40, warmup={"ratio": 0.25}),
    # 23 steps of 5 are 5 epochs; 6 warmup steps round up to 2 epochs.
    case("linear-epoch-partial", linear(0.05), steps=23, steps_per_epoch=5, interval="epoch",
         warmup={"steps": 6}),
    case("cosine-default-warmup", cosine(), steps=100, lr=3e-4),
    case("cosine-min-lr", cosine(0.1), steps=50, warmup={"steps": 10}),
    case("cosine-no-warmup", cosine(), steps=40, warmup={"ratio": 0.0}),
    case("cosine-epochs-warmup-epochs", cosine(), epochs=4, steps_per_epoch=7,
         warmup={"epochs": 0.5}),
    case("cosine-epoch-interval", cosine(0.2), epochs=10, steps_per_epoch=5, interval="epoch",
         warmup={"epochs": 2.0}),
    case("cosine-warmup-ratio-epoch-interval", cosine(), epochs=12, steps_per_epoch=3,
         interval="epoch", warmup={"ratio": 0.2}),
    case("restarts", restarts(3), steps=60, warmup={"ratio": 0.1}),
    case("restarts-min-lr", restarts(2, 0.2), steps=50, warmup={"steps": 5}),
    case("restarts-no-warmup-min-lr", restarts(4, 0.1), steps=50, warmup={"steps": 0}),
    case("restarts-one-cycle-default-warmup", restarts(1), steps=40),
    case("polynomial", {"kind": "polynomial", "power": 2.0, "end-lr": 1e-5}, steps=50),
    case("polynomial-linear-no-warmup", {"kind": "polynomial", "power": 1.0, "end-lr": 0.0},
         steps=30, warmup={"steps": 0}),
    case("polynomial-sqrt-epoch", {"kind": "polynomial", "power": 0.5, "end-lr": 1e-3},
         epochs=8, steps_per_epoch=3, interval="epoch", warmup={"epochs": 1.0}),
    case("inverse-sqrt", {"kind": "inverse-sqrt", "timescale": None}, steps=60,
         warmup={"steps": 10}),
    case("inverse-sqrt-default-warmup", {"kind": "inverse-sqrt", "timescale": None}, steps=45),
    case("inverse-sqrt-timescale", {"kind": "inverse-sqrt", "timescale": 25}, steps=60,
         warmup={"steps": 0}),
    case("inverse-sqrt-timescale-warmup", {"kind": "inverse-sqrt", "timescale": 7}, steps=40,
         warmup={"steps": 12}),
    case("inverse-sqrt-no-warmup", {"kind": "inverse-sqrt", "timescale": None}, steps=30,
         warmup={"steps": 0}),
    case("exponential-default-warmup", {"kind": "exponential", "gamma": 0.95}, steps=40),
    case("exponential-no-warmup", {"kind": "exponential", "gamma": 0.9}, steps=60,
         warmup={"steps": 0}),
    case("exponential-epoch", {"kind": "exponential", "gamma": 0.8}, epochs=9, steps_per_epoch=4,
         interval="epoch"),
    case("step", {"kind": "step", "step-size": 7, "gamma": 0.5}, steps=40),
    case("step-warmup", {"kind": "step", "step-size": 4, "gamma": 0.3}, steps=30,
         warmup={"steps": 5}),
    case("step-epoch", {"kind": "step", "step-size": 3, "gamma": 0.1}, epochs=12,
         steps_per_epoch=4, interval="epoch"),
    case("multi-step", {"kind": "multi-step", "milestones": [5, 12, 12, 30], "gamma": 0.5},
         steps=40),
    case("multi-step-warmup-unsorted", {"kind": "multi-step", "milestones": [20, 8],
                                        "gamma": 0.25}, steps=40, warmup={"steps": 4}),
    case("cosine-annealing", {"kind": "cosine-annealing", "t-max": None, "eta-min": 1e-4},
         steps=50),
    case("cosine-annealing-warmup", {"kind": "cosine-annealing", "t-max": None, "eta-min": 0.0},
         steps=50, warmup={"steps": 10}),
    # Past t-max torch's recursion carries on along the cosine, back up.
    case("cosine-annealing-past-t-max", {"kind": "cosine-annealing", "t-max": 15,
                                         "eta-min": 1e-3}, steps=50),
    case("cosine-annealing-epoch", {"kind": "cosine-annealing", "t-max": None, "eta-min": 0.0},
         epochs=10, steps_per_epoch=6, interval="epoch", warmup={"epochs": 2.0}),
    case("warm-restarts", {"kind": "cosine-warm-restarts", "t-0": 10, "t-mult": 1,
                           "eta-min": 0.0}, steps=45),
    case("warm-restarts-mult", {"kind": "cosine-warm-restarts", "t-0": 5, "t-mult": 2,
                                "eta-min": 1e-4}, steps=80, warmup={"steps": 3}),
    case("warm-restarts-epoch", {"kind": "cosine-warm-restarts", "t-0": 3, "t-mult": 3,
                                 "eta-min": 0.0}, epochs=20, steps_per_epoch=2,
         interval="epoch"),
    case("one-cycle", one_cycle(), steps=50),
    case("one-cycle-three-phase-linear", one_cycle(max_lr=0.05, pct_start=0.25, anneal="linear",
                                                   three=True), steps=60),
    case("one-cycle-three-phase-cos", one_cycle(div=10.0, final_div=100.0, three=True),
         steps=45),
    case("one-cycle-linear", one_cycle(max_lr=1.0, pct_start=0.4, anneal="linear"), steps=33),
    case("one-cycle-warmup", one_cycle(max_lr=0.2, three=True), steps=40, warmup={"steps": 5}),
    case("one-cycle-epoch", one_cycle(pct_start=0.5), epochs=10, steps_per_epoch=3,
         interval="epoch"),
    case("plateau-min-rel-cooldown", plateau(patience=2, cooldown=2, min_lr=1e-3), steps=100,
         observations=every(5, LOSSES)),
    case("plateau-max-abs", plateau(factor=0.3, patience=1, threshold=0.01,
                                    threshold_mode="abs"), steps=70, objective="maximize",
         observations=every(5, SCORES)),
    case("plateau-max-rel", plateau(factor=0.5, patience=0, threshold=0.05), steps=70,
         objective="maximize", observations=every(5, SCORES)),
    # An explicit mode wins over the objective's direction.
    case("plateau-mode-over-objective", plateau(mode="minimize", patience=1, cooldown=1),
         steps=100, objective="maximize", observations=every(5, LOSSES)),
    case("plateau-min-abs-min-lr", plateau(factor=0.1, patience=0, threshold=0.02,
                                           threshold_mode="abs", min_lr=2e-3), steps=100,
         observations=every(5, LOSSES)),
    # Reductions smaller than eps are skipped.
    case("plateau-eps", plateau(factor=0.5, patience=0, eps=0.03), steps=100,
         observations=every(5, LOSSES)),
    # Evaluations during the warmup are not seen.
    case("plateau-warmup", plateau(patience=1), steps=100, warmup={"steps": 12},
         observations=every(4, LOSSES + LOSSES[:5])),
    case("plateau-epoch-warmup", plateau(patience=0, cooldown=1), epochs=10, steps_per_epoch=8,
         interval="epoch", warmup={"epochs": 2.0}, observations=every(8, LOSSES[:10])),
]


def counts(c):
    """xp's counts: total optimizer steps, optimizer steps per advance, and the run's length
    and warmup in advances."""
    spe = c["steps-per-epoch"]
    length, schedule = c["length"], c["schedule"]
    total_steps = length["steps"] if "steps" in length else length["epochs"] * spe
    if schedule["interval"] == "step":
        per_advance, total = 1, total_steps
    else:
        per_advance = max(spe, 1)
        total = math.ceil(length["steps"] / per_advance) if "steps" in length else length["epochs"]
    warmup = schedule["warmup"]
    if warmup is None:
        by_default = schedule["kind"]["kind"] in WARMS_UP_BY_DEFAULT
        w = math.ceil(total * DEFAULT_WARMUP_RATIO) if by_default else 0
    elif "steps" in warmup:
        w = math.ceil(warmup["steps"] / per_advance)
    elif "ratio" in warmup:
        w = math.ceil(total * warmup["ratio"])
    elif schedule["interval"] == "step":
        w = math.ceil(warmup["epochs"] * spe)
    else:
        w = math.ceil(warmup["epochs"])
    return total_steps, per_advance, total, w


def with_min_lr(hf_lambda, warmup, ratio):
    return lambda t: hf_lambda(t) if t < warmup else hf_lambda(t) * (1 - ratio) + ratio


def hf_scheduler(kind, opt, total, warmup):
    """The LambdaLR of HF's `get_scheduler` (made now: it sets the lr of step 1)."""
    name = kind["kind"]
    if name == "constant":
        if warmup == 0:
            return get_scheduler("constant", opt)
        return get_scheduler("constant_with_warmup", opt, num_warmup_steps=warmup)
    if name == "linear":
        if kind["min-lr-ratio"] == 0:
            return get_scheduler("linear", opt, num_warmup_steps=warmup, num_training_steps=total)
        f = lambda t: hf_linear_lambda(t, num_warmup_steps=warmup, num_training_steps=total)
        return lr_scheduler.LambdaLR(opt, with_min_lr(f, warmup, kind["min-lr-ratio"]))
    if name == "cosine":
        if kind["min-lr-ratio"] == 0:
            return get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=total)
        return get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=warmup,
                             num_training_steps=total,
                             scheduler_specific_kwargs={"min_lr_rate": kind["min-lr-ratio"]})
    if name == "cosine-with-restarts":
        if kind["min-lr-ratio"] == 0:
            return get_scheduler("cosine_with_restarts", opt, num_warmup_steps=warmup,
                                 num_training_steps=total,
                                 scheduler_specific_kwargs={"num_cycles": kind["cycles"]})
        f = lambda t: hf_restarts_lambda(t, num_warmup_steps=warmup, num_training_steps=total,
                                         num_cycles=kind["cycles"])
        return lr_scheduler.LambdaLR(opt, with_min_lr(f, warmup, kind["min-lr-ratio"]))
    if name == "polynomial":
        return get_scheduler("polynomial", opt, num_warmup_steps=warmup, num_training_steps=total,
                             scheduler_specific_kwargs={"power": kind["power"],
                                                        "lr_end": kind["end-lr"]})
    if name == "inverse-sqrt":
        extra = {} if kind["timescale"] is None else {"timescale": kind["timescale"]}
        return get_scheduler("inverse_sqrt", opt, num_warmup_steps=warmup,
                             scheduler_specific_kwargs=extra)
    raise ValueError(name)


def torch_scheduler(kind, opt, left, objective):
    """The torch scheduler, made when the warmup ends, with `left` advances to go."""
    name = kind["kind"]
    if name == "exponential":
        return lr_scheduler.ExponentialLR(opt, gamma=kind["gamma"])
    if name == "step":
        return lr_scheduler.StepLR(opt, step_size=kind["step-size"], gamma=kind["gamma"])
    if name == "multi-step":
        return lr_scheduler.MultiStepLR(opt, milestones=kind["milestones"], gamma=kind["gamma"])
    if name == "cosine-annealing":
        t_max = left if kind["t-max"] is None else kind["t-max"]
        return lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=kind["eta-min"])
    if name == "cosine-warm-restarts":
        return lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=kind["t-0"], T_mult=kind["t-mult"],
                                                        eta_min=kind["eta-min"])
    if name == "one-cycle":
        max_lr = opt.param_groups[0]["lr"] if kind["max-lr"] is None else kind["max-lr"]
        return lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=left,
                                       pct_start=kind["pct-start"],
                                       anneal_strategy=kind["anneal"], cycle_momentum=False,
                                       div_factor=kind["div-factor"],
                                       final_div_factor=kind["final-div-factor"],
                                       three_phase=kind["three-phase"])
    if name == "reduce-on-plateau":
        mode = {"minimize": "min", "maximize": "max"}[kind["mode"] or objective]
        return lr_scheduler.ReduceLROnPlateau(opt, mode=mode,
                                              factor=kind["factor"], patience=kind["patience"],
                                              threshold=kind["threshold"],
                                              threshold_mode=kind["threshold-mode"],
                                              cooldown=kind["cooldown"], min_lr=kind["min-lr"],
                                              eps=kind["eps"])
    raise ValueError(name)


def run(c):
    total_steps, per_advance, total, warmup = counts(c)
    kind = c["schedule"]["kind"]
    base = c["lr"]
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([param], lr=base)
    hf = kind["kind"] in HF_KINDS
    scheduler = hf_scheduler(kind, opt, total, warmup) if hf else None
    advances = 0

    def set_lr(lr):
        opt.param_groups[0]["lr"] = lr

    def start_torch():
        nonlocal scheduler
        set_lr(base)
        scheduler = torch_scheduler(kind, opt, total - warmup, c["objective"])

    def advance():
        nonlocal advances
        advances += 1
        if hf:
            scheduler.step()
        elif advances < warmup:
            set_lr(base * (advances / warmup))
        elif advances == warmup:
            start_torch()
        elif not isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step()

    if not hf:
        if warmup == 0:
            start_torch()
        else:
            set_lr(0.0)
    observations = dict((step, value) for step, value in c["observations"])
    lrs = []
    for step in range(1, total_steps + 1):
        with torch.no_grad():
            param.zero_()
        param.grad = torch.ones_like(param)
        opt.step()
        lrs.append(0.0 - param.item())
        assert lrs[-1] == opt.param_groups[0]["lr"], (c["name"], step)
        if step in observations and isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(observations[step])
        if step % per_advance == 0:
            advance()
    return {
        **c,
        "total-steps": total_steps,
        "warmup-steps": warmup * per_advance,
        "lrs": lrs,
    }


def main():
    torch.set_default_dtype(torch.float64)
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "case names repeat"
    with warnings.catch_warnings():
        # HF's warnings about unused kwargs and torch's about step order do not apply here.
        warnings.simplefilter("ignore")
        cases = [run(c) for c in CASES]
    out = {
        "generator": "tests/reference/schedules.py",
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "cases": cases,
    }
    path = pathlib.Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
