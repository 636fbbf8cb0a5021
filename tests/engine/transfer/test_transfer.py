import importlib
import logging

import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import Callback, TrainConfig, load_dataset
from bigmodel_nb.engine.core.checkpoint import save_weights
from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.core.run import Run
from bigmodel_nb.engine.transfer import (
    FreezeResult,
    Unfreeze,
    class_subset,
    export,
    find_head,
    freeze,
    load_from,
    prepare,
    replace_head,
    trainable_counts,
    unfreeze,
)
from bigmodel_nb.models import CNN, GPT, MLP, CNNConfig, GPTConfig, MLPConfig

export_module = importlib.import_module("bigmodel_nb.engine.transfer.export")  # the module, not the function


def cnn(num_classes=5, seed=0, channels=(8, 16)):
    torch.manual_seed(seed)
    return CNN(CNNConfig(channels=channels, num_classes=num_classes))


def mlp(seed=0, hidden=(32, 32, 32)):
    torch.manual_seed(seed)
    return MLP(MLPConfig(input_dim=64, hidden=hidden, num_classes=10))


def state(model, prefix=""):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_sentence(err):
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and msg.endswith((".", ")")), msg
    return msg


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def low(digits):
    return class_subset(digits, range(5))


@pytest.fixture(scope="module")
def high(digits):
    return class_subset(digits, range(5, 10))


@pytest.fixture(scope="module")
def pretrained(low, tmp_path_factory):
    """A CNN trained on digits 0-4 and saved as safetensors: (path, run)."""
    run = fit(cnn(5), low, epochs=3, seed=0, lr=3e-3)
    assert run.status == "completed" and run.evaluate()["accuracy"] > 0.9
    return save_weights(run.model, tmp_path_factory.mktemp("pre") / "digits04"), run


# -- data -------------------------------------------------------------------------------------------
def test_class_subset_keeps_the_classes_relabelled_and_caps_training_examples(digits, high):
    X, y = digits.test.tensors()
    keep = y >= 5
    hx, hy = high.test.tensors()
    assert torch.equal(hx, X[keep]) and torch.equal(hy, y[keep] - 5)
    assert high.num_classes == 5 and high.input_shape == digits.input_shape
    assert high.info["class_names"] == ["5", "6", "7", "8", "9"]
    few = class_subset(digits, [9, 5], per_class=3, seed=1)
    fx, fy = few.train.tensors()
    assert fy.bincount().tolist() == [3, 3]  # 9 -> 0, 5 -> 1
    tx, ty = digits.train.tensors()
    for row, label in zip(fx, fy):  # every kept example is a real training example of its class
        assert ((tx == row).all(1) & (ty == [9, 5][label])).any()
    assert torch.equal(class_subset(digits, [9, 5], per_class=3, seed=1).train.tensors()[0], fx)
    for bad in ([], [1, 1], [3, 12]):
        with pytest.raises(BigModelError):
            class_subset(digits, bad)


# -- fine-tuning end to end -------------------------------------------------------------------------
def test_finetune_new_head_on_frozen_features_keeps_them_bit_identical(pretrained, high):
    path, _ = pretrained
    reference = cnn(5, seed=7)
    load_from(reference, path)
    model = cnn(10, seed=1)  # defined for 10 classes: its head cannot take the 5-class weights
    setup = prepare(model, from_=str(path), new_head=5, freeze="convs.*")
    assert setup.loaded.loaded == ["convs.0.weight", "convs.0.bias", "convs.1.weight", "convs.1.bias"]
    assert [n for n, *_ in setup.loaded.skipped] == ["head.weight", "head.bias"]
    assert "kept as initialised" in setup.loaded.summary() and "head.weight [5, 64]→[10, 64]" in setup.loaded.summary()
    assert setup.head == "head" and model.head.out_features == 5 and model.config.num_classes == 5
    assert setup.frozen.names == ["convs.0.weight", "convs.0.bias", "convs.1.weight", "convs.1.bias"]
    assert setup.frozen.modules == ["convs.0", "convs.1"]
    assert trainable_counts(model) == (setup.frozen.trainable, setup.frozen.frozen) == (64 * 5 + 5, 80 + 1168)
    assert any("New head 'head' with 5 outputs" in line for line in setup.lines())
    features, head = state(model, "convs."), state(model, "head.")
    assert same(features, state(reference, "convs."))  # the pretrained features
    run = fit(model, high, epochs=4, seed=0, lr=1e-2)
    assert run.status == "completed"
    assert same(state(model, "convs."), features)  # bit-identical
    assert not torch.equal(model.head.weight, head["head.weight"])
    assert run.evaluate()["accuracy"] > 0.8  # features learnt on 0-4 separate 5-9 well
    assert all(p.grad is None for p in model.convs.parameters())


