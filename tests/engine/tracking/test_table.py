"""The runs table: every session run (kinds marked), the config fields that differ, best and last
validation, peaks from the system samples; long-form history, CSV through pandas, TensorBoard export,
and same-named runs."""
import time

import pandas as pd
import pytest
import torch
from torch import nn

from bigmodel_nb.api import compare_optimizers, fit
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.tracking import Runs, SystemSampler, collect, from_run


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def two_runs():
    slow = fit(mlp(), "digits", epochs=2, lr=1e-3, seed=0, name="slow_lr")
    fast = fit(mlp(), "digits", epochs=2, lr=1e-2, seed=0, name="fast_lr")
    return slow, fast


def test_table_rows_hold_what_differs_and_the_best_and_last_validation(two_runs):
    slow, fast = two_runs
    table = Runs([from_run(slow), from_run(fast)])
    assert table.differing() == ["lr"]  # the only config field that differs
    rows = table.rows()
    assert [r["run"] for r in rows] == [f"slow_lr #{slow.number}", f"fast_lr #{fast.number}"]
    assert [r["lr"] for r in rows] == [1e-3, 1e-2]
    assert rows[1]["best val loss"] == fast.best["loss"] and rows[1]["last val accuracy"] == fast.rows("val")[-1][
        "accuracy"]
    assert rows[0]["steps"] == slow.step == 40 and rows[0]["kind"] == "train" and rows[0]["params"] == 2410
    assert rows[0]["peak rss"] == max(s["rss_bytes"] for s in slow.system) > 0  # sampled while it trained


def test_history_long_form_and_csv_round_trip_through_pandas(two_runs, tmp_path):
    slow, fast = two_runs
    table = Runs([from_run(slow), from_run(fast)])
    long = table.history()
    assert len(long) == len(slow.history) + len(fast.history) and set(long["split"]) == {"train", "val"}
    path = table.to_csv(tmp_path / "runs.csv")
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, long, check_dtype=False)


def test_to_tensorboard_writes_one_event_folder_per_run(two_runs, tmp_path):
    events = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    slow, _ = two_runs
    root = Runs([from_run(slow)]).to_tensorboard(tmp_path)
    folder = next(root.iterdir())
    acc = events.EventAccumulator(str(folder))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/loss")] == [r["step"] for r in slow.rows("val")]


@pytest.mark.parametrize("mode", ["sequential", "together"])
def test_session_table_lists_comparisons_marked_by_kind(mode):
    """Stacked ("together") copies have no Run each, and sequential Runs are not kept: the comparison is listed."""
    comparison = compare_optimizers(mlp(), "digits", optimizers=["sgd", "adam"], epochs=1, mode=mode, show=False)
    records = [r for r in collect() if r.kind == "compare" and r.name in ("sgd", "adam")][-2:]
    assert [r.name for r in records] == ["sgd", "adam"]
    for record in records:
        assert record.rows("val")[-1]["loss"] == comparison.rows(record.name, "val")[-1]["loss"]
        assert record.config["optimizer"] == record.name and record.number == comparison.number


def test_same_named_runs_are_told_apart_by_number(two_runs):
    first = fit(mlp(), "digits", steps=2, name="twin")
    second = fit(mlp(), "digits", steps=2, name="twin")
    table = collect()
    assert table[second.number].run is second and table[f"twin #{first.number}"].run is first
    with pytest.raises(BigModelError, match=rf"2 runs are named 'twin' \(twin #{first.number}, twin #{second.number}\)"
                                            rf"; pick one by its number, e.g. runs\[{second.number}\]"):
        table["twin"]
    with pytest.raises(BigModelError, match="No run 'nobody' in this table; the runs are:"):
        table["nobody"]


def test_the_sampler_samples_about_once_a_second_and_stops_with_the_run(slow):
    from bigmodel_nb.engine import Run, TrainConfig

    run = Run(mlp(), "digits", TrainConfig(epochs=200), [SystemSampler(period=0.05), slow]).start()
    time.sleep(0.6)
    run.stop().wait()
    n = len(run.system)
    assert n >= 5 and all(s["rss_bytes"] > 0 and "cpu_percent" in s for s in run.system)
    assert [s["time"] for s in run.system] == sorted(s["time"] for s in run.system)
    time.sleep(0.2)
    assert len(run.system) == n  # nothing after the end
