"""`summarize`: parameter counts, layer shapes, FLOPs, and a memory estimate checked against real training steps."""
import re
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from bigmodel_nb.engine.core.device import detect_devices
from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.core.optim import OPTIMIZERS
from bigmodel_nb.engine.inspect.summary import OPTIMIZER_STATE_SLOTS, ModelSummary, summarize


# -- models -----------------------------------------------------------------------------------
def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def make_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


class TinyTransformer(nn.Module):
    """Token ids -> next-token logits; `config` is found the way Hugging Face and zoo models expose it."""

    def __init__(self, vocab=256, d=64, block_size=32, layers=2):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, block_size=block_size)
        self.pos = nn.Parameter(torch.zeros(block_size, d))  # held by the model itself: an "(own parameters)" row
        self.tok = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        return self.head(self.encoder(self.tok(x) + self.pos[: x.shape[1]]))


def make_transformer():
    torch.manual_seed(0)
    return TinyTransformer()


def hf():
    """Hugging Face transformers (a test dependency): tiny models built from configs, random weights, no downloads."""
    return pytest.importorskip("transformers")


def tiny_gpt2_config():
    return hf().GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64,
                                   bos_token_id=0, eos_token_id=0)


def measured_peak_bytes(model, x, y, steps=2) -> int:
    """The real peak of memory held by tensors over `steps` ordinary training steps (zero_grad, forward,
    cross-entropy, backward, Adam step), on CPU.

    torch's profiler with profile_memory=True records every CPU tensor allocation and free made by the
    allocator; their running sum, in time order, is the memory tensors hold beyond what existed before
    (weights, buffers, the batch — added as `base`). Two steps, because Adam allocates its state in the
    first step and the second is the steady state that a longer run repeats. The loop holds the model
    output until after the step, as typical training code (and the trainer) does.
    """
    model.zero_grad(set_to_none=True)
    opt = torch.optim.Adam(model.parameters())
    base = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers(), x, y])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            out = model(x)
            F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
            opt.step()
            del out
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    model.zero_grad(set_to_none=True)
    return base + peak


# -- counts and layers ------------------------------------------------------------------------
def test_parameter_counts_match_numel_and_frozen_ones_are_not_trainable():
    model = make_mlp()
    model[0].requires_grad_(False)
    s = summarize(model)
    assert s.total_params == sum(p.numel() for p in model.parameters()) == 64 * 256 + 256 + 256 * 256 + 256 + 2570
    assert s.trainable_params == s.total_params - (64 * 256 + 256)
    first = next(r for r in s.layers if r["name"] == "0")
    assert first["params"] == 64 * 256 + 256 and first["trainable"] == 0
    # frozen weights need no gradients nor optimizer state
    m = s.estimate(optimizer="adam")
    assert m["gradients"] == 4 * s.trainable_params and m["optimizer_state"] == 8 * s.trainable_params


def test_mlp_rows_have_output_shapes_at_the_batch_size_and_forward_flops():
    s = summarize(make_mlp(), batch_size=32)
    assert s.input_shape == (64,)  # inferred from the first Linear
    assert [(r["name"], r["type"], r["output_shape"], r["params"]) for r in s.layers] == [
        ("0", "Linear", (32, 256), 64 * 256 + 256), ("1", "ReLU", (32, 256), 0),
        ("2", "Linear", (32, 256), 256 * 256 + 256), ("3", "ReLU", (32, 256), 0), ("4", "Linear", (32, 10), 2570)]
    assert s.flops_per_sample == 2 * (64 * 256 + 256 * 256 + 256 * 10)  # a multiply-add is 2 FLOPs
    assert set(s.rows()[0]) >= {"name", "type", "output_shape", "params", "trainable"}
    table = s.table()
    assert list(table["name"]) == ["0", "1", "2", "3", "4"] and table["params"].sum() == s.total_params


