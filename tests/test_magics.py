"""The magics through a real IPython shell: parse, resolve names, train, and one-sentence errors."""
import time

import pytest
from IPython.core.error import UsageError

MLP = "model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))"


@pytest.fixture
def ip(shell, monkeypatch):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn")
    yield shell
    for name in ("run", "model", "optimizer", "loss_fn", "train_data", "val_data", "other"):
        shell.user_ns.pop(name, None)


def test_load_ext_prints_the_device_banner(shell, capsys):
    shell.run_line_magic("unload_ext", "bigmodel_nb")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    out = capsys.readouterr().out
    banner = out.strip().splitlines()[-1]
    assert banner.startswith("bigmodel_nb 0.1.0 · cpu · ") and banner.endswith("threads")
    assert "train" in shell.magics_manager.magics["cell"] and "device" in shell.magics_manager.magics["line"]


def test_unload_removes_the_magics(shell):
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_line_magic("unload_ext", "bigmodel_nb")
    magics = shell.magics_manager.magics
    assert not {"train", "sweep"} & set(magics["cell"]) and not {"summary", "runs"} & set(magics["line"])
    assert not {"BigModelMagics", "SweepMagics", "InspectMagics"} & set(shell.magics_manager.registry)
    shell.run_line_magic("load_ext", "bigmodel_nb")
    assert {"train", "sweep"} <= set(magics["cell"]) and {"summary", "runs"} <= set(magics["line"])


def test_cell_magic_trains_the_model_defined_in_the_cell(ip, capsys):
    ip.run_cell_magic("train", "--data digits --epochs 5 --lr 3e-3 --seed 0", MLP)
    run = ip.user_ns["run"]
    assert run.status == "completed" and run.model is ip.user_ns["model"]
    assert run.evaluate("test")["accuracy"] > 0.9
    assert "run completed at step 100/100" in capsys.readouterr().out


def test_line_magic_with_name_and_seed_is_reproducible(ip):
    ip.run_cell("torch.manual_seed(1); other = nn.Sequential(nn.Linear(64, 10))")
    ip.run_line_magic("train", "other --data digits --epochs 1 --seed 3 --name first --quiet")
    ip.run_cell("torch.manual_seed(1); other = nn.Sequential(nn.Linear(64, 10))")
    ip.run_line_magic("train", "other --data digits --epochs 1 --seed 3 --name second --quiet")
    first, second = ip.user_ns.pop("first"), ip.user_ns.pop("second")
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]


def test_seed_makes_the_cell_body_initialisation_reproducible(ip):
    ip.run_cell_magic("train", "--data digits --epochs 1 --seed 11 --quiet", MLP)
    a = [r["loss"] for r in ip.user_ns["run"].history]
    ip.run_cell_magic("train", "--data digits --epochs 1 --seed 11 --quiet", MLP)
    assert a == [r["loss"] for r in ip.user_ns["run"].history]


def test_cell_defined_optimizer_loss_and_data_take_precedence(ip):
    body = MLP + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
calls = []
def loss_fn(logits, y):
    calls.append(1)
    return nn.functional.cross_entropy(logits, y)
