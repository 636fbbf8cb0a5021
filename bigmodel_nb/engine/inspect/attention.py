"""Attention weights per layer and head, from three kinds of model (`%attention`).

- the zoo's `SelfAttention` (GPT, TransformerClassifier): its `capture` switch computes the weights
  explicitly instead of calling `F.scaled_dot_product_attention`, which never returns them;
- `nn.MultiheadAttention`, also inside `nn.TransformerEncoder`: a forward pre-hook forces
  `need_weights=True, average_attn_weights=False` (the encoder layer hard-codes False);
- Hugging Face models: switched to eager attention for one forward with `output_attentions=True`
  (with SDPA they silently return no attentions), then switched back.

Everything is put back afterwards: hooks removed, capture switches off, attention implementation and
train/eval mode restored. Example: ``attention(gpt, "def f(x):", tokenizer=tok).weights(0)  # [heads, T, T]``
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.batches import first_input
from ..core.errors import BigModelError, describe_exception

MAX_VALUES = 40_000  # attention numbers kept for display (~215 KB of base64 float32 in a notebook)
MAX_TOKENS = 64  # tokens shown per axis; longer inputs show their last MAX_TOKENS tokens


@dataclass
class AttentionMaps:
    """Captured attention weights. Example: ``maps.weights(maps.layers[-1])[head]  # [T, T], rows sum to 1``"""

    tokens: list[str]  # labels of the tokens shown (after any cropping)
    layers: list[int]  # captured layer indices
    heads: list[int]  # captured head indices (the same for every layer)
    maps: dict[int, torch.Tensor]  # layer -> [len(heads), T, T] float32 on the CPU
    num_layers: int
    num_heads: int
    kind: str  # "zoo", "torch" or "huggingface"
    causal: bool | None = None
    notes: list[str] = field(default_factory=list)  # what was subsampled or cropped, in words

    def weights(self, layer: int) -> torch.Tensor:
        """[heads, T, T] for a captured layer. Example: ``maps.weights(0).sum(-1)  # all ones``"""
        if layer not in self.maps:
            raise BigModelError(f"Layer {layer} was not captured; captured layers are {self.layers}.")
        return self.maps[layer]

    def __repr__(self) -> str:
        return (f"AttentionMaps({self.kind}, {len(self.tokens)} tokens, layers {self.layers} of {self.num_layers}, "
                f"heads {self.heads} of {self.num_heads})")


# -- finding attention in a model -------------------------------------------------------------------
def _zoo_modules(model) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "SelfAttention" and hasattr(m, "capture")]


def _mha_modules(model) -> list[nn.MultiheadAttention]:
    return [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]


def _is_huggingface(model) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "_attn_implementation") and \
        hasattr(model, "set_attn_implementation")


def _kind(model) -> tuple[str, list[nn.Module]]:
    if _is_huggingface(model):
        return "huggingface", []
    if zoo := _zoo_modules(model):
        return "zoo", zoo
    if mha := _mha_modules(model):
        return "torch", mha
    raise BigModelError(f"{type(model).__name__} has no attention layers that bigmodel_nb can read; %attention "
                        "works with the zoo's GPT and TransformerClassifier, nn.MultiheadAttention / "
                        "nn.TransformerEncoder models, and Hugging Face transformers.")


