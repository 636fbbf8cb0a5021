"""Transfer learning: start a model from another one's weights, give it a new head,
freeze part of it (and unfreeze it later in the run); the package also exports `load_from` and `export`.

    load_from(model, "pre.safetensors")   # matching names and shapes only; a new head is skipped
    replace_head(model, 5)                # -> "head": a fresh Linear(in_features, 5)
    freeze(model, "convs.*")              # requires_grad False; BatchNorm running stats held too
    Run(model, data, cfg, [Unfreeze(2)])  # everything frozen trains again from epoch 3
    export(model, example, "m.pt2")       # torch.export (or format="onnx" with onnx + onnxscript)

Frozen parameters have no gradient, so every torch optimizer skips them; `Unfreeze` makes sure
the optimizer holds them once they train (adding a parameter group when it does not already).
Loading never unpickles: sources are safetensors files, checkpoint folders, runs or modules.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.adapters import as_bundle
from ..core.batches import DataBundle, Split
from ..core.callbacks import Callback
from ..core.errors import BigModelError
from ..inspect.grads import matches_pattern
from .pretrained import LoadResult, few, load_from

log = logging.getLogger("bigmodel_nb")

__all__ = ["FreezeResult", "TransferSetup", "Unfreeze", "class_subset", "find_head", "freeze", "prepare",
           "replace_head", "trainable_counts", "unfreeze"]

HEAD_NAMES = ("head", "fc", "classifier", "heads", "lm_head")  # zoo, ResNet, HF/EfficientNet, ViT, GPT


# -- a new head ------------------------------------------------------------------------------------
def _last_linear(seq: nn.Sequential, prefix: str) -> str | None:
    for name, child in reversed(list(seq.named_children())):
        path = f"{prefix}{name}"
        if isinstance(child, nn.Linear):
            return path
        if isinstance(child, nn.Sequential):
            found = _last_linear(child, path + ".")
            if found:
                return found
        if any(True for _ in child.parameters()):
            raise BigModelError(f"The last layer with weights ('{path}') is a {type(child).__name__}, not a Linear, "
                                "so there is no classifier head to replace; replace the last layer yourself.")
    return None


def find_head(model: nn.Module) -> str:
    """Module path of the final classifier Linear: attribute `head`, `fc`, `classifier` or `lm_head`
    (or the last Linear inside it when it is a Sequential), else the last Linear of a Sequential model.

    Example: ``find_head(CNN(CNNConfig()))  # "head"``
    """
    for attr in HEAD_NAMES:
        sub = model._modules.get(attr)
        if isinstance(sub, nn.Linear):
            return attr
        if isinstance(sub, nn.Sequential):
            found = _last_linear(sub, attr + ".")
            if found:
                return found
    if isinstance(model, nn.Sequential):
        found = _last_linear(model, "")
        if found:
            return found
    raise BigModelError(f"Cannot find the classifier head of this {type(model).__name__}: no Linear named "
                        f"{', '.join(HEAD_NAMES)} and it is not an nn.Sequential ending in a Linear; "
                        "replace the last layer yourself (e.g. model.out = nn.Linear(128, 5)).")


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the classifier head (see `find_head`) for a fresh ``Linear(in_features, num_classes)``,
    initialised from the global RNG (seed with torch.manual_seed first); returns its module path.

    Example: ``replace_head(model, 5)  # "head"``
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BigModelError(f"A new head needs a whole number of classes ≥ 1 (--new-head N); got {num_classes!r}.")
    name = find_head(model)
    old = model.get_submodule(name)
    for other, p in model.named_parameters(remove_duplicate=False):
        if p is old.weight and not other.startswith(name + "."):
            raise BigModelError(f"'{name}.weight' is tied to '{other}' (one shared matrix), so the head cannot be "
                                "replaced on its own; this model is not a classifier with a separate head.")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    config = getattr(model, "config", None)  # the zoo's dataclass configs: a copy, never the shared one
    if dataclasses.is_dataclass(config) and not isinstance(config, type) and hasattr(config, "num_classes"):
        model.config = dataclasses.replace(config, num_classes=num_classes)
    elif hasattr(config, "num_labels"):  # Hugging Face: its loss reads num_labels (id2label follows it)
        config.num_labels = num_classes
        if hasattr(model, "num_labels"):
            model.num_labels = num_classes
    return name


# -- freezing ------------------------------------------------------------------------------------
@dataclass
class FreezeResult:
    """What `freeze` did. ``names``: parameters frozen by this call; ``modules``: their module paths;
    ``norm_layers``: normalisation layers held in eval mode (running statistics frozen too);
    ``trainable`` / ``frozen``: parameter counts of the whole model afterwards."""

    pattern: str
    names: list[str]
    modules: list[str]
    norm_layers: list[str]
    trainable: int
    frozen: int

    def summary(self) -> str:
        where = few(self.modules, 4) or "nothing new"
        return (f"Froze {len(self.names)} tensors ({where}) matching '{self.pattern}': "
                f"{self.frozen:,} frozen, {self.trainable:,} trainable parameters.")

    __str__ = summary


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts, shared parameters once.

    Example: ``trainable_counts(model)  # (650, 4800)``
    """
    trainable = frozen = 0
    for p in model.parameters():
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def _parts(pattern) -> list[str]:
    if isinstance(pattern, str):
        parts = [p.strip() for p in pattern.split(",")]
    elif isinstance(pattern, Iterable):
        parts = [str(p).strip() for p in pattern]
    else:
        parts = []
    parts = [p for p in parts if p]
    if not parts:
        raise BigModelError(f"--freeze needs a pattern such as 'convs.*' or 'layers.0,layers.1'; got {pattern!r}.")
    return parts