def test_start_from_a_run_a_module_and_a_checkpoint_directory(pretrained, low, tmp_path):
    _, run = pretrained
    for source in (run, run.model, run.model.state_dict()):
        model = cnn(5, seed=3)
        result = load_from(model, source)
        assert len(result.loaded) == 6 and not result.skipped and not result.missing
        assert same(state(model), state(run.model))
    assert "run 'run'" in load_from(cnn(5, seed=3), run).summary()
    ckdir = tmp_path / "ck"
    trained = fit(cnn(5, seed=4), low, epochs=2, seed=0, checkpoint=str(ckdir))
    for source in (ckdir, sorted(ckdir.glob("ckpt-*"))[-1]):
        model = cnn(5, seed=5)
        load_from(model, source)
        assert same(state(model), state(trained.model))
    prefixed = {f"module.{k}": v for k, v in run.model.state_dict().items()}  # saved from a DDP wrapper
    assert len(load_from(cnn(5, seed=3), prefixed).loaded) == 6


def test_partial_architectures_report_missing_and_unused_tensors(pretrained):
    path, _ = pretrained
    bigger = cnn(5, channels=(8, 16, 16))
    result = load_from(bigger, path)
    assert result.loaded[:2] == ["convs.0.weight", "convs.0.bias"] and "convs.2.weight" in result.missing
    assert ("convs.1.weight", [16, 8, 3, 3], [16, 8, 3, 3]) not in result.skipped
    smaller = cnn(5, channels=(8,))
    result = load_from(smaller, path)
    assert "convs.1.weight" in result.unexpected and "unused from the source" in result.summary()


def test_a_run_still_training_cannot_be_a_source(low, slow):
    run = Run(cnn(5), low, TrainConfig(epochs=50, seed=0), [slow]).start()
    try:
        with pytest.raises(BigModelError, match="still training") as err:
            load_from(cnn(5), run)
        one_sentence(err)
    finally:
        run.stop().wait()


def test_bad_sources_are_one_sentence_and_leave_the_model_untouched(pretrained, tmp_path):
    path, _ = pretrained
    model = cnn(5, seed=9)
    before = state(model)
    with pytest.raises(BigModelError, match="Nothing in .* fits this MLP") as err:
        load_from(mlp(), path)
    one_sentence(err)
    with pytest.raises(BigModelError, match="differs in shape"):
        load_from(cnn(3, channels=(4, 4)), path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BigModelError, match="truncated or corrupt") as err:
        load_from(model, cut)
    one_sentence(err)
    pickled = tmp_path / "weights.pt"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(BigModelError, match="never unpickles"):
        load_from(model, pickled)
    with pytest.raises(BigModelError, match="No checkpoint at"):
        load_from(model, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BigModelError, match="No checkpoint in"):
        load_from(model, tmp_path / "empty")
    with pytest.raises(BigModelError, match="Cannot start from a int"):
        load_from(model, 3)
    assert same(state(model), before)


