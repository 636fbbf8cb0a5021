"""A 20-trial sweep on digits: in one process (median pruning against none) and on 2 Ray Tune workers (ASHA),
the same space, sampler seed and trials; wall time, trials per minute, what pruning saves, and the cost of
the sweep machinery next to the trials' own training time.

Run: .venv/bin/python bench/sweep.py [--trials 20 --epochs 3 --workers 2]  (--workers 0: in-process only)
"""
import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bigmodel_nb.api import sweep  # noqa: E402


def build(hidden=64):
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    space = {"lr": "1e-4..1:log", "hidden": [16, 32, 64, 128]}
    sweep(build, "digits", space, trials=2, epochs=1, show=False)  # warm-up: imports (optuna, torchmetrics)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.trials} trials on digits, "
          f"{args.epochs} epochs each, space {space}")
    print(f"{'pruning':<24}{'wall s':>8}{'trials/min':>12}{'pruned':>8}{'steps':>8}{'train s':>9}"
          f"{'overhead':>10}{'best val loss':>15}")
    variants = [("median", None), ("none", None)] + ([("asha", args.workers)] if args.workers else [])
    for prune, workers in variants:
        if workers:  # the local Ray cluster's start-up is left out: it happens once per session
            from bigmodel_nb.engine.scale.distributed import connect

            connect(None)
        t0 = time.perf_counter()
        result = sweep(build, "digits", space, trials=args.trials, epochs=args.epochs, seed=0, show=False,
                       prune="median" if workers else prune, workers=workers)
        wall = time.perf_counter() - t0
        trained = sum(r.elapsed for r in result.runs) if not workers else sum(t["time_s"] or 0 for t in result.trials)
        pruned = sum(t["state"] == "pruned" for t in result.trials)
        steps = sum(t["steps"] or 0 for t in result.trials)
        label = prune if not workers else f"{prune}, {workers} Ray workers"
        print(f"{label:<24}{wall:>8.2f}{60 * args.trials / wall:>12.1f}{pruned:>8}{steps:>8}{trained:>9.2f}"
              f"{(wall - trained) / wall:>10.1%}{result.best['value']:>15.4f}")


if __name__ == "__main__":
    main()
