"""`compress`: pruning (simulated vs real), quantization, distillation, the report, and bad input."""
import copy
import json
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError, load_dataset, load_weights
from bigmodel_nb.engine.compress import (
    Distill,
    Finetune,
    Prune,
    Quantize,
    compress,
    count_weights,
    parse_steps,
    steps_from_flags,
)
from bigmodel_nb.engine.core.callbacks import Callback
from bigmodel_nb.models import GPT, GPTConfig

FAST = dict(latency_repeats=2, latency_batch=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Correctness, not speed, is tested here: one thread keeps these tests fast on a busy shared machine
    (two OpenMP threads competing with other processes for two cores can be 100× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mlp(hidden=128, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def teacher(digits):
    """A trained MLP (≈97% on the digits test split), shared: tests must never change it."""
    model = mlp()
    fit(model, digits, epochs=8, seed=0)
    return model.eval()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(model, snap):
    sd = model.state_dict()
    return sd.keys() == snap.keys() and all(torch.equal(sd[k], snap[k]) for k in snap)


def test_unstructured_pruning_gives_the_sparsity_asked_for_and_says_it_is_simulated(teacher, digits):
    before = snapshot(teacher)
    report = compress(teacher, digits, steps=[Prune(0.3)], **FAST)
    original, pruned = report.stages
    linears = [m for m in report.model.modules() if isinstance(m, nn.Linear)]
    for m in linears:  # per layer: exactly the requested fraction of each weight is zero
        assert int((m.weight == 0).sum()) == round(0.3 * m.weight.numel())
    assert pruned["params"] == original["params"]
    assert original["params"] - pruned["nonzero"] == sum(round(0.3 * m.weight.numel()) for m in linears)
    assert pruned["real"] is False and original["real"] is True and "masks only" in pruned["note"]
    assert pruned["size_bytes"] == original["size_bytes"]  # zeros take as many bytes as anything else
    assert not any(hasattr(m, "weight_mask") for m in report.model.modules())  # masks made permanent
    assert pruned["latency_ms"] > 0 and pruned["batch"] == 16 and pruned["threads"] == torch.get_num_threads()
    assert same(teacher, before)

    glob = compress(teacher, None, steps=[Prune(0.6, scope="global")], example=torch.randn(4, 64), latency_repeats=1)
    weights = torch.cat([m.weight.flatten() for m in glob.model.modules() if isinstance(m, nn.Linear)])
    assert (weights == 0).float().mean().item() == pytest.approx(0.6, abs=1e-3)
    assert glob.stages[1]["accuracy"] is None  # no data: nothing to evaluate on
    # CSR (values + int32 column indices + row pointers) is smaller than dense only above 50% sparsity
    assert "(no smaller than dense;" in pruned["note"] and "CSR is smaller only above 50% sparsity" in pruned["note"]
    assert "(smaller than dense;" in glob.stages[1]["note"] and "(67% with int64 indices)" in glob.stages[1]["note"]


def test_structured_pruning_really_removes_channels_and_the_model_still_runs(teacher, digits):
    report = compress(teacher, digits, steps=[Prune(0.5, structured=True)], **FAST)
    original, pruned = report.stages
    model = report.model
    assert pruned["real"] is True and "really removed" in pruned["note"]
    assert pruned["params"] == sum(p.numel() for p in model.parameters())
    assert pruned["params"] / original["params"] == pytest.approx(0.5, abs=0.03)
    assert pruned["size_bytes"] < 0.55 * original["size_bytes"]
    assert model[0].out_features < 128 and model[2].in_features == model[0].out_features
    assert model[4].out_features == 10  # the classifier keeps its classes
    x = torch.randn(5, 64)
    assert model(x).shape == (5, 10)
    assert pruned["accuracy"] > 0.5


def test_finetuning_after_unstructured_pruning_keeps_the_zeros(teacher, digits):
    report = compress(teacher, digits, steps=[Prune(0.7), Finetune(1)], seed=0, **FAST)
    pruned, tuned = report.stages[1:]
    assert tuned["nonzero"] == pruned["nonzero"] and tuned["real"] is False
    assert tuned["accuracy"] >= pruned["accuracy"] - 0.02
    assert list(report.runs) == ["finetune 1 epoch"] and report.runs["finetune 1 epoch"].status == "completed"


@pytest.mark.parametrize("backend", ["auto", "torchao"])
def test_int8_shrinks_the_file_and_stays_close_to_float(teacher, digits, backend):
    report = compress(teacher, digits, steps=[Quantize("int8", backend=backend)], **FAST)
    original, q = report.stages
    assert q["size_ratio"] > 3.3 and q["real"] is True and q["format"].startswith("safetensors (int8")
    assert q["params"] == original["params"]
    x = digits.test.tensors()[0][:200]
    with torch.no_grad():
        ref, out = teacher(x), report.model(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert q["accuracy"] == pytest.approx(original["accuracy"], abs=0.03)
    if backend == "auto":  # on CPU the deprecated torch.ao path, with its warning turned into one note
        assert "quantize_dynamic is deprecated" in " ".join(report.notes) and "torch.ao" in q["note"]


def test_int8_weight_only_and_half_precision(teacher, digits):
    wo = compress(teacher, digits, steps=[Quantize("int8-weight")], **FAST)
    assert wo.stages[1]["size_ratio"] > 3.3 and "not expected to be faster" in wo.stages[1]["note"]
    for mode, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        report = compress(teacher, digits, steps=[Quantize(mode)], **FAST)
        original, half = report.stages
        assert half["size_bytes"] / original["size_bytes"] == pytest.approx(0.5, abs=0.01)
        assert next(report.model.parameters()).dtype == dtype
        assert half["accuracy"] == pytest.approx(original["accuracy"], abs=0.02)


def test_a_transformer_encoder_layer_quantizes_and_runs_off_its_fast_path():
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0).eval()
    x = torch.randn(2, 6, 32)
    report = compress(model, None, steps=[Quantize("int8")], example=x, latency_repeats=1)
    with torch.no_grad():
        assert (report.model(x) - model(x)).abs().max() < 0.1
    assert report.stages[1]["size_ratio"] > 1.4  # int8 Linear weights; attention's in_proj stays float


def test_a_distilled_student_trains_and_goes_on(teacher, digits):
    student = mlp(16, seed=1)
    before, teacher_before = snapshot(student), snapshot(teacher)
    seen = []

    class Spy(Callback):
        def on_train_end(self, run, logs):
            seen.append(run.name)

    report = compress(teacher, digits, steps=[Distill(student, epochs=6)], seed=0, lr=3e-3, callbacks=[Spy()],
                      baseline=False, **FAST)
    original, distilled = report.stages
    assert seen == ["distill"] and report.runs["distill → Sequential"].status == "completed"
    assert distilled["params"] == count_weights(student)[0] < original["params"] / 4
    assert distilled["accuracy"] > 0.85 and distilled["size_ratio"] > 4
    assert "frozen teacher (T=4, α=0.5)" in distilled["note"]
    assert "6 epochs, lr 0.003, batch 64, seed 0" in distilled["note"]
    assert report.model is not student and same(student, before) and same(teacher, teacher_before)
    history = report.runs["distill → Sequential"].history
    assert history[0]["loss"] > history[-1]["loss"]
    # --no-baseline: no second run, no baseline row, no verdict
    assert report.baselines == [] and report.baseline is None and len(report.runs) == 1
    assert not any(n.startswith("Distillation") for n in report.notes)


def test_distillation_reports_the_student_alone_trained_with_the_same_budget(teacher, digits):
    student = mlp(16, seed=1)
    rows = []
    report = compress(teacher, digits, steps=[Distill(student, epochs=3)], lr=5e-3, seed=4,
                      callbacks=[StageRows(rows)], **FAST)
    distilled, alone = report.stages[1], report.baseline
    assert [r["stage"] for r in report.stages] == ["original", "distill → Sequential"]  # the stages are unchanged
    assert alone["stage"] == "distill → Sequential: student alone (baseline)" and alone["baseline"] is True
    assert alone["baseline_of"] == distilled["stage"] and alone["distilled_accuracy"] == distilled["accuracy"]
    assert [r["stage"] for r in rows] == ["original", distilled["stage"], alone["stage"]]
    # measured like any stage: same architecture, so same size; its own accuracy and latency
    assert alone["params"] == distilled["params"] and alone["size_bytes"] == distilled["size_bytes"]
    assert 0 < alone["accuracy"] <= 1 and alone["latency_ms"] > 0 and alone["speedup"] > 0
    # the same budget: epochs, lr, batch size, optimizer, seed (hence batches), same number of steps
    d_run, a_run = report.runs["distill → Sequential"], report.runs[alone["stage"]]
    for key in ("epochs", "lr", "batch_size", "optimizer", "seed"):
        assert getattr(d_run.config, key) == getattr(a_run.config, key), key
    assert (a_run.config.epochs, a_run.config.lr, a_run.config.seed) == (3, 5e-3, 4)
    assert a_run.step == d_run.step == 3 * 20 and a_run.kind == "baseline"
    # from the same initial weights: retraining a fresh copy the same way gives the same student
    again = mlp(16, seed=1)
    fit(again, digits, epochs=3, lr=5e-3, seed=4, batch_size=64)
    assert same(again, snapshot(a_run.model))
    assert report.table().shape[0] == 2 and "baseline" in report.text()
    verdict = next(n for n in report.notes if n.startswith("Distillation"))
    assert verdict in distilled["note"]


def test_the_report_says_so_when_distillation_loses(teacher, digits):
    # 4 epochs at lr 1e-3 with α=0.9: the soft targets learn more slowly than the labels alone (measured)
    report = compress(teacher, digits, steps=[Distill(mlp(16, seed=1), epochs=4, alpha=0.9)], lr=1e-3, seed=0, **FAST)
    distilled, alone = report.stages[1]["accuracy"], report.baseline["accuracy"]
    assert distilled < alone
    sentence = f"Distillation did not help here: the student alone reached {alone:.2%} vs {distilled:.2%} distilled."
    assert report.notes[0] == sentence and report.stages[1]["note"].endswith(sentence)


def test_the_verdict_sentence():
    from bigmodel_nb.engine.compress.pipeline import distillation_verdict

    assert distillation_verdict({"accuracy": 0.9}, {"accuracy": 0.95}) == (
        "Distillation did not help here: the student alone reached 95.00% vs 90.00% distilled.")
    assert distillation_verdict({"accuracy": 0.97}, {"accuracy": 0.95}).startswith("Distillation helped: 97.00%")
    assert distillation_verdict({"accuracy": 0.95}, {"accuracy": 0.95}).startswith("Distillation matched")
    assert "loss 0.5000 distilled" in distillation_verdict({"accuracy": None, "loss": 0.5},
                                                           {"accuracy": None, "loss": 0.4})


def test_structured_pruning_speedup_is_timed_side_by_side_and_plausible(digits):
    """The tutorial's case: half the parameters of a 64-512-512-10 MLP removed. The work halves, so a
    plausible speed-up is around 1-3×, never the 100×+ that timings taken apart once produced."""
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    report = compress(model, digits, steps=[Prune(0.5, structured=True), Quantize("bf16")], latency_repeats=10)
    original, pruned, half = report.stages
    assert original["speedup"] == 1.0 and original["reference_ms"] == original["latency_ms"]
    for row in (pruned, half):
        assert row["reference_ms"] > 0 and row["speedup"] == pytest.approx(row["reference_ms"] / row["latency_ms"])
        assert 0.05 < row["speedup"] < 20, row
    assert "timed alternately with the original" in report.notes[0]


def test_side_by_side_timing_warms_up_every_model_then_alternates():
    from bigmodel_nb.engine.compress.report import measure_side_by_side

    calls = []

    class Tag(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    (a, b), rounds = measure_side_by_side([Tag("a"), Tag("b")], torch.zeros(1), repeats=4, warmup_s=0)
    assert rounds == 4 and a >= 0 and b >= 0
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a", "b", "b", "a", "a", "b", "b", "a"]


class StageRows(Callback):
    def __init__(self, rows):
        self.rows = rows

    def on_stage_end(self, report, row):
        self.rows.append(row)


def test_a_full_pipeline_leaves_the_original_untouched_and_saves(teacher, digits, tmp_path):
    before = snapshot(teacher)
    rows = []
    report = compress(teacher, digits, steps=[("prune", {"ratio": 0.5, "structured": True}), ("finetune", 1),
                                              ("quantize", "int8")], seed=0, callbacks=[StageRows(rows)], **FAST)
    assert [r["stage"] for r in report.stages] == ["original", "prune 50% structured (layer)", "finetune 1 epoch",
                                                    "quantize int8"]
    assert [r["stage"] for r in rows] == [r["stage"] for r in report.stages]
    assert same(teacher, before) and all(type(m) in (nn.Sequential, nn.Linear, nn.ReLU) for m in teacher.modules())
    assert report.stages[-1]["size_ratio"] > 6
    table = report.table()
    assert list(table["stage"]) == [r["stage"] for r in report.stages]
    assert {"stage", "params", "nonzero", "size_bytes", "latency_ms", "accuracy", "real", "note"} <= set(table.columns)

    path = report.save(tmp_path / "int8")
    assert path.name == "int8.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bigmodel_nb"])
        assert [s["stage"] for s in meta["stages"]] == [r["stage"] for r in report.stages]
        assert any(f.get_tensor(k).dtype == torch.int8 for k in f.keys())

    pruned = compress(teacher, digits, steps=[Prune(0.5, structured=True)], **FAST)
    path = pruned.save(tmp_path / "pruned")
    copy_ = copy.deepcopy(pruned.model)
    for p in copy_.parameters():
        p.data.zero_()
    load_weights(copy_, path)
    assert same(copy_, snapshot(pruned.model))


def test_inplace_compresses_the_model_itself(digits):
    model = mlp(32)
    report = compress(model, digits, steps=[Prune(0.5)], inplace=True, **FAST)
    assert report.model is model and (model[0].weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_steps_from_flags_and_the_step_forms(teacher):
    steps = steps_from_flags(prune=0.5, structured=True, scope="global", finetune=2, quantize="int8",
                             order=["quantize", "prune"])
    assert [s.kind for s in steps] == ["quantize", "prune", "finetune"]
    assert steps[1] == Prune(0.5, structured=True, scope="global")
    assert ([s.kind for s in steps_from_flags(quantize="bf16", prune=0.2, finetune=1)]
            == ["prune", "finetune", "quantize"])
    d = steps_from_flags(distill=mlp(8), temperature=2.0, alpha=0.5)[0]
    assert (d.temperature, d.alpha) == (2.0, 0.5)
    assert parse_steps([{"quantize": {"mode": "half"}}, ("finetune", 3), Prune(0.1)]) == [
        Quantize("fp16"), Finetune(3), Prune(0.1)]


def test_bad_input_is_one_sentence_and_leaves_the_model_untouched(teacher, digits, monkeypatch):
    before = snapshot(teacher)
    cases = [
        (lambda: compress(teacher, digits, steps=[Prune(1.5)]), "between 0 and 1"),
        (lambda: compress(teacher, digits, steps=[("prune", 0)]), "between 0 and 1"),
        (lambda: compress(teacher, digits, steps=[("quantize", "int4")]),
         "choose one of: int8, int8-weight, fp16, bf16"),
        (lambda: compress(teacher, digits, steps=[("shrink", {})]),
         "choose one of: prune, finetune, quantize, distill"),
        (lambda: compress(teacher, digits, steps=[Distill(nn.Linear(64, 5))]),
         "give the student the teacher's output size (10)"),
        (lambda: compress(teacher, None, steps=[Finetune(1)], example=torch.randn(2, 64)), "pass data"),
        (lambda: compress(teacher, None, steps=[Distill(mlp(8))]), "pass data"),
        (lambda: compress(teacher, None, steps=[Prune(0.5, structured=True)]), "pass data or example="),
        (lambda: compress(teacher, digits, steps=[Quantize("int8"), Prune(0.5)]), "put --quantize last"),
        (lambda: compress(teacher, digits, steps=[Distill(mlp(8))], temperature=0), "temperature must be"),
        (lambda: compress(teacher, digits, steps=[Prune(0.5, scope="row")]), "choose one of: layer, global"),
        (lambda: compress(nn.Sequential(nn.Conv2d(1, 2, 3)), None, steps=[Quantize("int8")],
                          example=torch.randn(1, 1, 8, 8)), "Linear layers only"),
    ]
    for call, words in cases:
        with pytest.raises(BigModelError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
            call()
        assert str(info.value).replace("e.g. ", "").count(". ") == 0 and str(info.value).endswith(".")
    # an optional package that is not installed is named, with the pip line
    for module in ("torchao", "torchao.quantization", "torch_pruning"):
        monkeypatch.setitem(sys.modules, module, None)  # what an import of a missing package sees
    with pytest.raises(BigModelError, match=r"needs torchao, which is not installed; pip install torchao\.$"):
        compress(teacher, digits, steps=[Quantize("int8-weight")])
    with pytest.raises(BigModelError, match=r"needs Torch-Pruning; pip install torch-pruning\.$"):
        compress(teacher, digits, steps=[Prune(0.5, structured=True)])
    # torch.ao needs neither
    assert compress(teacher, digits, steps=[Quantize("int8")], **FAST).stages[1]["size_ratio"] > 3
    assert same(teacher, before)


class PinnedReshape(nn.Module):
    """Reshapes a layer's output to a hard-coded shape: removing any of its channels breaks it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 64), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x).view(-1, 4, 16)).mean(dim=1)


def test_a_model_torch_pruning_cannot_prune_names_the_layer():
    torch.manual_seed(0)
    model = PinnedReshape()
    before = snapshot(model)
    with pytest.raises(BigModelError, match=r"Torch-Pruning cannot prune PinnedReshape.*ignore=") as info:
        compress(model, None, steps=[Prune(0.3, structured=True)], example=torch.randn(2, 8), latency_repeats=1)
    assert "'fc1'" in str(info.value)
    assert same(model, before)


def test_structured_pruning_removes_whole_attention_heads_exactly():
    """Removing a head equals zeroing its slice of the output projection: checked against the original."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=4, block_size=16)).eval()
    idx = torch.randint(0, 96, (3, 12))
    report = compress(model, None, steps=[Prune(0.5, structured=True, ignore=("*mlp*",))], example=idx,
                      latency_repeats=1)
    pruned = report.model
    assert "attention heads blocks.0.attn 4→" in report.stages[1]["note"]
    masked = copy.deepcopy(model)
    for old, new in zip(masked.blocks, pruned.blocks):
        heads = new.attn.n_head
        assert 1 <= heads < 4 and new.attn.qkv.out_features == 3 * heads * 8 and new.attn.proj.in_features == heads * 8
        assert new.mlp.fc.out_features == 128  # ignored
        q_old, q_new = old.attn.qkv.weight[:32].view(4, 8, 32), new.attn.qkv.weight[:heads * 8].view(heads, 8, 32)
        kept = [h for h in range(4) if any(torch.equal(q_old[h], q) for q in q_new)]
        assert len(kept) == heads
        with torch.no_grad():
            for h in set(range(4)) - set(kept):
                old.attn.proj.weight[:, h * 8:(h + 1) * 8] = 0
    torch.testing.assert_close(pruned(idx)[0], masked(idx)[0], rtol=1e-5, atol=1e-5)


def test_structured_pruning_of_a_transformer_halves_it_and_keeps_its_vocabulary():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=4, block_size=16))
    report = compress(model, None, steps=[Prune(0.5, structured=True)], example=torch.randint(0, 96, (2, 8)),
                      latency_repeats=1)
    original, pruned = report.stages
    assert pruned["params"] / original["params"] == pytest.approx(0.5, abs=0.05)
    assert report.model.token_embedding.weight.shape == (96, 32)  # residual width and vocabulary kept
    assert report.model.lm_head.weight is report.model.token_embedding.weight  # still tied
    assert report.model(torch.randint(0, 96, (2, 16)))[0].shape == (2, 16, 96)


def test_a_stage_timed_on_a_busy_machine_says_so():
    from bigmodel_nb.engine.compress.report import disturbed

    steady, bursty = [0.001, 0.0011, 0.001], [0.001, 0.024, 0.02]
    assert disturbed(["the original", "this stage"], [steady, steady]) == ""
    note = disturbed(["the original", "this stage"], [bursty, steady])
    assert note == ("; timing disturbed (the original 1 ms at best but 20 ms in the median): the machine was busy, "
                    "rerun before trusting this speed-up")
