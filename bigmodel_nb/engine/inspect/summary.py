"""`%summary`: parameters, per-layer output shapes, FLOPs and the memory one training step needs.

What depends on the input is measured, not guessed: `footprint.py` runs the model on two small batches
(on fake tensors for a model on the meta device, so GPT-2 is summarised without allocating its weights)
and fits each layer's output shape, the forward FLOPs and the activations saved for backward as a fixed
part plus a part per sample. This module works out the input those passes need and turns what they
measured into `ModelSummary`: the layer table and the bytes of weights, gradients, optimizer state,
activations and workspace at any batch size, precision and optimizer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.device import DeviceInfo
from ..core.errors import BigModelError
from ..core.memory import set_memory_estimator
from ..core.optim import OPTIMIZERS
from .footprint import Input, at_batch, device_budget, first_tensor, fit, measure, scale_shape

PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
_PRECISION_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
# fp32 values each optimizer keeps per trainable parameter (torch defaults: rmsprop without momentum).
OPTIMIZER_STATE_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adagrad": 1, "adam": 2, "adamw": 2}
MAX_TOKENS = 128  # longest sequence of inferred token ids (the model's context size where that is shorter)
_CONTEXT_KEYS = ("block_size", "n_positions", "max_position_embeddings", "n_ctx", "max_seq_len")
_FIRST_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag)  # fix the input kind
MIXED_PRECISION_NOTE = (
    "{precision}: mixed precision counted as 16-bit weights and gradients plus an fp32 master copy of the trainable "
    "weights in the optimizer state (torch.autocast keeps fp32 weights and gradients instead: the same bytes per "
    "parameter with Adam); saved activations are counted at 2 bytes, though autocast keeps a few (softmax, losses) "
    "in fp32.")
INT8_NOTE = ("int8: training in int8 is not supported, so this is inference: int8 weights plus the working set of "
             "one layer's input and output in fp32, the compute dtype of int8 weight quantization (activations are "
             "not quantized and nothing is saved for backward; no gradients, no optimizer state).")
INT8_COMPUTE_BYTES = 4  # int8 weight quantization (dynamic or weight-only) computes and outputs fp32 activations


@dataclass
class ModelSummary:
    """What `summarize` found. Example: ``summarize(model, (64,)).estimate(batch_size=256)["total_bytes"]``"""

    model_name: str
    total_params: int
    trainable_params: int
    layers: list[dict]  # rows: name, type, depth, output_shape (at `batch_size`), params, trainable
    input_shape: tuple | None  # per sample
    input_dtype: str
    batch_size: int
    precision: str
    optimizer: str
    flops_per_sample: int | None
    device: DeviceInfo | None
    available_bytes: int | None  # free memory on `device` plus what the model already occupies there
    buffer_bytes: int
    on_meta: bool
    notes: list[str] = field(default_factory=list)
    largest_param: int = 0  # elements of the largest trainable parameter (the optimizer's temporaries)
    # Each (fixed, per_sample), from the two passes: float elements and other bytes saved for backward, elements
    # of the largest module output and of the model's output. None where the model could not run.
    _measured: dict | None = field(default=None, repr=False)

    def weights_bytes(self, precision: str = "fp32") -> int:
        """Bytes of the parameters stored in `precision`, plus buffers. Example: ``s.weights_bytes("bf16")``"""
        return self.total_params * PRECISION_BYTES[_precision(precision)] + self.buffer_bytes

    def size_by_precision(self) -> dict[str, int]:
        """Weights size in every precision. Example: ``s.size_by_precision()["int8"]``"""
        return {p: self.weights_bytes(p) for p in PRECISION_BYTES}

    def estimate(self, batch_size: int | None = None, precision: str | None = None,
                 optimizer: str | None = None) -> dict:
        """Bytes per component of one training step, their sum, and whether it fits the device.

        Example: ``s.estimate(batch_size=32, precision="bf16")["total_bytes"]``
        """
        batch = _batch_size(self.batch_size if batch_size is None else batch_size)
        precision, optimizer = _precision(precision or self.precision), _optimizer(optimizer or self.optimizer)
        width, notes, measured = PRECISION_BYTES[precision], list(self.notes), self._measured
        at = (lambda key: at_batch(measured[key], batch)) if measured else None
        if precision == "int8":  # inference: no graph, so only one layer's input and output are alive at once
            gradients = optimizer_state = workspace = 0
            activations = INT8_COMPUTE_BYTES * at("largest_io") if measured else None
            notes.append(INT8_NOTE)
        else:
            gradients = self.trainable_params * width
            slots = OPTIMIZER_STATE_SLOTS[optimizer]
            master = 4 if width < 4 else 0  # mixed precision keeps an fp32 master copy with the optimizer
            optimizer_state = self.trainable_params * (4 * slots + master)
            activations = at("float_elems") * width + at("other_bytes") if measured else None
            # Short-lived buffers on top: the larger of what optimizer.step allocates (foreach kernels, the CUDA
            # default, copy every parameter once; the CPU per-tensor loop copies the largest one twice) and the
            # gradients backward holds at once (the largest layer output's, next to the model's output).
            # Plain SGD (no state) updates the parameters in place.
            foreach = self.device is not None and self.device.kind == "cuda"
            step = 0 if slots == 0 else 4 * (self.trainable_params if foreach else 2 * self.largest_param)
            backward = (at("largest_output") + at("output_elems")) * width if measured and self.trainable_params else 0
            workspace = max(step, backward)
            if width < 4:
                notes.append(MIXED_PRECISION_NOTE.format(precision=precision))
        if activations is None:
            notes.append("Activations are unknown (the model could not be run), so the total is a lower bound.")
        weights = self.weights_bytes(precision)
        total = weights + gradients + optimizer_state + (activations or 0) + workspace
        headroom = None if self.available_bytes is None else self.available_bytes - total
        return {"batch_size": batch, "precision": precision, "optimizer": optimizer, "weights": weights,
                "gradients": gradients, "optimizer_state": optimizer_state, "activations": activations,
                "workspace": workspace, "total_bytes": total, "flops_per_sample": self.flops_per_sample,
                "device": self.device.name if self.device else None, "available_bytes": self.available_bytes,
                "fits": None if headroom is None else headroom >= 0, "headroom_bytes": headroom, "notes": notes}

    @property
    def memory(self) -> dict:
        """`estimate()` at the summary's own batch size, precision and optimizer."""
        return self.estimate()

    def rows(self) -> list[dict]:
        """The per-layer rows as plain dicts. Example: ``s.rows()[0]["output_shape"]``"""
        return [dict(r) for r in self.layers]

    def table(self):
        """The per-layer rows as a pandas DataFrame (the rows themselves without pandas)."""
        try:
            import pandas as pd
        except ImportError:
            return self.rows()
        return pd.DataFrame(self.rows())

    def __repr__(self) -> str:  # short: the layer list of a big model would flood a notebook
        m = self.memory
        where = f" on {m['device']}" if m["device"] else ""
        return (f"ModelSummary({self.model_name}: {self.total_params:,} params, {self.trainable_params:,} trainable, "
                f"{len(self.layers)} layers, ~{m['total_bytes'] / 1e6:,.1f} MB to train batch {m['batch_size']} "
                f"in {m['precision']} with {m['optimizer']}{where})")


