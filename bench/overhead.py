"""Trainer overhead against the hand-written PyTorch loop, measured side by side in one process.

Same model, data, seed and batches; runs alternate (hand, engine without dashboard, engine with
the live widget dashboard — widgets and figures built, no browser attached — and the same in
--background mode, where a worker thread trains) and the median time of each is compared.
Run: .venv/bin/python bench/overhead.py [--epochs 40 --repeats 5]
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bigmodel_nb.engine import Run, TrainConfig, load_dataset  # noqa: E402
from bigmodel_nb.engine.data import epoch_order  # noqa: E402


def make_model(hidden):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def hand_written(data, epochs, batch_size, hidden, seed):
    """What a careful user writes: train with running loss/accuracy, validate each epoch."""
    model = make_model(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    X, y = data.train.tensors()
    Xv, yv = data.val.tensors()
    last = None
    for epoch in range(epochs):
        order = epoch_order(len(X), seed, epoch)
        total, correct, seen = 0.0, 0, 0
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = X[idx], y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(Xv), yv).item()
        model.train()
        last = total / seen
    return last, val_loss


def engine(data, epochs, batch_size, hidden, seed, dashboard, background=False):
    run = Run(make_model(hidden), data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, seed=seed,
                                                    log_every=10**9))  # one train row per epoch, like the hand loop
    callbacks = []
    if dashboard:
        from bigmodel_nb.ui.dashboard import TrainingDashboard

        t0 = time.perf_counter()
        callbacks.append(TrainingDashboard(run, mode="widget").show())
        SETUP.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    if background:  # --background: a worker thread trains while the notebook stays free
        run.start(callbacks).wait()
    else:  # the default: the cell's own thread trains, as the hand-written loop does
        run.run_here(callbacks)
    return run.rows("train")[-1]["loss"], run.rows("val")[-1]["loss"], time.perf_counter() - t0, callbacks


SETUP: list[float] = []  # building the dashboard (widgets, FigureWidget) once per run, before step 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from IPython.testing.globalipapp import start_ipython

    start_ipython()  # a real shell so display() and widgets behave as in a notebook (no frontend)
    data = load_dataset("digits")
    seed = 0
    timings = {"hand": [], "engine": [], "engine+dashboard": [], "background+dashboard": []}
    results = {}
    messages = {}
    hand_written(data, 2, args.batch_size, args.hidden, seed)  # warm-up
    engine(data, 1, args.batch_size, args.hidden, seed, dashboard=True)  # imports plotly, builds the first widgets
    SETUP.clear()
    for _ in range(args.repeats):
        for name in timings:
            if name == "hand":
                t0 = time.perf_counter()
                results[name] = hand_written(data, args.epochs, args.batch_size, args.hidden, seed)
                timings[name].append(time.perf_counter() - t0)
            else:
                *results[name], seconds, extra = engine(data, args.epochs, args.batch_size, args.hidden, seed,
                                                        dashboard="dashboard" in name, background="background" in name)
                timings[name].append(seconds)
                if extra:
                    messages[name] = extra[0].messages / seconds

    steps = args.epochs * data.train.num_batches(args.batch_size)
    hand = statistics.median(timings["hand"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {steps} steps of an MLP "
          f"(hidden {args.hidden}) on digits, batch {args.batch_size}, {args.repeats} alternating repeats")
    print(f"{'variant':<22}{'median s':>10}{'ratio':>8}{'final train loss':>18}{'final val loss':>16}")
    for name, ts in timings.items():
        med = statistics.median(ts)
        train_loss, val_loss = results[name]
        print(f"{name:<22}{med:>10.3f}{med / hand:>8.3f}{train_loss:>18.7f}{val_loss:>16.7f}")
    diff = max(abs(results[n][i] - results["hand"][i]) for n in timings if n != "hand" for i in (0, 1))
    print(f"largest loss difference vs hand-written: {diff:.2e} ({'OK' if diff < 1e-5 else 'MISMATCH'})")
    print("dashboard messages per second (last run): " + ", ".join(f"{k} {v:.1f}" for k, v in messages.items()))
    print(f"dashboard set-up before step 1 (widgets + FigureWidget, not in the times above): "
          f"median {statistics.median(SETUP) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
