"""`%compress` rendering: the HTML table, the bar charts (simulated stages marked), text mode."""
import functools

import pytest
import torch
from torch import nn

from bigmodel_nb.engine.compress import Prune, Quantize, compress
from bigmodel_nb.ui.compress import compression_figure, compression_html, compression_text, show_compression_report


@pytest.fixture(scope="module")
def report():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # rendering is tested, not speed
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        yield compress(model, "digits", steps=[Prune(0.5), Quantize("int8")], latency_repeats=1, latency_batch=8)
    finally:
        torch.set_num_threads(threads)


def test_html_lists_every_stage_and_marks_the_simulated_one(report):
    page = compression_html(report)
    for stage in ("original", "prune 50% unstructured (layer)", "quantize int8"):
        assert page.count(f"<td style='padding:2px 10px;text-align:left'>{stage}</td>") == 1  # one table row each
        assert f"<b>{stage}</b>" in page  # and its note
    assert page.count("simulated ⚠") == 1 and "masks only" in page and "bmnb-compress" in page
    assert "latency: batch 8, 1 thread," in page
    assert "quantize_dynamic is deprecated" in page


def test_bars_for_size_latency_and_accuracy_with_the_simulated_stage_hatched(report):
    fig = compression_figure(report)
    bars = [t for t in fig.data if t.x and t.x[0] is not None]
    assert [t.name for t in bars] == ["Size on disk (MB)", "Latency (ms)", "Test accuracy (%)"]
    for trace in bars:
        assert len(trace.x) == 3 and list(trace.marker.pattern.shape) == ["", "/", ""]
        assert "(simulated)" in trace.text[1] and "(simulated)" not in trace.text[2]
    size = bars[0].y
    assert size[0] == pytest.approx(report.stages[0]["size_bytes"] / 1e6) and size[2] < size[0] / 2
    assert any("simulated" in (t.name or "") for t in fig.data if t not in bars)  # the legend explains the hatching


def test_text_mode_prints_the_table_and_notes(report, monkeypatch, capsys):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    show_compression_report(report)
    out = capsys.readouterr().out
    assert out == compression_text(report) + "\n" and "<" not in out
    assert "prune 50% unstructured (layer) [SIMULATED]: masks only" in out
    assert "quantize int8" in out and "smaller" in out and "faster" in out


def test_in_a_notebook_it_shows_one_html_bundle_with_a_text_fallback(report, monkeypatch, shell):
    from IPython.utils.capture import capture_output

    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    with capture_output() as captured:
        show_compression_report(report)
    bundle = captured.outputs[0].data
    assert "bmnb-compress" in bundle["text/html"] and bundle["text/plain"] == compression_text(report)


def test_a_report_without_data_draws_two_panels():
    torch.manual_seed(0)
    r = compress(nn.Linear(16, 4), None, steps=[Quantize("bf16")], example=torch.randn(2, 16), latency_repeats=1)
    fig = compression_figure(r)
    assert [t.name for t in fig.data] == ["Size on disk (MB)", "Latency (ms)"]
    assert "—" in compression_text(r)  # no accuracy


def test_training_stages_can_show_the_training_dashboard(capsys):
    from bigmodel_nb.api import launch
    from bigmodel_nb.engine.compress import Distill

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        r = compress(teacher, "digits", steps=[Distill(nn.Sequential(nn.Linear(64, 10)), epochs=1)],
                     trainer=functools.partial(launch, mode="text"), latency_repeats=1)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "training distill:" in out and r.runs["distill → Sequential"].status == "completed"


def test_a_distillation_baseline_row_follows_its_stage_with_the_verdict():
    from bigmodel_nb.engine.compress import Distill

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        r = compress(teacher, "digits", steps=[Distill(nn.Sequential(nn.Linear(64, 10)), epochs=1)], seed=0,
                     latency_repeats=1, latency_batch=8)
    finally:
        torch.set_num_threads(threads)
    text, page = compression_text(r), compression_html(r)
    stages = [line.split("  ")[0] for line in text.splitlines()[2:5]]
    assert stages == ["original", "distill → Sequential", "distill → Sequential: student alone (baseline)"]
    verdict = r.notes[0]
    assert verdict.startswith("Distillation") and f"note: {verdict}" in text
    assert "student alone (baseline)</td>" in page and ">baseline</td>" in page
    assert len(compression_figure(r).data[0].x) == 2  # the bars are the stages
