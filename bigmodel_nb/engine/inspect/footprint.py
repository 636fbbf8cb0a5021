"""What running a model costs, measured on two small batches: the machinery behind `summarize`.

Output shapes, FLOPs and activation memory depend on the input, so they are measured rather than
guessed: the model runs forward, plus the loss a training step adds, on n and 2n samples. Forward hooks
record each module's output shape, torch's FLOP counter the forward FLOPs, and saved-tensor hooks every
tensor autograd keeps for backward, which is what activation memory is (and each module's input plus
output, the most an inference pass holds at once). Saved tensors are counted by
storage, so views are counted once and weights not at all. A straight line through the two passes
separates what each sample costs from what is fixed, so the numbers extend to any batch size. Models on
the meta device run on fake tensors, which gives the same shapes without allocating weights. Also here:
the memory the target device has for training.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..core.device import DeviceInfo, detect_devices, resolve_device
from ..core.errors import BigModelError, quiet_logger

# torch's FLOP counter knows the CUDA attention kernels but not the CPU one (it would count 0).
_EXTRA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}


@dataclass
class Input:
    """How to build a batch: random floats or token ids of `shape` per sample, or the user's example."""

    shape: tuple
    dtype: torch.dtype
    high: int | None = None  # token ids are drawn from [0, high)
    example: object = None
    n: int = 2  # samples in the first pass (the example's own batch size when one is given)

    def batch(self, repeats: int, device: torch.device):
        if self.example is not None:
            return tree_map_only(torch.Tensor, lambda t: torch.cat([t] * repeats).to(device), self.example)
        size = (self.n * repeats, *self.shape)
        if self.high is not None:
            return torch.randint(self.high, size, device=device)
        return torch.randn(size, dtype=self.dtype, device=device)


@dataclass
class Pass:
    """What one pass on `n` samples recorded."""

    n: int  # samples in this pass
    shapes: dict  # module name -> shape of its first output
    float_elems: int  # floating-point elements autograd saved for backward (weights excluded)
    other_bytes: int  # integer / bool bytes saved (token ids, dropout masks)
    flops: int  # of the forward pass; the loss is not counted
    largest_output: int  # elements of the largest module output
    output_elems: int  # elements of the model's output (a training loop holds it through backward)
    largest_io: int = 0  # largest floating-point input + output elements of one module: inference's working set


# -- the passes -------------------------------------------------------------------------------
def measure(model: nn.Module, modules: list, spec: Input, on_meta: bool, notes: list) -> tuple[Pass, Pass] | None:
    """Two passes (n and 2n samples) over `modules` (name, module) pairs, with the model's state restored
    afterwards; None, with a line in `notes`, where a meta model cannot run on fake tensors."""
    device = next((t.device for t in _tensors(model)), torch.device("cpu"))
    with _preserved(model, real=not on_meta), torch.random.fork_rng(
            devices=[device.index or 0] if device.type == "cuda" else []):
        model.train()  # dropout masks and batch-norm statistics are part of what training saves
        try:
            return tuple(_one_pass(model, modules, spec, r, device, on_meta) for r in (1, 2))
        except BigModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into one sentence (or a note on meta)
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(". ")
            unsupported = not isinstance(exc, RuntimeError) or "meta" in message or "data-dependent" in message
            if on_meta and unsupported:  # an operator without a meta kernel, or code that reads tensor values
                notes.append(f"Layer shapes, FLOPs and activations are unknown: the model could not run on the meta "
                             f"device ({message}); build it with real weights to measure them.")
                return None
            kind = "token ids" if spec.high is not None else "an input"
            fix = "pass an example batch its forward accepts" if spec.example is not None else \
                "pass --input-shape matching its first layer"
            raise BigModelError(f"The model could not run on {kind} of shape {(spec.n, *spec.shape)}: {message}; "
                                f"{fix}.") from exc