def context_length(model) -> int | None:
    """The longest input the model accepts, when it says. Example: ``context_length(gpt)  # 64``"""
    config = getattr(model, "config", None)
    for key in ("block_size", "n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _num_heads(kind, modules, model) -> int:
    if kind == "huggingface":
        config = model.config
        return int(getattr(config, "num_attention_heads", None) or config.n_head)
    return int(getattr(modules[0], "n_head", None) or modules[0].num_heads)


def _num_layers(kind, modules, model) -> int:
    if kind == "huggingface":
        config = model.config
        return int(getattr(config, "num_hidden_layers", None) or config.n_layer)
    return len(modules)


# -- the input ----------------------------------------------------------------------------------------
def encode(text, tokenizer) -> tuple[torch.Tensor, list[str]]:
    """Token ids [1, T] and a label per token, from a char tokenizer (encode/decode), a Hugging Face
    tokenizer (`text` may be a pair of sentences for it), or any callable text -> ids.
    Example: ``encode("ab", bundle.info["tokenizer"])``"""
    if tokenizer is None:
        raise BigModelError("Text input needs a tokenizer: pass --data with the model's dataset (e.g. "
                            "--data python-stdlib) or --tokenizer VAR, or give a tensor of token ids.")
    if hasattr(tokenizer, "convert_ids_to_tokens"):  # Hugging Face
        encoded = tokenizer(*text) if isinstance(text, tuple) else tokenizer(text)  # a pair: [CLS] a [SEP] b [SEP]
        ids = torch.as_tensor(encoded["input_ids"])
        return ids.view(1, -1), [str(t) for t in tokenizer.convert_ids_to_tokens(ids.tolist())]
    ids = tokenizer.encode(text) if hasattr(tokenizer, "encode") else tokenizer(text)
    ids = torch.as_tensor(ids).view(1, -1)
    return ids, token_labels(ids[0], tokenizer)


def token_labels(ids: torch.Tensor, tokenizer=None) -> list[str]:
    """A readable label per id: the character for char tokenizers (spaces and newlines made visible)."""
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return [str(int(i)) for i in ids]
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return [str(t) for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]
    visible = {" ": "␣", "\n": "↵", "\t": "⇥"}
    return [visible.get(ch, ch) for ch in (tokenizer.decode([int(i)]) for i in ids)]


def _as_ids(value, data, tokenizer) -> tuple[torch.Tensor, list[str], str]:
    """The model input [1, T], token labels, and where it came from."""
    if tokenizer is None and data is not None:
        tokenizer = data.info.get("tokenizer")
    if isinstance(value, str):
        ids, labels = encode(value, tokenizer)
        return ids, labels, "text"
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, str) for v in value):
        if len(value) != 2 or not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise BigModelError("A list of texts works as a sentence pair (text_a, text_b) with a Hugging Face "
                                "tokenizer (--tokenizer VAR); otherwise give one text.")
        ids, labels = encode(tuple(value), tokenizer)
        return ids, labels, "sentence pair"
    if isinstance(value, int) and not isinstance(value, bool):
        if data is None:
            raise BigModelError("A dataset index needs --data to say which dataset; or give text or token ids.")
        split_name, split = next((n, s) for n, s in (("test", data.test), ("val", data.val), ("train", data.train))
                                 if s is not None)
        X = first_input(split.tensors())
        if not -len(X) <= value < len(X):
            raise BigModelError(f"Index {value} is out of range for the {split_name} split of {data.name} "
                                f"({len(X)} samples).")
        ids = X[value].view(1, -1)
        return ids, token_labels(ids[0], tokenizer), f"{data.name} {split_name}[{value}]"
    if torch.is_tensor(value) or hasattr(value, "__array__") or isinstance(value, (list, tuple)):
        try:
            ids = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise BigModelError(f"INPUT must be text, a pair of texts, token ids or a dataset index; this "
                                f"{type(value).__name__} holds something else.") from None
        if ids.is_floating_point() or ids.dim() > 2 or (ids.dim() == 2 and ids.shape[0] != 1):
            raise BigModelError(f"Token ids must be integers of shape [T] or [1, T]; got {tuple(ids.shape)} "
                                f"{ids.dtype}.")
        ids = ids.long().view(1, -1)
        return ids, token_labels(ids[0], tokenizer), "token ids"
    raise BigModelError(f"INPUT must be text, a tensor of token ids or a dataset index; got {type(value).__name__}.")


def _pick(index, count: int, what: str, limit: int) -> list[int]:
    """The requested index (negative counts from the end), or up to `limit` evenly spaced ones."""
    if index is not None:
        if not -count <= index < count:
            raise BigModelError(f"{what.capitalize()} {index} is out of range: the model has {count} {what}s "
                                f"(0 to {count - 1}).")
        return [index % count]
    if count <= limit:
        return list(range(count))
    step = (count - 1) / (limit - 1) if limit > 1 else 0
    return sorted({round(i * step) for i in range(limit)} | {count - 1})


# -- capture --------------------------------------------------------------------------------------
@contextmanager
def _zoo_capture(modules, wanted):
    try:
        for i in wanted:
            modules[i].capture = True
        yield lambda: {i: modules[i].attention for i in wanted}
    finally:
        for m in modules:
            m.capture = False
            m.attention = None  # do not keep the last input's maps alive


