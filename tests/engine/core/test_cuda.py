"""The CUDA paths of a run, on a real GPU: bf16 + compile + fused AdamW, real out-of-memory, --batch-size
auto, the run's own peak memory, and MFU. CI has no GPU and skips them all; run them where one is lent
(``make gpu-check``)."""
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import Run, TrainConfig
from bigmodel_nb.engine.data import as_bundle
from bigmodel_nb.models import GPT, GPTConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tokens(n=512, block=64, vocab=96):
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (n, block + 1), generator=g)
    return as_bundle({"train": (data[:, :-1], data[:, 1:])}, task="language-model")


def small_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=64, vocab_size=96, n_layer=2, n_head=4, n_embd=128, dropout=0.0))


class Widens(nn.Module):
    """16 activations of 16 MiB per sample: a batch of 1024 asks for 256 GiB, more than any GPU has, and
    runs out of memory after tens of GiB of them are already allocated (what freeing has to give back)."""

    def __init__(self, stages=16):
        super().__init__()
        self.inp, self.out, self.stages = nn.Linear(64, 64), nn.Linear(64, 10), stages

    def forward(self, x):
        h = self.inp(x).unsqueeze(-1)
        wide = [h.expand(-1, -1, 2**16).contiguous() + i for i in range(self.stages)]  # 64 × 2^16 floats each
        return self.out(sum(w.mean(-1) for w in wide))


def test_bf16_compile_and_fused_adamw_train_a_gpt():
    run = fit(small_gpt(), tokens(), steps=30, batch_size=32, optimizer="adamw", lr=1e-3, amp="bf16",
              compile=True, device="cuda", seed=0)
    assert run.status == "completed", run.error
    assert run.amp.name == "bf16" and run.compile_time_s > 0
    assert run.optimizer.param_groups[0]["fused"] is True
    losses = [r["loss"] for r in run.rows("train")]
    assert losses[-1] < losses[0]


def test_real_out_of_memory_fails_with_one_sentence_and_frees_the_memory():
    model = Widens().cuda()
    baseline = torch.cuda.memory_allocated()
    run = Run(model, "digits", TrainConfig(batch_size=1024, steps=1, device="cuda", amp="off"))
    run.run_here()
    assert run.status == "failed" and run.step == 0
    assert run.error.startswith("CUDA ran out of memory at batch size 1024") and "\n" not in run.error
    assert all(p.grad is None for p in model.parameters())
    # The tens of GiB the failed step held are gone, and given back to the driver (not just cached).
    assert torch.cuda.memory_allocated() - baseline < 8 * 2**20
    assert torch.cuda.memory_reserved() < 2**30


def test_batch_size_auto_finds_a_batch_that_fits():
    free = torch.cuda.mem_get_info()[0]
    run = Run(Widens().cuda(), "digits", TrainConfig(batch_size="auto", steps=1, device="cuda", amp="off"))
    assert run.config.batch_size < 1024 and run.config.batch_size * 16 * 2**24 < free
    run.run_here()
    assert run.status == "completed", run.error


def test_the_dashboard_peak_is_this_runs_own_and_gpt_shows_mfu():
    pytest.importorskip("plotly")  # the GPU machines' image has no plotly unless carried
    from bigmodel_nb.engine.scale.flops import peak_flops
    from bigmodel_nb.ui.dashboard import TrainingDashboard, memory_text

    big = torch.empty(2**30, device="cuda", dtype=torch.uint8)  # 1 GiB, freed before the run
    del big
    run = Run(small_gpt(), tokens(), TrainConfig(steps=10, batch_size=32, device="cuda", amp="bf16"))
    dash = TrainingDashboard(run, mode="text")
    run.run_here([dash])
    assert torch.cuda.max_memory_allocated() < 2**30  # the run's peak, not the earlier gigabyte
    assert memory_text(run.device).endswith(f"MB peak on {run.device}")
    if peak_flops(run.device) is not None:  # a GPU in the table
        assert "tokens/s · MFU " in dash.throughput_text()
