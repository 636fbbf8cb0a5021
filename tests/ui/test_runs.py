"""%runs rendered: the table formatted for people, curves of each run overlaid on a step or time axis,
the interactive picker redrawing them, and the text fallback."""
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine.tracking import Runs, from_run
from bigmodel_nb.ui.runs import RunsView, display_rows, metrics_of, runs_figure, runs_text, show_runs


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def table():
    return Runs([from_run(fit(mlp(), "digits", epochs=2, lr=lr, seed=0, name=f"lr{lr}")) for lr in (1e-3, 1e-2)])


def test_figure_overlays_val_and_train_of_each_run(table):
    fig = runs_figure(table)
    assert [t.name for t in fig.data] == [f"{r.label} {s}" for r in table for s in ("val", "train")]
    val = fig.data[0]
    assert list(val.x) == [r["step"] for r in table.records[0].rows("val")] and val.line.dash == "solid"
    assert fig.data[1].line.dash == "dot" and fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    by_time = runs_figure(table, [table.records[1].label], metric="accuracy", axis="time")
    assert len(by_time.data) == 2 and list(by_time.data[0].x) == [r["time"] for r in table.records[1].rows("val")]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["linear", "log"]


def test_metrics_rows_and_text(table):
    assert metrics_of(table)[:3] == ["loss", "accuracy", "lr"]
    rows = display_rows(table)
    assert rows[0]["run"] == table.records[0].label and rows[0]["lr"] == 1e-3 and rows[0]["peak rss"].endswith("B")
    assert "best val accuracy" in rows[0] and rows[0]["best val accuracy"].endswith("%")
    text = runs_text(table)
    assert text.startswith("runs: 2") and table.records[1].label in text


def test_the_picker_metric_and_axis_redraw_the_chart(table, widget_mode):
    view = RunsView(table)
    assert len(view.figure.data) == 4
    view.picker.value = (table.records[0].label,)
    assert [t.name for t in view.figure.data] == [f"{table.records[0].label} val", f"{table.records[0].label} train"]
    view.metric.value = "accuracy"
    view.axis.value = "time"
    assert view.figure.layout.xaxis.title.text == "time (s)" and "accuracy by time" in view.figure.layout.title.text


def test_text_mode_prints_the_table(table, monkeypatch, capsys):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    show_runs(table)
    assert capsys.readouterr().out == runs_text(table) + "\n"
