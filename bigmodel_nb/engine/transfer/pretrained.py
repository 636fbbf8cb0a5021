"""Load weights from another model, a safetensors file, a checkpoint folder or a run, keeping only
the tensors whose names and shapes match (a new head is skipped, not an error). Never unpickles.

Example: ``load_from(model, "pretrained.safetensors").summary()``
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core import checkpoint as ckpt
from ..core.errors import BigModelError

log = logging.getLogger("bigmodel_nb")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, our export wrapper / Lightning


def few(items: list, n: int = 3) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# -- loading weights from another model ------------------------------------------------------------
@dataclass
class LoadResult:
    """What `load_from` did. ``loaded``: names copied; ``skipped``: (name, shape in the source, shape
    in the model) left as initialised because the shapes differ (e.g. a head for other classes);
    ``missing``: in the model but not in the source; ``unexpected``: in the source only."""

    source: str
    loaded: list[str]
    skipped: list[tuple[str, list, list]]
    missing: list[str]
    unexpected: list[str]
    meta: dict = field(default_factory=dict)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.skipped) + len(self.missing)
        text = f"Loaded {len(self.loaded)} of {total} tensors from {self.source}"
        if self.skipped:
            text += "; kept as initialised (shape differs): " + few(
                [f"{n} {list(a)}→{list(b)}" for n, a, b in self.skipped])
        if self.missing:
            text += f"; not in the source (kept as initialised): {few(self.missing)}"
        if self.unexpected:
            text += f"; unused from the source: {few(self.unexpected)}"
        return text + "."

    __str__ = summary


def _resolve_file(source) -> Path:
    """A safetensors file from a path: the file itself, `<path>.safetensors`, a checkpoint folder
    (`ckpt-*` with `model.safetensors`), or a `--checkpoint` directory (its latest checkpoint)."""
    path = Path(source).expanduser()
    if not path.exists() and path.with_name(path.name + ckpt.SUFFIX).is_file():
        return path.with_name(path.name + ckpt.SUFFIX)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        latest = ckpt.latest_checkpoint(path)
        if latest is not None:
            return latest / "model.safetensors"
        files = sorted(path.glob(f"*{ckpt.SUFFIX}"))
        if len(files) == 1:
            return files[0]
        raise BigModelError(f"No checkpoint in '{path}': no ckpt-* folder with model.safetensors and "
                            f"{'several' if files else 'no'} .safetensors files; pass the file itself.")
    if not path.is_file():
        raise BigModelError(f"No checkpoint at '{path}'; pass a .safetensors file, a checkpoint folder, "
                            "a Run or a model.")
    return path


def _read_file(path: Path, device) -> tuple[dict, dict]:
    """(state dict, metadata) of a safetensors file, with checkpoint.py's checks: never a pickle,
    never a truncated file, never a newer format."""
    header = ckpt.read_header(path)  # pickles, truncation and malformed headers: one sentence
    info = header.get("__metadata__") or {}
    try:
        version = int(info.get("format_version", ckpt.FORMAT_VERSION))
    except (TypeError, ValueError):
        raise ckpt.corrupt_file(path, "the format version is not a number") from None
    if version > ckpt.FORMAT_VERSION:
        raise BigModelError(f"'{path}' was saved by a newer bigmodel_nb; upgrade bigmodel_nb to load it.")
    try:
        from safetensors.torch import load_file

        state = load_file(path, device=str(device))
        meta = json.loads(info.get("bigmodel_nb") or "{}")
        for alias, kept in json.loads(info.get("bigmodel_nb.aliases") or "{}").items():
            state[alias] = state[kept]
    except Exception as e:  # the library's own errors read like tracebacks
        raise ckpt.corrupt_file(path, type(e).__name__) from None
    return state, meta if isinstance(meta, dict) else {}


def _source_state(source, device) -> tuple[dict, str, dict]:
    from ..core.run import Run

    if isinstance(source, Run):
        if source.alive and source.started:
            raise BigModelError(f"Run '{source.name}' is still training; call {source.name}.wait() or "
                                f"{source.name}.stop() before starting from its weights.")
        return source.model.state_dict(), f"run '{source.name}'", {}
    if isinstance(source, nn.Module):
        return source.state_dict(), f"the {type(source).__name__} given", {}
    if isinstance(source, dict) and source and all(torch.is_tensor(v) for v in source.values()):
        return dict(source), "the state dict given", {}
    if isinstance(source, (str, os.PathLike)):
        path = _resolve_file(source)
        state, meta = _read_file(path, device)
        return state, f"'{path}'", meta
    raise BigModelError(f"Cannot start from a {type(source).__name__}; pass a .safetensors file or checkpoint "
                        "folder path, a Run, a model, or a state dict.")


def _align_keys(state: dict, model_keys) -> dict:
    """Strip a wrapper prefix (DDP's `module.`, torch.compile's `_orig_mod.`) when that makes names match."""
    if any(k in model_keys for k in state):
        return state
    for prefix in _WRAPPER_PREFIXES:
        stripped = {k.removeprefix(prefix): v for k, v in state.items()}
        if any(k in model_keys for k in stripped):
            return stripped
    return state


def load_from(model: nn.Module, source, *, device=None) -> LoadResult:
    """Copy every tensor of `source` whose name and shape match into `model`; others are reported.

    `source`: a safetensors file (`save_weights`, `run.save`), a checkpoint folder or `--checkpoint`
    directory (its latest checkpoint), a `Run`, an ``nn.Module`` or a state dict. Nothing is changed
    unless something matches. Example: ``load_from(model, "runs/pre.safetensors").skipped``
    """
    if not isinstance(model, nn.Module):
        raise BigModelError(f"Expected a torch.nn.Module to load weights into, got {type(model).__name__}.")
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    state, where, meta = _source_state(source, device)
    own = model.state_dict()
    state = _align_keys({k: v for k, v in state.items() if torch.is_tensor(v)}, own)
    loaded, skipped = [], []
    for name, tensor in own.items():
        theirs = state.get(name)
        if theirs is None or not torch.is_tensor(tensor):
            continue
        if theirs.shape == tensor.shape:
            loaded.append(name)
        else:
            skipped.append((name, list(theirs.shape), list(tensor.shape)))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if not loaded:
        if skipped:
            name, a, b = skipped[0]
            why = f"every tensor with a matching name differs in shape (e.g. '{name}' is {a} there but {b} here)"
        else:
            why = (f"none of its {len(state)} tensor names is in the model (it has e.g. "
                   f"'{next(iter(state), '?')}', the model '{next(iter(own), '?')}')")
        raise BigModelError(f"Nothing in {where} fits this {type(model).__name__}: {why}; start from weights "
                            "saved from the same architecture.")
    with torch.no_grad():
        model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    result = LoadResult(where, loaded, skipped, missing, unexpected, meta)
    log.info(result.summary())
    return result