def summarize(model: nn.Module, input_shape=None, *, batch_size: int = 1, precision: str = "fp32",
              optimizer: str = "adam", device=None, example=None) -> ModelSummary:
    """Count parameters, trace output shapes and FLOPs, and estimate training memory on a device.

    `input_shape` is per sample, e.g. ``(64,)``, ``(3, 32, 32)`` or ``(128,)`` token ids; or pass an
    `example` batch; without either it is inferred from the first layer (Linear, Embedding, or a
    Hugging Face / zoo ``config`` with ``vocab_size``). `device` (default: the one training would use)
    is where the estimate must fit. The model's weights, buffers, train/eval mode, hooks and the global
    RNG are left as they were.

    Example: ``summarize(model, (1, 8, 8), batch_size=64).estimate()["total_bytes"]``
    """
    if not isinstance(model, nn.Module):
        raise BigModelError(f"{type(model).__name__} is not a torch.nn.Module; pass the model object itself.")
    batch_size, precision, optimizer = _batch_size(batch_size), _precision(precision), _optimizer(optimizer)
    params, buffers = list(model.parameters()), list(model.buffers())
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in params):
        raise BigModelError("The model has lazy (uninitialized) parameters; run one forward pass on a real batch "
                            "before summarizing it.")
    on_meta = any(t.is_meta for t in params + buffers)
    spec = _input_spec(model, input_shape, example)
    modules = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, (nn.ModuleList, nn.ModuleDict))]
    notes: list[str] = []
    passes = measure(model, modules, spec, on_meta, notes)
    rows = [_row(name, module, passes, batch_size) for name, module in modules]
    if any(True for _ in model.parameters(recurse=False)):  # the model's own parameters (e.g. a position table)
        rows.insert(0, _row("(own parameters)", model, None, batch_size, recurse=False))
    info, available = device_budget(model, device, notes)
    flops, measured = None, None
    if passes:
        a, b = passes
        flops = round(fit(a.n, a.flops, b.flops)[1])
        measured = {k: fit(a.n, getattr(a, k), getattr(b, k))
                    for k in ("float_elems", "other_bytes", "largest_output", "output_elems", "largest_io")}
    return ModelSummary(
        model_name=type(model).__name__, total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad), layers=rows,
        input_shape=spec.shape, input_dtype=str(spec.dtype).replace("torch.", ""), batch_size=batch_size,
        precision=precision, optimizer=optimizer, flops_per_sample=flops, device=info, available_bytes=available,
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers), on_meta=on_meta, notes=notes,
        largest_param=max((p.numel() for p in params if p.requires_grad), default=0), _measured=measured)


