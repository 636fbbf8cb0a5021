"""What `%compress` measures, and the report it hands back: every stage of a compression is
measured the same way — parameters, a weights file really written, latency, test metrics.

Every stage row: ``stage, params, nonzero, size_bytes`` (a safetensors file really written),
``format, size_ratio`` (original ÷ this), ``latency_ms`` (median of timed runs after warm-up),
``speedup`` (original ÷ this, both timed side by side: alternating runs in one loop, medians),
``reference_ms`` (the original's median in that same loop), ``batch, threads, accuracy, loss``
(test split), ``real`` and ``note``. A ``--distill`` stage also gets a baseline row (the student
trained alone with the same budget) in ``report.baselines``. A row is ``real=False`` when its gain is
only simulated (unstructured pruning: zeros that dense kernels still store and multiply). The engine
never prints; the UI (`ui.compress`) draws the report.
"""
from __future__ import annotations

import contextlib
import json
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core import checkpoint as ckpt
from ..core.batches import LABEL_KEYS
from ..core.errors import BigModelError
from ..core.forward import resolve_loss
from ..core.metrics import evaluate_model
from .distill import logits_of
from .steps import fmt_bytes, is_plain


# -- the report -----------------------------------------------------------------------------------
@dataclass
class CompressionReport:
    """One row per stage (original, then after each step). Fields (contract): ``stages``,
    ``model`` (the compressed model), ``table()``, ``save(path)``; plus ``notes`` (how things were
    measured, backend choices), ``runs`` (stage label → training `Run`), ``steps``, and ``baselines``
    (one row per ``Distill`` step: the same student trained alone with the same epochs, lr, batches
    and initial weights; ``baseline`` is the last one, with ``distilled_accuracy`` beside its own).

    Example: ``report.table()[["stage", "size_bytes", "latency_ms", "accuracy", "real"]]``
    """

    stages: list[dict]
    model: nn.Module
    notes: list[str] = field(default_factory=list)
    runs: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    baselines: list[dict] = field(default_factory=list)

    @property
    def baseline(self) -> dict | None:
        """The last distillation's baseline row (its student trained alone, same budget), or None."""
        return self.baselines[-1] if self.baselines else None

    def table(self):
        """A pandas DataFrame of the rows (the list of row dicts without pandas)."""
        try:
            import pandas as pd
        except ImportError:
            return [dict(r) for r in self.stages]
        return pd.DataFrame(self.stages)

    def save(self, path) -> Path:
        """Write the compressed model's weights as safetensors with the stage rows as metadata;
        quantized weights are stored as their int8 values plus scales. Example: ``report.save("mlp-int8")``"""
        path = _with_suffix(path)
        meta = {"stages": [{k: _json(v) for k, v in r.items()} for r in self.stages],
                "baselines": [{k: _json(v) for k, v in r.items()} for r in self.baselines],
                "steps": [s.label() for s in self.steps], "model": type(self.model).__name__}
        write_weights(self.model, path, meta)
        return path

    def text(self) -> str:
        """The stage table as fixed-width text."""
        rows = [{"stage": r["stage"], "params": f"{r['params']:,}", "nonzero": f"{r['nonzero']:,}",
                 "size": fmt_bytes(r["size_bytes"]), "×smaller": f"{r['size_ratio']:.2f}",
                 "latency": "—" if r["latency_ms"] is None else f"{r['latency_ms']:.3g} ms",
                 "×faster": "—" if r["speedup"] is None else f"{r['speedup']:.2f}",
                 "accuracy": "—" if r.get("accuracy") is None else f"{r['accuracy']:.2%}",
                 "loss": "—" if r.get("loss") is None else f"{r['loss']:.4f}",
                 "real": "baseline" if r.get("baseline") else "real" if r["real"] else "SIMULATED"}
                for r in self.rows()]
        cols = list(rows[0]) if rows else []
        widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(r[c].ljust(w) for c, w in zip(cols, widths)) for r in rows]
        return "\n".join(lines + [f"- {r['stage']}: {r['note']}" for r in self.rows()] + [f"* {n}" for n in self.notes])

    def rows(self) -> list[dict]:
        """The stage rows with each distillation's baseline row right after its distilled stage."""
        out = []
        for r in self.stages:
            out.append(r)
            out += [b for b in self.baselines if b.get("baseline_of") == r["stage"]]
        return out + [b for b in self.baselines if b not in out]

    def __repr__(self) -> str:
        last = self.stages[-1] if self.stages else {}
        faster = "" if last.get("speedup") is None else f", {last['speedup']:.2f}× faster"
        return (f"<CompressionReport {len(self.stages)} stages: {last.get('stage', '')}, "
                f"{last.get('size_ratio', 1):.2f}× smaller{faster}>")