def test_cnn_rows_and_conv_without_input_shape_asks_for_one():
    with pytest.raises(BigModelError, match=r"Conv2d with 1 input channel, .*pass --input-shape C H W"):
        summarize(make_cnn())
    s = summarize(make_cnn(), "1 8 8", batch_size=4)
    shapes = {r["name"]: r["output_shape"] for r in s.layers}
    assert shapes == {"0": (4, 16, 8, 8), "1": (4, 16, 8, 8), "2": (4, 16, 8, 8), "3": (4, 16, 4, 4),
                      "4": (4, 32, 4, 4), "5": (4, 32, 4, 4), "6": (4, 512), "7": (4, 10)}
    assert s.flops_per_sample == 2 * (9 * 16 * 64 + 16 * 9 * 32 * 16 + 512 * 10)


def test_example_batches_and_hugging_face_style_dict_examples():
    s = summarize(make_mlp(), example=torch.randn(3, 64), batch_size=5)
    assert s.input_shape == (64,) and s.layers[-1]["output_shape"] == (5, 10)
    model = hf().GPT2LMHeadModel(tiny_gpt2_config())
    s = summarize(model, example={"input_ids": torch.randint(500, (2, 16))}, batch_size=3)
    assert next(r for r in s.layers if r["name"] == "lm_head")["output_shape"] == (3, 16, 500)


