"""bigmodel_nb against a minimal hand-written loop and Lightning's Trainer, side by side in one process.

The MLP of overhead.py (64→256→256→10) on digits, 600 optimizer steps, batch 64, Adam lr 1e-3, seed 0,
the same initial weights and the same batches (the engine's `epoch_order`) in every variant; runs
alternate and medians are compared:

  hand        a minimal hand-written loop: losses summed on the device, read once per epoch, with the
              engine's per-epoch validation (same 256-sample batches)
  fit         bigmodel_nb.fit(model, data, steps=600, batch_size=64, lr=1e-3, seed=0), default logging
  dashboard   the engine with the live widget dashboard (IPython shell, no browser), in the cell's thread;
              building the widgets is timed apart, as in overhead.py
  lightning   lightning.Trainer(accelerator="cpu", max_steps=600), no progress bar, logger, checkpointing,
              model summary or sanity validation; the same batches through a DataLoader, validation each epoch
  background  the engine in a worker thread (--background): Run(...).start().wait()
  fit, no system sampler   fit(..., system=False): what the ~1 Hz run.system sampler costs (with --system)

Lightning is a bench-only dependency: .venv/bin/pip install -c constraints.txt -r bench/requirements.txt
Run: .venv/bin/python bench/peer.py [--repeats 7 --steps 600 --before]  (or: make bench-peer)
"""
import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import bigmodel_nb  # noqa: E402
from bigmodel_nb.engine import Run, TrainConfig, load_dataset  # noqa: E402
from bigmodel_nb.engine.data import epoch_order  # noqa: E402

BATCH, LR, SEED, VAL_BATCH = 64, 1e-3, 0, 256  # VAL_BATCH: the engine validates in batches of max(256, batch)


def make_model():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def val_loss(model, Xv, yv):
    """Sample-weighted mean validation loss in the engine's batches (a device tensor, not read here)."""
    model.eval()
    with torch.no_grad():
        total = sum(F.cross_entropy(model(Xv[i:i + VAL_BATCH]), yv[i:i + VAL_BATCH]) * len(yv[i:i + VAL_BATCH])
                    for i in range(0, len(yv), VAL_BATCH))
    model.train()
    return total / len(yv)


def hand(model, data, steps):
    """The minimal loop: no per-step .item(); one read per epoch (train mean and validation loss)."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    X, y = data.train.tensors()
    Xv, yv = data.val.tensors()
    step, epoch, last = 0, 0, None
    while step < steps:
        order = epoch_order(len(X), SEED, epoch)
        total, seen = torch.zeros(()), 0
        for i in range(0, len(X), BATCH):
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
            step += 1
            if step == steps:
                break
        last = torch.stack([total / seen, val_loss(model, Xv, yv)]).tolist()  # the epoch's one read
        epoch += 1
    return last[0]


def last_epoch_train_loss(run, data, steps):
    """The engine's train rows of the last epoch, recombined into one sample-weighted mean."""
    n, per_epoch = len(data.train), data.train.num_batches(BATCH)
    size = [min(BATCH, n - j * BATCH) for j in range(per_epoch)]  # batch j of every epoch
    first = (steps - 1) // per_epoch * per_epoch  # steps before the last epoch
    total = seen = 0.0
    prev = first
    for row in run.rows("train"):
        if row["step"] > first:
            k = sum(size[(s - 1) % per_epoch] for s in range(prev + 1, row["step"] + 1))
            total, seen, prev = total + row["loss"] * k, seen + k, row["step"]
    return total / seen


def engine_config(steps):
    return TrainConfig(steps=steps, batch_size=BATCH, lr=LR, seed=SEED)