def _matching(model: nn.Module, pattern) -> tuple[str, dict[int, tuple[str, str, nn.Parameter]]]:
    """(pattern text, id(param) -> (name, module path, param)) for parameters matching `pattern`:
    comma-separated names (a module and everything under it), globs or regular expressions,
    matched on module paths and parameter names as in `grads.select_layers`."""
    parts = _parts(pattern)
    text = ",".join(parts)
    chosen: dict[int, tuple[str, str, nn.Parameter]] = {}
    try:
        for path, module in model.named_modules(remove_duplicate=False):
            for pname, p in module.named_parameters(recurse=False):
                full = f"{path}.{pname}" if path else pname
                if id(p) not in chosen and any(matches_pattern(part, path or full, [full]) for part in parts):
                    chosen[id(p)] = (full, path, p)
    except BigModelError:  # grads' matcher speaks of --layers
        raise BigModelError(f"--freeze '{text}' is not a valid regular expression or glob.") from None
    if not chosen:
        tops = [n for n, c in model.named_children() if any(True for _ in c.parameters())]
        tops += [n for n, _ in model.named_parameters(recurse=False)]
        hint = f" — e.g. --freeze '{tops[0]}'" if tops else ""
        raise BigModelError(f"No parameter matches --freeze '{text}'; this model's top-level modules are: "
                            f"{', '.join(tops) or '(none with parameters)'}{hint}.")
    return text, chosen


def _hold_eval(module: nn.Module, args) -> None:
    """Forward pre-hook on a frozen norm layer: stay in eval mode, so its running statistics stay
    frozen too, until one of its parameters trains again (or the hook is removed by `unfreeze`)."""
    if module.training and not any(p.requires_grad for p in module.parameters(recurse=False)):
        module.train(False)


def _held(module: nn.Module) -> bool:
    # found by the function itself rather than a stored handle, so copies and pickles of the model stay consistent
    return any(hook is _hold_eval for hook in module._forward_pre_hooks.values())


def _freeze(model: nn.Module, pattern) -> FreezeResult:
    text, chosen = _matching(model, pattern)
    for _, _, p in chosen.values():
        p.requires_grad_(False)
        p.grad = None
    norms = []
    for path, module in model.named_modules():
        if not (isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats):
            continue
        own = list(module.parameters(recurse=False))
        frozen = (all(not p.requires_grad for p in own) if own
                  else any(matches_pattern(part, path, []) for part in _parts(pattern)))
        if frozen and not _held(module):
            module.register_forward_pre_hook(_hold_eval)
            norms.append(path)
    trainable, frozen = trainable_counts(model)
    modules = list(dict.fromkeys(path or "(root)" for _, path, _ in chosen.values()))  # forward-ish order
    return FreezeResult(text, [n for n, _, _ in chosen.values()], modules, norms, trainable, frozen)


