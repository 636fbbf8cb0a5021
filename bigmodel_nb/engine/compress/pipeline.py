"""`%compress`: prune, fine-tune, distill and quantize a model step by step, and measure every
stage the same way — honestly.

    report = compress(model, "digits", steps=[Prune(0.5, structured=True), Finetune(2), Quantize("int8")])
    report.table()

Steps (dataclasses below; ``("prune", {"ratio": 0.5})`` tuples and ``steps_from_flags`` build them too):

- `Prune(ratio, structured=False, scope="layer"|"global", ignore=())` — L1/L2 magnitude pruning of
  Linear/Conv weights. Unstructured (``torch.nn.utils.prune``): ``ratio`` of the weights become
  zeros, masks made permanent — a *sparsity study*: dense kernels still store and multiply the
  zeros, so size and latency do not drop (``real=False``). Structured (Torch-Pruning): whole
  channels/neurons are removed so the layers really shrink; ``ratio`` is then the fraction of the
  model's parameters to remove (the per-layer channel ratio that gets closest is searched for and
  stated), and the final classifier is never pruned.
- `Finetune(epochs, lr=None)` — recovery training after pruning (zeros from unstructured pruning
  are kept at zero).
- `Distill(student, temperature=None, alpha=None, epochs=None)` — trains the student against the
  current model as frozen teacher (loss and details in distill.py); the student becomes
  the current model. Unless ``baseline=False``, a copy of the student as it was given is also
  trained alone (cross-entropy, the same epochs, lr, batch size, optimizer, seed and so batches) and
  measured as a baseline row (``report.baselines``), and the report says whether distillation helped.
- `Quantize(mode, backend="auto")` — ``int8`` (dynamic: int8 weights, activations quantized per
  batch, int8 matmuls), ``int8-weight`` (torchao weight-only: int8 storage, fp matmuls), ``fp16`` /
  ``bf16`` (half-precision weights; inputs are cast for evaluation and timing). Linear layers only
  for the int8 modes.

Every stage is measured the same way (size of a weights file really written, latency, test
accuracy and loss; row fields in compress_report.py). A row is ``real=False`` when its gain is only
simulated (unstructured pruning); Finetune changes no storage and keeps the previous row's flag.
The engine never prints; the UI (`ui.compress`) draws the report.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..core.adapters import as_bundle
from ..core.callbacks import Callback, CallbackList
from ..core.config import TrainConfig
from ..core.errors import BigModelError, describe_exception
from ..core.run import Run
from .distill import ALPHA, DISTILL_EPOCHS, DISTILL_LR, TEMPERATURE, Distiller, check_student, check_temperature_alpha
from .report import CastInputs, CompressionReport, StageMeter, count_weights
from .steps import prune_structured, prune_unstructured, quant_backend, quantize_model, torch_pruning

QUANT_MODES = {
    "int8": "int8 dynamic: int8 weights, activations quantized per batch, int8 matmuls (Linear layers)",
    "int8-weight": "int8 weight-only (torchao): int8 storage, weights dequantized for each matmul (Linear layers)",
    "fp16": "float16 weights and activations",
    "bf16": "bfloat16 weights and activations",
}
BACKENDS = ("auto", "torchao", "torch.ao")
SCOPES = ("layer", "global")


# -- the steps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prune:
    """Magnitude pruning of Linear/Conv weights. Example: ``Prune(0.5, structured=True, scope="global")``

    ``ratio`` in (0, 1): unstructured — the fraction of each layer's (``scope="layer"``) or of all
    (``"global"``) weights set to zero; structured — the fraction of the model's parameters removed.
    ``ignore``: module names or globs never pruned (e.g. ``("features.0",)``).
    """

    ratio: float
    structured: bool = False
    scope: str = "layer"
    ignore: tuple = ()
    kind: ClassVar[str] = "prune"

    def __post_init__(self):
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio < 1:
            raise BigModelError(f"The prune ratio must be between 0 and 1 (exclusive), e.g. 0.5 to remove half; "
                                f"got {self.ratio!r}.")
        if self.scope not in SCOPES:
            raise BigModelError(f"Unknown pruning scope '{self.scope}'; choose one of: {', '.join(SCOPES)}.")
        object.__setattr__(self, "ignore", (self.ignore,) if isinstance(self.ignore, str) else tuple(self.ignore))

    def label(self) -> str:
        return f"prune {self.ratio:.0%} {'structured' if self.structured else 'unstructured'} ({self.scope})"


@dataclass(frozen=True)
class Finetune:
    """N epochs of ordinary training (recovery after pruning). Example: ``Finetune(2, lr=1e-3)``"""

    epochs: int = 1
    lr: float | None = None
    kind: ClassVar[str] = "finetune"

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise BigModelError(f"--finetune takes a whole number of epochs ≥ 1; got {self.epochs!r}.")

    def label(self) -> str:
        return f"finetune {self.epochs} epoch{'s' if self.epochs != 1 else ''}"


@dataclass(frozen=True)
class Quantize:
    """Quantize or cast. Example: ``Quantize("int8")``; modes: see `QUANT_MODES`.

    ``backend`` for ``int8``: ``auto`` (CPU: torch.ao ``quantize_dynamic``, the faster eager path
    there; GPU: torchao), ``torchao`` or ``torch.ao``. ``int8-weight`` always uses torchao.
    """

    mode: str = "int8"
    backend: str = "auto"
    kind: ClassVar[str] = "quantize"

    def __post_init__(self):
        mode = str(self.mode).lower().replace("_", "-")
        mode = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "int8-dynamic": "int8",
                "int8-weight-only": "int8-weight"}.get(mode, mode)
        if mode not in QUANT_MODES:
            raise BigModelError(f"Unknown quantization mode '{self.mode}'; choose one of: {', '.join(QUANT_MODES)}.")
        if self.backend not in BACKENDS:
            raise BigModelError(f"Unknown quantization backend '{self.backend}'; choose one of: {', '.join(BACKENDS)}.")
        if mode == "int8-weight" and self.backend == "torch.ao":
            raise BigModelError("int8-weight (weight-only) quantization exists only in torchao; "
                                "use backend='torchao' or 'auto'.")
        object.__setattr__(self, "mode", mode)

    def label(self) -> str:
        return f"quantize {self.mode}"


@dataclass(frozen=True, eq=False)
class Distill:
    """Train `student` against the current model (frozen teacher); the student goes on.
    Example: ``Distill(small_mlp, temperature=4.0, alpha=0.5, epochs=10)``"""

    student: nn.Module
    temperature: float | None = None
    alpha: float | None = None
    epochs: int | None = None
    kind: ClassVar[str] = "distill"

    def __post_init__(self):
        if not isinstance(self.student, nn.Module):
            raise BigModelError("--distill needs a student model (a torch.nn.Module); "
                                f"got {type(self.student).__name__}.")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise BigModelError(f"Distillation epochs must be a whole number ≥ 1; got {self.epochs!r}.")

    def label(self) -> str:
        return f"distill → {type(self.student).__name__}"


STEPS = {"prune": Prune, "finetune": Finetune, "quantize": Quantize, "distill": Distill}


def parse_steps(steps) -> list:
    """Steps from `Step` objects, ``(name, {options})`` or ``(name, first_option)`` pairs, or
    ``{name: options}`` dicts. Example: ``parse_steps([("prune", 0.5), ("quantize", "int8")])``"""
    one = isinstance(steps, (Prune, Finetune, Quantize, Distill, dict, str))
    if one or (isinstance(steps, tuple) and steps and isinstance(steps[0], str)):
        steps = [steps]
    out = []
    for step in steps:
        if isinstance(step, (Prune, Finetune, Quantize, Distill)):
            out.append(step)
            continue
        if isinstance(step, dict) and len(step) == 1:
            step = next(iter(step.items()))
        if isinstance(step, str):
            step = (step, {})
        if not (isinstance(step, (tuple, list)) and len(step) == 2 and isinstance(step[0], str)):
            raise BigModelError(f"A compression step is a Prune/Finetune/Quantize/Distill object or a (name, options) "
                                f"pair; got {step!r}.")
        name, options = step[0].lower(), step[1]
        if name not in STEPS:
            raise BigModelError(f"Unknown compression step '{step[0]}'; choose one of: {', '.join(STEPS)}.")
        try:
            out.append(STEPS[name](**options) if isinstance(options, dict) else STEPS[name](options))
        except TypeError as exc:
            raise BigModelError(f"Bad options for step '{name}' ({exc}); "
                                f"see help(bigmodel_nb.engine.compress.{STEPS[name].__name__}).") from None
    return out


def steps_from_flags(*, prune: float | None = None, structured: bool = False, scope: str = "layer",
                     finetune: int | None = None, quantize: str | None = None, distill: nn.Module | None = None,
                     temperature: float | None = None, alpha: float | None = None, order=None) -> list:
    """The steps a ``%compress`` line asks for. `order`: step names in the order their flags appear
    on the line (``["prune", "finetune", "quantize"]``); by default prune → finetune → distill → quantize.

    Example: ``steps_from_flags(prune=0.5, structured=True, finetune=2, quantize="int8")``
    """
    given = {"prune": None if prune is None else Prune(prune, structured=structured, scope=scope),
             "finetune": None if finetune is None else Finetune(finetune),
             "distill": None if distill is None else Distill(distill, temperature, alpha),
             "quantize": None if quantize is None else Quantize(quantize)}
    order = list(order or ())
    for name in order:
        if name not in given:
            raise BigModelError(f"Unknown compression step '{name}'; choose one of: {', '.join(STEPS)}.")
    order += [n for n in ("prune", "finetune", "distill", "quantize") if n not in order]
    return [given[n] for n in dict.fromkeys(order) if given[n] is not None]


# -- the pipeline ---------------------------------------------------------------------------------
class _State:
    """The model being compressed and what the next step needs to know about it."""

    def __init__(self, model):
        self.model = model
        self.dtype: torch.dtype | None = None  # fp16/bf16 once cast
        self.masks: list | None = None  # unstructured pruning masks [(module, bool mask)]
        self.simulated = False  # the model carries pruning zeros that dense kernels still store and compute

    @property
    def runner(self) -> nn.Module:
        """What evaluation and timing call: the model, or the model behind an input cast."""
        return CastInputs(self.model, self.dtype) if self.dtype is not None else self.model


def compress(model: nn.Module, data=None, *, steps=(), inplace: bool = False, example: torch.Tensor | None = None,
             epochs: int | None = None, lr: float | None = None, batch_size: int = 64, optimizer="adam",
             seed: int | None = None, temperature: float = TEMPERATURE, alpha: float = ALPHA, callbacks=(),
             trainer: Callable | None = None, latency_batch: int = 64,
             latency_repeats: int | None = None, baseline: bool = True) -> CompressionReport:
    """Apply `steps` in order to a copy of `model` (to the model itself if `inplace`) and measure each stage.

    `data`: anything `as_bundle` takes — needed by Finetune/Distill; its test split gives accuracy
    and loss, its first `latency_batch` test inputs the timing batch. `example`: an input batch for
    timing (and for tracing structured pruning) instead. `epochs, lr, batch_size, optimizer, seed`
    configure the Distill/Finetune runs (Distill: `epochs` or 10, `lr` or 3e-2; a seed is drawn when
    none is given, so the baseline gets the same batches); `temperature, alpha` the distillation
    loss. `baseline`: also train each Distill step's student alone with the same budget and report
    it beside the distilled one (``report.baselines``; False: skip it). `callbacks` go to every
    training run; `trainer` trains them instead of a plain ``Run(...).run_here()`` — it is called
    like ``bigmodel_nb.api.launch(model, data, config, name=..., callbacks=...)`` and returns the
    Run (how a magic shows the live dashboard).
    `latency_repeats`: timed rounds per stage (default: 5–50 within about a second); every stage after
    the first is timed alternately with the original in one loop, after a warm-up of both.
    Each stage row is emitted as ``on_stage_end`` on `callbacks` as soon as it is measured.
    Bad input raises `BigModelError` before
    anything is changed; without `inplace` the given model is never touched.

    Example: ``compress(model, "digits", steps=[Prune(0.5, structured=True), Finetune(2), Quantize("int8")])``
    """
    if not isinstance(model, nn.Module):
        raise BigModelError(f"compress needs a torch.nn.Module; got {type(model).__name__}.")
    steps = parse_steps(steps)
    check_temperature_alpha(temperature, alpha)
    if isinstance(latency_batch, bool) or not isinstance(latency_batch, int) or latency_batch < 1:
        raise BigModelError(f"latency_batch must be a whole number ≥ 1; got {latency_batch!r}.")
    bundle = as_bundle(data) if data is not None else None
    if not isinstance(baseline, bool):
        raise BigModelError(f"baseline must be True or False (--no-baseline); got {baseline!r}.")
    device = _device_of(model)
    meter = StageMeter(bundle, example, latency_batch, device, latency_repeats)
    _check_plan(model, steps, bundle, meter.x, device, temperature, alpha)

    work = reference = model  # the reference: the original, unchanged, that every stage is timed beside
    if not inplace:
        try:
            work = copy.deepcopy(model)
        except Exception as exc:
            raise BigModelError(f"The model cannot be copied ({describe_exception(exc)}); pass inplace=True "
                                "(--inplace) to compress it in place.") from None
    elif meter.x is not None:
        try:
            reference = copy.deepcopy(model)
        except Exception:
            reference = None  # timed against the first row's median instead (the notes say so)
    meter = StageMeter(bundle, example, latency_batch, device, latency_repeats, reference=reference)
    state = _State(work)
    bus = CallbackList(callbacks)  # each stage's row goes out as on_stage_end as soon as it is measured
    report = CompressionReport([], work, notes=list(meter.notes), steps=steps)
    train_options = dict(lr=lr, batch_size=batch_size, optimizer=optimizer, seed=seed, device=str(device))

    def record(label: str, real: bool, note: str) -> dict:
        row = meter.row(label, state.model, state.runner, real, note)
        report.stages.append(row)
        bus.emit("on_stage_end", report, dict(row))
        return row

    record("original", True, "the model as given (the reference for the ratios)")
    for step in steps:
        if isinstance(step, Prune):
            if step.structured:
                note = prune_structured(state.model, meter.x, step.ratio, step.scope, step.ignore)
                if state.masks:  # the layers were resized: the zeros still in them are the new masks
                    state.masks = [(m, m.weight.detach() != 0) for m, _ in state.masks]
            else:
                state.masks, note = prune_unstructured(state.model, step.ratio, step.scope, step.ignore)
                state.simulated = True
            record(step.label(), step.structured, note)
        elif isinstance(step, Finetune):
            config = TrainConfig(epochs=step.epochs, **{**train_options, "lr": step.lr if step.lr is not None else lr})
            keep = [KeepZeros(state.masks)] if state.masks else []
            run = _train(report, step, state.model, bundle, config, [*keep, *callbacks], trainer)
            kept = ("; the zeros of unstructured pruning were kept (masks re-applied after each step) and are still "
                    "computed densely") if keep else ""
            record(step.label(), report.stages[-1]["real"],  # training changes no storage: the status carries on
                   f"{run.epoch} epoch{'s' if run.epoch != 1 else ''} of ordinary training{_stopped(run)}{kept}")
        elif isinstance(step, Distill):
            alone = None
            if baseline:  # the same initial weights, copied before the student trains
                try:
                    alone = copy.deepcopy(step.student)
                except Exception as e:
                    raise BigModelError(f"The student cannot be copied to train the baseline beside it "
                                        f"({type(e).__name__}: {e}); pass --no-baseline (baseline=False).") from None
            student = step.student if inplace else copy.deepcopy(step.student)
            t = step.temperature if step.temperature is not None else temperature
            a = step.alpha if step.alpha is not None else alpha
            budget = {**train_options, "lr": lr if lr is not None else DISTILL_LR,
                      "seed": seed if seed is not None else random.randrange(2**31)}  # one seed: the same batches
            config = TrainConfig(epochs=step.epochs or epochs or DISTILL_EPOCHS, **budget)
            run = _train(report, step, Distiller(student, state.runner, t, a), bundle, config, callbacks, trainer)
            teacher_params, student_params = count_weights(state.model)[0], count_weights(student)[0]
            alone_run = None
            if alone is not None and run.status == "stopped":  # the same budget is no longer known: no verdict
                report.notes.append(f"{step.label()}: stopped, so the student was not also trained alone for a "
                                    "baseline (it would not have had the same budget)")
                alone = None
            if alone is not None:
                alone_config = TrainConfig(epochs=config.epochs, **budget)
                alone_run = _train(report, _Baseline(step), alone, bundle, alone_config, callbacks, trainer)
            state.model, state.dtype, state.masks, state.simulated = student, None, None, False
            budget_text = (f"{run.epoch} epoch{'s' if run.epoch != 1 else ''}, lr {config.lr:g}, batch "
                           f"{config.batch_size}, seed {config.seed}")
            row = record(step.label(), True,
                         f"a separate, smaller model: {type(student).__name__} with {student_params:,} parameters "
                         f"({teacher_params / max(1, student_params):.1f}× fewer than the teacher) trained "
                         f"{budget_text} against the frozen teacher (T={t:g}, α={a:g}){_stopped(run)}")
            if alone_run is not None:
                base = meter.row(f"{step.label()}: student alone (baseline)", alone, alone, True,
                                 f"the same student from the same initial weights trained alone (cross-entropy on the "
                                 f"labels only) with the same budget: {alone_run.epoch} epoch"
                                 f"{'s' if alone_run.epoch != 1 else ''}, lr {config.lr:g}, batch "
                                 f"{config.batch_size}, seed {config.seed}, the same batches{_stopped(alone_run)}")
                base.update(baseline=True, baseline_of=row["stage"], distilled_accuracy=row["accuracy"],
                            distilled_loss=row["loss"])
                report.baselines.append(base)
                verdict = distillation_verdict(row, base)
                row["note"] += f". {verdict}"
                report.notes.insert(0, verdict)
                bus.emit("on_stage_end", report, dict(base))
        else:
            state.model, note, notes = quantize_model(state.model, step.mode, step.backend, device)
            if step.mode in ("fp16", "bf16"):
                state.dtype = torch.float16 if step.mode == "fp16" else torch.bfloat16
            if state.simulated:
                note += "; the zeros of unstructured pruning are still stored and computed densely"
            report.notes.extend(n for n in notes if n not in report.notes)
            record(step.label(), True, note)
    report.model = state.model.eval()
    return report


def distillation_verdict(distilled: dict, alone: dict) -> str:
    """One sentence: did the distilled student beat the same student trained alone (test accuracy,
    else test loss)?"""
    key = "accuracy" if distilled.get("accuracy") is not None and alone.get("accuracy") is not None else "loss"
    d, b = distilled.get(key), alone.get(key)
    if d is None or b is None:
        return "Distillation was not compared with the student alone: no test split to measure them on."
    fmt = (lambda v: f"{v:.2%}") if key == "accuracy" else (lambda v: f"loss {v:.4f}")
    better = d > b if key == "accuracy" else d < b
    if d == b:
        return f"Distillation matched the student alone: both reached {fmt(d)} with the same budget."
    if better:
        return f"Distillation helped: {fmt(d)} distilled vs {fmt(b)} for the student alone with the same budget."
    return f"Distillation did not help here: the student alone reached {fmt(b)} vs {fmt(d)} distilled."


class _Baseline:
    """How `_train` names the baseline run of a Distill step."""

    kind = "baseline"

    def __init__(self, step):
        self.step = step

    def label(self) -> str:
        return f"{self.step.label()}: student alone (baseline)"


class KeepZeros(Callback):
    """Re-applies pruning masks after every optimizer step, so fine-tuning cannot regrow the zeros."""

    def __init__(self, masks):
        self.masks = masks

    def on_train_begin(self, run, logs):
        self.on_step_end(run, logs)

    def on_step_end(self, run, logs):
        with torch.no_grad():
            for module, mask in self.masks:
                module.weight.mul_(mask)


def _train(report, step, model, bundle, config, callbacks, trainer) -> Run:
    """Train `model` as one stage, through `trainer` (see `compress`) or here without display, and
    file the Run in ``report.runs`` under the step's label. A run still paused afterwards is stopped
    (the stage ends there); a failed run raises."""
    if trainer is None:
        run = Run(model, bundle, config, list(callbacks), name=step.kind, kind=step.kind).run_here()
    else:
        run = trainer(model, bundle, config, name=step.kind, kind=step.kind, callbacks=list(callbacks))
    if run.alive:
        run.stop()
        run.wait()
    if run.status == "failed":
        raise BigModelError(f"{step.kind} failed, so compression stopped there: {run.error}")
    key, n = step.label(), 1
    while key in report.runs:
        n += 1
        key = f"{step.label()} ({n})"
    report.runs[key] = run
    return run


def _stopped(run) -> str:
    return f" (stopped at step {run.step} of {run.total_steps})" if run.status == "stopped" else ""


# -- checks before anything changes ----------------------------------------------------------------
def _check_plan(model, steps, bundle, x_time, device, temperature, alpha) -> None:
    """Every reason the plan cannot run, raised before the model (or a copy) is touched."""
    current, quantized = model, None  # the model the next step sees (a Distill swaps in its student)
    for step in steps:
        if isinstance(step, (Prune, Finetune)) and quantized:
            raise BigModelError(f"{step.kind} needs float weights but the model is quantized ({quantized}) by then; "
                                "put --quantize last.")
        if isinstance(step, (Distill, Prune)) and isinstance(x_time, Mapping) and (
                isinstance(step, Distill) or step.structured):
            raise BigModelError(f"{'Distillation' if isinstance(step, Distill) else 'Structured pruning'} takes "
                                "(inputs, targets) batches, and this data gives dicts; use unstructured --prune, "
                                "--finetune or --quantize here, or pass (X, y).")
        if isinstance(step, Prune) and step.structured:
            torch_pruning()
            if x_time is None:
                raise BigModelError("Structured pruning traces the model with an input batch; pass data or example=.")
        if isinstance(step, (Finetune, Distill)) and (bundle is None or bundle.train is None or len(bundle.train) == 0):
            what = "Fine-tuning" if isinstance(step, Finetune) else "Distillation"
            raise BigModelError(f"{what} trains on data; pass data (e.g. compress(model, 'digits', ...) or --data D).")
        if isinstance(step, Quantize):
            if quantized:
                raise BigModelError(f"The model is already quantized ({quantized}) by then; use one --quantize step.")
            quant_backend(step.mode, step.backend, device)  # names the package to install when it cannot
            if step.mode.startswith("int8") and not any(isinstance(m, nn.Linear) for m in current.modules()):
                raise BigModelError(f"{type(current).__name__} has no nn.Linear layers, and the int8 modes quantize "
                                    "Linear layers only; use fp16 or bf16.")
            quantized = step.mode
        if isinstance(step, Distill):
            check_temperature_alpha(step.temperature if step.temperature is not None else temperature,
                                    step.alpha if step.alpha is not None else alpha)
            if bundle.task not in ("classification", "language-model"):
                raise BigModelError("Distillation matches the teacher's class probabilities, so it needs a "
                                    f"classification or language-model task; '{bundle.name}' is {bundle.task}.")
            x, _ = next(iter(bundle.train.batches(2, device)))
            student = step.student if _device_of(step.student) == device else copy.deepcopy(step.student).to(device)
            check_student(student, current, x)
            current, quantized = step.student, None  # the (float) student goes on


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
