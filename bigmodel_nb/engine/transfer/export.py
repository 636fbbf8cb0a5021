"""Export a trained model for deployment: torch.export (.pt2), or ONNX where its packages are installed.

Example: ``export(model, example, "model.pt2")  # load with torch.export.load("model.pt2").module()``
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.checkpoint import atomic_write
from ..core.errors import BigModelError, describe_exception

__all__ = ["ExportResult", "export"]

FORMATS = {"torch.export": ".pt2", "onnx": ".onnx"}


@dataclass
class ExportResult:
    """An exported model: ``path``, ``format``, ``size_bytes``, ``input_shapes`` of the example, and
    ``dynamic_batch`` (any batch size works) or not (the example's batch size only)."""

    path: Path
    format: str
    size_bytes: int
    input_shapes: list
    dynamic_batch: bool
    logits_only: bool

    def __str__(self) -> str:
        batch = "any batch size" if self.dynamic_batch else "the example's batch size only"
        return f"Exported to '{self.path}' ({self.format}, {self.size_bytes:,} bytes, {batch})."


class _Logits(nn.Module):
    """Exports the logits of a model returning (logits, loss) or an object with `.logits`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        out = self.model(*args)
        if isinstance(out, (tuple, list)):
            return out[0]
        return out.logits if hasattr(out, "logits") else out


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def export(model: nn.Module, example, path, format: str = "torch.export", *,
           dynamic_batch: bool = True) -> ExportResult:
    """Export `model` for deployment: ``format="torch.export"`` writes an ExportedProgram (``.pt2``,
    read back with ``torch.export.load``); ``format="onnx"`` writes ``.onnx`` through the dynamo
    exporter and needs ``pip install onnx onnxscript``. `example` is an input batch (a tensor, or a
    tuple of tensors); the batch axis is left dynamic when the model allows. Models returning
    ``(logits, loss)`` are exported returning the logits.

    Example: ``export(model, X[:8], "digits_cnn")  # -> digits_cnn.pt2``
    """
    fmt = str(format).lower().replace("_", ".")
    fmt = {"pt2": "torch.export", "export": "torch.export", "torch": "torch.export"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise BigModelError(f"Unknown export format '{format}'; choose torch.export or onnx.")
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if not _installed(m)]
        if missing:
            raise BigModelError(f"ONNX export needs {' and '.join(missing)}, "
                                f"which {'is' if len(missing) == 1 else 'are'} not installed; "
                                "run `pip install onnx onnxscript` (or use format=\"torch.export\").")
    if not isinstance(model, nn.Module):
        raise BigModelError(f"Expected a torch.nn.Module to export, got {type(model).__name__}.")
    args = (example,) if torch.is_tensor(example) else tuple(example) if isinstance(example, (tuple, list)) else None
    if not args or not all(torch.is_tensor(a) for a in args):
        raise BigModelError(f"The example must be an input batch: a tensor, or a tuple of tensors for a model with "
                            f"several inputs; got a {type(example).__name__}.")
    device = next(iter(model.parameters()), torch.empty(0)).device
    args = tuple(a.to(device) for a in args)
    path = Path(path)
    if path.suffix != FORMATS[fmt]:
        path = path.with_name(path.name + FORMATS[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)

    was_training = model.training
    model.eval()  # dropout off, batch norm on its running statistics: the deployed behaviour
    try:
        with torch.no_grad():
            try:
                out = model(*args)
            except Exception as e:
                raise BigModelError("The model failed on the example input "
                                    f"({', '.join(str(list(a.shape)) for a in args)}): "
                                    f"{describe_exception(e)}.") from None
        logits_only = not torch.is_tensor(out)
        if logits_only and not (isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0])
                                or torch.is_tensor(getattr(out, "logits", None))):
            raise BigModelError(f"The model returns a {type(out).__name__}; export needs a tensor, a (logits, ...) "
                                "tuple or an object with .logits.")
        target = _Logits(model).eval() if logits_only else model
        if dynamic_batch and all(a.dim() and a.shape[0] == 1 for a in args):
            args = tuple(torch.cat([a, a]) for a in args)  # a batch of 1 would be specialised to 1
        shapes = [list(a.shape) for a in args]
        dynamic = None
        if dynamic_batch and all(a.dim() for a in args) and len({a.shape[0] for a in args}) == 1:
            dims = tuple({0: torch.export.Dim.AUTO} for _ in args)
            dynamic = (dims,) if target is not model else dims
        program, dynamic_ok = _capture(target, args, dynamic)
        if fmt == "torch.export":
            atomic_write(path, lambda tmp: torch.export.save(program, tmp), keep_suffix=True)
        else:
            _onnx(target, args, dynamic if dynamic_ok else None, path)
    finally:
        model.train(was_training)
    return ExportResult(path, fmt, path.stat().st_size, shapes, dynamic_ok, logits_only)


def _capture(target: nn.Module, args: tuple, dynamic):
    """torch.export.export with a dynamic batch axis, or a static one if the model pins it."""
    error = None
    for shapes in ([dynamic, None] if dynamic is not None else [None]):
        try:
            program = torch.export.export(target, args, dynamic_shapes=shapes)
        except Exception as e:
            error = e
            continue
        placeholders = [n for n in program.graph.nodes if n.op == "placeholder"
                        and n.name in program.graph_signature.user_inputs]
        from torch.fx.experimental.symbolic_shapes import is_concrete_int

        dynamic_ok = shapes is not None and all(  # Dim.AUTO quietly pins an axis the model fixes
            not is_concrete_int(getattr(n.meta.get("val"), "shape", [0])[0]) for n in placeholders)
        return program, dynamic_ok
    raise BigModelError("torch.export could not capture this "
                        f"{type(target.model if isinstance(target, _Logits) else target).__name__}: "
                        f"{describe_exception(error)} — Python control flow that depends on tensor values is the usual "
                        "cause; see https://pytorch.org/docs/stable/export.html.") from None


def _onnx(target: nn.Module, args: tuple, dynamic, path: Path) -> None:
    try:
        program = torch.onnx.export(target, args, dynamo=True, dynamic_shapes=dynamic)
        program.save(str(path))
    except BigModelError:
        raise
    except Exception as e:
        raise BigModelError(f"ONNX export failed: {describe_exception(e)}; "
                            "torch.export format may still work.") from None
