"""bigmodel_nb against a minimal hand-written loop and Lightning's Trainer, side by side in one process.

The MLP of overhead.py (64→256→256→10) on digits, 600 optimizer steps, batch 64, Adam lr 1e-3, seed 0,
the same initial weights and the same batches (the engine's `epoch_order`) in every variant:

  hand        a minimal hand-written loop: losses summed on the device, read once per epoch, with the
              engine's per-epoch validation (same 256-sample batches)
  fit         bigmodel_nb.fit(model, data, steps=600, batch_size=64, lr=1e-3, seed=0), default logging
  dashboard   the engine with the live widget dashboard (IPython shell, no browser), in the cell's thread;
              building the widgets is timed apart, as in overhead.py
  lightning   lightning.Trainer(accelerator="cpu", max_steps=600), no progress bar, logger, checkpointing,
              model summary or sanity validation; the same batches through a DataLoader, validation each epoch
  background  the engine in a worker thread (--background): Run(...).start().wait()
  fit, no system sampler   fit(..., system=False): what the ~1 Hz run.system sampler costs (with --system)

Two measurements:

  interleaved  (the targets) fit, the dashboard and Lightning each train with the hand loop woven in step by
               step: after each of its steps the contender's own per-step callback runs one step of the hand
               loop (its own model and optimizer) and times it. Both loops then meet the machine in the same
               instants: the host's slow spells, which move whole runs here by ±30 %, land on both alike.
               contender / hand = (the contender's wall time − the callback's) / the hand steps' time. CPU
               time that the contender's Python threads (the dashboard's render thread, the system sampler)
               spent during a hand step is moved from the hand's time to the contender's.
  whole runs   each variant alone, alternating, medians: as a user times a cell; background / fit is
               checked here, as the median of its per-repeat ratios to the fit run just before it (a worker
               thread cannot be woven into the cell's thread).

Lightning is a bench-only dependency: .venv/bin/pip install -c constraints.txt -r bench/requirements.txt
Run: .venv/bin/python bench/peer.py [--repeats 9 --steps 600 --before --system]  (or: make bench-peer)
"""
import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import threading
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import bigmodel_nb  # noqa: E402
from bigmodel_nb.engine import Callback, Run, TrainConfig, load_dataset  # noqa: E402
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


class HandLoop:
    """The minimal loop: no per-step .item(); one read per epoch (train mean and validation loss). `step()` runs
    one optimizer step (woven into a contender), `run()` all of them; `train_loss` is the last epoch's mean."""

    def __init__(self, model, data, steps):
        self.model, self.data, self.steps = model, data, steps
        self.train_loss = None
        self._steps = self._loop()

    def _loop(self):
        model, opt = self.model, torch.optim.Adam(self.model.parameters(), lr=LR)
        X, y = self.data.train.tensors()
        Xv, yv = self.data.val.tensors()
        step, epoch = 0, 0
        while True:
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
                if step == self.steps or i + BATCH >= len(X):  # the epoch's one read
                    self.train_loss = torch.stack([total / seen, val_loss(model, Xv, yv)]).tolist()[0]
                yield
                if step == self.steps:
                    return
            epoch += 1

    def step(self):
        next(self._steps)

    def run(self):
        for _ in self._steps:
            pass
        return self.train_loss


def hand(model, data, steps):
    return HandLoop(model, data, steps).run()


def other_threads_cpu() -> dict:
    """CPU seconds used so far by every other Python thread (a render thread, a sampler), by thread id."""
    me, cpu = threading.get_ident(), {}
    for thread in threading.enumerate():
        if thread.ident != me and thread.ident is not None:
            with contextlib.suppress(OSError, ProcessLookupError):  # it ended meanwhile
                cpu[thread.ident] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return cpu


class Interleaved(Callback):
    """After each step of the contender, one step of the hand loop, timed (see the module's docstring)."""

    def __init__(self, hand_loop):
        self.hand = hand_loop
        self.hand_s = self.callback_s = self.moved_s = 0.0

    def on_step_end(self, run, logs):
        self.weave()

    def weave(self):
        t0 = time.perf_counter()
        before = other_threads_cpu()
        t1 = time.perf_counter()
        self.hand.step()
        t2 = time.perf_counter()
        after = other_threads_cpu()
        self.moved_s += sum(cpu - before.get(ident, cpu) for ident, cpu in after.items())
        self.hand_s += t2 - t1
        self.callback_s += time.perf_counter() - t0

    def ratio(self, wall_s: float) -> float:
        """The contender's time over the hand loop's, the callback's own time taken out of the contender's."""
        return (wall_s - self.callback_s + self.moved_s) / (self.hand_s - self.moved_s)


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