def freeze(model: nn.Module, pattern) -> FreezeResult:
    """Stop training the parameters matching `pattern` (requires_grad False): comma-separated module
    or parameter names (``layers.0,layers.1``: a module and everything under it), globs (``convs.*``,
    ``*.bias``) or regular expressions (``^blocks\\.[01]\\.``). BatchNorm layers that end up wholly
    frozen are held in eval mode so their running statistics do not move either.

    Example: ``freeze(model, "convs.*").frozen  # parameters frozen``
    """
    return _freeze(model, pattern)


def unfreeze(model: nn.Module, names: Iterable[str] | None = None) -> list:
    """Make parameters trainable again — those named (e.g. ``FreezeResult.names``) or every frozen
    one — and release frozen norm layers; returns the parameters that changed."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if names is None:
        chosen = [p for p in model.parameters() if not p.requires_grad]
    else:
        unknown = [n for n in names if n not in params]
        if unknown:
            raise BigModelError(f"Cannot unfreeze '{unknown[0]}': the model has no parameter of that name.")
        chosen = list({id(params[n]): params[n] for n in names if not params[n].requires_grad}.values())
    for p in chosen:
        p.requires_grad_(True)
    for module in model.modules():
        if _held(module) and all(p.requires_grad for p in module.parameters(recurse=False)):
            for key in [k for k, hook in module._forward_pre_hooks.items() if hook is _hold_eval]:
                del module._forward_pre_hooks[key]
    return chosen


def _optimize_too(optimizer: torch.optim.Optimizer, params: list, schedule=None) -> int:
    """Add the parameters the optimizer does not hold as a new group with the first group's settings
    (and current learning rate), and let a per-group LR schedule follow it; returns how many."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [p for p in params if id(p) not in held]
    if not missing:
        return 0
    settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.add_param_group({**settings, "params": missing})
    n = len(optimizer.param_groups)
    for attr in ("base_lrs", "lr_lambdas", "min_lrs", "_last_lr"):  # LambdaLR, OneCycleLR, ReduceLROnPlateau
        values = getattr(schedule, attr, None)
        if isinstance(values, list) and len(values) == n - 1:
            values.append(values[0])
    return len(missing)


class Unfreeze(Callback):
    """Unfreeze after `epochs` epochs (``--unfreeze-after N``): at the start of epoch N+1 the parameters
    frozen by `frozen` (a `FreezeResult` or names), or every frozen parameter, train again.

    Runs whose optimizer was built over all parameters (frozen ones have no gradient and are skipped)
    just start updating them; otherwise they join the optimizer as a new parameter group with the
    first group's settings. Example: ``Run(model, data, cfg, [Unfreeze(2, freeze(model, "convs"))])``
    """

    def __init__(self, epochs: int, frozen: FreezeResult | Iterable[str] | None = None):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise BigModelError(f"--unfreeze-after counts epochs, a whole number ≥ 1; got {epochs!r}.")
        self.epochs = epochs
        self.names = list(frozen.names) if isinstance(frozen, FreezeResult) else \
            (list(frozen) if frozen is not None else None)
        self.unfrozen: list = []  # the parameters that were unfrozen
        self.at: dict | None = None  # {"epoch", "step", "added_to_optimizer"} once it happened

    def on_train_begin(self, run, logs):
        if self.at is None and self.epochs >= logs["epochs"]:
            log.warning("--unfreeze-after %d never happens: the run has %d epochs.", self.epochs, logs["epochs"])

    def on_epoch_begin(self, run, logs):
        if self.at is not None or logs["epoch"] <= self.epochs:
            return
        self.unfrozen = unfreeze(run.model, self.names)
        added = _optimize_too(run.optimizer, self.unfrozen, run.schedule)
        self.at = {"epoch": logs["epoch"], "step": logs["step"], "added_to_optimizer": added}
        log.info("Unfroze %d tensors at epoch %d (step %d).", len(self.unfrozen), logs["epoch"], logs["step"])


# -- the %%train flags in one call ------------------------------------------------------------------
@dataclass
class TransferSetup:
    """What `prepare` did, and the callbacks to pass to the run."""

    loaded: LoadResult | None = None
    head: str | None = None
    frozen: FreezeResult | None = None
    callbacks: list = field(default_factory=list)
    head_outputs: int | None = None

    def lines(self) -> list[str]:
        out = [self.loaded.summary()] if self.loaded else []
        if self.head:
            out.append(f"New head '{self.head}' with {self.head_outputs} outputs.")
        if self.frozen:
            out.append(self.frozen.summary())
        if self.callbacks:
            out.append(f"Everything frozen trains again from epoch {self.callbacks[0].epochs + 1}.")
        return out