def lightning_trainer_fit(model, data, steps):
    import lightning as L
    from torch.utils.data import DataLoader, Sampler

    X, y = data.train.tensors()
    Xv, yv = data.val.tensors()

    class Indexed(torch.utils.data.Dataset):  # a batch of indices in, a batch out: no per-sample collation
        def __init__(self, X, y):
            self.X, self.y = X, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, idx):
            return self.X[idx], self.y[idx]

    class EpochBatches(Sampler):  # the engine's batch order; Lightning calls set_epoch before each epoch
        def __init__(self, n):
            self.n, self.epoch = n, 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return -(-self.n // BATCH)

        def __iter__(self):
            order = epoch_order(self.n, SEED, self.epoch)
            return (order[i:i + BATCH] for i in range(0, self.n, BATCH))

    class Module(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def validation_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    train = DataLoader(Indexed(X, y), sampler=EpochBatches(len(y)), batch_size=None)
    val = DataLoader(Indexed(Xv, yv), sampler=[torch.arange(i, min(i + VAL_BATCH, len(yv)))
                                               for i in range(0, len(yv), VAL_BATCH)], batch_size=None)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Module(model), train, val)


def with_plain_thread(run_fn):
    """--before: hand the run to a plain threading.Thread, as run.py did before engine/core/threads.py."""
    import contextvars
    import threading

    def plain(self):
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._drive,), daemon=True)
        self._thread.start()

    def run_plain(*args):
        original, Run._hand_to_thread = Run._hand_to_thread, plain
        try:
            return run_fn(*args)
        finally:
            Run._hand_to_thread = original
    return run_plain


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--system", action="store_true", help="also time fit without the run.system sampler")
    parser.add_argument("--before", action="store_true",
                        help="also time --background with a plain threading.Thread (run.py before threads.py)")
    args = parser.parse_args()
    import lightning

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13's pytree
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # the banner and tip on every Trainer

    from IPython.testing.globalipapp import start_ipython

    start_ipython()  # a real shell so display() and widgets behave as in a notebook (no frontend)
    from bigmodel_nb.ui.dashboard import TrainingDashboard

    data = load_dataset("digits")
    Xv, yv = data.val.tensors()
    steps = args.steps
    setup = []

    def run_dashboard(model):
        t0 = time.perf_counter()
        run = Run(model, data, engine_config(steps))
        t1 = time.perf_counter()
        dash = TrainingDashboard(run, mode="widget").show()
        t2 = time.perf_counter()
        run.run_here([dash])
        setup.append(t2 - t1)
        return run, (t1 - t0) + (time.perf_counter() - t2)

    def run_background(model):
        return Run(model, data, engine_config(steps)).start().wait()

    variants = {
        "hand": lambda m: hand(m, data, steps),
        "fit": lambda m: bigmodel_nb.fit(m, data, steps=steps, batch_size=BATCH, lr=LR, seed=SEED),
        "dashboard": run_dashboard,
        "lightning": lambda m: lightning_trainer_fit(m, data, steps),
        "background": run_background,
    }
    if args.before:
        variants["background, plain thread"] = with_plain_thread(run_background)
    if args.system:
        variants["fit, no system sampler"] = lambda m: bigmodel_nb.fit(m, data, steps=steps, batch_size=BATCH, lr=LR,
                                                                       seed=SEED, system=False)

    def measure():
        for fn in variants.values():  # warm-up: imports (plotly, Lightning), first widgets
            fn(make_model())
        setup.clear()
        times = {name: [] for name in variants}
        final = {}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                model = make_model()
                t0 = time.perf_counter()
                out = fn(model)
                seconds = time.perf_counter() - t0
                if name == "dashboard":
                    out, seconds = out
                times[name].append(seconds)
                final[name] = {"val": val_loss(model, Xv, yv).item()}
                if name == "hand":
                    final[name]["train"] = out
                elif name != "lightning":
                    final[name]["train"] = last_epoch_train_loss(out, data, steps)
                    final[name]["engine val"] = out.rows("val")[-1]["loss"]
        return times, final

    with contextlib.redirect_stdout(io.StringIO()):  # the dashboard's final summary, printed by the shell
        times, final = measure()

    med = {name: statistics.median(ts) for name, ts in times.items()}
    h = med["hand"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"lightning {lightning.__version__}; "
          f"{steps} steps of an MLP 64-256-256-10 on digits, batch {BATCH}, Adam lr {LR}, seed {SEED}; "
          f"{args.repeats} alternating repeats; load average {os.getloadavg()[0]:.2f}")
    print(f"{'variant':<24}{'median s':>10}{'min s':>8}{'ratio to hand':>15}{'final val loss':>17}"
          f"{'last-epoch train':>18}")
    for name in variants:
        f = final[name]
        train = f"{f['train']:.8f}" if "train" in f else "—"
        print(f"{name:<24}{med[name]:>10.3f}{min(times[name]):>8.3f}{med[name] / h:>15.3f}{f['val']:>17.8f}{train:>18}")
    checks = [
        ("fit / hand", med["fit"] / h, 1.03, "≤"),
        ("dashboard / hand", med["dashboard"] / h, 1.05, "≤"),
        ("lightning / fit", med["lightning"] / med["fit"], 1.35, "≥"),
        ("background / fit (the cell's thread)", med["background"] / med["fit"], 1.10, "≤"),
    ]
    if args.before:
        checks.append(("plain-thread background / fit (before the fix)", med["background, plain thread"] / med["fit"],
                       1.10, "≤"))
    if args.system:  # the sampler should cost nothing visible: within the noise of alternating repeats
        checks.append(("fit / fit without the system sampler", med["fit"] / med["fit, no system sampler"], 1.02, "≤"))
    for label, value, target, op in checks:
        ok = value <= target if op == "≤" else value >= target
        print(f"{label:<48}{value:>7.3f}  target {op} {target:.2f}: {'PASS' if ok else 'FAIL'}")
    diff = max(abs(final[n][k] - final["hand"][k if k in final["hand"] else "val"])
               for n in variants if n != "hand" for k in final[n])
    print(f"largest final-loss difference vs the hand loop (val loss of every variant, last-epoch train loss and "
          f"logged val loss of the engine's): {diff:.2e} ({'OK' if diff < 1e-5 else 'MISMATCH'})")
    print(f"dashboard set-up before step 1 (not in its time): median {statistics.median(setup) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