@contextmanager
def _mha_capture(modules, wanted):
    captured, handles = {}, []

    def force_weights(module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def keep(i):
        def hook(module, args, kwargs, output):
            captured[i] = output[1].detach()
        return hook

    try:
        for i in wanted:  # any hook on the layer also turns off PyTorch's fused fast path for this forward
            handles.append(modules[i].register_forward_pre_hook(force_weights, with_kwargs=True))
            handles.append(modules[i].register_forward_hook(keep(i), with_kwargs=True))
        yield lambda: captured
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _eager(model):
    before = model.config._attn_implementation
    try:
        if before != "eager":
            model.set_attn_implementation("eager")
        yield
    finally:
        if model.config._attn_implementation != before:
            model.set_attn_implementation(before)


def attention(model: nn.Module, input, *, layer: int | None = None, head: int | None = None, tokenizer=None,
              data=None, max_tokens: int = MAX_TOKENS, max_values: int = MAX_VALUES) -> AttentionMaps:
    """Run one forward pass and return the attention weights of the chosen (or a subsample of) layers and heads.

    `input`: text (needs `tokenizer` or `data` with one), token ids, or an index into `data`'s test split.
    Example: ``maps = attention(model, "def add(a, b):", data=load_dataset("python-stdlib"))``
    """
    if not isinstance(model, nn.Module):
        raise BigModelError(f"%attention needs a torch nn.Module; got {type(model).__name__}.")
    if data is not None and not hasattr(data, "info"):
        from ..core.adapters import as_bundle
        data = as_bundle(data)
    kind, modules = _kind(model)
    ids, labels, source = _as_ids(input, data, tokenizer)
    limit = context_length(model)
    if limit is not None and ids.shape[1] > limit:
        raise BigModelError(f"The input has {ids.shape[1]} tokens but the model's context is {limit}; "
                            "give a shorter input.")
    num_layers, num_heads = _num_layers(kind, modules, model), _num_heads(kind, modules, model)

    # Estimate first: layers × heads × T² numbers. Crop the tokens shown, then subsample layers and heads.
    notes = []
    T = ids.shape[1]
    shown = min(T, max_tokens)
    if shown < T:
        notes.append(f"showing the last {shown} of {T} tokens")
    per_map = shown * shown
    heads = _pick(head, num_heads, "head", max(1, min(num_heads, max_values // per_map)))
    layers = _pick(layer, num_layers, "layer", max(1, max_values // (per_map * len(heads))))
    if len(heads) < num_heads and head is None:
        notes.append(f"heads {heads} of {num_heads}")
    if len(layers) < num_layers and layer is None:
        notes.append(f"layers {layers} of {num_layers}")

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()  # dropout off: the maps are what the model computes at inference
    try:
        with ExitStack() as stack, torch.no_grad():
            if kind == "huggingface":
                stack.enter_context(_eager(model))
                out = model(ids.to(device), output_attentions=True)
                attentions = getattr(out, "attentions", None)
                if not attentions:
                    raise BigModelError(f"{type(model).__name__} returned no attention weights even with eager "
                                        "attention; load it with attn_implementation='eager'.")
                raw = {i: attentions[i] for i in layers}
            else:
                read = stack.enter_context((_zoo_capture if kind == "zoo" else _mha_capture)(modules, layers))
                model(ids.to(device))
                raw = read()
    except BigModelError:
        raise
    except Exception as exc:  # the model's own error, in one sentence
        raise BigModelError(f"The model failed on this input of shape {tuple(ids.shape)}: "
                            f"{describe_exception(exc)}") from None
    finally:
        model.train(was_training)

    maps = {}
    for i in layers:
        if i not in raw:
            raise BigModelError(f"Layer {i}'s attention was not called in the forward pass, so it has no weights.")
        w = raw[i][0].float()  # first (only) sequence: [heads, T, T]
        if w.dim() == 2:  # a single-head module averaged anyway
            w = w.unsqueeze(0)
        maps[i] = w[heads][:, T - shown:, T - shown:].cpu()
    causal = bool(getattr(modules[0], "causal", False)) if kind == "zoo" else None
    return AttentionMaps(labels[T - shown:], layers, heads, maps, num_layers, num_heads, kind, causal,
                         [f"input: {source}", *notes])