def prepare(model: nn.Module, *, from_=None, new_head: int | None = None, freeze: str | None = None,
            unfreeze_after: int | None = None) -> TransferSetup:
    """`%%train --from X --new-head N --freeze P --unfreeze-after E`, in that order. Everything is
    checked before the model is touched. Example: ``setup = prepare(model, from_=run0, new_head=5, freeze="convs")``
    """
    setup = TransferSetup()
    if unfreeze_after is not None:
        if freeze is None:
            raise BigModelError("--unfreeze-after N needs --freeze PATTERN: nothing is frozen to unfreeze.")
        setup.callbacks.append(Unfreeze(unfreeze_after))
    renewed: set[int] = set()  # the head's parameters, if a fresh (trainable) head replaces them
    if new_head is not None:
        if isinstance(new_head, bool) or not isinstance(new_head, int) or new_head < 1:
            raise BigModelError(f"--new-head N needs a whole number of classes ≥ 1; got {new_head!r}.")
        renewed = {id(p) for p in model.get_submodule(find_head(model)).parameters()}
    if freeze is not None:
        _, chosen = _matching(model, freeze)  # a dry run: names do not change with a new head
        if all(id(p) in chosen or (not p.requires_grad and id(p) not in renewed) for p in model.parameters()):
            raise BigModelError(f"--freeze '{freeze}' matches every parameter, leaving nothing to train; "
                                "freeze only the feature layers (not the head).")
    if from_ is not None:
        setup.loaded = load_from(model, from_)
    if new_head is not None:
        setup.head = replace_head(model, new_head)
        setup.head_outputs = new_head
    if freeze is not None:
        setup.frozen = _freeze(model, freeze)
        if setup.callbacks:
            setup.callbacks[0].names = list(setup.frozen.names)
    return setup


# -- class subsets, for transfer experiments ---------------------------------------------------------
def class_subset(data, classes, *, per_class: int | None = None, seed: int = 0, name: str | None = None):
    """The same data with only `classes`, relabelled 0..k-1 in the order given; `per_class` keeps at
    most that many training examples of each class (a seeded choice), to simulate scarce labels.
    Validation and test splits keep every example of those classes.

    Example: ``class_subset("digits", range(5, 10), per_class=10)  # digits 5-9 as classes 0-4, 50 to train on``
    """
    bundle = as_bundle(data)
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise BigModelError(f"Give each class once, e.g. classes=range(5, 10); got {classes}.")
    if bundle.task != "classification":
        raise BigModelError(f"Class subsets need classification data; '{bundle.name}' is {bundle.task}.")
    if bundle.num_classes and not all(0 <= c < bundle.num_classes for c in classes):
        raise BigModelError(f"'{bundle.name}' has classes 0..{bundle.num_classes - 1}; got {classes}.")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise BigModelError(f"per_class must be a whole number ≥ 1; got {per_class!r}.")
    lut = torch.full((max(classes) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(classes)] = torch.arange(len(classes))

    def subset(split: Split | None, limit: int | None):
        if split is None:
            return None
        X, y = split.tensors()
        keep = (y >= 0) & (y < len(lut))
        keep[keep.clone()] = lut[y[keep]] >= 0
        idx = keep.nonzero().flatten()
        if limit is not None:
            g = torch.Generator().manual_seed(seed)
            picked = [idx[y[idx] == c][torch.randperm(int((y[idx] == c).sum()), generator=g)[:limit]] for c in classes]
            idx = torch.cat(picked).sort().values
        return Split(X[idx], lut[y[idx]])

    info = dict(bundle.info)
    if isinstance(info.get("class_names"), list):
        info["class_names"] = [info["class_names"][c] for c in classes]
    label = name or f"{bundle.name}[{','.join(map(str, classes))}]"
    return DataBundle(label, subset(bundle.train, per_class), subset(bundle.val, None), subset(bundle.test, None),
                      task="classification", num_classes=len(classes), input_shape=bundle.input_shape, info=info)
