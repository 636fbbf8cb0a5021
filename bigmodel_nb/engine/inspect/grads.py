"""Gradient flow: per-layer gradient norms and update/weight ratios over training steps, gradient
histograms, dead ReLUs and the first non-finite gradient — recorded on the device at a bounded cost.

A *layer* is a module that owns parameters (weight and bias together), named by its module path
and type, e.g. ``layers.0 (Linear)``, listed in the order of the forward pass. Norms are stacked
into one small tensor per recorded step and copied to the host once per logging tick, never read
with ``.item()`` per parameter. Gradients are recorded after backward and before clipping and the
optimizer step: the raw (unclipped; under AMP, unscaled) gradients.
"""
from __future__ import annotations

import copy
import fnmatch
import math
import re
import threading

import numpy as np
import torch
from torch import nn

from ..core.callbacks import Callback
from ..core.config import TrainConfig
from ..core.errors import BigModelError
from ..core.run import Run
from .grad_report import GradientReport, diagnose

__all__ = ["GradientRecorder", "GradientReport", "diagnose", "grads", "select_layers"]


def select_layers(model: nn.Module, pattern: str | None = None) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every module owning trainable parameters, in registration order,
    filtered by `pattern`: comma-separated names (a module and everything under it), globs or
    regular expressions, matched on module paths and parameter names.

    Example: ``select_layers(model, "encoder.*")``
    """
    seen: set[int] = set()
    found = []
    for path, module in model.named_modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        if own:
            seen.update(id(p) for _, p in own)
            found.append((path, module, [f"{path}.{n}" if path else n for n, _ in own]))
    if pattern is not None and str(pattern).strip():
        parts = [p.strip() for p in str(pattern).split(",") if p.strip()]
        chosen = [f for f in found if any(matches_pattern(p, f[0], f[2]) for p in parts)]
        if not chosen:
            names = ", ".join(path or "(root)" for path, *_ in found[:12]) + (" …" if len(found) > 12 else "")
            raise BigModelError(f"No layer matches --layers '{pattern}'; this model's layers are: {names}.")
        found = chosen
    if not found:
        raise BigModelError("The model has no trainable parameters, so it has no gradients to inspect.")
    return [(path, module) for path, module, _ in found]


def matches_pattern(pattern: str, path: str, param_names: list[str]) -> bool:
    names = [path, *param_names]
    if any(ch in pattern for ch in "^$+()|\\{}"):  # a regular expression
        try:
            return any(re.search(pattern, n) for n in names)
        except re.error:
            raise BigModelError(f"--layers '{pattern}' is not a valid regular expression or glob.") from None
    if any(ch in pattern for ch in "*?["):
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)
    return any(n == pattern or n.startswith(pattern + ".") for n in names)


def layer_name(path: str, module: nn.Module) -> str:
    """``layers.0 (Linear)``; a root module with its own parameters is just its type."""
    return f"{path} ({type(module).__name__})" if path else type(module).__name__


class GradientRecorder(Callback):
    """Records gradient flow while a `Run` trains. Example: ``Run(model, "digits").run_here([GradientRecorder(model)])``

    `every`: record every N-th step; `layers`: pattern (see `select_layers`); `max_steps_kept`:
    older records are thinned (every other one dropped) beyond this. Dead-ReLU counting watches
    every ``nn.ReLU`` module (not ``F.relu`` calls). All hooks are removed when the run ends.
    """

    def __init__(self, model: nn.Module, every: int = 1, layers: str | None = None, histogram_bins: int = 50,
                 max_steps_kept: int = 2000, histogram_values: int = 10_000):
        if not isinstance(every, int) or every < 1:
            raise BigModelError(f"Gradients are recorded every N steps (--watch-every N), N a whole number ≥ 1; "
                                f"got {every!r}.")
        if max_steps_kept < 4:
            raise BigModelError(f"max_steps_kept must be at least 4; got {max_steps_kept}.")
        self.model, self.every = model, every
        self.histogram_bins, self.histogram_values = histogram_bins, histogram_values
        self.max_steps_kept = max_steps_kept
        self._modules = select_layers(model, layers)
        self.layers = [layer_name(p, m) for p, m in self._modules]
        self.relus = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.steps: list[int] = []  # each flush with new rows emits on_gradients on the run's bus
        self._rows: list[np.ndarray] = []  # per recorded step: [2, layers] = norms, update ratios
        self._lock = threading.Lock()
        self._pending, self._current = [], None  # device records; (step, norms) between backward and step end
        self._samples = self._sample_index = self._sample_step = self.histogram_step = None
        self._hist_values: dict[str, np.ndarray] = {}
        # Per (ReLU path, call): summed output per unit and samples seen (device); host copy of the dead fraction.
        self._fired, self._relu_samples, self._dead, self._calls = {}, {}, {}, {}
        self._hooks, self._order = [], []
        self._ready = self._armed = self._scaler = False
        self.first_nonfinite: tuple[int, str] | None = None
        self.status, self.error = "running", None

    # -- hooks into the trainer ---------------------------------------------------------------------
    def on_train_begin(self, run, logs):
        self._scaler = bool(run.amp.use_scaler)  # skipped fp16 steps have inf grads by design
        self._log_every, self._total = run.config.log_every, logs["total_steps"]
        for path, module in self._modules:  # learn the forward order on the first step
            self._hooks.append(module.register_forward_pre_hook(lambda m, a, path=path: self._seen(path)))
        for path, module in self.relus:
            self._hooks.append(module.register_forward_hook(lambda m, a, out, path=path: self._relu(path, m, out)))
        self._arm(run)

    def on_after_backward(self, run, logs):
        step = logs["step"]
        if step % self.every:
            return
        if not self._ready:
            self._prepare()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        with torch.no_grad():  # per-parameter norms stay on the device; layers are summed on the host
            norms = self._norms(grads + self._params)
            torch._foreach_copy_(self._before, self._params)  # for ||Δθ|| after the optimizer step
            if self._sample_step is None or step - self._sample_step >= self._log_every or step >= self._total:
                self._samples = torch.cat([g.reshape(-1)[i] if i is not None else g.reshape(-1)
                                           for g, i in zip(grads, self._sample_index)])
                self._sample_step = step
        self._current = (step, norms)

    def on_step_end(self, run, logs):
        if self._current is not None and self._current[0] == logs["step"]:
            self._close_record(done=True)
        if "loss" in logs and self.flush():  # the logging tick: one host copy for everything since the last
            run.emit("on_gradients", {"step": logs["step"], "recorded": len(self.steps)})
        self._arm(run)

    def on_train_end(self, run, logs):
        self._close_record(done=False)
        flushed = self.flush()
        self.close()
        self.status, self.error = run.status, run.error
        run.gradients = self.report()  # where `%%train --watch-grads` finds it
        if flushed:
            run.emit("on_gradients", {"step": run.step, "recorded": len(self.steps)})

    def close(self) -> None:
        """Remove every hook this recorder added (safe to call twice)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    # -- recording ------------------------------------------------------------------------------------
    def _seen(self, path: str) -> None:
        if not self._ready and path not in self._order:
            self._order.append(path)

    def _arm(self, run) -> None:
        self._armed = (run.step + 1) % self.every == 0  # is the next forward a recorded step?
        self._calls.clear()

    def _relu(self, path: str, module: nn.Module, out) -> None:
        if not (self._armed and module.training and torch.is_grad_enabled() and torch.is_tensor(out)):
            return
        call = self._calls.get(path, 0)  # one nn.ReLU reused in forward counts per call
        self._calls[path] = call + 1
        out = out.detach()
        # A unit is a channel of a conv feature map, else a feature (last dim); ReLU outputs are ≥ 0,
        # so a unit fired on some sample exactly when its summed output is > 0.
        units = out.transpose(0, 1).flatten(1) if out.dim() >= 4 else out.reshape(-1, out.shape[-1]).T
        total = units.sum(1, dtype=torch.float32)
        key = (path, call)
        seen = self._fired.get(key)
        if seen is None or seen.shape != total.shape:
            self._fired[key], self._relu_samples[key] = total, 0
        else:
            seen += total
        self._relu_samples[key] += out.shape[0] if out.dim() > 1 else 1

    def _prepare(self) -> None:
        """Fix the layer order (forward order, then layers never called) and the index tensors."""
        rank = {p: i for i, p in enumerate(self._order)}
        self._modules.sort(key=lambda pm: rank.get(pm[0], len(rank)))
        self.layers = [layer_name(p, m) for p, m in self._modules]
        for handle in self._hooks[:len(self._modules)]:  # the order is known: drop the pre-hooks
            handle.remove()
        del self._hooks[:len(self._modules)]
        self._params, owner, seen = [], [], set()
        for i, (_, module) in enumerate(self._modules):
            for p in module.parameters(recurse=False):
                if p.requires_grad and id(p) not in seen:  # a tied weight counts for its first owner
                    seen.add(id(p))
                    self._params.append(p)
                    owner.append(i)
        device = self._params[0].device
        self._starts = np.searchsorted(owner, np.arange(len(self._modules)))  # params are grouped by layer
        # fp16/bf16 norms are taken in float32 (float64 tensors cannot be narrowed to it)
        dtypes = {p.dtype for p in self._params}
        low = bool(dtypes & {torch.float16, torch.bfloat16})
        self._norm_dtype = torch.float32 if low and torch.float64 not in dtypes else None
        self._same_dtype = len(dtypes) == 1 or self._norm_dtype is not None
        self._wide = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
        self._before = [p.detach().clone() for p in self._params]
        self._sample_index, self._sample_sizes = [], [0] * len(self._modules)
        gen = torch.Generator().manual_seed(0)
        totals = [sum(p.numel() for p, o in zip(self._params, owner) if o == i) for i in range(len(self._modules))]
        for p, o in zip(self._params, owner):
            bound = self.histogram_values  # values sampled per layer, shared in proportion to the params' sizes
            share = p.numel() if totals[o] <= bound else max(1, p.numel() * bound // totals[o])
            index = None if share >= p.numel() else torch.randperm(p.numel(), generator=gen)[:share].to(device)
            self._sample_index.append(index)
            self._sample_sizes[o] += share
        self._ready = True

    def _norms(self, tensors) -> torch.Tensor:
        norms = torch._foreach_norm(tensors, 2, dtype=self._norm_dtype)
        return torch.stack(norms if self._same_dtype else [n.to(self._wide) for n in norms])

    def _close_record(self, done: bool) -> None:
        if self._current is None:
            return
        step, norms = self._current
        self._current = None
        if done:
            with torch.no_grad():
                torch._foreach_sub_(self._before, self._params)  # in place: -Δθ, no new allocation
                delta = self._norms(self._before)
        else:  # the run ended inside this step (e.g. a non-finite loss): no update to measure
            delta = torch.full_like(norms[:len(self._params)], math.nan)
        self._pending.append((step, torch.cat([norms, delta])))  # [grad, weight, Δ weight] norms per parameter

    def flush(self) -> bool:
        """Copy the records kept on the device to the host (one transfer) and check for NaN/Inf;
        True if there was anything new."""
        if not self._pending and self._samples is None:
            return False
        steps, relus = [s for s, _ in self._pending], list(self._fired.items())
        parts = [t for _, t in self._pending] + ([self._samples] if self._samples is not None else [])
        flat = torch.cat(parts + [total for _, total in relus])  # mixed dtypes promote to one float type
        host = (flat if flat.dtype in (torch.float32, torch.float64) else flat.float()).cpu().numpy()  # the one copy
        per_param = host[:len(steps) * 3 * len(self._params)].reshape(len(steps), 3, len(self._params))
        if self._samples is not None:
            self._keep_samples(host[per_param.size:per_param.size + self._samples.numel()])
        with np.errstate(all="ignore"):  # layer norm = sqrt of its parameters' summed squares
            layer = np.sqrt(np.add.reduceat(per_param.astype(np.float64) ** 2, self._starts, axis=-1))
            block = np.stack([layer[:, 0], layer[:, 2] / np.maximum(layer[:, 1], np.finfo(np.float64).tiny)], 1)
        start, dead = len(host) - sum(total.numel() for _, total in relus), {}
        for key, total in relus:  # a unit never fired when its summed output is 0
            units = host[start:start + total.numel()]
            start += total.numel()
            dead[key] = (float((units <= 0).mean()), self._relu_samples[key])
        self._dead = dead  # replaced whole: the render thread may be reading the old one
        self._pending, self._samples = [], None
        for step, row in zip(steps, block):
            bad = ~np.isfinite(row[0])
            if self.first_nonfinite is None and bad.any() and not self._scaler:
                self.first_nonfinite = (step, self.layers[int(np.argmax(bad))])
        with self._lock:
            self.steps.extend(steps)
            self._rows.extend(block)
            while len(self.steps) > self.max_steps_kept:  # thin older records, always keeping the newest
                keep = sorted(set(range(0, len(self.steps), 2)) | {len(self.steps) - 1})
                self.steps = [self.steps[i] for i in keep]
                self._rows = [self._rows[i] for i in keep]
        return True

    def _keep_samples(self, values: np.ndarray) -> None:
        start = 0
        for name, size in zip(self.layers, self._sample_sizes):
            part = values[start:start + size]
            start += size
            if np.isfinite(part).all():  # histograms show the latest finite gradients
                self._hist_values[name] = part.astype(np.float32)
        self.histogram_step = self._sample_step

    # -- reading ----------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(layers, steps, norms [steps × layers]) recorded so far; safe from another thread."""
        with self._lock:
            steps, rows = list(self.steps), list(self._rows)
        norms = np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(self.layers)))
        return list(self.layers), np.asarray(steps, dtype=np.int64), norms

    def flags(self) -> list[dict]:
        """The flags of what was recorded so far (cheap: no histograms). Example: ``recorder.flags()``"""
        layers, steps, norms = self.snapshot()
        return diagnose(layers, steps, norms, self._dead_named(), self.first_nonfinite, self.status, self.error)

    def report(self) -> GradientReport:
        """The report of what was recorded so far. Example: ``recorder.report().flags``"""
        with self._lock:
            steps, rows = list(self.steps), np.stack(self._rows) if self._rows else np.zeros((0, 2, len(self.layers)))
        norms = {name: rows[:, 0, i].tolist() for i, name in enumerate(self.layers)}
        ratios = {name: rows[:, 1, i].tolist() for i, name in enumerate(self.layers)}
        histograms = {name: np.histogram(v, bins=self.histogram_bins) for name, v in self._hist_values.items()}
        dead = self._dead_named()
        flags = diagnose(self.layers, steps, rows[:, 0], dead, self.first_nonfinite, self.status, self.error)
        return GradientReport(list(self.layers), steps, norms, ratios, histograms, flags,
                              {k: v[0] for k, v in dead.items()}, self.histogram_step, self.status, self.error)

    def _dead_named(self) -> dict[str, tuple[float, int]]:
        return {f"{path} (ReLU)" + (f" call {call + 1}" if call else ""): v for (path, call), v in self._dead.items()}