def _one_pass(model, modules, spec: Input, repeats: int, device, on_meta: bool) -> Pass:
    shapes, sizes, io_sizes, saved, fake = {}, [], [], {}, None
    if on_meta:  # FakeTensorMode, not bare meta tensors: code that reads values (masks, .item()) still runs
        from torch._subclasses.fake_tensor import FakeTensorMode
        fake = FakeTensorMode(allow_non_fake_inputs=True)
        device = torch.device("cpu")  # fake CPU tensors pick CPU kernels (flash attention), as a real run would

    def record(name):
        def hook(module, args, output):
            if (t := first_tensor(output)) is not None:
                shapes.setdefault(name, tuple(t.shape))
                sizes.append(t.numel())
                given = first_tensor(args)
                io_sizes.append(_float_elems(t) + (_float_elems(given) if given is not None else 0))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in modules]
    try:
        # FakeTensorMode logs a traceback for an operator that fails; the error raised already says it all
        with fake or contextlib.nullcontext(), quiet_logger("torch._subclasses.fake_tensor", logging.CRITICAL):
            # Weights saved for backward are already counted as weights; keep these alive so storages stay unique.
            state = _fake_state(model, fake, device) if fake else None
            weights = list(state.values()) if fake else _tensors(model)
            skip = {_storage(t)[0] for t in weights}

            def pack(t):
                if (key := _storage(t)[0]) not in skip:
                    saved.setdefault(key, t)
                return t

            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
                    output = _call(model, spec.batch(repeats, device), state)
                loss = _training_loss(output)
            out = first_tensor(output)
            output_elems = out.numel() if out is not None else 0
            floats = sum(_storage(t)[1] // t.element_size() for t in saved.values() if t.is_floating_point())
            others = sum(_storage(t)[1] for t in saved.values() if not t.is_floating_point())
            del loss, output, out, weights, state
    finally:
        for h in handles:
            h.remove()
    return Pass(spec.n * repeats, shapes, floats, others, counter.get_total_flops(), max(sizes, default=0),
                output_elems, max(io_sizes, default=0))


def _fake_state(model, fake, device) -> dict:
    """Fake tensors on `device` standing in for the model's meta parameters and buffers (tied ones stay tied)."""
    made, state = {}, {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) not in made:
            stand_in = fake.fake_tensor_converter.from_meta_and_device(fake, t.detach(), device)
            made[id(t)] = stand_in.requires_grad_(t.requires_grad) if t.is_floating_point() else stand_in
        state[name] = made[id(t)]
    return state


def _call(model, inputs, state=None):
    """The model's forward on `inputs` (a tensor, tuple of positional inputs or dict of keyword inputs),
    with `state` standing in for its parameters and buffers when given."""
    args, kwargs = (), {}
    if isinstance(inputs, dict):
        kwargs = inputs
    elif isinstance(inputs, (tuple, list)):
        args = tuple(inputs)
    elif isinstance(getattr(model, "main_input_name", None), str):  # Hugging Face: input_ids, pixel_values, ...
        kwargs = {model.main_input_name: inputs}
        if "use_cache" in inspect.signature(model.forward).parameters:
            kwargs["use_cache"] = False  # training keeps no key/value cache
    else:
        args = (inputs,)
    if state is None:
        return model(*args, **kwargs)
    return torch.func.functional_call(model, state, args, kwargs, tie_weights=False, strict=False)


def _training_loss(output):
    """The loss a training step adds: cross-entropy over the last dimension (classes or vocabulary); its
    saved log-probabilities are a large part of a language model's activations."""
    out = first_tensor(output)
    if out is None or not out.requires_grad:
        return None
    if out.is_floating_point() and out.dim() >= 2 and out.shape[-1] > 1:
        logits = out.reshape(-1, out.shape[-1])
        return F.cross_entropy(logits, torch.randint(out.shape[-1], (logits.shape[0],), device=out.device))
    return out.float().pow(2).mean()


@contextlib.contextmanager
def _preserved(model: nn.Module, real: bool):
    """Restore every module's train/eval flag and (real models) buffer values, e.g. batch-norm statistics."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()] if real else []
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)


# -- from two batch sizes to any ----------------------------------------------------------------
def fit(n: int, at_n: float, at_2n: float) -> tuple[float, float]:
    """(fixed, per_sample) from measurements at n and 2n samples."""
    per_sample = (at_2n - at_n) / n
    return at_n - per_sample * n, per_sample


def at_batch(line: tuple[float, float], batch: int) -> int:
    """A `fit` line's value at `batch` samples, rounded and never below zero."""
    return max(0, round(line[0] + line[1] * batch))


def scale_shape(at_n: tuple, at_2n: tuple, n: int, batch: int) -> tuple:
    """The output shape at `batch` samples: the dimensions that grew with the batch grow linearly."""
    if len(at_n) != len(at_2n):
        return at_n
    return tuple(a if a == b else round(a + (b - a) * (batch - n) / n) for a, b in zip(at_n, at_2n))


# -- small helpers ----------------------------------------------------------------------------
def device_budget(model, device, notes) -> tuple[DeviceInfo | None, int | None]:
    """The device training would use (`device`, default: the usual one) and the bytes it has for it:
    free memory plus what the model already occupies there; None where that is unknown."""
    target = resolve_device(device)
    info = next((d for d in detect_devices() if d.name == str(target)), None)
    if info is None or info.free_memory is None:
        return info, None
    resident = sum(t.numel() * t.element_size() for t in _tensors(model) if t.device == target)
    if resident >= 1e6:
        notes.append(f"The {resident / 1e6:,.1f} MB the model already holds on {target} count as available.")
    return info, info.free_memory + resident


def first_tensor(value):
    """The first tensor in an output: a tensor, tuple/list, dict or Hugging Face ModelOutput."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return next((t for t in map(first_tensor, items) if t is not None), None)


def _float_elems(t: torch.Tensor) -> int:
    """Elements of `t` if it holds floating-point values (activations), else 0 (token ids, masks)."""
    return t.numel() if t.is_floating_point() else 0


def _tensors(model) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def _storage(t: torch.Tensor) -> tuple:
    """(identity, bytes) of the storage behind `t`: views share one, and all of it stays alive."""
    try:
        storage = t.untyped_storage()
        return storage._cdata, storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse / nested tensors
        return id(t), t.numel() * t.element_size()
