"""One forward pass, whichever way a model likes to be called: the loss to use, ``(logits, loss)``
from plain, nanoGPT-style and Hugging Face models (pairs or dict batches; tensors, tuples, dicts or
`ModelOutput`s back), autocast, and the preflight check that turns a model/data mismatch into one
sentence before a run starts.

    logits, loss = forward_loss(model, x, y, resolve_loss(None, "classification"), takes_targets(model))
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .batches import first_input, targets_of
from .errors import BigModelError, describe_exception, unknown_choice

LOSSES: dict[str, Callable] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "huber": F.huber_loss,
    "bce": F.binary_cross_entropy_with_logits,
    "nll": F.nll_loss,
}
TASK_LOSS = {"classification": "cross_entropy", "language-model": "cross_entropy", "regression": "mse"}
_TARGET_ARGS = ("targets", "target", "labels", "label", "y")


def resolve_loss(spec, task: str | None) -> Callable | None:
    """A loss function from a name or callable; None means "the model computes its own"."""
    if callable(spec):
        return spec
    name = spec or TASK_LOSS.get(task or "", None)
    if name is None:
        return None
    key = str(name).lower().replace("-", "_")
    if key not in LOSSES:
        raise unknown_choice("loss", str(name), LOSSES)
    return LOSSES[key]


def takes_targets(model: torch.nn.Module) -> bool:
    """True for nanoGPT-style models, ``forward(idx, targets=None) -> (logits, loss)``."""
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 and params[1] in _TARGET_ARGS


def forward_loss(model, x, y, loss_fn, with_targets: bool):
    """One forward pass on a pair -> (logits, loss), whichever way the model likes to be called."""
    logits, loss = read_output(model(x, y) if with_targets else model(x))
    if loss is None:
        loss = _loss(loss_fn, logits, y)
    return logits, loss


def batch_loss(model, batch, loss_fn, with_targets: bool):
    """One forward pass on a batch, a pair or a dict -> (logits, loss, targets). A dict batch is passed as
    keyword arguments (``model(**batch)``, the Hugging Face convention); a loss the model computed is used.

    Example: ``logits, loss, y = batch_loss(bert, {"input_ids": ids, "labels": y}, None, False)``
    """
    if not isinstance(batch, Mapping):
        x, y = batch
        logits, loss = forward_loss(model, x, y, loss_fn, with_targets)
        return logits, loss, y
    y = targets_of(batch)
    logits, loss = read_output(model(**model_inputs(model, batch)))
    if loss is None:
        if y is None:
            raise BigModelError("The batches are dicts without 'labels' and the model computed no loss; add a "
                                "'labels' column (Hugging Face models then return their loss) or pass "
                                "(inputs, targets).")
        loss = _loss(loss_fn, logits, y)
    return logits, loss, y


def read_output(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, loss or None) from a tensor, a tuple (logits first, then a scalar loss — or, as Hugging Face
    returns it, the scalar loss first), a dict or a Hugging Face `ModelOutput` (``.logits``, ``.loss``).
    Example: ``read_output({"logits": z})  # (z, None)``"""
    if torch.is_tensor(out):
        return out, None
    if isinstance(out, Mapping) or hasattr(out, "logits"):  # a dict or a Hugging Face ModelOutput
        get = out.get if isinstance(out, Mapping) else lambda key: getattr(out, key, None)
        logits = get("logits")
        if logits is None:
            logits = next((v for k, v in out.items() if torch.is_tensor(v) and k != "loss"), None) \
                if isinstance(out, Mapping) else None
        loss = get("loss")
        return _tensor_out(logits, "logits"), loss
    if isinstance(out, (tuple, list)) and out:
        if len(out) > 1 and torch.is_tensor(out[0]) and out[0].dim() == 0:  # Hugging Face, return_dict=False
            return _tensor_out(out[1], "second output"), out[0]  # (loss, logits, ...)
        loss = out[1] if len(out) > 1 and torch.is_tensor(out[1]) and out[1].dim() == 0 else None
        return _tensor_out(out[0], "its first output"), loss
    return _tensor_out(out, "output")


def _tensor_out(value, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise BigModelError(f"The model's {what} is a {type(value).__name__}, not a tensor; return the logits as a "
                            "tensor, a tuple (logits, ...), or a dict with 'logits'.")
    return value


_ACCEPTED: dict[type, frozenset | None] = {}  # forward's keyword names per model class (None: it takes **kwargs)


def model_inputs(model, batch: Mapping) -> dict:
    """The keyword arguments for ``model(**batch)``: the tensors its forward takes (all, if it takes **kwargs),
    with ``label`` renamed ``labels`` where that is what it takes — as the Hugging Face Trainer does."""
    kind = type(model)
    if kind not in _ACCEPTED:
        try:
            params = inspect.signature(model.forward).parameters.values()
            _ACCEPTED[kind] = None if any(p.kind is p.VAR_KEYWORD for p in params) else \
                frozenset(p.name for p in params)
        except (TypeError, ValueError):
            _ACCEPTED[kind] = None
    accepted = _ACCEPTED[kind]
    inputs = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    if "label" in inputs and "labels" not in inputs and (accepted is None or "labels" in accepted) \
            and not (accepted and "label" in accepted):
        inputs["labels"] = inputs.pop("label")
    return inputs if accepted is None else {k: v for k, v in inputs.items() if k in accepted}


def _loss(loss_fn, logits, y):
    if loss_fn is None:
        raise BigModelError("The model returned no loss and none was given; pass --loss (e.g. cross_entropy or mse).")
    return _apply_loss(loss_fn, logits, y)


def _apply_loss(loss_fn, logits, y):
    if logits.dim() == 3 and y.dim() == 2 and loss_fn in (F.cross_entropy, F.nll_loss):  # [B, T, V] sequence outputs
        return loss_fn(logits.flatten(0, 1), y.flatten())  # ignore_index -100: padding, as Hugging Face marks it
    if loss_fn is F.binary_cross_entropy_with_logits:  # one logit per sample, 0/1 labels of any dtype
        y = y.float()
    if y.is_floating_point() and logits.shape != y.shape and logits.numel() == y.numel():
        y = y.view_as(logits)  # (n,) targets against (n, 1) outputs would silently broadcast to (n, n)
    return loss_fn(logits, y)


def autocast(device, amp):
    if amp is None or amp.dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=amp.dtype)