def lightning_trainer_fit(model, data, steps, interleaved: Interleaved | None = None):
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
    class Weave(L.Callback):  # the hand loop's step after each of Lightning's
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            interleaved.weave()

    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[Weave()] if interleaved is not None else None)
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
    parser.add_argument("--repeats", type=int, default=9)
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

    def timed(fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        return out, time.perf_counter() - t0

    def fit(model, callbacks=(), **options):
        return timed(lambda: bigmodel_nb.fit(model, data, steps=steps, batch_size=BATCH, lr=LR, seed=SEED,
                                             callbacks=list(callbacks), **options))

    def dashboard(model, callbacks=()):
        t0 = time.perf_counter()
        run = Run(model, data, engine_config(steps))
        t1 = time.perf_counter()
        dash = TrainingDashboard(run, mode="widget").show()
        t2 = time.perf_counter()
        run.run_here([dash, *callbacks])
        setup.append(t2 - t1)
        return run, (t1 - t0) + (time.perf_counter() - t2)

    def background(model):
        return timed(lambda: Run(model, data, engine_config(steps)).start().wait())

    whole = {  # background right after fit: their ratio is taken pair by pair
        "hand": lambda m: timed(hand, m, data, steps),
        "fit": fit,
        "background": background,
        "dashboard": dashboard,
        "lightning": lambda m: timed(lightning_trainer_fit, m, data, steps),
    }
    woven = {
        "fit": lambda m, w: fit(m, [w]),
        "dashboard": lambda m, w: dashboard(m, [w]),
        "lightning": lambda m, w: timed(lightning_trainer_fit, m, data, steps, w),
    }
    if args.before:
        whole["background, plain thread"] = with_plain_thread(background)
    if args.system:
        woven["fit, no system sampler"] = lambda m, w: fit(m, [w], system=False)

    def final_losses(name, model, out):
        f = {"val": val_loss(model, Xv, yv).item()}
        if name == "hand":
            f["train"] = out
        elif name != "lightning":
            f["train"] = last_epoch_train_loss(out, data, steps)
            f["engine val"] = out.rows("val")[-1]["loss"]
        return f

    def measure():
        for fn in whole.values():  # warm-up: imports (plotly, Lightning), first widgets
            fn(make_model())
        for fn in woven.values():
            fn(make_model(), Interleaved(HandLoop(make_model(), data, steps)))
        setup.clear()
        times = {name: [] for name in whole}
        ratios = {name: [] for name in woven}
        moved = {name: [] for name in woven}
        final = {}
        for r in range(args.repeats):
            for name, fn in (woven.items() if r % 2 == 0 else reversed(woven.items())):
                weave, model = Interleaved(HandLoop(make_model(), data, steps)), make_model()
                out, seconds = fn(model, weave)
                ratios[name].append(weave.ratio(seconds))
                moved[name].append(weave.moved_s)
                final[f"{name} (interleaved)"] = final_losses(name, model, out)
                final[f"hand, woven into {name}"] = final_losses("hand", weave.hand.model, weave.hand.train_loss)
            for name, fn in whole.items():
                model = make_model()
                out, seconds = fn(model)
                times[name].append(seconds)
                final[name] = final_losses(name, model, out)
        return times, ratios, moved, final

    with contextlib.redirect_stdout(io.StringIO()):  # the dashboard's final summary, printed by the shell
        times, ratios, moved, final = measure()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"lightning {lightning.__version__}; "
          f"{steps} steps of an MLP 64-256-256-10 on digits, batch {BATCH}, Adam lr {LR}, seed {SEED}; "
          f"{args.repeats} repeats; load average {os.getloadavg()[0]:.2f}")
    print("\ninterleaved with the hand loop, step by step (the targets):")
    print(f"{'contender / hand':<28}{'median':>8}{'min':>8}{'max':>8}{'moved ms':>10}")
    woven_ratio = {name: statistics.median(r) for name, r in ratios.items()}
    for name, r in ratios.items():
        print(f"{name + ' / hand':<28}{woven_ratio[name]:>8.3f}{min(r):>8.3f}{max(r):>8.3f}"
              f"{statistics.median(moved[name]) * 1000:>10.1f}")
    print("  (moved: CPU time of the contender's other threads during the hand's steps, charged to the contender)")

    med = {name: statistics.median(ts) for name, ts in times.items()}

    def paired(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    h = med["hand"]
    print("\nwhole runs, alternating (as a user times a cell; the host's noise is in these):")
    print(f"{'variant':<28}{'median s':>10}{'min s':>8}{'ratio to hand':>15}")
    for name in whole:
        print(f"{name:<28}{med[name]:>10.3f}{min(times[name]):>8.3f}{med[name] / h:>15.3f}")
    print()
    checks = [
        ("fit / hand (interleaved)", woven_ratio["fit"], 1.03, "≤"),
        ("dashboard / hand (interleaved)", woven_ratio["dashboard"], 1.05, "≤"),
        ("lightning / fit (interleaved)", woven_ratio["lightning"] / woven_ratio["fit"], 1.35, "≥"),
        ("background / fit (whole runs, median of adjacent pairs)", paired("background", "fit"), 1.10, "≤"),
    ]
    if args.before:
        checks.append(("plain-thread background / fit (before the fix)", paired("background, plain thread", "fit"),
                       1.10, "≤"))
    if args.system:  # the sampler should cost nothing visible
        checks.append(("fit / fit without the system sampler (interleaved)",
                       woven_ratio["fit"] / woven_ratio["fit, no system sampler"], 1.02, "≤"))
    for label, value, target, op in checks:
        ok = value <= target if op == "≤" else value >= target
        print(f"{label:<58}{value:>7.3f}  target {op} {target:.2f}: {'PASS' if ok else 'FAIL'}")
    diff = max(abs(f[k] - final["hand"][k if k in final["hand"] else "val"]) for f in final.values() for k in f)
    verdict = "OK" if diff < 1e-5 else "MISMATCH"
    print(f"largest final-loss difference vs the hand loop (val loss of every variant's model, woven or not; "
          f"last-epoch train loss and logged val loss of the engine's): {diff:.2e} ({verdict})")
    print(f"dashboard set-up before step 1 (not in its time): median {statistics.median(setup) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