# -- heads ------------------------------------------------------------------------------------------
class Torchvisionish(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def test_replace_head_finds_head_fc_classifier_and_sequential_ends():
    model, shared_config = cnn(10), None
    shared_config = model.config
    torch.manual_seed(0)
    assert replace_head(model, 3) == "head"
    first = model.head.weight.clone()
    assert model.head.out_features == 3 and model.head.in_features == 64
    assert shared_config.num_classes == 10 and model.config.num_classes == 3  # a copy, not the shared config
    torch.manual_seed(0)
    replace_head(model, 3)
    assert torch.equal(model.head.weight, first)  # seeded by the global RNG
    tv = Torchvisionish()
    assert replace_head(tv, 4) == "classifier.1" and tv(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    seq = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(-1))
    assert find_head(seq) == "2" and replace_head(seq, 2) == "2" and seq(torch.randn(1, 64)).shape == (1, 2)
    with pytest.raises(BigModelError, match="Cannot find the classifier head") as err:
        replace_head(nn.Conv2d(1, 2, 3), 2)
    one_sentence(err)
    with pytest.raises(BigModelError, match="is a LayerNorm, not a Linear"):
        replace_head(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), 2)
    with pytest.raises(BigModelError, match="tied"):
        replace_head(GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2)), 5)
    with pytest.raises(BigModelError, match="whole number"):
        replace_head(cnn(), 0)


# -- freezing -------------------------------------------------------------------------------------------
def test_freeze_patterns_globs_names_and_regexes():
    model = mlp()
    result = freeze(model, "layers.0,layers.1")
    assert isinstance(result, FreezeResult)
    assert result.names == ["layers.0.linear.weight", "layers.0.linear.bias", "layers.1.linear.weight",
                            "layers.1.linear.bias"]
    assert result.modules == ["layers.0.linear", "layers.1.linear"]
    assert ((result.trainable, result.frozen) == trainable_counts(model)
            == (32 * 32 + 32 + 330, 64 * 32 + 32 + 32 * 32 + 32))
    assert "Froze 4 tensors" in result.summary()
    assert unfreeze(model) and trainable_counts(model)[1] == 0
    assert freeze(model, "^layers\\.[01]\\.").names == result.names
    unfreeze(model)
    assert freeze(model, "*.bias").names == ["layers.0.linear.bias", "layers.1.linear.bias", "layers.2.linear.bias",
                                             "head.bias"]
    unfreeze(model)
    assert len(freeze(cnn(), "convs.*").names) == 4 and len(freeze(cnn(), ["convs"]).names) == 4


def test_freeze_errors_name_the_top_level_modules():
    with pytest.raises(BigModelError, match="No parameter matches --freeze 'features.\\*'; this model's top-level "
                                            "modules are: convs, head") as err:
        freeze(cnn(), "features.*")
    one_sentence(err)
    with pytest.raises(BigModelError, match="not a valid regular expression"):
        freeze(cnn(), "convs.(")
    with pytest.raises(BigModelError, match="needs a pattern"):
        freeze(cnn(), " , ")


def test_prepare_checks_everything_before_touching_the_model(pretrained):
    path, _ = pretrained
    model = cnn(10, seed=2)
    before = state(model)
    for kwargs, match in [({"freeze": "convs,head"}, "matches every parameter"),
                          ({"freeze": "nope", "from_": path}, "No parameter matches"),
                          ({"unfreeze_after": 2}, "needs --freeze"),
                          ({"new_head": 0, "from_": path}, "whole number"),
                          ({"unfreeze_after": 0, "freeze": "convs"}, "whole number")]:
        with pytest.raises(BigModelError, match=match):
            prepare(model, **kwargs)
    assert same(state(model), before) and trainable_counts(model)[1] == 0
    with pytest.raises(BigModelError, match="last layer with weights \\('0'\\) is a Conv2d"):
        prepare(nn.Sequential(nn.Conv2d(1, 1, 3)), new_head=3)


def test_frozen_batchnorm_keeps_its_running_statistics_until_unfrozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    result = freeze(model, "0,1")
    assert result.norm_layers == ["1"]
    stats = state(model, "1.")
    run = fit(model, "digits", epochs=1, seed=0)
    assert run.status == "completed" and same(state(model, "1."), stats)
    assert freeze(model, "1").norm_layers == []  # held once only
    copy = __import__("copy").deepcopy(model).train()
    copy(torch.randn(8, 64))
    assert not copy[1].training and same(state(copy, "1."), stats)  # a copy stays frozen too
    unfreeze(model)
    fit(model, "digits", epochs=1, seed=0)
    assert not torch.equal(model[1].running_mean, stats["1.running_mean"])


