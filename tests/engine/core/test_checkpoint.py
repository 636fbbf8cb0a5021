import json
import os

import pytest
import torch
from torch import nn

from bigmodel_nb.engine.core import checkpoint as ck
from bigmodel_nb.engine.core.checkpoint import (
    latest_checkpoint,
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from bigmodel_nb.engine.core.errors import BigModelError


def mlp(hidden=32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Dropout(0.1), nn.Linear(hidden, 3))


class TiedLM(nn.Module):
    def __init__(self, vocab=11, dim=6):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # GPT-style weight tying


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_clean(err):
    msg = str(err.value)
    assert "Traceback" not in msg and "\n" not in msg
    assert err.value.__suppress_context__ or err.value.__cause__ is None


def test_mlp_with_batchnorm_buffers_round_trips(tmp_path):
    a = mlp()
    a.train()
    a(torch.randn(16, 8))  # moves BatchNorm running stats away from their defaults
    path = save_weights(a, tmp_path / "w")
    assert path.name == "w.safetensors" and path.is_file()
    b = mlp(seed=1)
    assert not same_state(a, b)
    assert load_weights(b, path) == {}
    assert same_state(a, b) and b[1].num_batches_tracked.item() == 1


def test_tied_and_non_contiguous_weights_round_trip(tmp_path):
    a = TiedLM()
    path = save_weights(a, tmp_path / "lm.safetensors")
    b = TiedLM()
    load_weights(b, path)
    assert same_state(a, b) and b.lm_head.weight is b.wte.weight

    c = nn.Linear(5, 4)
    with torch.no_grad():
        c.weight = nn.Parameter(torch.randn(5, 4).t())  # non-contiguous parameter
    d = nn.Linear(5, 4)
    load_weights(d, save_weights(c, tmp_path / "t"))
    assert same_state(c, d)


def test_meta_round_trip_and_non_json_meta(tmp_path):
    meta = {"epoch": 3, "config": {"lr": 1e-3, "layers": [1, 2]}, "name": "ü"}
    path = save_weights(mlp(), tmp_path / "m", meta=meta)
    assert load_weights(mlp(), path) == meta
    with pytest.raises(BigModelError, match="JSON"):
        save_weights(mlp(), tmp_path / "bad", meta={"x": object()})
    assert not (tmp_path / "bad.safetensors").exists()


def test_crash_during_replace_keeps_previous_file(tmp_path, monkeypatch):
    a = mlp(seed=0)
    path = save_weights(a, tmp_path / "w")
    before = path.read_bytes()

    def boom(*args):
        raise OSError("simulated crash")

    monkeypatch.setattr(ck.os, "replace", boom)
    with pytest.raises(OSError):
        save_weights(mlp(seed=5), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]  # no temp file left behind
    b = mlp(seed=9)
    load_weights(b, path)
    assert same_state(a, b)


@pytest.mark.parametrize("cut", [10, 400, 10_000])
def test_truncated_file_is_a_clear_error_and_model_unchanged(tmp_path, cut):
    path = save_weights(mlp(), tmp_path / "w")
    data = path.read_bytes()
    path.write_bytes(data[:max(len(data) - cut, 3)])
    m = mlp(seed=3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(BigModelError, match="truncated or corrupt") as err:
        load_weights(m, path)
    assert_clean(err)
    assert "w.safetensors" in str(err.value) and "earlier checkpoint" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_pickle_file_is_refused_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save(mlp().state_dict(), path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("must not unpickle"))
    with pytest.raises(BigModelError, match="not a safetensors file") as err:
        load_weights(mlp(), path)
    assert "never unpickles" in str(err.value)
    assert_clean(err)


def test_missing_file(tmp_path):
    with pytest.raises(BigModelError, match=r"No checkpoint at '.*x\.safetensors'; check the path\."):
        load_weights(mlp(), tmp_path / "x.safetensors")


def test_shape_mismatch_names_key_and_leaves_model_unchanged(tmp_path):
    path = save_weights(mlp(hidden=64), tmp_path / "w")
    m = mlp(hidden=32, seed=7)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(BigModelError) as err:
        load_weights(m, path)
    assert str(err.value) == ("Checkpoint does not fit this model: '0.weight' is [64, 8] in the file "
                              "but [32, 8] in the model.")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_missing_and_unexpected_keys(tmp_path):
    path = save_weights(nn.Sequential(nn.Linear(8, 3)), tmp_path / "w")
    with pytest.raises(BigModelError, match=r"'1\.weight' is in the model but not in the file"):
        load_weights(nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 3)), path)
    with pytest.raises(BigModelError, match=r"'0\.bias' is in the file but not in the model"):
        load_weights(nn.Sequential(nn.Linear(8, 3, bias=False)), path)
    m = nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 3))
    load_weights(m, path, strict=False)  # loads the subset that exists


