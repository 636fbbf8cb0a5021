"""Every `%%train` flag against --workers, --background, --compile, --accumulate and --batch-size auto:
each combination trains, or is refused in one sentence before anything starts.

The --background, --accumulate and --batch-size auto columns train for real (3 steps on digits). The
--workers column goes through the whole front door (parse, resolve, `api.train`, the `DistributedRun`
and its checks against a real local Ray cluster) up to the point where Ray would start a worker group,
and checks what the workers would be given; real worker runs are in tests/engine/scale/test_distributed.py.
The --compile column trains with `torch.compile` replaced by the identity (a CPU compile takes ~10 s per
combination); real compiled runs are in tests/engine/core/test_memory.py and test_cuda.py.
"""
import sys

import pytest
import torch
from IPython.core.error import UsageError
from torch import nn

from bigmodel_nb.engine.core import run as run_module
from bigmodel_nb.engine.core.checkpoint import save_weights

MLP = "model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))"
BASE = "--data digits --steps 3 --quiet"

# flag -> what it adds to the line ({dir}: a fresh folder; {weights}: a saved copy of the MLP)
FLAGS = {
    "--model": "--model net", "--epochs": "--epochs 1", "--steps": "--steps 2", "--batch-size": "--batch-size 32",
    "--lr": "--lr 0.01", "--optimizer": "--optimizer sgd", "--schedule": "--schedule cosine",
    "--warmup": "--schedule warmup-cosine --warmup 1", "--loss": "--loss cross_entropy", "--device": "--device cpu",
    "--amp": "--amp off", "--seed": "--seed 0", "--grad-clip": "--grad-clip 1.0", "--val-every": "--val-every 2",
    "--log-every": "--log-every 1", "--checkpoint": "--checkpoint {dir}", "--resume": "--checkpoint {dir} --resume",
    "--name": "--name other", "--watch-grads": "--watch-grads", "--watch-every": "--watch-grads --watch-every 2",
    "--from": "--from {weights}", "--new-head": "--new-head 10", "--freeze": "--freeze 0",
    "--unfreeze-after": "--freeze 0 --unfreeze-after 1", "--activation-checkpointing": "--activation-checkpointing",
    "--gpus-per-worker": "--gpus-per-worker 1", "--cluster": "--cluster 127.0.0.1:1", "--strategy": "--strategy fsdp",
    "--quiet": "", "--background": "--background", "--accumulate": "--accumulate 2", "--compile": "--compile",
    "--batch-size auto": "--batch-size auto", "--workers": "--workers 2", "--early-stop": "--early-stop 1",
    "--log-dir": "--log-dir {dir}",
    "--monitor": "--early-stop 2 --monitor val_accuracy", "--min-delta": "--early-stop 2 --min-delta 0.01",
}
MODIFIERS = {"workers": "--workers 2", "background": "--background", "compile": "--compile",
             "accumulate": "--accumulate 2", "auto": "--batch-size auto"}

# What is refused, and the sentence that says so; every other combination trains.
ANY = ("workers", "background", "compile", "accumulate", "auto")
REFUSED = {
    **{("--activation-checkpointing", m): "works on the zoo's GPT and TransformerClassifier" for m in ANY},
    **{("--gpus-per-worker", m): "go with --workers N" for m in ANY if m != "workers"},
    **{("--cluster", m): "go with --workers N" for m in ANY if m != "workers"},
    **{("--strategy", m): "go with --workers N" for m in ANY if m != "workers"},
    ("--gpus-per-worker", "workers"): "needs 2 GPUs but the Ray cluster has 0",
    ("--cluster", "workers"): "Ray cluster",  # no answer at 127.0.0.1:1, or already connected to another
    ("--watch-grads", "workers"): "--watch-grads records this notebook's copy",
    ("--watch-every", "workers"): "--watch-grads records this notebook's copy",
    ("--unfreeze-after", "workers"): "--unfreeze-after changes which parameters train",
    ("--resume", "workers"): "--resume reads this notebook's checkpoints",
    ("--val-every", "workers"): "--val-every is not available on Ray workers",
    ("--compile", "workers"): "--compile and --batch-size auto are not available with --workers",
    ("--batch-size auto", "workers"): "--compile and --batch-size auto are not available with --workers",
    ("--workers", "compile"): "--compile and --batch-size auto are not available with --workers",
    ("--workers", "auto"): "--compile and --batch-size auto are not available with --workers",
}

CASES = [(flag, mod) for flag in FLAGS for mod in MODIFIERS if not (flag == "--workers" and mod == "workers")
         and not (flag == f"--{mod}" or (flag, mod) in (("--batch-size auto", "auto"), ("--accumulate", "accumulate")))]


@pytest.fixture(scope="module")
def ip(shell):
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn")
    return shell


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return save_weights(model, tmp_path_factory.mktemp("from") / "mlp")


@pytest.fixture(scope="module", autouse=True)
def ray_shut_down_after():
    """The --workers cases start a local Ray cluster; later tests (timed Pause/Stop ones) run without it."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def no_ray_training(monkeypatch):
    """The --workers column stops where Ray would start the worker group, and keeps what it would ship."""
    pytest.importorskip("ray")
    from bigmodel_nb.engine.scale.distributed import DistributedRun

    shipped = {}

    def loop(self):
        shipped.update(config=self.config, callbacks=list(self.callbacks), model=self.model)
        yield

    monkeypatch.setattr(DistributedRun, "_loop", loop)
    return shipped


@pytest.mark.parametrize("flag, modifier", CASES, ids=[f"{f} × {m}" for f, m in CASES])
def test_flag_combination_trains_or_is_refused_in_one_sentence(ip, flag, modifier, weights, tmp_path, monkeypatch,
                                                                 request):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    monkeypatch.setattr(run_module, "compiled", lambda model: model)  # see the module docstring
    ns = ip.user_ns
    ns["net"] = ns.get("model")
    if "--resume" in FLAGS[flag] and modifier != "workers":  # something to resume from
        ip.run_cell_magic("train", f"{BASE} --checkpoint {tmp_path} --name first", MLP)
    line = f"{BASE} {FLAGS[flag].format(dir=tmp_path, weights=weights)} {MODIFIERS[modifier]}"
    cell = MLP + "\nnet = model"
    shipped = request.getfixturevalue("no_ray_training") if "--workers" in line else None
    refusal = REFUSED.get((flag, modifier))
    for name in ("run", "other"):
        ns.pop(name, None)
    if refusal:
        with pytest.raises(UsageError) as err:
            ip.run_cell_magic("train", line, cell)
        message = str(err.value)
        assert refusal in message and "\n" not in message and "Traceback" not in message
        assert "run" not in ns and "other" not in ns  # refused before any run was made
        return
    ip.run_cell_magic("train", line, cell)
    run = ns["other" if "--name other" in line else "run"]
    run.wait(timeout=60)
    assert run.error is None and run.status == "completed", run.error
    if shipped is not None:  # what the workers would train with
        assert shipped["model"] is run.model
        if "--accumulate 2" in line:
            assert shipped["config"].accumulate == 2
        if "--lr 0.01" in line:
            assert shipped["config"].lr == 0.01
        return
    assert run.step == (2 if "--steps 2" in line else 3)
    if "--watch-grads" in line:
        assert run.gradients.norms
    if "--accumulate 2" in line:
        assert run.config.accumulate == 2
    if "--batch-size auto" in line:
        assert isinstance(run.config.batch_size, int) and run.config.batch_size >= 1