def _row(name: str, module: nn.Module, passes, batch_size: int, recurse: bool = True) -> dict:
    shape = None
    if passes and all(name in p.shapes for p in passes):
        shape = scale_shape(passes[0].shapes[name], passes[1].shapes[name], passes[0].n, batch_size)
    params = list(module.parameters(recurse=recurse))
    return {"name": name, "type": type(module).__name__, "depth": name.count("."), "output_shape": shape,
            "params": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def _precision(value) -> str:
    key = str(value).strip().lower()
    key = _PRECISION_ALIASES.get(key, key)
    if key not in PRECISION_BYTES:
        raise BigModelError(f"Unknown precision '{value}'; choose one of: {', '.join(PRECISION_BYTES)}.")
    return key


def _optimizer(value) -> str:
    key = str(value).strip().lower()
    if key not in OPTIMIZER_STATE_SLOTS:
        raise BigModelError(f"Unknown optimizer '{value}'; choose one of: {', '.join(OPTIMIZERS)}.")
    return key


def _batch_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BigModelError(f"The batch size must be a positive whole number, not {value!r}.")
    return value


# -- the input ------------------------------------------------------------------------------
def _input_spec(model: nn.Module, input_shape, example) -> Input:
    """What the passes are fed: the `example` batch, or random samples of `input_shape` (token ids for a model
    that starts with an embedding), inferred from the first layer when not given."""
    if example is not None:
        first = first_tensor(example)
        if first is None or first.dim() == 0:
            raise BigModelError("The example must be a batch: a tensor (or tuple/dict of tensors) whose first "
                                "dimension is the batch.")
        return Input(tuple(first.shape[1:]), first.dtype, example=example, n=first.shape[0])
    config = getattr(model, "config", None)
    # Registration order is definition order in almost every model, so this is the first layer the input meets.
    first = next((m for m in model.modules() if isinstance(m, _FIRST_LAYERS)), None)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(first, (nn.Embedding, nn.EmbeddingBag)) or (isinstance(vocab, int) and first is None):  # token ids
        high = min(v for v in (vocab, getattr(first, "num_embeddings", None)) if isinstance(v, int))
        context = next((getattr(config, k) for k in _CONTEXT_KEYS if isinstance(getattr(config, k, None), int)), None)
        shape = _parse_shape(input_shape) if input_shape is not None else (min(context or MAX_TOKENS, MAX_TOKENS),)
        return Input(shape, torch.long, high)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if input_shape is not None:
        return Input(_parse_shape(input_shape), dtype)
    if isinstance(first, nn.Linear):
        return Input((first.in_features,), dtype)
    if isinstance(first, nn.modules.conv._ConvNd):
        spatial, channels = len(first.kernel_size), first.in_channels
        dims = " ".join(["C", *{1: ["L"], 2: ["H", "W"]}.get(spatial, ["D", "H", "W"])])
        raise BigModelError(f"The first layer is a {type(first).__name__} with {channels} input channel"
                            f"{'s' if channels != 1 else ''}, whose input size cannot be inferred; pass "
                            f"--input-shape {dims} (e.g. --input-shape "
                            f"{' '.join([str(channels)] + ['32'] * spatial)}).")
    raise BigModelError(f"Cannot infer the input shape of {type(model).__name__}; pass --input-shape with the "
                        f"size of one sample (e.g. --input-shape 3 32 32) or an example batch.")


def _parse_shape(value) -> tuple:
    """(3, 32, 32) from a tuple, a single int, or text such as "3 32 32" / "3,32,32" / "3x32x32"."""
    parts = re.split(r"[\s,x×()\[\]]+", value.strip()) if isinstance(value, str) else \
        [value] if isinstance(value, int) else value
    try:
        shape = tuple(int(v) for v in parts if v != "")
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(v < 1 for v in shape) or any(isinstance(v, float) and v != int(v) for v in parts):
        raise BigModelError(f"The input shape must be positive whole numbers for one sample (e.g. --input-shape "
                            f"3 32 32), not {value!r}.")
    return shape


set_memory_estimator(summarize)  # the core's out-of-memory sentence and --batch-size auto start from it
