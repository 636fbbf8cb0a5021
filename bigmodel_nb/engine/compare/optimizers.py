"""Fair optimizer comparisons: every optimizer starts from the same weights and sees the same
batches in the same order. Where it pays, the K copies train *together*: their parameters are
stacked [K, ...] and run through one batched forward/backward per step (batched matrix products
for MLPs; `torch.func.vmap` for other architectures when asked, or on a GPU), while each copy is
still updated by its own real `torch.optim` optimizer. Otherwise (BatchNorm, dropout, models that
compute their own loss, or where separate runs are faster) it runs the ordinary trainer once per
optimizer. Both paths give the same losses (checked in tests and in bench/compare.py).
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ..core.adapters import as_bundle
from ..core.callbacks import Callback, CallbackList
from ..core.config import TrainConfig, plan
from ..core.device import resolve_amp, resolve_device
from ..core.errors import BigModelError, unknown_choice
from ..core.forward import preflight, resolve_loss, takes_targets
from ..core.metrics import Metrics
from ..core.optim import OPTIMIZERS, default_lr, make_optimizer
from ..core.run import Run, register_result


@dataclass
class Comparison:
    """Per optimizer results, the curves, and how the comparison was made fair.

    Example: ``cmp.results["adam"]["val_accuracy"]; cmp.table()``
    """

    results: dict[str, dict]
    history: list[dict]
    mode: str  # "together" or "sequential"
    fair: dict
    status: str = "completed"
    notes: list[str] = field(default_factory=list)

    def table(self):
        """One row per optimizer (a pandas DataFrame when pandas is installed)."""
        rows = [{"optimizer": name, **res} for name, res in self.results.items()]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows).set_index("optimizer")

    def rows(self, optimizer: str, split: str = "train") -> list[dict]:
        return [r for r in self.history if r["optimizer"] == optimizer and r["split"] == split]

    number: int | None = None  # its number among the session's runs (%runs)
    context: dict = field(default_factory=dict)  # data, model, params, config, lrs, elapsed

    def run_records(self) -> list[dict]:
        """One row per optimizer in the fields of the %runs table (a stacked comparison has no Run each)."""
        c = self.context
        return [{"name": name, "number": self.number, "kind": "compare", "status": self.status,
                 "data": c.get("data", "?"), "model": c.get("model", "?"), "params": c.get("params"),
                 # amp/device as the comparison fixed them, not as asked: left out, or every table grows a column
                 "config": {**{k: v for k, v in c.get("config", {}).items() if k not in ("amp", "device")},
                            "optimizer": name, "lr": c.get("lrs", {}).get(name)},
                 "history": [{k: v for k, v in r.items() if k != "optimizer"} for r in self.history
                             if r["optimizer"] == name], "elapsed": c.get("elapsed")}
                for name in self.results]


def parse_lrs(spec, names: list[str]) -> dict[str, float] | str:
    """``0.01`` -> all; ``sgd=0.1,adam=1e-3`` -> per optimizer (others default); ``auto`` -> 'auto'."""
    if spec is None:
        return {n: default_lr(n) for n in names}
    if isinstance(spec, (int, float)):
        return {n: float(spec) for n in names}
    if isinstance(spec, dict):
        return {n: float(spec.get(n, default_lr(n))) for n in names}
    text = str(spec).strip()
    if text == "auto":
        return "auto"
    try:
        if "=" not in text:
            return {n: float(text) for n in names}
        pairs = dict(part.split("=", 1) for part in text.split(","))
        lrs = {k.strip(): float(v) for k, v in pairs.items()}
    except ValueError:
        raise BigModelError(f"--lr must be a number, 'auto', or pairs like sgd=0.1,adam=1e-3; got '{text}'.") from None
    unknown = [k for k in lrs if k not in names]
    if unknown:
        raise BigModelError(f"--lr names '{unknown[0]}', which is not among the compared optimizers "
                            f"({', '.join(names)}).")
    return {n: lrs.get(n, default_lr(n)) for n in names}


class OptimizerComparison:
    """Runs one comparison; `stop()` from any thread ends it at the next step.

    Example: ``OptimizerComparison(model, "digits", ["sgd", "adam"], epochs=3).run().table()``
    Its rows go out on its bus (`callbacks`), from the training thread: `on_step_end` for train rows,
    `on_eval_end` for validation rows, each tagged with its ``optimizer``.
    """

    def __init__(self, model, data, optimizers=("sgd", "momentum", "rmsprop", "adam", "adamw"), *, lr=None,
                 epochs: int | None = None, steps: int | None = None, batch_size: int = 64, seed: int = 0,
                 target: float | None = None, device="auto", mode: str = "auto", log_every: int = 10,
                 callbacks=()):
        names = [o.strip().lower() for o in (optimizers.split(",") if isinstance(optimizers, str) else optimizers)]
        for name in names:
            if name not in OPTIMIZERS:
                raise unknown_choice("optimizer", name, OPTIMIZERS)
        if len(set(names)) != len(names) or not names:
            raise BigModelError("List each optimizer once, e.g. --optimizers sgd,momentum,adam.")
        if mode not in ("auto", "together", "sequential"):
            raise BigModelError(f"mode must be auto, together or sequential; got '{mode}'.")
        self.model, self.names = model, names
        self.data = as_bundle(data)
        self.device = resolve_device(device)
        self.config = TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size, seed=seed,
                                  log_every=log_every, device=str(self.device), amp="off")
        logits = preflight(model, self.data, self.config, self.device, resolve_amp("off", self.device))
        self.lrs = parse_lrs(lr, names)
        self.target, self.mode = target, mode
        self.callbacks = CallbackList(callbacks)  # dashboards subscribe here
        self.binary = self.data.task == "classification" and len(logits) == 2 and logits[-1] == 1
        self.loss_fn = F.binary_cross_entropy_with_logits if self.binary else resolve_loss(None, self.data.task)
        self._stop = threading.Event()
        self.status = "created"
        self.step = 0
        self.total_steps = plan(self.config, self.data.train.num_batches(batch_size))[1]

    def stop(self) -> None:
        self._stop.set()

    # -- the comparison -------------------------------------------------------------------------
    def run(self) -> Comparison:
        self.status = "running"
        init = copy.deepcopy(self.model.state_dict())  # every copy starts here
        notes = []
        if self.lrs == "auto":
            self.lrs = self._auto_lrs(init)
            notes.append("learning rates chosen by an LR range test per optimizer: " +
                         ", ".join(f"{n} {lr:.2g}" for n, lr in self.lrs.items()))
        mode = self.mode
        if mode in ("auto", "together"):
            reason = self._together_blocker(init)
            if reason and mode == "together":
                raise BigModelError(f"These optimizers cannot train together on this model ({reason}); "
                                    "use mode='sequential'.")
            mode = "sequential" if reason else "together"
            if reason:
                notes.append(f"trained one after another: {reason}")
        self.mode = mode
        t0 = time.perf_counter()
        history, extra = (self._together if mode == "together" else self._sequential)(init)
        wall = time.perf_counter() - t0
        results = self._results(history, extra, mode)
        if mode == "together":
            notes.append(f"{len(self.names)} copies trained together in {wall:.2f} s (one batched step for all, "
                         "so no time per optimizer)")
        self.status = "stopped" if self._stop.is_set() else "completed"
        fair = {"same_initial_weights": True, "same_batches": True, "batch_order_seed": self.config.seed,
                "initial_weights_checksum": float(sum(v.double().sum() for v in init.values()
                                                      if v.is_floating_point()))}
        comparison = Comparison(results, history, mode, fair, self.status, notes)
        # One row per optimizer in %runs (the stacked copies have no Run; the sequential Runs are not kept)
        comparison.number = register_result(comparison)
        comparison.context = {"data": self.data.name, "model": type(self.model).__name__,
                              "params": sum(p.numel() for p in self.model.parameters()),
                              "config": self.config.to_dict(), "lrs": dict(self.lrs), "elapsed": wall}
        return comparison

    def _auto_lrs(self, init) -> dict[str, float]:
        from ..inspect.lr_find import lr_find

        lrs = {}
        for name in self.names:
            probe = self._replica(init)
            found = lr_find(probe, self.data, optimizer=name, steps=60, batch_size=self.config.batch_size,
                            device=self.device, seed=self.config.seed)
            lrs[name] = found.suggestion or default_lr(name)
        return lrs

    def _replica(self, init):
        replica = copy.deepcopy(self.model).to(self.device)
        replica.load_state_dict(init)
        return replica

    def _together_blocker(self, init) -> str | None:
        """Why the copies should not train together here, or None."""
        if takes_targets(self.model):
            return "the model computes its own loss"
        if isinstance(self.data.train.X, dict) or not self.data.train.in_memory:
            return "the batches are dicts or stream from a DataLoader"
        if self.loss_fn is not F.cross_entropy and self.loss_fn is not F.mse_loss:
            return "the stacked step handles cross-entropy and MSE only"
        for module in self.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                return "BatchNorm keeps running statistics per copy"
            if isinstance(module, torch.nn.Dropout) and module.p > 0:
                return "dropout needs separate random masks per copy"
        try:
            stack = _Stack(self.model, init, 2, self.device)
            x, _ = next(iter(self.data.train.batches(2, self.device)))
            with torch.no_grad():
                stack.forward(x)
        except Exception as exc:  # anything vmap cannot trace: fall back rather than fail
            return f"vmap could not run the model ({type(exc).__name__})"
        if stack.layers is None and self.device.type == "cpu" and self.mode == "auto":
            # measured: for small models on a CPU, vmap's per-call overhead exceeds K separate steps
            return "on a CPU, separate runs are faster than vmap for this architecture"
        return None

    def _together(self, init):
        k = len(self.names)
        stack = _Stack(self.model, init, k, self.device)
        # foreach: one fused update per optimizer instead of a Python loop over its tensors (CPU default is off)
        opts = [make_optimizer(n, views, lr=self.lrs[n], foreach=True) for n, views in zip(self.names, stack.views)]
        active = [True] * k
        cfg, split = self.config, self.data.train
        epochs, total = plan(cfg, split.num_batches(cfg.batch_size))
        steps_per_epoch = split.num_batches(cfg.batch_size)
        history: list[dict] = []
        window, window_steps = Metrics(self.data.task, self.device, copies=k), 0
        diverged_at: dict[str, int] = {}
        mask = torch.ones(k, device=self.device)  # 0 for copies that diverged
        for epoch in range(epochs):
            last = min(total, (epoch + 1) * steps_per_epoch)
            for x, y in split.batches(cfg.batch_size, self.device, shuffle=True, seed=cfg.seed, epoch=epoch):
                if self._stop.is_set():
                    break
                logits = stack.forward(x)
                losses = per_copy_loss(self.loss_fn, logits, y)
                stack.zero_grad()
                (losses * mask).sum().backward()
                stack.share_grads()
                finite = torch.isfinite(losses).tolist()
                for i, opt in enumerate(opts):
                    if active[i] and finite[i]:
                        opt.step()
                    elif active[i]:  # this optimizer diverged: freeze it, the others go on
                        active[i] = False
                        mask = torch.tensor(active, dtype=losses.dtype, device=self.device)
                        diverged_at[self.names[i]] = self.step + 1
                self.step += 1
                window.update(losses, logits, y)
                window_steps += 1
                if self.step % cfg.log_every == 0 or self.step == last:
                    self._emit(history, self._train_rows(window, window_steps, epoch + 1, active, diverged_at))
                    window, window_steps = Metrics(self.data.task, self.device, copies=k), 0
                if self.step >= last:
                    break
            if self._stop.is_set():
                break
            self._emit(history, self._validate(stack, epoch + 1, active))
            if not any(active) or self.step >= total:
                break
        return history, {"diverged_at": diverged_at}

    def _validate(self, stack, epoch, active) -> list[dict]:
        val = self.data.val
        if val is None or len(val) == 0:
            return []
        metrics = Metrics(self.data.task, self.device, copies=len(self.names))
        with torch.no_grad():
            for x, y in val.batches(512, self.device):
                logits = stack.forward(x)
                metrics.update(per_copy_loss(self.loss_fn, logits, y), logits, y)
        return [{"optimizer": name, "step": self.step, "epoch": epoch, "split": "val", **row}
                for name, row, on in zip(self.names, metrics.compute(), active) if on]

    def _train_rows(self, window: Metrics, steps: int, epoch: int, active, diverged_at) -> list[dict]:
        """Rows of the copies still training, and of those that diverged within this window."""
        elapsed = time.perf_counter() - window.since
        return [{"optimizer": name, "step": self.step, "epoch": epoch, "split": "train", **row, "time": elapsed}
                for i, (name, row) in enumerate(zip(self.names, window.compute()))
                if active[i] or diverged_at.get(name, 0) > self.step - steps]

    def _sequential(self, init):
        history: list[dict] = []
        diverged_at: dict[str, int] = {}
        for name in self.names:
            if self._stop.is_set():
                break
            replica = self._replica(init)
            config = TrainConfig(**{**self.config.__dict__, "optimizer": name, "lr": self.lrs[name]})
            run = Run(replica, self.data, config, [_Relay(self, name, history)], name=name, kind="compare")
            run.run_here()
            if run.status == "failed":
                diverged_at[name] = run.step
        return history, {"diverged_at": diverged_at}

    def _emit(self, history: list[dict], rows: list[dict]) -> None:
        history.extend(rows)
        for row in rows:
            self.callbacks.emit("on_step_end" if row["split"] == "train" else "on_eval_end", self, dict(row))

    def _results(self, history, extra, mode) -> dict[str, dict]:
        results = {}
        for name in self.names:
            train = [r for r in history if r["optimizer"] == name and r["split"] == "train"]
            val = [r for r in history if r["optimizer"] == name and r["split"] == "val"]
            best = min(val, key=lambda r: r["loss"]) if val else None
            reached = next((r["step"] for r in train if self.target is not None and r["loss"] <= self.target), None)
            results[name] = {
                "lr": self.lrs[name],
                "final_loss": train[-1]["loss"] if train else math.nan,
                "val_loss": val[-1]["loss"] if val else math.nan,
                "val_accuracy": val[-1].get("accuracy", math.nan) if val else math.nan,
                "best_epoch": best["epoch"] if best else None,
                "steps_to_target": reached,
                # Trained together, the copies share every batched step: no time of their own to report
                "time_s": None if mode == "together" else
                          (train[-1]["time"] if train and "time" in train[-1] else math.nan),
                "diverged": name in extra["diverged_at"],
            }
        return results


_ELEMENTWISE = (torch.nn.ReLU, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.GELU, torch.nn.LeakyReLU, torch.nn.SiLU,
                torch.nn.ELU, torch.nn.Identity, torch.nn.Dropout)


class _Stack:
    """K copies of a model as stacked tensors [K, ...]. The stacks are the leaves autograd sees;
    copy i's optimizer updates its own slice through a view sharing the storage, so each copy
    is still updated by a real `torch.optim` optimizer."""

    def __init__(self, model, init, k: int, device):
        self.base = copy.deepcopy(model).to(device)
        self.base.load_state_dict(init)
        self.params = {n: p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()).requires_grad_()
                       for n, p in self.base.named_parameters()}
        self.buffers = {n: b.unsqueeze(0).repeat(k, *[1] * b.dim()) for n, b in self.base.named_buffers()}
        self.views = [[stacked.detach()[i].requires_grad_() for stacked in self.params.values()] for i in range(k)]
        self.layers = _mlp_layers(self.base)
        self.k = k

    def forward(self, x):
        """Outputs of all copies on one batch: [K, batch, ...]."""
        if self.layers is None:  # any architecture: one vmapped functional call
            def one(state, inputs):
                out = functional_call(self.base, state, (inputs,))
                return out[0] if isinstance(out, (tuple, list)) else out

            return vmap(one, in_dims=(0, None))({**self.params, **self.buffers}, x)
        h = x.expand(self.k, *x.shape)  # an MLP: batched matrix products, no per-call overhead
        for kind, item in self.layers:
            if kind == "linear":
                weight, bias = self.params[f"{item}.weight"], self.params.get(f"{item}.bias")
                h = torch.bmm(h, weight.transpose(1, 2)) if bias is None else \
                    torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            elif kind == "flatten":
                h = h.flatten(2)
            else:
                h = item(h)
        return h

    def zero_grad(self):
        for stacked in self.params.values():
            stacked.grad = None

    def share_grads(self):
        for i, views in enumerate(self.views):
            for view, stacked in zip(views, self.params.values()):
                view.grad = None if stacked.grad is None else stacked.grad[i]


def _mlp_layers(model) -> list | None:
    """The layers of an nn.Sequential of Linear, Flatten and element-wise activations, else None."""
    if not isinstance(model, torch.nn.Sequential):
        return None
    layers = []
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Linear):
            layers.append(("linear", name))
        elif isinstance(module, torch.nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            layers.append(("flatten", None))
        elif isinstance(module, _ELEMENTWISE) and not (isinstance(module, torch.nn.Dropout) and module.p > 0):
            layers.append(("fn", module))
        else:
            return None
    return layers


def per_copy_loss(loss_fn, out, y):
    """The loss of each copy, [K], from outputs [K, batch, ...] — without vmap for the usual losses."""
    k = out.shape[0]
    if loss_fn is F.cross_entropy and out.dim() == 3:
        return F.cross_entropy(out.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1).mean(1)
    if loss_fn is F.mse_loss and out[0].numel() == y.numel():
        return (out - y.reshape(out.shape[1:])).pow(2).flatten(1).mean(1)
    return vmap(loss_fn, in_dims=(0, None))(out, y)


class _Relay(Callback):
    """Trainer callback of the sequential path: tags rows with the optimizer, passes them on,
    and forwards a Stop to the run at the next step."""

    def __init__(self, comparison: OptimizerComparison, name: str, history: list[dict]):
        self.comparison, self.name, self.history = comparison, name, history

    def _pass(self, logs):
        self.comparison._emit(self.history, [{"optimizer": self.name, **logs}])

    def on_step_end(self, run, logs):
        self.comparison.step += 1
        if self.comparison._stop.is_set():
            run.stop()
        if "loss" in logs:
            self._pass({k: logs[k] for k in ("step", "epoch", "split", "loss", "accuracy", "time") if k in logs})

    def on_eval_end(self, run, logs):
        self._pass({k: logs[k] for k in ("step", "epoch", "split", "loss", "accuracy") if k in logs})