# -- unfreezing mid-run ---------------------------------------------------------------------------------
class EpochSnapshots(Callback):
    def __init__(self, model, prefix):
        self.model, self.prefix, self.at = model, prefix, {}

    def on_epoch_end(self, run, logs):
        self.at[logs["epoch"]] = state(self.model, self.prefix)


@pytest.mark.parametrize("optimizer", ["trainable only", "all parameters"])
def test_unfreeze_after_trains_the_frozen_layers_from_then_on(optimizer, caplog):
    model = mlp()
    frozen = freeze(model, "layers")
    start = state(model, "layers.")
    # the two ways a run can hold its parameters: only the trainable ones (a group is added when they
    # thaw) or all of them, frozen ones skipped for lack of a gradient (nothing to add)
    params = [p for p in model.parameters() if p.requires_grad] if optimizer == "trainable only" else model.parameters()
    opt = torch.optim.Adam(params, lr=1e-3)
    unfreeze_cb, snaps = Unfreeze(2, frozen), EpochSnapshots(model, "layers.")
    with caplog.at_level(logging.INFO, logger="bigmodel_nb"):
        run = Run(model, "digits", TrainConfig(epochs=4, seed=0, schedule="cosine"), [unfreeze_cb, snaps],
                  optimizer=opt).run_here()
    assert run.status == "completed"
    assert same(snaps.at[1], start) and same(snaps.at[2], start)  # frozen: bit-identical
    assert not same(snaps.at[3], start) and not same(snaps.at[4], snaps.at[3])  # trained once thawed
    assert all(not torch.equal(snaps.at[3][k], start[k]) for k in start)
    assert unfreeze_cb.at == {"epoch": 3, "step": 2 * 20,
                              "added_to_optimizer": 6 if optimizer == "trainable only" else 0}
    assert trainable_counts(model)[1] == 0 and "Unfroze 6 tensors at epoch 3" in caplog.text
    lrs = {g["lr"] for g in opt.param_groups}
    assert len(lrs) == 1  # an added group follows the schedule with the first one


def test_unfreeze_with_the_runs_own_optimizer_and_a_warning_when_it_never_happens(caplog):
    model = mlp()
    setup = prepare(model, freeze="layers.0", unfreeze_after=1)
    start = state(model, "layers.0.")
    run = Run(model, "digits", TrainConfig(epochs=2, seed=0), setup.callbacks).run_here()
    assert run.status == "completed" and not same(state(model, "layers.0."), start)
    assert any("trains again from epoch 2" in line for line in setup.lines())
    with caplog.at_level(logging.WARNING, logger="bigmodel_nb"):
        fit(mlp(), "digits", epochs=1, seed=0, callbacks=[Unfreeze(3)])
    assert "--unfreeze-after 3 never happens" in caplog.text
    with pytest.raises(BigModelError, match="whole number"):
        Unfreeze(0)


# -- export ---------------------------------------------------------------------------------------------
def test_torch_export_round_trip_returns_the_logits_for_any_batch(pretrained, low, tmp_path):
    _, run = pretrained
    model = run.model
    model.train()
    X, _ = low.test.tensors()
    result = export(model, X[:8], tmp_path / "cnn")
    assert result.path == tmp_path / "cnn.pt2" and result.path.stat().st_size == result.size_bytes > 0
    assert result.format == "torch.export" and result.dynamic_batch and result.logits_only
    assert model.training  # restored
    loaded = torch.export.load(result.path).module()
    model.eval()
    with torch.no_grad():
        expected = model(X[:20])[0]
    assert torch.equal(loaded(X[:20]), expected)  # another batch size than the example's
    assert "cnn.pt2" in str(result)
    plain = nn.Sequential(nn.Linear(64, 10)).eval()
    one = export(plain, X[:1], tmp_path / "plain.pt2")  # a batch of one still exports a dynamic batch
    assert one.dynamic_batch and not one.logits_only
    assert torch.allclose(torch.export.load(one.path).module()(X[:5]), plain(X[:5]))
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary file left

    class PinnedBatch(nn.Module):
        def forward(self, x):
            return x.reshape(4, -1).sum(1)

    pinned = export(PinnedBatch(), torch.randn(4, 3), tmp_path / "pinned")
    assert not pinned.dynamic_batch and "the example's batch size only" in str(pinned)


