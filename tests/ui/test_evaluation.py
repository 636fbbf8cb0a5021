"""%evaluate's rendering: the confusion heatmap (counts and row shares), the top-loss gallery drawn from
the inputs, the reliability curve, the HTML block and the text fallback."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from torch import nn

from bigmodel_nb.engine import Run, TrainConfig
from bigmodel_nb.engine.evaluate import evaluate
from bigmodel_nb.ui.evaluation import (
    calibration_figure,
    confusion_figure,
    evaluation_html,
    evaluation_text,
    gallery_figure,
    show_evaluation,
)


@pytest.fixture(scope="module")
def digits_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    run = Run(model, "digits", TrainConfig(epochs=2, seed=0)).run_here()
    return evaluate(run.model, run.data, "test")


def test_confusion_heatmap_counts_and_row_shares(digits_eval):
    fig = confusion_figure(digits_eval)
    counts, shares = fig.data
    assert counts.type == shares.type == "heatmap" and counts.visible and not shares.visible
    assert np.array(counts.z).sum() == digits_eval.size and list(counts.x) == [str(i) for i in range(10)]
    np.testing.assert_allclose(np.array(shares.z).sum(1), 1.0)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["counts", "row-normalised"]
    assert buttons[1].args[0]["visible"] == [False, True]
    assert fig.layout.yaxis.autorange == "reversed"  # class 0 at the top, as a matrix is read


def test_gallery_draws_the_top_losses_as_images_with_their_labels(digits_eval):
    fig = gallery_figure(digits_eval)
    rows = digits_eval.top_losses(12)
    assert len(fig.data) == 12 and all(t.type == "heatmap" for t in fig.data)
    assert np.array(fig.data[0].z).shape == (8, 8)  # flattened digits drawn as the 8×8 images they are
    np.testing.assert_allclose(np.array(fig.data[0].z).ravel(), digits_eval.example(rows[0]["index"]).numpy(),
                               rtol=1e-6)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith(f"#{rows[0]['index']} true {rows[0]['true']}<br>pred {rows[0]['predicted']}")


def test_reliability_curve_has_the_nonempty_bins_and_the_diagonal(digits_eval):
    fig = calibration_figure(digits_eval)
    bars, points, diagonal = fig.data
    assert len(bars.x) == sum(1 for b in digits_eval.calibration if b["count"])
    assert list(diagonal.x) == [0, 1] and f"ECE {digits_eval.metrics['ece']:.3f}" in fig.layout.title.text


def test_html_and_text_name_the_metrics_classes_and_top_losses(digits_eval, monkeypatch, capsys):
    html = evaluation_html(digits_eval)
    assert "bmnb-eval" in html and "f1_macro" in html and "Per class" in html and "Most confused" in html
    text = evaluation_text(digits_eval)
    assert "f1_macro" in text and "top losses:" in text and "most confused (true → predicted)" in text
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    show_evaluation(digits_eval)
    assert capsys.readouterr().out == text + "\n"


def test_in_a_notebook_one_html_block_and_three_figures(digits_eval, monkeypatch, shell):
    from IPython.utils.capture import capture_output

    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    with capture_output() as captured:
        show_evaluation(digits_eval)
    bundles = [o.data for o in captured.outputs]
    assert "bmnb-eval" in bundles[0]["text/html"]
    assert sum("application/vnd.plotly.v1+json" in b for b in bundles) == 3


def test_tabular_regression_shows_rows_as_a_table_without_a_gallery():
    X, y = load_diabetes(return_X_y=True)
    torch.manual_seed(0)
    run = Run(nn.Linear(10, 1), (X.astype(np.float32), (y / 100).astype(np.float32)), TrainConfig(epochs=2)).run_here()
    ev = evaluate(run.model, run.data, "test")
    assert gallery_figure(ev) is None and ev.confusion is None and ev.calibration == []
    html = evaluation_html(ev)
    assert "Top losses" in html and "input" in html and "rmse" in html