def grads(model: nn.Module, data, *, steps: int = 20, layers: str | None = None, inplace: bool = False,
          optimizer="adam", lr: float | None = None, batch_size: int = 64, loss=None, device="auto",
          seed: int = 0, every: int = 1) -> GradientReport:
    """Train `steps` steps (on a deep copy unless `inplace`) while recording gradient flow.

    Runs in full precision (no AMP) and without validation. The user's model — weights, mode and
    the global random state — is left as it was unless `inplace`.
    Example: ``report = bigmodel_nb.grads(model, "digits", steps=50); report.flags``
    """
    if not isinstance(model, nn.Module):
        raise BigModelError(f"Expected a torch.nn.Module to inspect, got {type(model).__name__}.")
    if not isinstance(steps, int) or steps < 1:
        raise BigModelError(f"--steps must be a whole number ≥ 1; got {steps!r}.")
    select_layers(model, layers)  # a bad pattern fails before anything is copied
    target = model if inplace else copy.deepcopy(model)
    was_training = model.training
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, loss=loss, device=device,
                         amp="off", seed=seed, val_every=steps + 1, log_every=min(10, steps))
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):  # training seeds the global RNG; the user's streams stay as they were
        run = Run(target, data, config, name="grads")
        recorder = GradientRecorder(target, every=every, layers=layers)
        try:
            run.run_here([recorder])
        finally:
            recorder.close()
            target.train(was_training)
    return getattr(run, "gradients", None) or recorder.report()