# -- measuring ------------------------------------------------------------------------------------
class StageMeter:
    """Measures every stage the same way, the ratios relative to the first stage measured: latency
    on `x` (`example`, else the first `latency_batch` inputs of the data; None: not measured),
    accuracy and loss on `split` (the data's test, else val, split; None: not measured).

    `reference`: the original model, kept unchanged, which every later stage is timed against side
    by side (alternating runs in one loop after a warm-up of both, medians), so a stage's speed-up
    never compares timings taken at different moments of a noisy machine. Without it (an in-place
    compression of a model that cannot be copied) the speed-up divides by the first row's median."""

    def __init__(self, bundle, example, latency_batch: int, device, repeats: int | None = None,
                 reference: nn.Module | None = None):
        self.x = _timing_input(bundle, example, latency_batch, device)
        self.split, split_name = _eval_split(bundle)
        self.task, self.device, self.repeats = None if bundle is None else bundle.task, device, repeats
        self.reference = reference
        self.threads = t = torch.get_num_threads()
        self.base: dict = {}
        how = ("each stage timed alternately with the original in one loop (speed-up = the original's median ÷ "
               "the stage's, from that loop)" if reference is not None
               else "speed-up = the first row's median ÷ the stage's (the original could not be kept to time it "
                    "side by side)")
        self.notes = [
            f"latency: median of timed forward passes (no_grad) after a warm-up (≥{WARMUP} runs per model), {how}; "
            f"batch {_first(self.x).shape[0]}, {t} CPU thread{'s' if t != 1 else ''}, on {device}; "
            "shared machines are noisy — compare ratios within one report"
            if self.x is not None else "latency not measured: pass data or example= (an input batch)",
            f"accuracy and loss on the {split_name} split ({len(self.split)} samples)" if self.split is not None
            else "accuracy not measured: pass data with a test split"]

    def row(self, label: str, model: nn.Module, runner: nn.Module, real: bool, note: str) -> dict:
        """The row of `model` as it is now; `runner` is what evaluation and timing call (the model,
        or the model behind an input cast)."""
        model.eval()
        params, nonzero = count_weights(model)
        size, fmt = _file_size(model)
        ms = ref_ms = None
        if self.x is not None:
            with _quiet():
                if self.base and self.reference is not None:
                    with _eval_mode(self.reference):
                        times, _ = time_side_by_side([self.reference, runner.eval()], self.x, repeats=self.repeats)
                    labels = ["the original", "this stage"]
                else:
                    times, _ = time_side_by_side([runner.eval()], self.x, repeats=self.repeats)
                    labels = ["this stage"]
            medians = [statistics.median(t) * 1e3 for t in times]
            ms = medians[-1]
            ref_ms = medians[0] if len(medians) == 2 else ms if not self.base else self.base["ms"]
            note += disturbed(labels, times)
        accuracy = loss = None
        if self.split is not None:
            with _quiet():
                metrics = evaluate_model(runner, self.split, batch_size=256, device=self.device,
                                         loss_fn=resolve_loss(None, self.task), task=self.task)
            accuracy, loss = metrics.get("accuracy"), metrics["loss"]
        if not self.base:
            self.base.update(size=size, ms=ms)
        return {"stage": label, "params": params, "nonzero": nonzero, "size_bytes": size, "format": fmt,
                "size_ratio": self.base["size"] / size, "latency_ms": ms,
                "speedup": None if ms is None or not ref_ms else ref_ms / ms, "reference_ms": ref_ms,
                "batch": None if self.x is None else int(_first(self.x).shape[0]), "threads": self.threads,
                "accuracy": accuracy, "loss": loss, "real": bool(real), "note": note}


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """`model` in eval mode for the block, its own mode restored afterwards (it is the user's model)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class CastInputs(nn.Module):
    """Runs a half-precision model on float32 inputs: casts floating inputs to the model's dtype
    and returns float32 logits (what evaluation and timing of an fp16/bf16 model need)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = model, dtype

    def forward(self, *args, **kwargs):
        cast = [a.to(self.dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        named = {k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}
        return logits_of(self.inner(*cast, **named)).float()


def _timing_input(bundle, example, latency_batch, device):
    if example is not None:
        if not torch.is_tensor(example):
            raise BigModelError(f"example must be an input batch (a tensor); got {type(example).__name__}.")
        return example.to(device)
    if bundle is None:
        return None
    split = next(s for s in (bundle.test, bundle.val, bundle.train) if s is not None and len(s))
    batch = next(iter(split.batches(latency_batch, device)))
    if isinstance(batch, Mapping):  # the model's inputs: timing measures the forward pass, not the loss
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    return batch[0]


def _first(x) -> torch.Tensor:
    """The timing input's first tensor (it is a tensor, or a dict of the model's keyword inputs)."""
    return next(iter(x.values())) if isinstance(x, Mapping) else x


def _eval_split(bundle):
    if bundle is None:
        return None, None
    for name in ("test", "val"):
        split = getattr(bundle, name)
        if split is not None and len(split):
            return split, name
    return None, None


@contextlib.contextmanager
def _quiet():
    """Quantized kernels warn about deprecated quantized-tensor functions on every call: not news here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage.*")
        yield


WARMUP = 3  # untimed runs per model before timing: first calls carry one-off costs (allocation, packing, threads)


def measure_latency(model: nn.Module, x: torch.Tensor, *, warmup: int = WARMUP, repeats: int | None = None,
                    budget_s: float = 1.0) -> tuple[float, int]:
    """(median ms, number of timed runs) of ``model(x)`` under ``no_grad`` after `warmup` untimed
    runs; `repeats` fixed, or (None) at least 5 and up to 50 runs within about `budget_s` seconds.

    Example: ``ms, n = measure_latency(model.eval(), torch.randn(64, 64))``
    """
    (ms,), n = measure_side_by_side([model], x, warmup=warmup, repeats=repeats, budget_s=budget_s)
    return ms, n


def disturbed(labels, times) -> str:
    """A note for a stage whose timed runs spread too far to trust (a busy machine), else ''.
    A model's median over 3× its fastest run means most runs waited for a CPU."""
    bad = [(label, min(t) * 1e3, statistics.median(t) * 1e3) for label, t in zip(labels, times)
           if statistics.median(t) > 3 * min(t)]
    if not bad:
        return ""
    parts = ", ".join(f"{label} {lo:.3g} ms at best but {med:.3g} ms in the median" for label, lo, med in bad)
    return f"; timing disturbed ({parts}): the machine was busy, rerun before trusting this speed-up"


def measure_side_by_side(models, x, *, warmup: int = WARMUP, repeats: int | None = None, budget_s: float = 1.0,
                         warmup_s: float = 0.05) -> tuple[list[float], int]:
    """([median ms of each model], rounds): `models` timed side by side on the same input. Each model
    first runs `warmup` times untimed (and for at least `warmup_s` seconds, at most 100 runs), so
    one-off costs stay out of the timings; then every round times each model once, in alternating
    order (A B, B A, …), so drifts of a shared machine hit all of them alike. `repeats` rounds, or
    (None) at least 5 and up to 50 within about `budget_s` seconds. Ratios of the medians are the
    speed-ups to trust. Example: ``(t_dense, t_small), n = measure_side_by_side([dense, small], x)``
    """
    times, rounds = time_side_by_side(models, x, warmup=warmup, repeats=repeats, budget_s=budget_s,
                                      warmup_s=warmup_s)
    return [statistics.median(t) * 1e3 for t in times], rounds


def time_side_by_side(models, x, *, warmup: int = WARMUP, repeats: int | None = None, budget_s: float = 1.0,
                      warmup_s: float = 0.05) -> tuple[list[list[float]], int]:
    """The timed runs themselves (seconds, one list per model) and the rounds; see `measure_side_by_side`."""
    forwards = [(lambda m=m: m(**x)) if isinstance(x, Mapping) else (lambda m=m: m(x)) for m in models]
    sync = torch.cuda.synchronize if _first(x).device.type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in forwards]
    rounds = 0
    with torch.no_grad():
        for forward in forwards:
            until, n = time.perf_counter() + warmup_s, 0
            while n < warmup or (n < 100 and time.perf_counter() < until):
                forward()
                n += 1
            sync()
        end = time.perf_counter() + budget_s
        while True:
            order = range(len(forwards)) if rounds % 2 == 0 else reversed(range(len(forwards)))
            for i in order:
                t0 = time.perf_counter()
                forwards[i]()
                sync()
                times[i].append(time.perf_counter() - t0)
            rounds += 1
            if repeats is not None:
                if rounds >= repeats:
                    break
            elif rounds >= 50 or (rounds >= 5 and time.perf_counter() > end):
                break
    return times, rounds


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A tensor's values as an ordinary float tensor (dequantized when quantized)."""
    if is_plain(t):
        return t.detach()
    return t.detach().dequantize() if hasattr(t, "dequantize") else t.detach()


def _weights(model: nn.Module):
    """(name, values) of every weight, each counted once: parameters, plus the packed int8 weights
    of torch.ao dynamic-quantized Linear layers (which are not parameters)."""
    seen = set()
    for mname, module in model.named_modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            w, b = module.weight(), module.bias()
            yield f"{mname}.weight", w.dequantize()
            if b is not None:
                yield f"{mname}.bias", b.detach()
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield f"{mname}.{pname}" if mname else pname, _dense(p)


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), quantized weights included. Example: ``count_weights(model)``"""
    total = nonzero = 0
    with torch.no_grad():
        for _, w in _weights(model):
            total += w.numel()
            nonzero += int(torch.count_nonzero(w))
    return total, nonzero


# -- weight files ---------------------------------------------------------------------------------
def flat_state(model: nn.Module) -> tuple[dict, dict, str]:
    """(plain tensors, metadata, format) for safetensors: quantized tensors become their int8
    values plus scales (and zero points), tensor subclasses (torchao) their inner tensors."""
    tensors, meta, kinds, storages = {}, {}, set(), set()

    def put(name, t):
        t = t.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr()
        t = t.clone() if (t.numel() and ptr in storages) else t.contiguous()
        storages.add(ptr)
        tensors[name] = t

    def walk(name, v):
        if v is None:
            return
        if isinstance(v, torch.Tensor):
            if is_plain(v):
                put(name, v)
            elif v.is_quantized:  # torch.ao: int8 values + scale/zero point (per tensor or per channel)
                kinds.add("torch.ao")
                put(name, v.int_repr())
                per_channel = v.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                put(f"{name}.scale", v.q_per_channel_scales() if per_channel else torch.tensor([v.q_scale()]))
                put(f"{name}.zero_point",
                    v.q_per_channel_zero_points() if per_channel else torch.tensor([v.q_zero_point()]))
                meta[name] = {"quantized": str(v.dtype), "qscheme": str(v.qscheme()), "shape": list(v.shape)}
            elif hasattr(v, "__tensor_flatten__"):  # torchao tensor subclasses
                kinds.add("torchao")
                inner, _ = v.__tensor_flatten__()
                meta[name] = {"subclass": type(v).__name__, "shape": list(v.shape), "dtype": str(v.dtype)}
                for attr in inner:
                    walk(f"{name}.{attr}", getattr(v, attr))
            else:
                put(name, v.as_subclass(torch.Tensor))
        elif isinstance(v, (tuple, list)):
            for i, item in enumerate(v):
                walk(f"{name}.{i}", item)
        else:
            meta[name] = str(v)  # e.g. the dtype entry of packed params

    for name, value in model.state_dict().items():
        walk(name, value)
    fmt = "safetensors" if not kinds else f"safetensors (int8 + scales from {' & '.join(sorted(kinds))})"
    return tensors, meta, fmt


def write_weights(model: nn.Module, path, meta: dict | None = None) -> str:
    """Write the model's weights to `path` (``.safetensors`` added if missing, written atomically) and
    return the format written:
    ordinary models through `checkpoint.save_weights` (loadable with `load_weights`), quantized ones
    as their int8 values plus scales. Example: ``write_weights(model, "/tmp/m.safetensors")``"""
    path = _with_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if all(isinstance(v, torch.Tensor) and is_plain(v) for v in state.values()):
        ckpt.save_weights(model, path, meta)
        return "safetensors"
    from safetensors.torch import save_file

    tensors, qmeta, fmt = flat_state(model)
    header = {"format_version": str(ckpt.FORMAT_VERSION), "bigmodel_nb": json.dumps(meta or {}),
              "bigmodel_nb.quantized": json.dumps(qmeta)}
    ckpt.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return fmt


def _file_size(model: nn.Module) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="bmnb-compress-") as tmp:
        path = Path(tmp) / "stage.safetensors"
        fmt = write_weights(model, path)
        return path.stat().st_size, fmt


def _with_suffix(path) -> Path:
    path = Path(path)
    return path if path.suffix == ckpt.SUFFIX else path.with_name(path.name + ckpt.SUFFIX)


def _json(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v
