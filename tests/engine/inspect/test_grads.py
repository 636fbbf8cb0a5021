"""Gradient-flow recording checked against hand-written PyTorch loops, on real models and data."""
import copy
import itertools
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from bigmodel_nb.engine import BigModelError, Callback, Run, TrainConfig, load_dataset
from bigmodel_nb.engine.core.loop import Loop
from bigmodel_nb.engine.core.optim import make_optimizer
from bigmodel_nb.engine.inspect.grads import GradientRecorder, GradientReport, diagnose, grads, select_layers


def deep_mlp(act, depth=10, width=64, norm=False):
    torch.manual_seed(0)
    layers = [nn.Linear(64, width)]
    for _ in range(depth - 2):
        layers += [act()] + ([nn.LayerNorm(width)] if norm else []) + [nn.Linear(width, width)]
    return nn.Sequential(*layers, act(), nn.Linear(width, 10))


def hand_loop(model, steps, *, optimizer="momentum", lr=0.1, clip=None, seed=0):
    """The plain PyTorch loop: per-layer gradient norms and ||Δθ||/||θ|| of each step."""
    model = copy.deepcopy(model)
    bundle = load_dataset("digits")
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    layers = [m for m in model.modules() if list(m.parameters(recurse=False))]
    torch.manual_seed(seed)
    norms, ratios = [], []
    for x, y in itertools.islice(bundle.train.batches(64, "cpu", shuffle=True, seed=seed, epoch=0), steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        norms.append([torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters()])).item()
                      for m in layers])
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        before = [[p.detach().clone() for p in m.parameters()] for m in layers]
        opt.step()
        ratios.append([(torch.cat([(p - b).flatten() for p, b in zip(m.parameters(), old)]).norm()
                        / torch.cat([b.flatten() for b in old]).norm()).item() for m, old in zip(layers, before)])
    return np.array(norms), np.array(ratios)


def as_matrix(report: GradientReport, field="norms"):
    return np.array([getattr(report, field)[name] for name in report.layers]).T


def test_norms_and_update_ratios_equal_a_hand_written_loop(mlp):
    model = mlp()
    report = grads(model, "digits", steps=3, optimizer="momentum", lr=0.1)
    norms, ratios = hand_loop(model, 3)
    assert report.layers == ["0 (Linear)", "2 (Linear)"] and report.steps == [1, 2, 3]
    np.testing.assert_allclose(as_matrix(report), norms, rtol=1e-5)
    np.testing.assert_allclose(as_matrix(report, "update_ratios"), ratios, rtol=1e-4)
    assert report.status == "completed" and report.flags == []


def test_every_records_only_those_steps(mlp):
    model = mlp()
    report = grads(model, "digits", steps=6, every=3, optimizer="sgd", lr=0.05)
    norms, _ = hand_loop(model, 6, optimizer="sgd", lr=0.05)
    assert report.steps == [3, 6]
    np.testing.assert_allclose(as_matrix(report), norms[[2, 5]], rtol=1e-5)


def test_recorded_gradients_are_the_unclipped_ones(mlp):
    model = mlp()
    run = Run(copy.deepcopy(model), "digits", TrainConfig(steps=2, optimizer="momentum", lr=0.1, seed=0,
                                                           grad_clip=0.01, amp="off"))
    run.run_here([GradientRecorder(run.model)])
    norms, ratios = hand_loop(model, 2, clip=0.01)
    np.testing.assert_allclose(as_matrix(run.gradients), norms, rtol=1e-5)
    assert as_matrix(run.gradients).max() > 0.01  # well above the clip: not the clipped values
    np.testing.assert_allclose(as_matrix(run.gradients, "update_ratios"), ratios, rtol=1e-4)


def test_after_backward_hook_fires_with_complete_grads_only_when_overridden(mlp):
    class Probe(Callback):
        def __init__(self):
            self.seen = []

        def on_after_backward(self, run, logs):
            self.seen.append((logs["step"], all(p.grad is not None for p in run.model.parameters())))

    probe = Probe()
    run = Run(mlp(), "digits", TrainConfig(steps=5, seed=0))
    assert Loop(run).after_backward is False  # nothing overrides it: the step does not even emit it
    run.run_here([probe])
    assert probe.seen == [(s, True) for s in range(1, 6)]


def test_deep_sigmoid_mlp_vanishes_relu_layernorm_does_not():
    sigmoid = grads(deep_mlp(nn.Sigmoid), "digits", steps=30)
    assert [f["kind"] for f in sigmoid.flags] == ["vanishing"]
    flag = sigmoid.flags[0]
    assert flag["layer"] == "0 (Linear)" and "vanish" in flag["message"] and flag["message"].endswith(".")
    first, last = np.median(sigmoid.norms["0 (Linear)"]), np.median(sigmoid.norms[sigmoid.layers[-1]])
    assert first < 1e-3 * last
    healthy = grads(deep_mlp(nn.ReLU, norm=True), "digits", steps=30)
    assert healthy.flags == [] and len(healthy.layers) == 18  # LayerNorms own parameters too


