"""A sweep on Ray Tune workers (a local 2-CPU cluster): the trials finish in parallel, their validation rows
stream back while the sweep runs, ASHA stops trailing trials, and the study is one Optuna can open."""
import sys

import pytest
from IPython.core.error import UsageError
from torch import nn

pytest.importorskip("ray.tune", reason="Ray Tune (the distributed extra) is not installed")
import ray  # noqa: E402
from ray import cloudpickle  # noqa: E402

from bigmodel_nb.api import sweep  # noqa: E402
from bigmodel_nb.engine import BigModelError  # noqa: E402
from bigmodel_nb.engine.tracking import collect  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


def build(hidden=32):
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_two_workers_finish_a_small_sweep_with_rows_streamed_live():
    result = sweep(build, "digits", {"lr": "1e-3..1e-1:log", "hidden": [16, 64]}, trials=4, epochs=2, workers=2,
                   seed=0, show=False)
    assert len(result.trials) == 4 and {t["state"] for t in result.trials} <= {"complete", "pruned"}
    assert result.rows_streamed >= 4  # every validation row came back from the workers
    finished = [t for t in result.trials if t["state"] == "complete"]
    assert finished and result.best["value"] == min(t["value"] for t in finished)
    assert all(1e-3 <= t["lr"] <= 1e-1 and t["hidden"] in (16, 64) for t in result.trials)
    assert len(result.study.trials) == 4  # Optuna's own study, as the notebook can open it
    listed = [r for r in collect() if r.kind == "sweep" and r.number == result.number]
    assert len(listed) == 4 and all(r.history for r in listed)


