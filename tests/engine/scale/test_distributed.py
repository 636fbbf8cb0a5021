"""Training on Ray Train workers (a local CPU cluster, gloo): same trajectory as one process, rows
streamed live, weights back in the notebook, a dead worker resumed from the checkpoint, and bad input."""
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("ray.train", reason="Ray Train (the distributed extra) is not installed")
import ray  # noqa: E402
from ray import cloudpickle  # noqa: E402  (the copy Ray uses)

from bigmodel_nb.engine import BigModelError, Run, TrainConfig, load_dataset  # noqa: E402
from bigmodel_nb.engine.core.callbacks import Callback  # noqa: E402
from bigmodel_nb.engine.scale.distributed import DistributedRun  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


class Live(Callback):
    """Records when train rows reach the notebook, and whether the run was still going then."""

    def __init__(self):
        self.rows = []

    def on_step_end(self, run, logs):
        self.rows.append((logs["step"], run.status))


class DiesOnce(nn.Module):
    """An MLP whose rank-1 copy kills its process once, in the second epoch (a lost machine)."""

    def __init__(self, marker, at):
        super().__init__()
        self.net, self.marker, self.calls, self.at = mlp(), str(marker), 0, at

    def forward(self, x):
        import torch.distributed as dist

        self.calls += self.training
        if (self.training and dist.is_initialized() and dist.get_rank() == 1 and self.calls == self.at
                and not os.path.exists(self.marker)):
            open(self.marker, "w").close()
            saved, deadline = Path(self.marker).parent / "ckpt", time.monotonic() + 60
            while not list(saved.rglob("checkpoint_*")) and time.monotonic() < deadline:
                time.sleep(0.1)  # rank 0 has written the epoch-1 checkpoint ...
            time.sleep(2.0)  # ... and the controller (polling every 0.5 s) has registered it by now
            os._exit(1)
        return self.net(x)


@pytest.mark.parametrize("strategy, batch_size, accumulate, kill, early", [("ddp", 64, 1, False, True),
                                                                         ("fsdp", 32, 2, True, False)])
def test_two_workers_follow_one_process_stream_rows_live_and_survive_a_dead_worker(digits, tmp_path, strategy,
                                                                                   batch_size, accumulate, kill, early):
    """One Ray run per strategy (~45–65 s each here): the finished run equals one process with the same global
    batch (accumulated over 2 micro-batches under FSDP). Under FSDP a worker also dies in epoch 2 and the
    group restarts from the epoch-1 checkpoint, weights and Adam's moments resharded (the restart code is
    the same for DDP; one restart keeps CI's time in hand). Under DDP --early-stop 1 with a min-delta no
    change reaches stops every worker after epoch 2, and the epoch-1 weights come back, as in one process."""
    config = dict(epochs=3, seed=0, optimizer="adam", lr=0.01, batch_size=batch_size, accumulate=accumulate,
                  **(dict(early_stop=1, min_delta=10.0) if early else {}))
    live = Live()
    run = DistributedRun(DiesOnce(tmp_path / "died", at=25 * accumulate if kill else -1), digits,
                         TrainConfig(checkpoint=str(tmp_path / "ckpt"), **config), workers=2, strategy=strategy)
    run.run_here([live])
    single = Run(mlp(), digits, TrainConfig(**config)).run_here()
    assert run.status == "completed", run.error
    assert (tmp_path / "died").exists() == kill and run.restarts == kill
    assert any("restarted from the checkpoint at step 20" in n for n in run.notes) == kill
    # Tolerance: float sums in another order (the workers' gradients are all-reduced).
    for a, b in zip(run.rows("train"), single.rows("train"), strict=True):  # epoch 2 is in the history once
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert [r["step"] for r in run.rows("val")] == ([20, 40] if early else [20, 40, 60])
    assert [r["step"] for r in single.rows("val")] == [r["step"] for r in run.rows("val")]
    if early:  # the best (first) validation's weights, in the notebook's model and in its notes
        assert run.best["step"] == 20 and any("early stop: stopped at step 40" in n for n in run.notes), run.notes
        assert single.evaluate("val")["loss"] == pytest.approx(run.best["loss"], rel=1e-5)
    for p, q in zip(run.model.net.parameters(), single.model.parameters()):  # the trained weights came back
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert live.rows and all(status == "running" for _, status in live.rows)  # while fit() was going
    assert list((tmp_path / "ckpt").rglob("checkpoint_*"))


