"""`%summary` rendering: the HTML block, the plain-text version, and which one shows where."""
import re

import pytest
import torch
from torch import nn

from bigmodel_nb.engine.inspect.summary import summarize
from bigmodel_nb.ui.summary import MAX_ROWS, fmt_bytes, fmt_count, show_summary, summary_html, summary_text


@pytest.fixture
def mlp_summary():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    return summarize(model, batch_size=32, device="cpu")


@pytest.fixture
def deep_summary():
    """100 layers: more than a notebook output should carry."""
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(100)])
    return summarize(model, batch_size=4)


def test_bytes_and_counts_read_like_people_write_them():
    assert fmt_bytes(512) == "512 B" and fmt_bytes(19_240) == "19.2 KB"
    assert fmt_bytes(497_759_232) == "497.8 MB" and fmt_bytes(3_980_000_000) == "3.98 GB"
    assert fmt_bytes(-2_500_000) == "-2.5 MB" and fmt_bytes(None) == "?"
    assert fmt_count(124_439_808) == "124M" and fmt_count(1_234_567) == "1.23M"
    assert fmt_count(4_810) == "4.81K" and fmt_count(650) == "650" and fmt_count(32_228_179_968) == "32.2G"


def test_html_has_the_headline_numbers_the_bar_and_the_layers(mlp_summary):
    s, m = mlp_summary, mlp_summary.memory
    page = summary_html(s)
    assert f"{fmt_count(s.total_params)} parameters" in page and "19.2K" in page  # 64*256+256 + 2570 = 19,210
    for precision, size in s.size_by_precision().items():
        assert f"{precision} <b>{fmt_bytes(size)}</b>" in page
    assert f"training memory (batch 32, fp32, adam): <b>{fmt_bytes(m['total_bytes'])}</b>" in page
    assert f"data-total-bytes='{m['total_bytes']}'" in page
    # one bar segment per non-zero component, widths adding up to the whole bar
    widths = [float(w) for w in re.findall(r"<div title='[^']+' style='width:([\d.]+)%", page)]
    assert len(widths) == 5 and abs(sum(widths) - 100) < 0.1
    assert f"optimizer state: {fmt_bytes(m['optimizer_state'])}" in page
    assert "fits on cpu" in page and fmt_bytes(m["headroom_bytes"]) in page
    assert "FLOPs per sample" in page and fmt_count(s.flops_per_sample) in page
    assert page.count("<tr>") == 1 + len(s.layers) and "(32, 256)" in page and "16,640" in page


def test_a_model_that_does_not_fit_says_by_how_much(mlp_summary):
    mlp_summary.available_bytes = 1_000  # a tiny device
    page = summary_html(mlp_summary)
    short = mlp_summary.memory["total_bytes"] - 1_000
    assert "bmnb-nofit" in page and f"does not fit on cpu: 1 KB available, {fmt_bytes(short)} short" in page


def test_long_layer_tables_are_cut_with_a_count_of_the_rest(deep_summary):
    page = summary_html(deep_summary)
    assert page.count("<tr>") == 1 + MAX_ROWS and f"… {100 - MAX_ROWS} more layers" in page
    text = summary_text(deep_summary, max_rows=10)
    assert "… 90 more layers" in text and len(text.splitlines()) < 25


def test_text_mode_prints_a_compact_version(mlp_summary, monkeypatch, capsys):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    show_summary(mlp_summary)
    out = capsys.readouterr().out
    m = mlp_summary.memory
    assert out.startswith("Sequential: 19.2K parameters (19.2K trainable)")
    assert f"training memory (batch 32, fp32, adam): {fmt_bytes(m['total_bytes'])} = weights " in out
    assert f"activations {fmt_bytes(m['activations'])}" in out and "fits on cpu" in out
    assert "<" not in out and "(32, 10)" in out


def test_in_a_notebook_it_displays_one_html_bundle_with_a_text_fallback(mlp_summary, monkeypatch, shell):
    from IPython.utils.capture import capture_output

    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    with capture_output() as captured:
        show_summary(mlp_summary)
    assert captured.stdout == "" and len(captured.outputs) == 1
    bundle = captured.outputs[0].data
    assert "bmnb-summary" in bundle["text/html"] and bundle["text/plain"].startswith("Sequential: 19.2K parameters")


def test_meta_and_int8_summaries_render(deep_summary):
    text = summary_text(deep_summary)
    assert "Sequential: 27.2K parameters" in text and "on the meta device (no weights allocated)" in text
    page = summary_html(summarize(nn.Sequential(nn.Linear(8, 4)), precision="int8"))
    assert "training in int8 is not supported" in page and "int8 <b>36 B</b>" in page
    assert "inference memory (batch 1, int8" in page and "training memory" not in page