def train_step(model, opt):
    x = torch.randn(16, 8)  # drawn from the global RNG, so RNG restore matters
    loss = nn.functional.cross_entropy(model(x), torch.arange(16) % 3)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_training_state_resume_matches_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    ref = mlp(seed=0)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=1, gamma=0.5)
    torch.manual_seed(1)
    for _ in range(3):
        train_step(ref, ref_opt)
        ref_sched.step()
    rng_after_3 = torch.get_rng_state()
    train_step(ref, ref_opt)

    a = mlp(seed=0)  # replay the first three steps, then "crash"
    a_opt = torch.optim.Adam(a.parameters(), lr=1e-2)
    a_sched = torch.optim.lr_scheduler.StepLR(a_opt, step_size=1, gamma=0.5)
    torch.manual_seed(1)
    for _ in range(3):
        train_step(a, a_opt)
        a_sched.step()
    assert torch.equal(torch.get_rng_state(), rng_after_3)
    state = {"step": 3, "epoch": 0, "history": [{"step": 3, "loss": 1.0}]}
    folder = save_training_state(tmp_path, model=a, optimizer=a_opt, scheduler=a_sched, state=state)
    assert folder == tmp_path / "ckpt-00000003"
    assert json.loads((tmp_path / "latest.json").read_text())["checkpoint"] == "ckpt-00000003"

    torch.manual_seed(123)  # a fresh kernel: different weights, fresh optimizer, different RNG
    b = mlp(seed=42)
    b_opt = torch.optim.Adam(b.parameters(), lr=1e-2)
    b_sched = torch.optim.lr_scheduler.StepLR(b_opt, step_size=1, gamma=0.5)
    assert load_training_state(tmp_path, model=b, optimizer=b_opt, scheduler=b_sched) == state
    assert b_opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    train_step(b, b_opt)
    for p, q in zip(ref.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert same_state(ref, b)


def test_keep_prunes_old_checkpoints_and_tmp_leftovers(tmp_path):
    (tmp_path / ".tmp-ckpt-00000000-crashed").mkdir()
    for step in (1, 2, 3, 4):
        save_training_state(tmp_path, model=mlp(), state={"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000003", "ckpt-00000004", "latest.json"]
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000004"


def test_empty_dir_and_missing_dir_errors(tmp_path):
    for d in (tmp_path, tmp_path / "runs" / "x"):
        with pytest.raises(BigModelError) as err:
            load_training_state(d, model=mlp())
        assert str(err.value) == (f"No checkpoint in '{d}'; train once with --checkpoint {d} "
                                  "before --resume.")
    assert latest_checkpoint(tmp_path) is None


def test_stale_latest_json_and_half_written_tmp_are_ignored(tmp_path):
    a = mlp(seed=0)
    save_training_state(tmp_path, model=mlp(seed=1), state={"step": 1})
    save_training_state(tmp_path, model=a, state={"step": 2})
    # a crash mid-save: a partial tmp folder and a newer folder without state.json
    tmp = tmp_path / ".tmp-ckpt-00000003-abc"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "ckpt-00000009").mkdir()
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "ckpt-00000007"}))
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000002"
    b = mlp(seed=5)
    assert load_training_state(tmp_path, model=b)["step"] == 2
    assert same_state(a, b)


def test_foreign_or_truncated_optimizer_file(tmp_path):
    folder = save_training_state(tmp_path, model=mlp(), optimizer=torch.optim.SGD(mlp().parameters(), 0.1),
                                 state={"step": 1})
    opt_file = folder / "optimizer.pt"
    torch.save({"rng": {"torch": torch.get_rng_state()}, "optimizer": None, "evil": nn.Linear(2, 2)}, opt_file)
    with pytest.raises(BigModelError, match="never unpickles") as err:
        load_training_state(tmp_path, model=mlp())
    assert_clean(err)
    torch.save(["not", "ours"], opt_file)
    with pytest.raises(BigModelError, match="not a bigmodel_nb training-state file"):
        load_training_state(tmp_path, model=mlp())
    torch.save({"rng": {}}, opt_file)
    opt_file.write_bytes(opt_file.read_bytes()[:-30])
    with pytest.raises(BigModelError, match="truncated or corrupt"):
        load_training_state(tmp_path, model=mlp())


def test_optimizer_mismatch_leaves_model_unchanged(tmp_path):
    a = mlp(seed=0)
    save_training_state(tmp_path, model=a, optimizer=torch.optim.Adam(a.parameters()), state={"step": 1})
    b = mlp(seed=1)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    opt = torch.optim.Adam([{"params": list(b.parameters())[:2]}, {"params": list(b.parameters())[2:]}])
    with pytest.raises(BigModelError, match="parameter groups"):
        load_training_state(tmp_path, model=b, optimizer=opt)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_non_json_state_and_missing_step(tmp_path):
    with pytest.raises(BigModelError, match="JSON"):
        save_training_state(tmp_path, model=mlp(), state={"step": 1, "bad": {1, 2}})
    with pytest.raises(BigModelError, match="step"):
        save_training_state(tmp_path, model=mlp(), state={"epoch": 1})
    assert latest_checkpoint(tmp_path) is None


def test_scaler_state_round_trips(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    save_training_state(tmp_path, model=mlp(), scaler=scaler, state={"step": 5})
    fresh = torch.amp.GradScaler("cpu")
    assert load_training_state(tmp_path, model=mlp(), scaler=fresh) == {"step": 5}
    assert fresh.state_dict() == scaler.state_dict()