X = torch.randn(300, 64); y = (X[:, 0] > 0).long()
train_data = (X[:200], y[:200]); val_data = (X[200:], y[200:])
"""
    ip.run_cell_magic("train", "--data digits --epochs 2 --quiet --optimizer adam", body)
    run = ip.user_ns["run"]
    assert run.optimizer is ip.user_ns["optimizer"]
    assert len(ip.user_ns["calls"]) > 0
    assert len(run.data.train) == 200 and len(run.data.val) == 100


def test_background_returns_at_once_and_rerun_stops_the_old_run(ip, capsys):
    ip.run_cell_magic("train", "--data digits --epochs 500 --background --quiet", MLP)
    old = ip.user_ns["run"]
    assert old.alive
    time.sleep(0.2)
    ip.run_cell_magic("train", "--data digits --epochs 1 --quiet", MLP)
    assert old.status == "stopped"
    assert ip.user_ns["run"] is not old and ip.user_ns["run"].status == "completed"
    assert "Stopped the previous 'run'" in capsys.readouterr().out


@pytest.mark.parametrize("line, cell, message", [
    ("--data digits --epoch-count 3", MLP, "Unknown option --epoch-count — did you mean --epochs?"),
    ("--data digit", MLP, "did you mean 'digits'?"),
    ("--data digits --model nope", MLP, "No variable named 'nope'"),
    ("--epochs 2", MLP, "No data to train on; pass --data digits"),
    ("--data digits", "model = nn.Linear(32, 10)", r"input shape \(64,\)"),
    ("--data digits --lr abc", MLP, "argument --lr: invalid float value: 'abc'"),
    ("--data digits --epochs 0", MLP, "--epochs must be a positive whole number"),
    ("--data digits --amp fp8", MLP, "invalid choice: 'fp8'"),
    ("--data digits --optimizer adamm", MLP, "did you mean 'adam'"),
    ("--data digits --device tpu", MLP, "tpu"),
    ("--data digits --resume", MLP, "--resume needs --checkpoint"),
    ("--data digits", "model = 3", "Expected a torch.nn.Module"),
    ("--data digits --accumulate 0", MLP, "--accumulate must be a positive whole number"),
    ("--data digits --batch-size lots", MLP, "argument --batch-size: invalid int value: 'lots'"),
    ("--data digits --cluster 10.0.0.5:6379", MLP, "go with --workers N; add it"),
    ("--data digits --strategy zero", MLP, "invalid choice: 'zero'"),
    ("--data digits --activation-checkpointing", MLP, "--activation-checkpointing works on the zoo's GPT"),
])
def test_bad_input_is_one_sentence(ip, line, cell, message):
    with pytest.raises(UsageError, match=message) as info:
        ip.run_cell_magic("train", line, cell)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


def test_optimizer_for_another_model_is_refused(ip):
    ip.run_cell("old = nn.Linear(2, 2)")
    body = MLP + "\noptimizer = torch.optim.SGD(old.parameters(), lr=0.1)"
    with pytest.raises(UsageError, match="does not hold this model's parameters"):
        ip.run_cell_magic("train", "--data digits --epochs 1", body)


def test_error_in_the_cell_body_trains_nothing(ip):
    result = ip.run_cell_magic("train", "--data digits --epochs 1", "model = undefined_name")
    assert result is None and "run" not in ip.user_ns


def test_device_magic_lists_and_sets(ip, capsys):
    ip.run_line_magic("device", "")
    out = capsys.readouterr().out
    assert "cpu" in out and "fp32" in out
    ip.run_line_magic("device", "cpu")
    assert "default device: cpu" in capsys.readouterr().out
    with pytest.raises(UsageError, match="CUDA is not available"):
        ip.run_line_magic("device", "cuda")


def test_lr_find_magic_stores_the_result_and_restores_the_model(ip, capsys):
    ip.run_cell("torch.manual_seed(0); model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))")
    before = [p.clone() for p in ip.user_ns["model"].parameters()]
    ip.run_line_magic("lr_find", "model --data digits --steps 50")
    result = ip.user_ns["lr_finder"]
    assert result.suggestion and len(result.lrs) <= 50
    assert all((a == b).all() for a, b in zip(before, ip.user_ns["model"].parameters()))
    assert "suggested lr" in capsys.readouterr().out
    with pytest.raises(UsageError, match="No variable named 'nope'"):
        ip.run_line_magic("lr_find", "nope --data digits")
    with pytest.raises(UsageError, match="Unknown optimizer 'adamz'"):
        ip.run_line_magic("lr_find", "model --data digits --optimizer adamz")


def test_compare_optimizers_cell_magic(ip):
    ip.run_cell_magic("compare_optimizers", "--data digits --epochs 2 --optimizers sgd,adam --name cmp", MLP)
    cmp = ip.user_ns.pop("cmp")
    assert set(cmp.results) == {"sgd", "adam"} and cmp.mode == "together"
    with pytest.raises(UsageError, match="Unknown optimizer 'sgdd'"):
        ip.run_line_magic("compare_optimizers", "model --data digits --optimizers sgdd,adam")
    with pytest.raises(UsageError, match="--lr must be a number"):
        ip.run_line_magic("compare_optimizers", "model --data digits --lr sgd=x")


def test_compare_optimizers_on_a_test_function(ip, capsys):
    ip.run_line_magic("compare_optimizers", "--function quadratic --optimizers sgd,momentum --steps 100 --name traj")
    traj = ip.user_ns.pop("traj")
    assert set(traj.results) == {"sgd", "momentum"} and len(traj.paths["sgd"]) == 101
    assert "quadratic: distance to the minimum" in capsys.readouterr().out
    with pytest.raises(UsageError, match="Unknown test function 'rosenbrok'.*did you mean 'rosenbrock'"):
        ip.run_line_magic("compare_optimizers", "--function rosenbrok")
    with pytest.raises(UsageError, match="--start must be two numbers"):
        ip.run_line_magic("compare_optimizers", "--function rosenbrock --start 1")
    ip.run_line_magic("compare_optimizers", "--function rosenbrock --optimizers sgd,adam --lr sgd=5e-4 --name traj")
    from bigmodel_nb.engine.compare.landscapes import FUNCTIONS

    assert ip.user_ns.pop("traj").lrs == {"sgd": 5e-4, "adam": FUNCTIONS["rosenbrock"].lrs["adam"]}  # not torch's 1e-3


def test_optimizer_playground_takes_flags_or_your_own_function_and_keeps_the_settings(ip, capsys):
    import numpy as np

    ip.run_line_magic("optimizer_playground", "--function saddle --optimizers sgd,momentum --steps 80 --lr sgd=0.02")
    pg = ip.user_ns.pop("playground")
    assert pg.settings.function == "saddle" and pg.settings.lrs["sgd"] == 0.02 and len(pg.paths["sgd"]) == 81
    from bigmodel_nb.engine.compare.landscapes import FUNCTIONS

    assert pg.settings.lrs["momentum"] == FUNCTIONS["saddle"].lrs["momentum"]  # not named: the saddle's own rate
    assert "saddle: sgd d=" in capsys.readouterr().out  # no widget frontend here: the static figure and its line
    same = ip.run_line_magic("compare_optimizers", "--function saddle --optimizers sgd,momentum --steps 80 "
                                                   "--lr sgd=0.02,momentum=5e-3 --name traj")
    assert same is None
    np.testing.assert_array_equal(ip.user_ns.pop("traj").paths["momentum"], pg.paths["momentum"])

    ip.run_cell("def bowl(x, y):\n    return (x - 1) ** 2 + 2 * y ** 2\nnot_a_function = 3")
    ip.run_line_magic("optimizer_playground", "--function bowl --optimizers sgd --start 0,1 --name pg")
    pg = ip.user_ns.pop("pg")
    assert pg.settings.function == "bowl" and pg.settings.start == (0.0, 1.0) and pg.results["sgd"]["distance"] < 0.05
    with pytest.raises(UsageError, match="'not_a_function' is not a function"):
        ip.run_line_magic("optimizer_playground", "--function not_a_function")
    with pytest.raises(UsageError, match="Unknown test function 'rosenbrok'.*did you mean 'rosenbrock'"):
        ip.run_line_magic("optimizer_playground", "--function rosenbrok")
    with pytest.raises(UsageError, match="--lr auto applies to model comparisons"):
        ip.run_line_magic("optimizer_playground", "--lr auto")
    with pytest.raises(UsageError, match="--lr names 'adam', which is not among"):
        ip.run_line_magic("optimizer_playground", "--optimizers sgd --lr adam=0.1")
    ip.user_ns.pop("bowl"), ip.user_ns.pop("not_a_function")


def test_a_pandas_frame_with_its_target_column(ip):
    ip.run_cell("import pandas as pd\nfrom sklearn.datasets import load_breast_cancer\n"
                "df = load_breast_cancer(as_frame=True).frame\n"
                "df[df.columns[:-1]] = (df[df.columns[:-1]] - df[df.columns[:-1]].mean()) / df[df.columns[:-1]].std()")
    ip.run_cell_magic("train", "--data df --target target --epochs 10 --lr 1e-2 --seed 0 --quiet",
                      "model = nn.Linear(30, 1)")
    run = ip.user_ns["run"]
    assert run.status == "completed" and run.config.loss == "bce" and run.evaluate("test")["accuracy"] > 0.9
    with pytest.raises(UsageError, match=r"No column 'label' in the data"):
        ip.run_cell_magic("train", "--data df --target label --quiet", "model = nn.Linear(30, 1)")
    ip.user_ns.pop("df")


def test_runs_lists_the_session_and_a_log_dir_and_sets_the_session_default(ip, tmp_path, capsys):
    from bigmodel_nb.api import default_log_dir

    mlp = "model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))"
    ip.run_cell_magic("train", f"--data digits --steps 4 --quiet --log-dir {tmp_path} --name logged", mlp)
    ip.run_line_magic("runs", f"--log-dir {tmp_path / 'default'}")  # every later run goes there
    try:
        assert default_log_dir() == str(tmp_path / "default")
        ip.run_cell_magic("train", "--data digits --steps 4 --quiet --name later", mlp)
        assert ip.user_ns["later"].log_dir.parent == tmp_path / "default"
    finally:
        ip.run_line_magic("runs", "--log-dir off")
    assert default_log_dir() is None
    out = capsys.readouterr().out
    assert f"Runs of this session are written to {tmp_path / 'default'}/<name>-<time>/." in out
    assert "no longer written to disk" in out
    ip.run_line_magic("runs", f"{tmp_path} --name table")
    table = ip.user_ns.pop("table")
    logged = ip.user_ns.pop("logged")
    assert table[logged.number].path == logged.log_dir  # listed once: the session's run is the logged one
    assert sum(r.path == logged.log_dir for r in table) == 1
    with pytest.raises(UsageError, match=r"No folder '.*nowhere'; pass the --log-dir the runs were written to"):
        ip.run_line_magic("runs", f"{tmp_path / 'nowhere'}")
    with pytest.raises(UsageError, match="Cannot write the run's logs to"):
        ip.run_line_magic("runs", "--log-dir /proc/forbidden")
    ip.user_ns.pop("later", None)


SWEEP_CELL = "model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))"


def test_sweep_searches_train_flags_and_cell_variables(ip, capsys):
    ip.run_cell_magic("sweep", "--trials 3 --seed 0 --data digits --epochs 1 --lr 1e-3..1e-2:log --hidden 16,32",
                      SWEEP_CELL)
    result = ip.user_ns["sweep"]
    assert len(result.trials) == 3 and {t["hidden"] for t in result.trials} <= {16, 32}
    for t in result.trials:  # each trial's model was built by the cell body with that trial's width
        run = next(r for r in result.runs if r.name == f"trial_{t['number']}")
        assert run.model[0].out_features == t["hidden"] and run.config.lr == t["lr"] and run.config.seed == 0
    assert ip.user_ns["hidden"] == result.best["params"]["hidden"]  # the cell's variables at the best trial
    assert not any(k.startswith("trial_") for k in ip.user_ns)
    out = capsys.readouterr().out
    assert "trial 0 " in out and "sweep completed: 3 trials · best val_loss" in out
    ip.run_cell_magic("train", "--data digits --steps 2 --quiet --from sweep --name best_start", SWEEP_CELL)
    start = ip.user_ns.pop("best_start")  # it began from the best trial's weights
    assert start.rows("train")[0]["loss"] < result.best["run"].rows("train")[0]["loss"]
    ip.user_ns.pop("sweep")


def test_a_sweep_cell_body_may_hold_magic_lines(ip):
    """The body's variables are read as IPython runs it, so a % line does not hide `hidden` from the check."""
    ip.run_cell_magic("sweep", "--trials 1 --seed 0 --data digits --steps 2 --hidden 16,32",
                      "%time width = hidden\n" + SWEEP_CELL)
    hidden = ip.user_ns.pop("sweep").trials[0]["hidden"]
    assert hidden in (16, 32) and ip.user_ns["width"] == hidden