def test_huge_learning_rate_flags_the_first_nonfinite_layer():
    report = grads(deep_mlp(nn.ReLU, depth=3), "digits", steps=30, optimizer="sgd", lr=1e4)
    assert report.status == "failed" and "loss became" in report.error
    kinds = {f["kind"]: f for f in report.flags}
    assert "nonfinite" in kinds and "exploding" in kinds
    matrix = as_matrix(report)
    bad = ~np.isfinite(matrix)
    row = int(np.argmax(bad.any(1)))
    assert kinds["nonfinite"]["layer"] == report.layers[int(np.argmax(bad[row]))]
    assert f"step {report.steps[row]}" in kinds["nonfinite"]["message"]


def test_nonfinite_names_the_branch_where_it_starts_in_forward_order():
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(64, 32), nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):
            z = self.b(x)  # b runs first, though registered second
            return self.head(self.a(x) + torch.sqrt(z * (z > 0)))  # d sqrt/dz is inf at 0: NaN grads into b

    torch.manual_seed(0)
    report = grads(Branches(), "digits", steps=10)
    assert report.layers == ["b (Linear)", "a (Linear)", "head (Linear)"]
    assert math.isnan(report.norms["b (Linear)"][0]) and math.isfinite(report.norms["a (Linear)"][0])
    nonfinite = [f for f in report.flags if f["kind"] == "nonfinite"]
    assert nonfinite and nonfinite[0]["layer"] == "b (Linear)" and "step 1" in nonfinite[0]["message"]


def test_huge_init_flags_exploding_at_the_largest_norm():
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(7) for m in (nn.Linear(64, 64), nn.ReLU())], nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6)
    report = grads(model, "digits", steps=5, optimizer="sgd", lr=1e-9)
    peaks = np.nanmax(as_matrix(report), axis=0)
    exploding = [f for f in report.flags if f["kind"] == "exploding"]
    assert peaks.max() > 1e3 and len(exploding) == 1
    assert exploding[0]["layer"] == report.layers[int(np.argmax(peaks))]


def test_dead_relu_flagged_when_bias_very_negative(mlp):
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    report = grads(model, "digits", steps=10)
    assert report.dead_units == {"1 (ReLU)": 1.0}
    assert [(f["kind"], f["layer"]) for f in report.flags] == [("dead_relu", "1 (ReLU)")]
    assert "640 recorded samples" in report.flags[0]["message"]
    assert grads(mlp(), "digits", steps=10).dead_units["1 (ReLU)"] < 0.5


def test_dead_relu_units_of_a_conv_net_are_channels_and_a_reused_relu_counts_per_call():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc, self.out = nn.Conv2d(1, 8, 3), nn.Linear(8 * 36, 32), nn.Linear(32, 10)
            self.relu = nn.ReLU()  # used twice in forward

        def forward(self, x):
            return self.out(self.relu(self.fc(self.relu(self.conv(x)).flatten(1))))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.conv.bias[:6] = -100.0  # 6 of 8 channels never fire
    report = grads(model, load_dataset("digits", flatten=False), steps=4)
    assert report.dead_units["relu (ReLU)"] == 6 / 8 and report.dead_units["relu (ReLU) call 2"] < 0.5
    assert [(f["kind"], f["layer"]) for f in report.flags] == [("dead_relu", "relu (ReLU)")]


def test_diagnose_thresholds_on_plain_numbers():
    steps = list(range(1, 13))
    growing = np.outer(np.geomspace(0.5, 50, 12), [1.0, 1.0])  # ×100 over the window, ending at 50
    assert [f["kind"] for f in diagnose(["a", "b"], steps, growing, {}, None)] == ["exploding"]
    assert diagnose(["a", "b"], steps, growing / 100, {}, None) == []  # grew, but stayed tiny
    vanishing = np.tile([1e-4, 1.0], (12, 1))
    assert [f["layer"] for f in diagnose(["a", "b"], steps, vanishing, {}, None)] == ["a"]
    assert diagnose(["a", "b"], steps, vanishing * [[20, 1]], {}, None) == []  # 2e-3: above the 1e-3 ratio
    few = diagnose(["a"], steps[:1], np.ones((1, 1)), {"r (ReLU)": (1.0, 8)}, None)
    assert few == []  # 8 samples say nothing about dead units
    all_nan = np.full((12, 2), np.nan)
    assert diagnose(["a", "b"], steps, all_nan, {}, (1, "a"))[0]["kind"] == "nonfinite"


def test_model_untouched_and_no_hooks_left(mlp):
    model = mlp()
    x = load_dataset("digits").test.tensors()[0][:32]
    before_out, before_state = model(x).detach(), copy.deepcopy(model.state_dict())
    model.eval()
    rng = torch.get_rng_state()
    grads(model, "digits", steps=5)
    assert torch.equal(model(x), before_out.view_as(model(x))) and not model.training
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)  # the user's random stream is left alone