# -- the estimate against reality --------------------------------------------------------------
@pytest.mark.parametrize("make, input_shape, data", [
    (make_mlp, (64,), lambda b: (torch.randn(b, 64), torch.randint(10, (b,)))),
    (make_cnn, (1, 8, 8), lambda b: (torch.randn(b, 1, 8, 8), torch.randint(10, (b,)))),
    (make_transformer, None, lambda b: (torch.randint(256, (b, 32)), torch.randint(256, (b, 32)))),
], ids=["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("batch_size", [8, 128])
def test_training_memory_estimate_is_within_25_percent_of_a_real_training_step(make, input_shape, data, batch_size):
    """fp32 + Adam on CPU: the estimate's total against the peak measured by `measured_peak_bytes`."""
    model = make()
    estimate = summarize(model, input_shape, batch_size=batch_size, device="cpu").estimate()
    real = measured_peak_bytes(model, *data(batch_size))
    ratio = estimate["total_bytes"] / real
    print(f"{type(model).__name__} batch {batch_size}: estimate {estimate['total_bytes']:,} B, "
          f"measured {real:,} B, ratio {ratio:.3f}")
    assert 0.75 <= ratio <= 1.25
    assert estimate["total_bytes"] == sum(estimate[k] for k in
                                          ("weights", "gradients", "optimizer_state", "activations", "workspace"))


def test_activations_grow_with_the_batch_and_halve_in_16_bit():
    s = summarize(make_transformer(), batch_size=4)
    small, large = s.estimate(batch_size=4), s.estimate(batch_size=64)
    assert large["activations"] > 10 * small["activations"]
    bf16 = s.estimate(batch_size=64, precision="bf16")
    assert 0.45 < bf16["activations"] / large["activations"] <= 0.55  # token ids and masks do not shrink


def test_precision_and_optimizer_change_the_bytes():
    model = make_cnn()
    s = summarize(model, (1, 8, 8))
    n, buffers = s.total_params, sum(b.numel() * b.element_size() for b in model.buffers())
    assert s.size_by_precision() == {"fp32": 4 * n + buffers, "bf16": 2 * n + buffers, "fp16": 2 * n + buffers,
                                     "int8": n + buffers}
    bf16 = s.estimate(precision="bf16", optimizer="adamw")
    assert bf16["gradients"] == 2 * n and bf16["optimizer_state"] == 12 * n  # fp32 master copy + 2 moments
    assert "master copy" in " ".join(bf16["notes"])
    assert s.estimate(optimizer="sgd")["optimizer_state"] == 0
    assert s.estimate(optimizer="momentum")["optimizer_state"] == 4 * n
    int8 = s.estimate(precision="int8")
    assert int8["gradients"] == int8["optimizer_state"] == 0 and "not supported" in " ".join(int8["notes"])
    assert set(OPTIMIZER_STATE_SLOTS) == set(OPTIMIZERS)  # every optimizer --optimizer accepts has a size


def test_int8_is_inference_one_layers_input_and_output_in_fp32():
    # Linear(64, 256) -> ReLU: the ReLU's input and output (256 + 256 floats per sample) are the largest pair.
    s = summarize(make_mlp(), (64,))
    int8 = s.estimate(batch_size=32, precision="int8")
    assert int8["activations"] == 4 * 32 * (256 + 256)  # fp32, the compute dtype of int8 weight quantization
    assert int8["gradients"] == int8["optimizer_state"] == int8["workspace"] == 0
    assert int8["total_bytes"] == s.weights_bytes("int8") + int8["activations"]
    assert "fp32" in " ".join(int8["notes"])


def test_int8_inference_needs_less_activation_memory_than_16_bit_training():
    s = summarize(make_transformer(), batch_size=8)
    for batch in (1, 8, 64):
        int8, bf16 = s.estimate(batch_size=batch, precision="int8"), s.estimate(batch_size=batch, precision="bf16")
        assert int8["activations"] < bf16["activations"] and int8["total_bytes"] < bf16["total_bytes"]


def test_int8_on_the_meta_device_counts_the_logits_once():
    from bigmodel_nb.models import GPT, GPTConfig

    with torch.device("meta"):
        gpt = GPT(GPTConfig(vocab_size=1000, block_size=64, n_layer=2, n_head=2, n_embd=32))
    s = summarize(gpt, (64,))
    int8 = s.estimate(batch_size=4, precision="int8")
    # the language-model head: its input (4 × 64 × 32) and its logits (4 × 64 × 1000), in fp32
    assert int8["activations"] == 4 * 4 * 64 * (32 + 1000)
    assert int8["activations"] < s.estimate(batch_size=4, precision="bf16")["activations"]


def test_fits_compares_the_total_with_the_devices_free_memory():
    s = summarize(make_mlp(), device="cpu")
    cpu = next(d for d in detect_devices() if d.kind == "cpu")
    assert s.device.name == "cpu" and s.available_bytes is not None
    assert abs(s.available_bytes - cpu.free_memory) < 0.2 * cpu.free_memory  # free RAM moves a little between reads
    m = s.estimate()
    assert m["fits"] is True and m["headroom_bytes"] == s.available_bytes - m["total_bytes"]
    huge = s.estimate(batch_size=10**9)
    assert huge["fits"] is False and huge["headroom_bytes"] < 0


# -- language models, Hugging Face, meta device ---------------------------------------------------
def test_token_models_get_token_ids_of_their_context_length():
    s = summarize(make_transformer(), batch_size=2)
    assert s.input_shape == (32,) and s.input_dtype == "int64"  # block_size from model.config
    assert s.layers[0]["name"] == "(own parameters)" and s.layers[0]["params"] == 32 * 64
    assert next(r for r in s.layers if r["name"] == "head")["output_shape"] == (2, 32, 256)


def test_zoo_gpt_is_summarized_from_its_config():
    from bigmodel_nb.models import GPT, GPTConfig

    config = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    s = summarize(model, batch_size=3)
    assert s.input_shape == (16,) and s.total_params == sum(p.numel() for p in model.parameters())
    assert next(r for r in s.layers if r["name"] == "lm_head")["output_shape"] == (3, 16, 50)


def test_hugging_face_gpt2_with_random_weights_matches_its_meta_twin():
    model = hf().GPT2LMHeadModel(tiny_gpt2_config())
    s = summarize(model, batch_size=4)
    assert s.input_shape == (64,) and s.input_dtype == "int64"  # min(n_positions, 128) token ids
    assert s.total_params == sum(p.numel() for p in model.parameters())  # tied lm_head counted once
    assert next(r for r in s.layers if r["name"] == "lm_head")["output_shape"] == (4, 64, 500)
    assert s.flops_per_sample > 2 * 64 * (s.total_params - 500 * 64 - 64 * 64)  # matmuls of every token
    with torch.device("meta"):
        twin = hf().GPT2LMHeadModel(tiny_gpt2_config())
    t = summarize(twin, batch_size=4)
    assert t.on_meta and t.flops_per_sample == s.flops_per_sample and t.layers == s.layers
    for key in ("weights", "gradients", "optimizer_state", "activations", "workspace"):
        assert t.estimate()[key] == s.estimate()[key], key


def test_gpt2_small_on_the_meta_device_is_summarized_quickly_without_weights():
    with torch.device("meta"):
        model = hf().GPT2LMHeadModel(hf().GPT2Config())
    start = time.perf_counter()
    s = summarize(model, batch_size=8)
    elapsed = time.perf_counter() - start
    print(f"GPT-2 small on meta: summarize took {elapsed:.2f} s")
    assert elapsed < 20  # ~1 s here; a loose bound on a loaded CI machine, not a timing test
    assert all(p.is_meta for p in model.parameters())
    assert s.total_params == 124_439_808 == sum(p.numel() for p in model.parameters())
    assert next(r for r in s.layers if r["name"] == "lm_head")["output_shape"] == (8, 128, 50257)
    m = s.estimate()
    assert m["weights"] == 4 * 124_439_808 and m["optimizer_state"] == 8 * 124_439_808
    assert 1e9 < m["activations"] < 4e9  # 8 x 128 tokens: ~190 MB a sample, a third of it the fp32 logits
    assert 30e9 < s.flops_per_sample < 36e9  # ~2 x 124M x 128 tokens, plus attention
    assert m["total_bytes"] == sum(m[k] for k in
                                   ("weights", "gradients", "optimizer_state", "activations", "workspace"))


# -- leaving the model alone, and bad input ------------------------------------------------------
def all_hooks(model):
    return [(name, kind) for name, m in model.named_modules()
            for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
            if getattr(m, kind)]


def test_the_model_its_state_hooks_and_the_rng_are_unchanged():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 4))
    with torch.no_grad():  # non-trivial statistics, so a forward in training mode would change them
        model[1].running_mean.uniform_()
    model.eval()
    model[3].train()  # mixed modes must come back exactly (a Linear's flag does not change its output)
    x = torch.randn(5, 8)
    before_out, before_state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    before_modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    summarize(model, batch_size=16)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == before_modes
    after_state = model.state_dict()
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)  # weights and BN statistics
    assert torch.equal(model(x), before_out)
    assert all(p.grad is None for p in model.parameters())
    assert all_hooks(model) == []
    assert not torch.nn.modules.module._global_forward_hooks and not torch.nn.modules.module._global_forward_pre_hooks


