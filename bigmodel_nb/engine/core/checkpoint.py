"""Checkpoints: safetensors weights plus JSON metadata, written atomically.

Loading never unpickles code: optimizer state is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import BigModelError

FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def _fsync_dir(directory: Path) -> None:
    # makes a rename durable; directories cannot be opened on Windows, so best effort
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write(path: Path, write, keep_suffix: bool = False) -> None:
    """Call ``write(tmp_path)``, fsync it, then rename it over ``path``; no partial file is ever visible.
    `keep_suffix`: the temporary name ends like `path` (torch.export.save insists on .pt2)."""
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _dedupe(state: dict) -> tuple[dict, dict]:
    """Split a state_dict into tensors to store and aliases (tied weights) -> stored name."""
    tensors, aliases, seen, storages = {}, {}, {}, set()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise BigModelError(f"Cannot save '{name}': it is a {type(t).__name__}, not a tensor; "
                                "only tensor state can go into a safetensors checkpoint.")
        t = t.detach()
        view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if t.numel() and view in seen:  # the same tensor under two names, e.g. wte/lm_head
            aliases[name] = seen[view]
            continue
        seen[view] = name
        ptr = (t.device, t.untyped_storage().data_ptr())
        # safetensors refuses tensors sharing memory, so overlapping views get their own copy
        t = t.clone() if (t.numel() and ptr in storages) else t
        storages.add(ptr)
        tensors[name] = t.to("cpu").contiguous()
    return tensors, aliases


def save_weights(model: nn.Module, path, meta: dict | None = None) -> Path:
    """Save ``model.state_dict()`` (parameters and buffers) to one safetensors file, atomically.

    Example: ``save_weights(model, "runs/mlp", meta={"epoch": 3})  # -> runs/mlp.safetensors``
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    try:
        meta_json = json.dumps(meta or {})
    except (TypeError, ValueError) as e:
        raise BigModelError(f"Checkpoint metadata must be JSON-serialisable ({e}); "
                            "pass plain numbers, strings, lists and dicts.") from None
    tensors, aliases = _dedupe(model.state_dict())
    header = {"format_version": str(FORMAT_VERSION), "bigmodel_nb": meta_json,
              "bigmodel_nb.aliases": json.dumps(aliases)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return path


def corrupt_file(path: Path, reason: str) -> BigModelError:
    return BigModelError(f"'{path}' is truncated or corrupt ({reason}); it cannot be loaded — "
                         "re-save it or use an earlier checkpoint.")


def read_header(path: Path) -> dict:
    """Check the file really is a complete safetensors file before handing it to the library."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)  # 8-byte little-endian header length, then the JSON header's "{"
        if head[8:] != b"{":
            pickle = head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"  # what torch.save writes
            if len(head) < 9 and not pickle:
                raise corrupt_file(path, f"only {size} bytes")
            kind = " (it looks like a torch.save pickle)" if pickle else ""
            raise BigModelError(f"'{path}' is not a safetensors file{kind}; bigmodel_nb never unpickles "
                                "checkpoints, so re-save the weights with save_weights.")
        (n,) = struct.unpack("<Q", head[:8])
        if 8 + n > size:
            raise corrupt_file(path, "the header is cut short")
        try:
            header = json.loads(head[8:] + f.read(n - 1))
            end = 8 + n + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise corrupt_file(path, "the header is malformed") from None
    if end > size:
        raise corrupt_file(path, f"{end - size} bytes of tensor data are missing")
    return header


def _mismatch(model_sd: dict, file_sd: dict, strict: bool) -> str | None:
    """Name the first way the file does not fit the model, or None when it fits."""
    for k in model_sd:
        if k in file_sd and file_sd[k].shape != model_sd[k].shape:
            return f"'{k}' is {list(file_sd[k].shape)} in the file but {list(model_sd[k].shape)} in the model"
    missing = [k for k in model_sd if k not in file_sd]
    unexpected = [k for k in file_sd if k not in model_sd]
    more = len(missing) + len(unexpected) - 1
    more = f" (and {more} more key{'s' if more > 1 else ''} differ)" if more > 0 else ""
    if strict and missing:
        return f"'{missing[0]}' is in the model but not in the file{more}"
    if strict and unexpected:
        return f"'{unexpected[0]}' is in the file but not in the model{more}"
    return None


def load_weights(model: nn.Module, path, *, strict: bool = True, device=None) -> dict:
    """Load a safetensors file from ``save_weights`` into ``model`` and return its metadata.

    Tensors are read straight onto ``device`` (default: the model's own device).
    Everything is checked first, so on any error the model is left unchanged.
    Example: ``meta = load_weights(model, "runs/mlp.safetensors")``
    """
    path = Path(path)
    if not path.exists() and path.suffix != SUFFIX and path.with_name(path.name + SUFFIX).exists():
        path = path.with_name(path.name + SUFFIX)
    if not path.is_file():
        raise BigModelError(f"No checkpoint at '{path}'; check the path.")
    header = read_header(path)
    info = header.get("__metadata__") or {}
    if int(info.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise BigModelError(f"'{path}' was saved by a newer bigmodel_nb; upgrade bigmodel_nb to load it.")
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        file_sd = load_file(path, device=str(device))
        meta = json.loads(info.get("bigmodel_nb") or "{}")
        for alias, kept in json.loads(info.get("bigmodel_nb.aliases") or "{}").items():
            file_sd[alias] = file_sd[kept]
    except Exception as e:  # the library's own errors read like tracebacks; keep a short reason
        raise corrupt_file(path, type(e).__name__) from None
    problem = _mismatch(model.state_dict(), file_sd, strict)
    if problem:
        raise BigModelError(f"Checkpoint does not fit this model: {problem}.")
    model.load_state_dict(file_sd, strict=strict)
    return meta


def _step_of(folder: Path) -> int:
    digits = folder.name.removeprefix("ckpt-")
    return int(digits) if digits.isdigit() and folder.name.startswith("ckpt-") else -1


def _is_complete(folder: Path) -> bool:
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(state, dict) and state.get("complete") is True
            and (folder / "model.safetensors").is_file() and (folder / "optimizer.pt").is_file())


def latest_checkpoint(directory) -> Path | None:
    """Return the newest complete ``ckpt-*`` folder in ``directory``, or None.

    Example: ``latest_checkpoint("runs/x")  # -> Path("runs/x/ckpt-00001200")``
    """
    directory = Path(directory)
    try:
        name = json.loads((directory / "latest.json").read_text())["checkpoint"]
        if _is_complete(directory / name):
            return directory / name
    except (OSError, ValueError, KeyError, TypeError):
        pass  # latest.json missing or stale: fall back to scanning
    folders = sorted(directory.glob("ckpt-*"), key=_step_of, reverse=True)
    return next((f for f in folders if _step_of(f) >= 0 and _is_complete(f)), None)


def save_training_state(directory, *, model, optimizer=None, scaler=None, scheduler=None,
                        state: dict, keep: int = 2, best_weights: dict | None = None) -> Path:
    """Save model, optimizer, scaler, scheduler, RNG and ``state`` as ``directory/ckpt-{step:08d}/``
    (and `best_weights`, the best validation's state dict with --early-stop; `load_training_state`
    returns it as ``state["best_weights"]``).

    Example: ``save_training_state("runs/x", model=m, optimizer=opt, state={"step": 100, "epoch": 2})``
    """
    if not isinstance(state.get("step"), int) or keep < 1:
        raise BigModelError("save_training_state needs state['step'] as an int and keep >= 1; "
                            "pass e.g. state={'step': 100} and keep=2.")
    try:
        state_json = json.dumps({**state, "complete": True, "format_version": FORMAT_VERSION}, indent=1)
    except (TypeError, ValueError) as e:
        raise BigModelError(f"Training state must be JSON-serialisable ({e}); "
                            "pass plain numbers, strings, lists and dicts.") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {"optimizer": optimizer, "scaler": scaler, "scheduler": scheduler}
    extras = {k: None if obj is None else obj.state_dict() for k, obj in parts.items()}
    extras["best_weights"] = best_weights
    extras["rng"] = {"torch": torch.get_rng_state(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    name = f"ckpt-{state['step']:08d}"
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".tmp-{name}-"))
    try:
        save_weights(model, tmp / "model.safetensors")
        atomic_write(tmp / "optimizer.pt", lambda p: torch.save(extras, p))
        atomic_write(tmp / "state.json", lambda p: Path(p).write_text(state_json))  # last: marks it complete
        _fsync_dir(tmp)
        final = directory / name
        if final.exists():  # same step saved twice: a folder cannot be renamed over another
            final.rename(directory / f".tmp-old{tmp.name}")  # removed with the other leftovers below
        os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest = json.dumps({"checkpoint": name, "step": state["step"]})
    atomic_write(directory / "latest.json", lambda p: Path(p).write_text(latest))
    folders = sorted((f for f in directory.glob("ckpt-*") if _step_of(f) >= 0), key=_step_of, reverse=True)
    for old in [f for f in folders if f != final][keep - 1:] + list(directory.glob(".tmp-*")):
        shutil.rmtree(old, ignore_errors=True)  # leftovers of crashed saves go too
    return final


def load_training_state(directory, *, model, optimizer=None, scaler=None, scheduler=None,
                        map_location="cpu", restore_rng: bool = True) -> dict:
    """Restore the latest complete checkpoint in ``directory`` and return its ``state`` dict.

    Example: ``state = load_training_state("runs/x", model=m, optimizer=opt); start = state["step"]``
    """
    directory = Path(directory)
    folder = directory if _is_complete(directory) else latest_checkpoint(directory)
    if folder is None:
        raise BigModelError(f"No checkpoint in '{directory}'; train once with --checkpoint {directory} "
                            "before --resume.")
    state, opt_file = json.loads((folder / "state.json").read_text()), folder / "optimizer.pt"
    try:
        extras = torch.load(opt_file, map_location=map_location, weights_only=True)
    except Exception as e:  # weights_only refuses code objects: UnpicklingError means foreign content
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
            raise BigModelError(f"'{opt_file}' holds more than plain tensors; bigmodel_nb never "
                                "unpickles arbitrary code, so re-create the checkpoint.") from None
        raise corrupt_file(opt_file, type(e).__name__) from None
    if not (isinstance(extras, dict) and isinstance(extras.get("rng"), dict) and "torch" in extras["rng"]):
        raise corrupt_file(opt_file, "not a bigmodel_nb training-state file")
    parts = {"optimizer": optimizer, "scaler": scaler, "scheduler": scheduler}
    for label, obj in parts.items():  # a fresh GradScaler only re-learns its scale: no need to refuse
        if obj is not None and extras.get(label) is None and label != "scaler":
            raise BigModelError(f"Checkpoint '{folder}' has no {label} state; resume without "
                                f"a {label} or use a checkpoint saved with one.")
    if optimizer is not None:  # checked up front so a mismatch leaves the model untouched
        saved = [len(g["params"]) for g in extras["optimizer"]["param_groups"]]
        if saved != [len(g["params"]) for g in optimizer.param_groups]:
            raise BigModelError(f"Optimizer state in '{folder}' has parameter groups of sizes {saved}, "
                                "which do not match this optimizer; build the optimizer as in the saved run.")
    load_weights(model, folder / "model.safetensors")
    for label, obj in parts.items():
        if obj is not None and extras[label]:  # {} comes from a disabled GradScaler: keep the fresh one
            obj.load_state_dict(extras[label])
    if restore_rng:
        torch.set_rng_state(extras["rng"]["torch"].cpu())  # must be a CPU ByteTensor whatever map_location
        cuda = extras["rng"].get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    state = {k: v for k, v in state.items() if k not in ("complete", "format_version")}
    if extras.get("best_weights") is not None:
        state["best_weights"] = extras["best_weights"]
    return state
