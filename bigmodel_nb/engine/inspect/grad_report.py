"""The result of a gradient-flow recording and its flags: `GradientReport` and `diagnose`.

Plain numbers in, plain-English sentences out; `grads.py` does the recording on the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Thresholds of the flags (documented in GradientReport).
VANISHING_RATIO = 1e-3  # first layer's median norm below this fraction of the last layer's
EXPLODING_NORM = 1e3  # any gradient norm above this
GROWTH_FACTOR = 10.0  # or a layer's norm grew this much over the recorded window ...
GROWTH_FLOOR = 1.0  # ... and ended above this (tiny norms growing are not an explosion)
DEAD_FRACTION = 0.5  # a ReLU whose units never fired on the recorded samples, above this fraction
MIN_DEAD_SAMPLES = 16  # fewer recorded samples than this say nothing about dead units


@dataclass
class GradientReport:
    """What `grads()` (or a `GradientRecorder`) saw. Example: ``bigmodel_nb.grads(model, "digits").flags``

    ``norms`` and ``update_ratios``: layer -> one float per recorded step (``steps``);
    ``histograms``: layer -> (counts, bin_edges) of the latest finite gradient values (≤ 10k sampled);
    ``dead_units``: ReLU -> fraction of its units that never fired; ``flags``: dicts with ``kind``
    (vanishing | exploding | dead_relu | nonfinite), ``layer`` and a one-sentence ``message``.
    Flags: vanishing when the first layer's median norm is < 1e-3 × the last layer's; exploding
    when a norm exceeds 1e3, or a layer's norm grew > 10× over the window and ended above 1;
    dead_relu when > 50% of a ReLU's units output zero for every recorded sample (≥ 16 samples);
    nonfinite names the first layer, in forward order, whose gradient became NaN or Inf.
    """

    layers: list[str]
    steps: list[int]
    norms: dict[str, list[float]]
    update_ratios: dict[str, list[float]]
    histograms: dict[str, tuple[np.ndarray, np.ndarray]]
    flags: list[dict]
    dead_units: dict[str, float] = field(default_factory=dict)
    histogram_step: int | None = None
    status: str = "completed"
    error: str | None = None

    def rows(self) -> list[dict]:
        """One row per layer (then per watched ReLU). Example: ``report.rows()[0]["latest_norm"]``"""
        flagged: dict[str, list[str]] = {}
        for f in self.flags:
            flagged.setdefault(f["layer"], []).append(f["kind"])
        rows = [{"layer": name, "latest_norm": _last(self.norms[name]), "mean_norm": _finite_mean(self.norms[name]),
                 "update_ratio": _last(self.update_ratios[name]), "flags": ", ".join(flagged.get(name, []))}
                for name in self.layers]
        return rows + [{"layer": name, "dead_units": fraction, "flags": ", ".join(flagged.get(name, []))}
                       for name, fraction in self.dead_units.items()]

    def table(self):
        """`rows()` as a pandas DataFrame (the list of rows without pandas). Example: ``report.table()``"""
        try:
            import pandas as pd
        except ImportError:
            return self.rows()
        return pd.DataFrame(self.rows()).set_index("layer")

    def __repr__(self) -> str:
        kinds = ", ".join(f["kind"] for f in self.flags) or "no flags"
        return f"<GradientReport {len(self.layers)} layers × {len(self.steps)} steps, {self.status}: {kinds}>"


def diagnose(layers, steps, norms: np.ndarray, dead: dict, first_nonfinite, status: str = "completed",
             error: str | None = None) -> list[dict]:
    """The flags of a recording: `norms` is [steps × layers]; `dead` maps ReLU -> (fraction, samples).

    Example: ``diagnose(["a", "b"], [1], np.array([[1e-9, 1.0]]), {}, None)[0]["kind"]  # 'vanishing'``
    """
    flags = []
    if first_nonfinite is not None:
        step, layer = first_nonfinite
        flags.append(_flag("nonfinite", layer, f"{layer}: its gradient became NaN/Inf at step {step}, the first "
                           "layer to do so in forward order — try a lower learning rate, --grad-clip 1.0, or check "
                           "the data and this layer's inputs for NaNs."))
    elif status == "failed" and error and "loss became" in error:
        flags.append(_flag("nonfinite", None, "The loss became non-finite but no recorded step caught a NaN/Inf "
                           "gradient — record every step (every=1) to find the layer where it starts."))
    if len(steps) and len(layers):
        finite = np.where(np.isfinite(norms), norms, np.nan)
        flags += _exploding(layers, finite)
        dead_flags = _dead(dead)
        if not flags and not dead_flags:  # medians mean nothing once gradients blow up or units die
            flags += _vanishing(layers, _nan(np.nanmedian, finite))
        flags += dead_flags
    return flags


def _exploding(layers, finite: np.ndarray) -> list[dict]:
    peak = _nan(np.nanmax, finite)
    if np.isfinite(peak).any() and np.nanmax(peak) > EXPLODING_NORM:
        worst = int(np.nanargmax(peak))
        others = int((peak > EXPLODING_NORM).sum()) - 1
        also = f" (and {others} other layer{'s' * (others > 1)})" if others > 0 else ""
        return [_flag("exploding", layers[worst], f"{layers[worst]}: gradient norm reached {peak[worst]:.3g}, above "
                      f"{EXPLODING_NORM:g}{also} — gradients explode; try a lower learning rate, --grad-clip 1.0, "
                      "or a smaller initialisation.")]
    if len(finite) < 8:
        return []
    q = max(2, len(finite) // 4)
    early, late = _nan(np.nanmedian, finite[:q]), _nan(np.nanmedian, finite[-q:])
    with np.errstate(all="ignore"):
        growth = np.where((late > GROWTH_FLOOR) & (early > 0), late / early, 0.0)
    if not np.nanmax(growth) > GROWTH_FACTOR:
        return []
    worst = int(np.nanargmax(growth))
    return [_flag("exploding", layers[worst], f"{layers[worst]}: gradient norm grew {growth[worst]:.3g}× over the "
                  f"recorded steps (to {late[worst]:.3g}) — gradients are exploding; try a lower learning rate or "
                  "--grad-clip 1.0.")]


def _vanishing(layers, medians: np.ndarray) -> list[dict]:
    first, last = medians[0], medians[-1]
    if len(layers) < 2 or not (np.isfinite(first) and np.isfinite(last) and last > 0):
        return []
    if first == 0:
        return [_flag("vanishing", layers[0], f"{layers[0]}: gets no gradient at all while the last layer does — "
                      "nothing reaches the early layers (check for dead units, detached tensors or frozen paths).")]
    if first >= VANISHING_RATIO * last:
        return []
    return [_flag("vanishing", layers[0], f"{layers[0]}: gradient norm {first:.2g} is {first / last:.1g}× that of "
                  "the last layer — gradients vanish before they reach the early layers (try ReLU, residual "
                  "connections or normalisation).")]


def _dead(dead: dict) -> list[dict]:
    return [_flag("dead_relu", name, f"{name}: {fraction:.0%} of its units output zero for all {samples:,} recorded "
                  "samples — dead ReLUs pass no gradient; try a lower learning rate, LeakyReLU/GELU, or check for a "
                  "large negative bias.")
            for name, (fraction, samples) in dead.items() if samples >= MIN_DEAD_SAMPLES and fraction > DEAD_FRACTION]


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


def _finite_mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _flag(kind: str, layer: str | None, message: str) -> dict:
    return {"kind": kind, "layer": layer, "message": message}


def _nan(reduce, a: np.ndarray) -> np.ndarray:
    """A nan-aware reduction over steps; a layer without any finite norm is NaN (and no warning is raised)."""
    out = np.full(a.shape[1:], np.nan)
    some = np.isfinite(a).any(axis=0)
    if some.any():
        out[some] = reduce(a[:, some], axis=0)
    return out