def _hooks(model):
    return [(name, kind) for name, m in model.named_modules()
            for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
            if getattr(m, kind)] + [n for n, p in model.named_parameters()
                                    if p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)]


@pytest.mark.parametrize("lr", [0.05, 1e4])  # a run that completes and one that fails on a NaN loss
def test_inplace_trains_the_model_and_removes_every_hook(lr):
    model = deep_mlp(nn.ReLU, depth=3)
    start = model[0].weight.detach().clone()
    report = grads(model, "digits", steps=30, inplace=True, optimizer="sgd", lr=lr)
    assert _hooks(model) == []
    if lr < 1:
        assert report.status == "completed" and not torch.equal(model[0].weight, start)
    else:  # the run restored its last finite weights: here, those it started from
        assert report.status == "failed" and torch.equal(model[0].weight, start)


def test_layers_pattern_selects_by_name_glob_and_regex():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 32), act=nn.ReLU(), fc2=nn.Linear(32, 32),
                                      out=nn.Linear(32, 10)))
    assert [p for p, _ in select_layers(model, "fc*")] == ["fc1", "fc2"]
    assert [p for p, _ in select_layers(model, "^fc2$|out")] == ["fc2", "out"]
    assert [p for p, _ in select_layers(model, "out.bias")] == ["out"]
    report = grads(model, "digits", steps=3, layers="fc1, out")
    assert report.layers == ["fc1 (Linear)", "out (Linear)"] and len(report.norms["out (Linear)"]) == 3
    with pytest.raises(BigModelError, match=r"No layer matches --layers 'conv\*'; this model's layers are: fc1, fc2"):
        grads(model, "digits", layers="conv*")


def test_bad_input_is_one_sentence(mlp):
    for call, words in [(lambda: grads("model", "digits"), "torch.nn.Module"),
                        (lambda: grads(mlp(), "digits", steps=0), "--steps"),
                        (lambda: GradientRecorder(mlp(), every=0), "every N steps")]:
        with pytest.raises(BigModelError, match=words) as err:
            call()
        assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_table_histograms_and_bounded_history(mlp):
    run = Run(mlp(), "digits", TrainConfig(steps=45, seed=0))
    recorder = GradientRecorder(run.model, max_steps_kept=8, histogram_bins=20)
    run.run_here([recorder])
    report = run.gradients
    assert len(report.steps) <= 8 and report.steps[-1] == 45 and report.steps[0] == 1
    counts, edges = report.histograms["0 (Linear)"]
    assert counts.sum() == 64 * 64 + 64 and len(edges) == 21 and report.histogram_step == 45
    rows = report.rows()
    assert [r["layer"] for r in rows] == ["0 (Linear)", "2 (Linear)", "1 (ReLU)"]
    assert rows[0]["latest_norm"] == report.norms["0 (Linear)"][-1] and rows[2]["dead_units"] < 0.5
    table = report.table()
    assert list(table.index) == ["0 (Linear)", "2 (Linear)", "1 (ReLU)"]
    assert repr(report) == f"<GradientReport 2 layers × {len(report.steps)} steps, completed: no flags>"


def test_histograms_sample_at_most_the_bound():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    run = Run(model, "digits", TrainConfig(steps=3, seed=0))
    run.run_here([GradientRecorder(run.model, histogram_values=1000)])
    assert 990 <= run.gradients.histograms["0 (Linear)"][0].sum() <= 1000  # of 16,640 values


class SyncCounter(TorchFunctionMode):
    """Counts host reads (.item(), .cpu(), .tolist(), bool()) during a run in this thread."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("item", "cpu", "tolist", "__bool__", "numpy"):
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_one_host_copy_per_logging_tick_and_no_item_calls(mlp):
    def count(with_recorder):
        run = Run(mlp(), "digits", TrainConfig(steps=40, seed=0, log_every=10, val_every=1000))
        callbacks = [GradientRecorder(run.model)] if with_recorder else []
        with SyncCounter() as counter:
            run.run_here(callbacks)
        return counter.calls

    plain, watched = count(False), count(True)
    assert watched.get("item", 0) == plain.get("item", 0) and watched.get("__bool__", 0) == plain.get("__bool__", 0)
    assert watched.get("cpu", 0) - plain.get("cpu", 0) == 4  # one per logging tick (40 steps / 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_amp_records_unscaled_gradients(mlp):
    model = mlp()
    run = Run(copy.deepcopy(model), "digits", TrainConfig(steps=1, optimizer="sgd", lr=0.05, seed=0, amp="fp16",
                                                           device="cuda"))
    run.run_here([GradientRecorder(run.model)])
    norms, _ = hand_loop(model, 1, optimizer="sgd", lr=0.05)
    np.testing.assert_allclose(as_matrix(run.gradients), norms, rtol=2e-2)  # not × the scaler's 65536
