"""Big-model features of a run: gradient accumulation, activation checkpointing, torch.compile,
out-of-memory handling, --batch-size auto, and MFU."""
import weakref

import pytest
import torch
from torch import nn

from bigmodel_nb.engine import BigModelError, Run, TrainConfig, load_dataset
from bigmodel_nb.engine.core import device, memory
from bigmodel_nb.engine.core import run as run_module
from bigmodel_nb.engine.scale import flops
from bigmodel_nb.models import GPT, GPTConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(model, data, **config):
    run = Run(model, data, TrainConfig(seed=0, optimizer="sgd", lr=0.1, **config))
    run.run_here()
    assert run.status == "completed", run.error
    return run


def test_accumulating_micro_batches_equals_one_big_batch(digits):
    big = train(mlp(), digits, epochs=2, batch_size=64)
    small = train(mlp(), digits, epochs=2, batch_size=16, accumulate=4)
    assert big.total_steps == small.total_steps  # optimizer steps, not micro-batches
    for a, b in zip(big.rows("train"), small.rows("train")):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for p, q in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_activation_checkpointing_stores_less_and_leaves_gradients_unchanged():
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_embd=32, n_head=4, block_size=16)
    idx, targets = torch.randint(0, 96, (4, 16)), torch.randint(0, 96, (4, 16))
    grads, stored = [], []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = GPT(config)
        if checkpointed:
            assert "2 blocks" in memory.enable_activation_checkpointing(model)
        numel = [0]

        def pack(t, numel=numel):  # every tensor autograd keeps for the backward pass
            numel[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(idx, targets)[1]
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        stored.append(numel[0])
    assert stored[1] < 0.5 * stored[0], stored  # block internals are recomputed, not kept
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(BigModelError, match="--activation-checkpointing works on the zoo's GPT"):
        memory.enable_activation_checkpointing(mlp())


class RunsOutOfMemoryAbove(nn.Module):
    """An MLP whose forward raises CUDA's out-of-memory error for batches larger than `limit`."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.net, self.norm = limit, mlp(), nn.BatchNorm1d(64)

    def forward(self, x):
        if x.shape[0] > self.limit:
            activations = torch.ones(x.shape[0], 4096)  # what the failing step had allocated
            self.last_activations = weakref.ref(activations)
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} MiB")
        return self.net(self.norm(x))


def test_out_of_memory_fails_the_run_with_one_sentence_and_keeps_the_weights(digits, monkeypatch):
    from bigmodel_nb.engine.core import loop as trainer

    model = RunsOutOfMemoryAbove(limit=10_000)
    run = Run(model, digits, TrainConfig(batch_size=64, seed=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.limit = 32  # preflight passed with 2 samples; the first real step does not fit
    held = []  # whether the failed step's activations were still referenced when memory was freed
    monkeypatch.setattr(trainer, "free_memory", lambda m: (held.append(model.last_activations() is not None),
                                                           memory.free_memory(m)))
    run.run_here()
    assert held == [False]  # freed after the except block, whose traceback would have kept them
    assert run.status == "failed" and run.step == 0
    assert run.error.startswith("CPU ran out of memory at batch size 64")
    assert "try --batch-size 32 or --batch-size auto" in run.error and "\n" not in run.error
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_cublas_and_cudnn_allocation_failures_count_as_out_of_memory():
    assert memory.is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert memory.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))
    assert not memory.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_batch_size_auto_halves_until_a_step_fits_and_restores_buffers(digits):
    model = RunsOutOfMemoryAbove(limit=100)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    run = Run(model, digits, TrainConfig(batch_size="auto", epochs=1, seed=0))
    assert run.config.batch_size == 64  # 1024 → 512 → … → 64
    assert any("batch size 64 (auto" in note for note in run.notes)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # batch-norm statistics untouched
    assert Run(mlp(), digits, TrainConfig(batch_size="auto", epochs=1)).config.batch_size == 1024
    with pytest.raises(BigModelError, match="--batch-size must be a whole number ≥ 1 or auto, not 'big'"):
        Run(mlp(), digits, TrainConfig(batch_size="big"))


def test_compile_trains_and_reports_its_compile_time_apart(digits):
    run = train(mlp(), digits, steps=12, batch_size=100, compile=True)  # 12 full batches: one compile
    eager = train(mlp(), digits, steps=12, batch_size=100)
    assert run.compile_time_s > 0 and run.step == 12
    assert run.rows("train")[-1]["loss"] == pytest.approx(eager.rows("train")[-1]["loss"], rel=1e-4)


def test_compile_errors_are_one_sentence(digits, monkeypatch):
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    with pytest.raises(BigModelError, match="--compile on the CPU needs a C\\+\\+ compiler and none was found"):
        Run(mlp(), digits, TrainConfig(compile=True))
    monkeypatch.undo()

    def broken(model):
        def fails(*args):
            raise RuntimeError("InductorError: unsupported operator")
        return fails

    monkeypatch.setattr(run_module, "compiled", broken)  # what Run calls
    model = mlp()
    before = [p.clone() for p in model.parameters()]
    run = Run(model, digits, TrainConfig(compile=True, epochs=1))
    run.run_here()
    assert run.status == "failed" and run.error.startswith("torch.compile could not compile this model (")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_mfu_uses_nanogpts_flops_per_token_and_the_gpu_table(monkeypatch):
    model = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=4, block_size=16))
    n = sum(p.numel() for p in model.parameters()) - 16 * 32  # without the position embeddings, as nanoGPT
    assert flops.flops_per_token(model, 16) == 6 * n + 12 * 2 * 4 * 8 * 16
    assert flops.flops_per_token(mlp(), 16) is None
    assert flops.mfu(model, 1e6, 16, torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert flops.peak_flops(torch.device("cuda")) == 989e12
    assert flops.mfu(model, 1e9, 16, torch.device("cuda")) == pytest.approx(
        flops.flops_per_token(model, 16) * 1e9 / 989e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert flops.peak_flops(torch.device("cuda")) == 756e12
    # Whole words of the name: an L40 is not an L4, an A10G is not an A10, an H200 NVL is not an H200 SXM.
    names = {"NVIDIA L40": 181e12, "NVIDIA L4": 121e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA H200 NVL": 835e12,
             "NVIDIA H200": 989e12, "Tesla V100-SXM2-16GB": 125e12, "NVIDIA A10G": None,
             "NVIDIA GeForce RTX 4090": None}
    assert {name: flops.peak_flops_of(name) for name in names} == names
