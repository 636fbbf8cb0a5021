"""The operations behind `%compress`'s prune and quantize steps, as plain functions on a model.
`compress.py` orders them (distillation is in `distill.py`); `compress_report.py` measures each stage.

Pruning: unstructured magnitude pruning with ``torch.nn.utils.prune`` (zeros in dense tensors) and
structured pruning with Torch-Pruning (channels really removed). Quantization: torch.ao's
``quantize_dynamic``, torchao's ``quantize_`` configs, or half-precision casts.

Torch-Pruning and torchao are optional (``pip install bigmodel-nb[compress]``) and imported only
when a step needs them.
"""
from __future__ import annotations

import copy
import fnmatch
import logging
import math
import warnings

import torch
from torch import nn

from ..core.errors import BigModelError, describe_exception
from .distill import logits_of

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DEPRECATED = "deprecated"


# -- helpers --------------------------------------------------------------------------------------
def is_plain(t) -> bool:
    """An ordinary (not quantized, not subclassed) tensor or parameter."""
    return type(t) in (torch.Tensor, nn.Parameter) and not t.is_quantized


def fmt_bytes(n) -> str:
    """``1.23 MB``-style text for a byte count."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


# -- pruning ---------------------------------------------------------------------------------------
def _ignored(name: str, patterns) -> bool:
    return any(name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p) for p in patterns)


def prune_unstructured(model: nn.Module, ratio: float, scope: str = "layer", ignore=()) -> tuple[list, str]:
    """Zero the `ratio` smallest-magnitude (L1) weights of every Linear/Conv layer (``scope="layer"``)
    or of all of them together (``"global"``), in place, masks made permanent. Returns the masks
    ``[(module, bool mask)]`` and a note saying what that does (and does not) buy.

    Example: ``masks, note = prune_unstructured(model, 0.5)``
    """
    from torch.nn.utils import prune

    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, PRUNABLE) and isinstance(getattr(m, "weight", None), torch.Tensor)
               and not _ignored(n, ignore)]
    if not targets:
        raise BigModelError("The model has no Linear or Conv weights to prune (or all of them are in ignore=).")
    if scope == "global":
        prune.global_unstructured([(m, "weight") for _, m in targets], pruning_method=prune.L1Unstructured,
                                  amount=ratio)
    else:
        for _, m in targets:
            prune.l1_unstructured(m, "weight", amount=ratio)
    for _, m in targets:
        prune.remove(m, "weight")  # the mask is multiplied in for good: an ordinary dense weight with zeros
    masks = [(m, m.weight.detach() != 0) for _, m in targets]
    zeros = sum(int((~mask).sum()) for _, mask in masks)
    total = sum(mask.numel() for _, mask in masks)
    # CSR: each kept value plus a 4-byte column index, and one 4-byte row pointer per row. With 4-byte values
    # that is 8 bytes per kept weight against 4 dense: smaller only when under half of them are kept.
    csr = sum(int(mask.sum()) * (m.weight.element_size() + 4) + 4 * (mask.shape[0] + 1) for m, mask in masks)
    dense = sum(mask.numel() * m.weight.element_size() for m, mask in masks)
    size = dense / total  # bytes per dense weight, over all the pruned layers
    even = size / (size + 4)  # the density below which CSR is smaller (int32 indices)
    even64 = size / (size + 8)  # with int64 indices, PyTorch's default for sparse CSR tensors
    verdict = "smaller than dense" if csr < dense else "no smaller than dense"
    return masks, (f"masks only: {zeros / total:.1%} of the weights of {len(targets)} Linear/Conv layers are zeros, "
                   f"still stored and multiplied densely — same size, same compute; stored sparse (CSR: values + "
                   f"int32 column indices + row pointers) they would take ≈{csr:,} bytes instead of {dense:,} "
                   f"({verdict}; an estimate, not measured): CSR is smaller only above {1 - even:.0%} sparsity "
                   f"({1 - even64:.0%} with int64 indices)")


def torch_pruning():
    """The Torch-Pruning module, or a one-sentence error saying how to install it."""
    try:
        import torch_pruning
    except ImportError:
        raise BigModelError("Structured pruning needs Torch-Pruning; pip install torch-pruning.") from None
    return torch_pruning


def final_layer(model: nn.Module, x) -> str | None:
    """The name of the last Linear/Conv layer the forward pass runs (the classifier)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, a, o: order.append(names[mod])) for m in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None


def _heads(model: nn.Module) -> dict:
    """The zoo's fused-qkv attention layers and their head counts, so Torch-Pruning removes whole heads."""
    return {m.qkv: m.n_head for m in model.modules()
            if hasattr(m, "qkv") and isinstance(getattr(m, "n_head", None), int)}


