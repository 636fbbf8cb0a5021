"""A 20-trial sweep on digits in one process: wall time, trials per minute and what pruning saves, measured
side by side (the same space, sampler seed and trials; median pruning against none), plus the cost of the
sweep machinery next to the trials' own training time.

Run: .venv/bin/python bench/sweep.py [--trials 20 --epochs 3]
(The --workers variant on Ray Tune, which issue 16 also asks for, is not implemented yet.)
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
    args = parser.parse_args()
    space = {"lr": "1e-4..1:log", "hidden": [16, 32, 64, 128]}
    sweep(build, "digits", space, trials=2, epochs=1, show=False)  # warm-up: imports (optuna, torchmetrics)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.trials} trials on digits, "
          f"{args.epochs} epochs each, space {space}")
    print(f"{'pruning':<10}{'wall s':>8}{'trials/min':>12}{'pruned':>8}{'steps':>8}{'train s':>9}"
          f"{'overhead':>10}{'best val loss':>15}")
    for prune in ("median", "none"):
        t0 = time.perf_counter()
        result = sweep(build, "digits", space, trials=args.trials, epochs=args.epochs, prune=prune, seed=0,
                       show=False)
        wall = time.perf_counter() - t0
        trained = sum(r.elapsed for r in result.runs)
        pruned = sum(t["state"] == "pruned" for t in result.trials)
        steps = sum(t["steps"] or 0 for t in result.trials)
        print(f"{prune:<10}{wall:>8.2f}{60 * args.trials / wall:>12.1f}{pruned:>8}{steps:>8}{trained:>9.2f}"
              f"{(wall - trained) / wall:>10.1%}{result.best['value']:>15.4f}")


if __name__ == "__main__":
    main()