def test_export_errors_are_one_sentence(tmp_path, monkeypatch):
    model = cnn()
    monkeypatch.setattr(export_module, "_installed", lambda name: name not in ("onnx", "onnxscript"))
    with pytest.raises(BigModelError, match="pip install onnx onnxscript") as err:
        export(model, torch.randn(2, 64), tmp_path / "m", format="onnx")
    one_sentence(err)
    with pytest.raises(BigModelError, match="Unknown export format 'tflite'"):
        export(model, torch.randn(2, 64), tmp_path / "m", format="tflite")
    with pytest.raises(BigModelError, match="must be an input batch"):
        export(model, "x", tmp_path / "m")
    with pytest.raises(BigModelError, match="failed on the example input"):
        export(mlp(), torch.randn(2, 10), tmp_path / "m")

    class ValueDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(BigModelError, match="torch.export could not capture this ValueDependent") as err:
        export(ValueDependent(), torch.randn(2, 3), tmp_path / "m")
    one_sentence(err)
    assert not list(tmp_path.iterdir())


def test_onnx_export_runs_and_matches_the_model(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the onnx extra (a dev dependency) is not installed")
    from onnx.reference import ReferenceEvaluator

    model = cnn().eval()
    result = export(model, torch.randn(4, 64), tmp_path / "m", format="onnx")
    assert result.path == tmp_path / "m.onnx" and result.size_bytes == result.path.stat().st_size > 0
    assert result.logits_only and result.dynamic_batch
    onnx.checker.check_model(str(result.path))
    x = torch.randn(7, 64)  # another batch size than the example's: the batch axis is dynamic
    session = ReferenceEvaluator(str(result.path))
    (got,) = session.run(None, {session.input_names[0]: x.numpy()})
    with torch.no_grad():
        want = model(x)[0]
    assert got.shape == (7, 5)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)


# -- %%train wiring (active once magics.py has the --from/--freeze flags) ----------------------------------
def _magic_has_transfer_flags() -> bool:
    from bigmodel_nb.magics import BigModelMagics

    return any("--freeze" in a.option_strings for a in BigModelMagics.train.parser._actions)


@pytest.mark.skipif(not _magic_has_transfer_flags(), reason="magics.py wiring for --from/--freeze not applied yet")
def test_train_magic_from_a_run_with_new_head_freeze_and_unfreeze(shell, monkeypatch, capsys, pretrained):
    from IPython.core.error import UsageError

    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    path, pre = pretrained
    shell.user_ns.update(pre=pre, high=class_subset("digits", range(5, 10), per_class=10), CNN=CNN, CNNConfig=CNNConfig)
    cell = "model = CNN(CNNConfig(channels=(8, 16), num_classes=10))"
    shell.run_cell_magic("train", f"--data high --epochs 2 --seed 0 --from {path} --new-head 5 --freeze convs.* "
                                  "--name ft", cell)
    out = capsys.readouterr().out
    ft = shell.user_ns.pop("ft")
    assert ft.status == "completed" and "Loaded 4 of 6 tensors" in out and "Froze 4 tensors" in out
    assert "(325 trainable / 1,248 frozen parameters)" in out
    assert same(state(ft.model, "convs."), state(pre.model, "convs."))
    shell.run_cell_magic("train", "--data high --epochs 2 --seed 0 --from pre --freeze convs --unfreeze-after 1 "
                                  "--name ft --quiet", cell.replace("10)", "5)"))
    ft = shell.user_ns.pop("ft")
    assert ft.status == "completed" and trainable_counts(ft.model) == (1573, 0)
    assert not torch.equal(ft.model.convs[0].weight, pre.model.convs[0].weight)
    with pytest.raises(UsageError, match="needs --freeze"):
        shell.run_cell_magic("train", "--data high --epochs 1 --unfreeze-after 1 --quiet", cell)
    for name in ("pre", "high", "model", "CNN", "CNNConfig"):
        shell.user_ns.pop(name, None)