def _tp_prune(tp, model, x, ratio, global_scope, ignored_names):
    modules = dict(model.named_modules())
    heads = _heads(model)
    # Embeddings set the width of the residual stream that every block adds to; keep it.
    ignored = [modules[n] for n in ignored_names] + [m for m in model.modules() if isinstance(m, nn.Embedding)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
            global_pruning=global_scope, max_pruning_ratio=0.95, ignored_layers=ignored, output_transform=logits_of,
            num_heads=heads, prune_num_heads=bool(heads), prune_head_dims=False,
            head_pruning_ratio=min([ratio] + [(n - 1) / n for n in heads.values()]))  # every layer keeps a head
        pruner.step()
    for m in model.modules():  # the attention layers must know how many heads they have left
        if getattr(m, "qkv", None) in heads:
            m.n_head = pruner.num_heads[m.qkv]
    return model


def prune_structured(model: nn.Module, x: torch.Tensor, ratio: float, scope: str = "layer", ignore=()) -> str:
    """Remove whole channels/neurons with Torch-Pruning (L2 magnitude importance), in place, so that
    about `ratio` of the model's parameters go; the last Linear/Conv layer (the classifier) and
    layers matching `ignore` keep their outputs. `x`: an input batch to trace the model with.
    Returns a note (channel ratio used, layers resized).

    Example: ``note = prune_structured(model, torch.randn(8, 64), 0.5)``
    """
    tp = torch_pruning()
    model.eval()
    x = x[: max(2, min(8, x.shape[0]))]
    with torch.no_grad():
        out_shape = logits_of(model(x)).shape
    final = final_layer(model, x)
    ignored = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE) and (n == final or _ignored(n, ignore))]
    total = sum(p.numel() for p in model.parameters())
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    head_counts = {n: m.n_head for n, m in model.named_modules() if getattr(m, "qkv", None) in _heads(model)}

    def attempt(channel_ratio, target=None):
        try:
            pruned = _tp_prune(tp, target or copy.deepcopy(model), x, channel_ratio, scope == "global", ignored)
            with torch.no_grad():
                shape = logits_of(pruned(x)).shape
        except BigModelError:
            raise
        except Exception as exc:
            raise _untraceable(tp, model, x, ignored, exc) from None
        if shape != out_shape:
            raise BigModelError(f"Structured pruning changed the model's output shape from {list(out_shape)} to "
                                f"{list(shape)}; add the output layer to ignore= (e.g. ignore=['{final}']).")
        return sum(p.numel() for p in pruned.parameters())

    # Torch-Pruning removes a fraction of each layer's channels; parameters fall faster than that
    # (a hidden Linear loses rows and columns). Bisect for the channel ratio whose parameter
    # removal is closest to the requested fraction, one throwaway copy per probe.
    lo, hi, best, most = 0.0, 0.95, (math.inf, ratio), 0.0
    for _ in range(9):
        mid = (lo + hi) / 2
        removed = 1 - attempt(mid) / total
        best, most = min(best, (abs(removed - ratio), mid)), max(most, removed)
        lo, hi = (mid, hi) if removed < ratio else (lo, mid)
        if abs(removed - ratio) < 0.005:
            break
    if most == 0:
        raise BigModelError(f"Torch-Pruning finds no channels it may remove in {type(model).__name__}: every prunable "
                            f"layer is the final layer '{final}' or matches ignore={list(ignore)}.")
    kept = attempt(best[1], target=model)
    changed = [f"{n} {shapes[n][0]}→{m.weight.shape[0]}" for n, m in model.named_modules()
               if isinstance(m, PRUNABLE) and n in shapes and m.weight.shape[0] != shapes[n][0]]
    heads = [f"{n} {before}→{m.n_head}" for n, m in model.named_modules()
             if (before := head_counts.get(n)) is not None and m.n_head != before]
    return (f"channels/neurons really removed by Torch-Pruning (L2 magnitude, {best[1]:.0%} of the channels of "
            f"{'each layer' if scope == 'layer' else 'all layers ranked together'}): "
            f"{1 - kept / total:.1%} fewer parameters, "
            f"smaller dense layers (outputs {', '.join(changed[:3])}{' …' if len(changed) > 3 else ''}"
            f"{'; attention heads ' + ', '.join(heads[:3]) if heads else ''}); "
            f"the final layer '{final}' keeps its outputs")


def _untraceable(tp, model, x, ignored, exc) -> BigModelError:
    """Name the layer whose channels Torch-Pruning cannot remove: prune one channel of each group
    on a copy until the model breaks."""
    what = describe_exception(exc)
    try:
        trial = copy.deepcopy(model)
        names = {m: n for n, m in trial.named_modules()}
        modules = dict(trial.named_modules())
        graph = tp.DependencyGraph().build_dependency(trial, example_inputs=x, output_transform=logits_of)
        for group in graph.get_all_groups(ignored_layers=[modules[n] for n in ignored], root_module_types=PRUNABLE):
            root = group[0].dep.target.module
            try:
                group.prune(idxs=[0])
                with torch.no_grad():
                    trial(x)
            except Exception as inner:
                name = names.get(root, type(root).__name__)
                return BigModelError(f"Torch-Pruning cannot prune {type(model).__name__}: "
                                     f"removing channels of the layers coupled to '{name}' ({type(root).__name__}) "
                                     f"breaks it ({describe_exception(inner)}); "
                                     f"pass ignore=['{name}'] to keep that layer, or prune unstructured.")
    except Exception:  # locating is best effort; the first error still says what went wrong
        pass
    return BigModelError(f"Torch-Pruning cannot prune {type(model).__name__} ({what}); keep the offending layers "
                         "with ignore=[...] or prune unstructured.")