def test_a_stored_study_goes_on_with_the_next_numbers(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    space = {"lr": "1e-3..1e-1:log"}
    first = sweep(build, "digits", space, trials=2, steps=5, workers=2, storage=url, study="s", show=False)
    again = sweep(build, "digits", space, trials=2, steps=5, workers=2, storage=url, study="s", show=False)
    assert [t["number"] for t in first.trials] == [0, 1] and [t["number"] for t in again.trials] == [0, 1, 2, 3]
    assert len(again.study.trials) == 4 and len(again.run_records()) == 2  # %runs lists this sweep's own trials
    # The stored study is checked as the notebook's sweeps check it, in one sentence.
    with pytest.raises(BigModelError, match=r"The stored study 's' searched other parameters"):
        sweep(build, "digits", {"hidden": "16,32"}, trials=1, steps=5, workers=2, storage=url, study="s", show=False)
    with pytest.raises(BigModelError, match=r"'s' minimizes its value but this sweep would maximize it"):
        sweep(build, "digits", space, trials=1, steps=5, workers=2, storage=url, study="s", metric="val_accuracy",
              show=False)
    with pytest.raises(BigModelError, match=r"Cannot open the study storage 'sqlite:////proc/nope/x.db'"):
        sweep(build, "digits", space, trials=1, steps=5, workers=2, storage="sqlite:////proc/nope/x.db", show=False)
    with pytest.raises(BigModelError, match=r"--study names a study in a database; add --storage"):
        sweep(build, "digits", space, trials=1, steps=5, workers=2, study="s", show=False)


def test_the_magic_runs_the_cell_body_on_the_workers(shell, monkeypatch):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn")
    shell.run_cell_magic("sweep", "--trials 2 --workers 2 --seed 0 --data digits --epochs 1 --lr 1e-3..1e-2 "
                                  "--hidden 16,32", "model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), "
                                                    "nn.Linear(hidden, 10))")
    result = shell.user_ns.pop("sweep")
    assert len(result.trials) == 2 and all(t["hidden"] in (16, 32) for t in result.trials)
    assert result.rows_streamed >= 2 and result.best is not None
    assert all(t["value"] < 2.0 for t in result.trials)  # Adam at lr ≥ 1e-3 for an epoch: the loss fell from ~2.3


def test_the_cell_optimizer_trains_the_trials_on_the_workers_and_magics_are_refused(shell, monkeypatch):
    """The worker's trial is set up as the notebook's (api.prepare_run): an optimizer the cell defines is the one
    used — here SGD with lr 0, so no trial can move from the untrained model's loss whatever --lr says."""
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn")
    body = ("model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))\n"
            "optimizer = torch.optim.SGD(model.parameters(), lr=0.0)")
    shell.run_cell_magic("sweep", "--trials 2 --workers 2 --seed 0 --data digits --epochs 1 --lr 1e-3..1e-2 "
                                  "--hidden 16,32", body)
    result = shell.user_ns.pop("sweep")
    assert len(result.trials) == 2 and all(t["value"] > 2.0 for t in result.trials)
    with pytest.raises(UsageError, match="% and ! lines do not exist"):
        shell.run_cell_magic("sweep", "--trials 2 --workers 2 --data digits --epochs 1 --hidden 16,32",
                             "%time x = 1\n" + body.splitlines()[0])
    with pytest.raises(UsageError, match=r"The cell body does not parse \(.*line 1\)"):
        shell.run_cell_magic("sweep", "--trials 2 --workers 2 --data digits --epochs 1 --hidden 16,32",
                             "model = nn.Sequential(nn.Linear(64, hidden)")


def test_a_trial_that_failed_on_its_worker_is_a_failed_trial_with_its_reason():
    from types import SimpleNamespace

    from bigmodel_nb.engine.sweep.ray_tune import TuneReporter, _Stream
    from bigmodel_nb.engine.sweep.study import Sweep

    result = Sweep(trials=[], best=None, study=None, metric="val_accuracy", direction="maximize")
    stream = _Stream(result, {"lr": None}, None)
    trial = SimpleNamespace(trial_id="t0", config={"lr": 0.1})
    stream.received(trial, {"value": -float("inf"), "row": None, "finished": True, "status": "failed",
                            "error": "RuntimeError in forward: boom", "steps": 3})
    stream.finished(trial)
    assert result.trials[0]["state"] == "fail" and result.best is None
    assert result.notes == ["trial 0 failed: RuntimeError in forward: boom"]
    # a missing or NaN value is the worst for the metric's direction, so the searcher never takes it for the best
    assert TuneReporter("accuracy", "maximize")._value(float("nan")) == -float("inf")
    assert TuneReporter("loss", "minimize")._value(None) == float("inf")


def test_workers_and_cluster_are_checked_before_anything_starts():
    space = {"lr": "1e-3..1e-1:log"}
    with pytest.raises(BigModelError, match="cluster= goes with workers=N"):
        sweep(build, "digits", space, trials=2, cluster="10.0.0.5:6379", show=False)
    with pytest.raises(BigModelError, match="workers must be a whole number ≥ 1, not 0"):
        sweep(build, "digits", space, trials=2, workers=0, show=False)


def test_variables_named_by_the_line_travel_and_a_run_to_start_from_travels_as_weights(shell, monkeypatch):
    """--data a,b names notebook variables (a searched choice), and --from a Run, which cannot be pickled: its
    weights go instead, so each trial starts trained (its first loss far below the untrained ~2.3)."""
    from bigmodel_nb.engine import load_dataset

    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn")
    shell.user_ns.update(d1=load_dataset("digits"), d2=load_dataset("digits"))
    body = "model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))"
    shell.run_cell_magic("train", "--data digits --epochs 3 --lr 3e-3 --seed 0 --quiet --name base", body)
    shell.run_cell_magic("sweep", "--trials 2 --workers 2 --seed 0 --data d1,d2 --steps 5 --lr 1e-4..1e-3 "
                                  "--from base --log-every 1 --prune none", body)
    result = shell.user_ns.pop("sweep")
    assert [t["state"] for t in result.trials] == ["complete", "complete"] and not result.notes
    assert all(t["history"][0]["loss"] < 1.0 for t in result.trials)
    shell.user_ns.pop("base")


def test_only_what_the_cell_body_reads_travels_to_the_workers():
    import threading

    import torch

    from bigmodel_nb.sweep_magics import namespace_snapshot

    ns = {"torch": torch, "big": torch.zeros(1000, 1000), "lock": threading.Lock(), "hidden": 3, "_private": 1}
    assert set(namespace_snapshot(ns, {"torch", "hidden", "lock", "_private"})) == {"torch", "hidden"}
    assert set(namespace_snapshot(ns)) == {"torch", "big", "hidden"}  # a lock cannot be pickled: left here