def test_a_sweep_whose_cell_body_fails_says_so_in_one_sentence(ip, capsys):
    for body in ("model = nn.Sequential(nn.Linear(64, hidden)", "model = nn.Linear(64, hidden) + undefined_name"):
        with pytest.raises(UsageError, match=r"The cell body failed in trial_0 \(its error is shown above\)"):
            ip.run_cell_magic("sweep", "--trials 2 --data digits --steps 2 --hidden 16,32", body)
    ip.user_ns.pop("sweep", None)
    assert capsys.readouterr().out.count("sweep stopped after 0 of 2 trials") == 2  # once for each sweep


def test_a_sweep_that_fails_after_a_trial_leaves_its_view_saying_it_stopped(ip, capsys):
    body = ("if globals().get('tried'):\n    raise ValueError('second trial breaks')\n"
            "tried = True\nmodel = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))")
    with pytest.raises(UsageError, match=r"The cell body failed in trial_1"):
        ip.run_cell_magic("sweep", "--trials 3 --seed 0 --data digits --steps 2 --hidden 16,32", body)
    out = capsys.readouterr().out
    assert "trial 0 complete" in out and "sweep stopped after 1 of 3 trials" in out and "sweep completed" not in out
    for name in ("sweep", "tried"):
        ip.user_ns.pop(name, None)


@pytest.mark.parametrize("line, message", [
    ("--trials 2 --data digits --lr 1e-3..1e-2 --widht 3", r"--widht is neither a %%train flag nor used by the cell "
                                                           r"body; use `widht` in the cell"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 --background",
     r"--background is not available in a %%sweep"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 --metric val_f1", r"Unknown --metric 'val_f1'"),
    ("--trials 2 --data digits --lr 1e-2..1e-3 --hidden 16", r"--lr 1e-2..1e-3 is reversed"),
    ("--trials 2 --data digits --batch-size 0,16 --hidden 16", r"--batch-size must be a whole number|positive"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 'oops", r"Unbalanced ' in the line"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 stray", r"Unexpected 'stray' in the %%sweep line"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 --lr 1", r"--lr is given twice"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 --cluster 10.0.0.5:6379",
     r"--cluster goes with --workers N"),
    ("--trials 2 --data digits --lr 1e-3..1e-2 --hidden 16 --workers 0", r"--workers must be a whole number ≥ 1"),
])
def test_bad_sweep_lines_are_one_sentence_before_any_trial(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("sweep", line, SWEEP_CELL)
    assert "sweep" not in ip.user_ns
