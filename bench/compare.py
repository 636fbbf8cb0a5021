"""K optimizers compared together (one vmap forward/backward per step) against K sequential runs,
side by side in one process, with the loss agreement between the two paths.
Run: .venv/bin/python bench/compare.py [--epochs 10 --repeats 5]"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bigmodel_nb.engine import load_dataset  # noqa: E402
from bigmodel_nb.engine.compare.optimizers import OptimizerComparison  # noqa: E402

OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam", "adamw"]


def make_model(hidden):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_dataset("digits")
    OptimizerComparison(make_model(args.hidden), data, OPTIMIZERS, epochs=1, mode="together").run()  # warm-up
    times = {"sequential": [], "together": []}
    results = {}
    for _ in range(args.repeats):
        for mode in times:
            t0 = time.perf_counter()
            results[mode] = OptimizerComparison(make_model(args.hidden), data, OPTIMIZERS, epochs=args.epochs,
                                                mode=mode).run()
            times[mode].append(time.perf_counter() - t0)
    seq, tog = statistics.median(times["sequential"]), statistics.median(times["together"])
    steps = args.epochs * data.train.num_batches(64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: K={len(OPTIMIZERS)} optimizers × {steps} "
          f"steps, MLP 64-{args.hidden}-10 on digits, batch 64, {args.repeats} alternating repeats")
    print(f"sequential median {seq:.3f} s · together median {tog:.3f} s · together/sequential {tog / seq:.3f}")
    worst = 0.0
    for name in OPTIMIZERS:
        a = [r["loss"] for r in results["sequential"].rows(name)]
        b = [r["loss"] for r in results["together"].rows(name)]
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
        print(f"  {name:<9} final train loss sequential {a[-1]:.6f} together {b[-1]:.6f}")
    print(f"largest train-loss difference between the paths: {worst:.2e}")


if __name__ == "__main__":
    main()
