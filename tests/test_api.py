"""The front door: each Python twin takes its magic's options as keyword arguments, and the results
share field names where they mean the same thing."""
import gc

import pytest
import torch
from torch import nn

import bigmodel_nb
from bigmodel_nb.api import compare_optimizers, compress, fit, prepare_run
from bigmodel_nb.engine import BigModelError, runs


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_compress_takes_the_magic_options_as_keywords():
    report = compress(mlp(), "digits", prune=0.5, quantize="int8", show=False, latency_repeats=1)
    assert [r["stage"] for r in report.stages] == ["original", "prune 50% unstructured (layer)", "quantize int8"]
    assert report.stages[-1]["accuracy"] > 0.05
    with pytest.raises(BigModelError, match="Nothing to do; give at least one of prune=R"):
        compress(mlp(), "digits", show=False)


def test_compress_distill_has_a_baseline_unless_told_not_to():
    kw = dict(show=False, epochs=1, seed=0, latency_repeats=1, latency_batch=8)
    report = compress(mlp(), "digits", distill=nn.Sequential(nn.Linear(64, 10)), **kw)
    assert report.baseline["stage"] == "distill → Sequential: student alone (baseline)"
    assert report.baseline["distilled_accuracy"] == report.stages[1]["accuracy"]
    assert compress(mlp(), "digits", distill=nn.Sequential(nn.Linear(64, 10)), baseline=False, **kw).baseline is None
    with pytest.raises(BigModelError, match="baseline must be True or False"):
        compress(mlp(), "digits", distill=nn.Sequential(nn.Linear(64, 10)), baseline="no", **kw)


def test_compress_order_follows_the_line():
    report = compress(mlp(), "digits", quantize="int8", finetune=1, prune=0.25, show=False, quiet=True,
                      latency_repeats=1)
    assert [r["stage"].split()[0] for r in report.stages] == ["original", "prune", "finetune", "quantize"]
    with pytest.raises(BigModelError, match=r"Unknown compress option 'prunez' — did you mean prune\?$"):
        compress(mlp(), "digits", prunez=0.5, show=False)
    with pytest.raises(BigModelError, match="put --quantize last"):  # the order given is the order run
        compress(mlp(), "digits", quantize="int8", prune=0.25, order=["quantize", "prune"], show=False)


def test_comparisons_and_trajectories_both_have_results():
    paths = compare_optimizers(function="rosenbrock", optimizers="sgd,adam", steps=50, show=False)
    assert (set(paths.results) == {"sgd", "adam"}
            and {"x", "y", "loss", "distance", "diverged"} <= set(paths.results["adam"]))
    comparison = compare_optimizers(mlp(), "digits", ["sgd", "adam"], epochs=1, show=False)
    assert set(comparison.results) == {"sgd", "adam"} and "val_loss" in comparison.results["adam"]
    with pytest.raises(BigModelError, match="needs a model to train, or function="):
        compare_optimizers(data="digits", show=False)


def test_fit_refuses_unknown_options_with_a_suggestion():
    with pytest.raises(BigModelError, match="Unknown training option 'epoch' — did you mean epochs?"):
        fit(mlp(), "digits", epoch=3)


def test_a_workers_run_refuses_what_the_workers_cannot_do_before_anything_starts(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # Ray is never reached: the refusal comes first
    with pytest.raises(BigModelError, match="--watch-grads records this notebook's copy of the model"):
        prepare_run(mlp(), "digits", workers=2, watch_grads=True)
    with pytest.raises(BigModelError, match="go with --workers N"):
        prepare_run(mlp(), "digits", strategy="fsdp")


def test_every_run_of_the_session_is_registered_and_held_weakly():
    first = fit(mlp(), "digits", steps=2, name="first")
    second = fit(mlp(), "digits", steps=2, name="second")
    listed = runs()
    assert listed.index(first) < listed.index(second)
    records = bigmodel_nb.runs(show=False)  # the %runs table lists them all (and trials of Ray sweeps, no Run here)
    assert [record.run for record in records if record.run is not None] == listed
    number = second.number
    del second, listed, records
    gc.collect()
    assert all(r.number != number for r in runs()) and first in runs()


def test_the_package_reexports_the_front_door():
    assert bigmodel_nb.train is bigmodel_nb.api.train and bigmodel_nb.compress is compress
    assert bigmodel_nb.fit is fit


def test_every_twin_takes_dict_batch_data(dict_items, keyword_model):
    data = dict_items(96)  # dict items, a model that takes keywords and returns a dict with its own loss
    assert bigmodel_nb.grads(keyword_model(), data, steps=3, show=False).norms
    assert len(bigmodel_nb.lr_find(keyword_model(), data, steps=12, show=False).lrs) >= 10
    assert compare_optimizers(keyword_model(), data, ["sgd", "adam"], epochs=1, show=False).mode == "sequential"
    stages = compress(keyword_model(), data, prune=0.5, quantize="int8", show=False, latency_repeats=1).stages
    assert [s["stage"] for s in stages] == ["original", "prune 50% unstructured (layer)", "quantize int8"]
    assert all(s["accuracy"] is not None and s["latency_ms"] > 0 for s in stages)
    assert bigmodel_nb.summary(keyword_model(), (6,), show=False).total_params == 20 * 8 + 8 * 2 + 2