# -- quantization ----------------------------------------------------------------------------------
def torchao_quantization():
    """``torchao.quantization``, imported quietly (torchao logs about optional kernels it cannot load
    on this machine), or None when torchao is not installed."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization as tq
    except ImportError:
        return None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return tq


def quant_backend(mode: str, backend: str, device: torch.device) -> str | None:
    """Which library quantizes here: 'torchao', 'torch.ao', or None (a plain cast); a one-sentence
    error naming the package to install when the installed ones cannot do `mode` on `device`."""
    if mode in ("fp16", "bf16"):
        return None
    if mode == "int8-weight" or backend == "torchao":
        if torchao_quantization() is None:
            raise BigModelError(f"Quantization mode '{mode}' needs torchao, which is not installed; "
                                "pip install torchao.")
        return "torchao"
    cpu = device.type == "cpu"
    has_ao = hasattr(getattr(torch, "ao", None), "quantization") and hasattr(torch.ao.quantization, "quantize_dynamic")
    if backend == "torch.ao" or (cpu and has_ao):
        # Why torch.ao is the CPU default although it is deprecated: bench/compress.py (2 CPU threads,
        # BERT-base-sized blocks, batch 8×128) measures quantize_dynamic's fbgemm int8 kernels faster
        # than torchao's eager int8 dynamic path, which needs torch.compile to catch up.
        if not cpu:
            raise BigModelError(f"int8 dynamic quantization through torch.ao runs on the CPU only, not {device}; "
                                "pip install torchao for int8 there.")
        if not has_ao:
            raise BigModelError("This torch has no torch.ao.quantization.quantize_dynamic; "
                                "pip install torchao for int8.")
        return "torch.ao"
    if torchao_quantization() is None:
        raise BigModelError(f"int8 quantization on {device} needs torchao, which is not installed; "
                            "pip install torchao.")
    return "torchao"


def _no_fast_path(module, args):
    """A no-op forward pre-hook: its mere presence keeps nn.TransformerEncoderLayer off its fused
    fast path, which reads `.weight` tensors that dynamic-quantized Linear layers no longer have."""
    return None


def quantize_model(model: nn.Module, mode: str, backend: str = "auto",
                   device: torch.device | str = "cpu") -> tuple[nn.Module, str, list[str]]:
    """Quantize (int8 modes: Linear layers) or cast (fp16/bf16) `model` in place; returns the model,
    a note on what is stored and computed how, and report-level notes (e.g. a deprecation line).

    Example: ``model, note, notes = quantize_model(model, "int8")``
    """
    device = torch.device(device)
    which = quant_backend(mode, backend, device)
    model.eval()
    notes: list[str] = []
    if which is None:
        dtype = torch.float16 if mode == "fp16" else torch.bfloat16
        cpu = ("; on many CPUs half-precision kernels are no faster (often slower) than float32 — "
               "the speed-up is a GPU's"
               if device.type == "cpu" else "")
        return model.to(dtype), (f"all floating weights stored in {mode} (half the bytes); inputs cast to {mode} for "
                                 f"evaluation and timing{cpu}"), notes
    linears = sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    if which == "torch.ao":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
        if any(_DEPRECATED in str(w.message) for w in caught):  # one line instead of three long warnings
            notes.append("torch.ao.quantization.quantize_dynamic is deprecated in torch "
                         f"{torch.__version__.split('+')[0]} "
                         "(torchao's quantize_ succeeds it); it is used for int8 on CPU because its eager int8 kernels "
                         "measured faster than torchao's — Quantize('int8', backend='torchao') picks torchao")
        for w in caught:
            if _DEPRECATED not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for m in model.modules():
            if isinstance(m, nn.TransformerEncoderLayer):
                m.register_forward_pre_hook(_no_fast_path)
        done = sum(1 for m in model.modules() if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)))
        how = "torch.ao quantize_dynamic: int8 weights, activations quantized per batch, int8 matmuls (fbgemm)"
    else:
        tq = torchao_quantization()
        config = tq.Int8DynamicActivationInt8WeightConfig() if mode == "int8" else tq.Int8WeightOnlyConfig()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tq.quantize_(model, config)
        done = sum(1 for m in model.modules() if isinstance(m, nn.Linear) and not is_plain(m.weight))
        how = ("torchao Int8DynamicActivationInt8WeightConfig: int8 weights (per row) and per-batch int8 activations"
               if mode == "int8" else
               "torchao Int8WeightOnlyConfig: int8 storage, weights dequantized for each matmul in eager mode — "
               "smaller, not expected to be faster without torch.compile")
    rest = (f"; {linears - done} Linear and all other layers stay float" if linears > done
            else "; other layers stay float")
    return model, f"{how}; {done} Linear layer{'s' if done != 1 else ''} quantized{rest}", notes