def preflight(model, data, config, device, amp) -> torch.Size:
    """Run two training samples through the model before starting the thread, so a model that does not fit
    the data fails here with one sentence (and the fix) instead of deep inside the run. Returns the shape
    of the logits on those two samples."""
    loss_fn = resolve_loss(config.loss, data.task)
    batch = next(iter(data.train.batches(2, device)))
    y = targets_of(batch)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, amp), warnings.catch_warnings():
            # torch warns, then silently broadcasts, when a loss's target and input shapes differ: an error here
            warnings.filterwarnings("error", message="Using a target size", category=UserWarning)
            logits, loss = read_output(call(model, batch, takes_targets(model)))  # one forward pass
            check_outputs(logits, y, data, loss_fn)
            if config.loss is None and data.task == "classification" and logits.dim() == 2 and logits.shape[-1] == 1:
                loss_fn = F.binary_cross_entropy_with_logits  # one logit: what the run will train with
            if loss is None:
                if y is None:
                    batch_loss(model, batch, loss_fn, takes_targets(model))  # says what is missing
                loss = _loss(loss_fn, logits, y)
    except BigModelError:
        raise
    except Exception as exc:  # the user's model or loss raised: say where, and what the data looks like
        raise model_failure(exc, model, data, batch) from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(loss) or loss.dim() != 0:
        raise BigModelError("The loss must be a scalar tensor; check --loss or what the model returns.")
    return logits.shape


def model_failure(exc: Exception, model, data, batch) -> BigModelError:
    """The one sentence for a model (or loss) that raised on a batch of `data`: where, the batch's shapes, the fix."""
    x, y = first_input(batch), targets_of(batch)
    targets = f", targets {list(y.shape)}" if y is not None else ""
    shape = tuple(data.input_shape) or tuple(x.shape[1:])
    fix = _dtype_fix(model, x) or (f"check that the model's input size matches the data's input shape "
                                    f"{shape}{_classes_hint(data)}")
    return BigModelError(f"The model failed on a batch of '{data.name}' (inputs {list(x.shape)} {_dtype(x)}"
                         f"{targets}): {describe_exception(exc)} — {fix}.")


def call(model, batch, with_targets: bool = False):
    """The model on a batch: ``model(**batch)`` for a dict, ``model(x)`` (or ``model(x, y)``) for a pair."""
    if isinstance(batch, Mapping):
        return model(**model_inputs(model, batch))
    x, y = batch
    return model(x, y) if with_targets else model(x)


def check_outputs(logits, y, data, loss_fn) -> None:
    """Outputs that cannot match the targets: fewer classes than the data has, or a shape the loss would
    broadcast. Said once, with the fix, instead of 'Target 6 is out of bounds' or a broadcasting warning."""
    if y is None:
        return
    if data.task == "classification" and data.num_classes and logits.dim() == 2 and loss_fn is not None:
        binary = logits.shape[-1] == 1 and data.num_classes == 2
        if logits.shape[-1] < data.num_classes and not binary:
            raise BigModelError(f"The model outputs {logits.shape[-1]} values per sample but '{data.name}' has "
                                f"{data.num_classes} classes; make the last layer output {data.num_classes}"
                                f"{' (or 1 logit with --loss bce)' if data.num_classes == 2 else ''}.")
    elementwise = loss_fn in (F.mse_loss, F.l1_loss, F.huber_loss, F.binary_cross_entropy_with_logits)
    if elementwise and logits.numel() != y.numel():
        raise BigModelError(f"The model outputs {list(logits.shape)} for targets of shape {list(y.shape)}, so the "
                            f"loss cannot compare them; make the last layer output "
                            f"{int(y[0].numel())} value{'s' if y[0].numel() != 1 else ''} per sample.")


def _dtype(x) -> str:
    return str(x.dtype).removeprefix("torch.")


def _dtype_fix(model, x) -> str | None:
    """What to do when the inputs' kind does not suit the model's first layer, or None."""
    lookup = (torch.nn.Embedding, torch.nn.EmbeddingBag)  # take integer ids
    first = next((m for m in model.modules() if isinstance(m, (*lookup, torch.nn.Linear,
                                                                torch.nn.modules.conv._ConvNd))), None)
    if isinstance(first, lookup) and x.is_floating_point():
        return "the model starts with an Embedding, which takes integer token ids; pass int64 ids, not floats"
    if first is not None and not isinstance(first, lookup) and not x.is_floating_point():
        return (f"the inputs are {_dtype(x)} but the model's first layer ({type(first).__name__}) takes floats; "
                "convert them, e.g. X.astype('float32')")
    return None


def _classes_hint(data) -> str:
    return f" and its output size matches the {data.num_classes} classes" if data.num_classes else ""