class StopAtRow(Callback):
    """Presses Stop in the notebook when the first train row at or past `step` arrives from the workers."""

    def __init__(self, step):
        self.step, self.pressed_at = step, None

    def on_step_end(self, run, logs):
        if self.pressed_at is None and logs["step"] >= self.step:
            self.pressed_at = logs["step"]
            run.stop()


def test_stop_in_the_notebook_stops_every_worker_at_one_logging_step(digits):
    """Stop reaches the workers through rank 0 at its next logging step; all stop there, the run keeps its rows."""
    stop = StopAtRow(step=30)
    run = DistributedRun(mlp(), digits, TrainConfig(epochs=200, seed=0, log_every=10), workers=2)
    t0 = time.monotonic()
    run.run_here([stop])
    print(f"a --workers run stopped at step {run.step} of {run.total_steps} after {time.monotonic() - t0:.0f} s")
    assert run.status == "stopped" and run.error is None
    assert stop.pressed_at is not None and stop.pressed_at < run.step < run.total_steps // 4  # long before the end
    train = run.rows("train")
    assert train[-1]["step"] == run.step and run.step % 10 == 0  # the workers stopped at a logging step
    assert [r["step"] for r in train] == sorted({r["step"] for r in train})  # each row once, in order
    trained = run.model.state_dict()
    assert any(not torch.equal(trained[k], mlp().state_dict()[k]) for k in trained)  # the weights came back


def test_bad_distributed_input_is_one_sentence(digits, monkeypatch):
    with pytest.raises(BigModelError, match="needs 2 GPUs but the Ray cluster has 0"):
        DistributedRun(mlp(), digits, TrainConfig(), workers=2, gpus_per_worker=1)
    with pytest.raises(BigModelError, match="several workers on one GPU, which NCCL refuses"):
        DistributedRun(mlp(), digits, TrainConfig(), workers=2, gpus_per_worker=0.5)
    with pytest.raises(BigModelError, match="3 workers need 3 CPUs but the Ray cluster has 2"):
        DistributedRun(mlp(), digits, TrainConfig(batch_size=66), workers=3)
    with pytest.raises(BigModelError, match="must split evenly over 2 workers"):
        DistributedRun(mlp(), digits, TrainConfig(batch_size=65), workers=2)
    with pytest.raises(BigModelError, match="Unknown --amp value 'bf61'.*did you mean 'bf16'"):
        DistributedRun(mlp(), digits, TrainConfig(amp="bf61"), workers=2)
    with pytest.raises(BigModelError, match="fp16 autocast is not supported on cpu"):  # CPU workers
        DistributedRun(mlp(), digits, TrainConfig(amp="fp16"), workers=2)
    monkeypatch.setattr(DistributedRun, "_check_resources", lambda self: None)  # as if the cluster had GPUs
    gpu_workers = DistributedRun(mlp(), digits, TrainConfig(amp="fp16"), workers=2, gpus_per_worker=1)
    assert gpu_workers.config.amp == "fp16"  # for the workers' GPUs to resolve; the notebook's CPU does not decide
    assert gpu_workers.device.type == "cpu"  # the notebook's copy leaves the (local) GPUs to the workers
    with pytest.raises(BigModelError, match="cannot be paused"):
        DistributedRun(mlp(), digits, TrainConfig(), workers=2).pause()


def test_an_unreachable_cluster_or_missing_ray_is_one_sentence(digits, monkeypatch):
    from bigmodel_nb.engine.scale import distributed

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    t0 = time.monotonic()
    with pytest.raises(BigModelError, match="No Ray cluster answers at '127.0.0.1:1' within 5 s"):
        distributed.connect("127.0.0.1:1")
    assert time.monotonic() - t0 < 10
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BigModelError, match=r"pip install 'bigmodel-nb\[distributed\]'"):
        distributed.import_ray()
