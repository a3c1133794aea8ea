"""Side by side: xp's `search "tpe"`, xp's `search "random"` and Optuna's TPESampler, each
driving the same training (benches/search/base.kdl), one trial at a time. Optuna's objective
runs `xp run base.kdl --set ...` and reads the run's summary.json. Prints the median over seeds
of the best validation accuracy after 16 and after all trials, with the spread."""

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import time

HERE = pathlib.Path(__file__).resolve().parent
METRIC = "val/accuracy"


def best_of(summary):
    best = summary.get("best", {}).get(METRIC)
    if best is not None:
        return best["value"]
    return summary.get("final", {}).get(METRIC, float("-inf"))


def xp_search(xp, work, sampler, seed, trials):
    """Runs one xp search; the objective of each trial in trial order."""
    src = work / f"xp-{sampler}-{seed}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    shutil.copy(HERE / "base.kdl", src / "base.kdl")
    text = (HERE / "demo.kdl").read_text()
    text = text.replace('search "tpe" trials=32 seed=0', f'search "{sampler}" trials={trials} seed={seed}')
    (src / "demo.kdl").write_text(text)
    subprocess.run([xp, "run", "demo.kdl", "-q", "--runs-dir", "runs"], cwd=src, check=True,
                   stdout=subprocess.DEVNULL)
    sweep = src / "runs" / "search-bench" / "current"
    values = []
    for line in (sweep / "search.jsonl").read_text().splitlines():
        trial = json.loads(line)
        run = trial["runs"][0]["name"]
        values.append(best_of(json.loads((sweep / run / "summary.json").read_text())))
    return values


def optuna_search(xp, work, seed, trials):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    src = work / f"optuna-{seed}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    shutil.copy(HERE / "base.kdl", src / "base.kdl")
    counter = [0]

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
        wd = trial.suggest_float("wd", 0.0, 1.0)
        warmup = trial.suggest_int("warmup", 0, 60)
        batch = trial.suggest_categorical("batch", [16, 64])
        runs = f"runs-{counter[0]}"
        counter[0] += 1
        subprocess.run(
            [xp, "run", "base.kdl", "-q", "--runs-dir", runs,
             "--set", f"train.optimizer.lr={lr!r}",
             "--set", f"train.optimizer.weight-decay={wd!r}",
             "--set", f"train.schedule.warmup-steps={warmup}",
             "--set", f"train.batch-size={batch}"],
            cwd=src, check=True, stdout=subprocess.DEVNULL)
        sweep = src / runs / "search-bench" / "current"
        run = json.loads((sweep / "plan.json").read_text())["runs"][0]["name"]
        summary = json.loads((sweep / run / "summary.json").read_text())
        return best_of(summary)

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return [t.value for t in study.trials]


def best_after(values, n):
    return max(values[:n])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--xp", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--first-seed", type=int, default=0)
    a = p.parse_args()
    xp = str(pathlib.Path(a.xp).resolve())
    work = pathlib.Path(a.work).resolve()
    budgets = [b for b in (16, a.trials) if b <= a.trials]
    budgets = sorted(set(budgets))
    methods = {
        "xp tpe": lambda s: xp_search(xp, work, "tpe", s, a.trials),
        "xp random": lambda s: xp_search(xp, work, "random", s, a.trials),
        "optuna TPESampler": lambda s: optuna_search(xp, work, s, a.trials),
    }
    results = {m: [] for m in methods}
    start = time.time()
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for name, run in methods.items():
            t0 = time.time()
            values = run(seed)
            results[name].append(values)
            print(f"seed {seed} {name:<18} best@16 {best_after(values, 16):.4f} "
                  f"best@{a.trials} {best_after(values, a.trials):.4f} ({time.time() - t0:.0f} s)",
                  flush=True)
    print()
    header = f"{'sampler':<20}" + "".join(f"{'best@' + str(b) + ' median (min-max)':>30}" for b in budgets)
    print(header)
    for name, runs in results.items():
        cells = []
        for b in budgets:
            bests = [best_after(v, b) for v in runs]
            cells.append(f"{statistics.median(bests):.4f} ({min(bests):.4f}-{max(bests):.4f})")
        print(f"{name:<20}" + "".join(f"{c:>30}" for c in cells))
    print(f"\n{a.seeds} seeds x {a.trials} trials x {len(methods)} samplers in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