def test_the_model_is_unchanged_when_its_forward_fails():
    model = nn.Sequential(nn.Linear(64, 10))
    model.eval()
    with pytest.raises(BigModelError):
        summarize(model, (3,))
    assert all_hooks(model) == [] and not model.training


def test_a_wrong_input_shape_is_named_in_one_sentence():
    with pytest.raises(BigModelError) as err:
        summarize(nn.Sequential(nn.Linear(64, 10)), (3,))
    message = str(err.value)
    assert message == ("The model could not run on an input of shape (2, 3): mat1 and mat2 shapes cannot be "
                       "multiplied (2x3 and 64x10); pass --input-shape matching its first layer.")
    assert "\n" not in message and len(re.findall(r"\.(\s|$)", message)) == 1


@pytest.mark.parametrize("call, match", [
    (lambda: summarize(make_mlp(), precision="fp8"), r"Unknown precision 'fp8'; choose one of: fp32, bf16"),
    (lambda: summarize(make_mlp(), optimizer="adamx"), r"Unknown optimizer 'adamx'"),
    (lambda: summarize(make_mlp(), batch_size=0), r"batch size must be a positive whole number"),
    (lambda: summarize(make_mlp(), (0, 3)), r"input shape must be positive whole numbers"),
    (lambda: summarize("model"), r"str is not a torch.nn.Module"),
    (lambda: summarize(nn.Sequential(nn.ReLU())), r"Cannot infer the input shape of Sequential"),
])
def test_bad_arguments_get_one_clear_sentence(call, match):
    with pytest.raises(BigModelError, match=match):
        call()


def test_a_meta_model_with_a_wrong_shape_still_raises_and_repr_stays_short():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(BigModelError, match=r"shape \(2, 3\)"):
        summarize(model, (3,))
    s = summarize(model, batch_size=2)
    assert isinstance(s, ModelSummary) and s.layers[0]["output_shape"] == (2, 10)
    assert len(repr(s)) < 200 and "650 params" in repr(s)
