"""--log-dir: a run written as it trains — every row on disk even when the process is killed, TensorBoard
event files equal to the history, a fresh interpreter lists the runs — and bad folders in one sentence."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.tracking import collect, read_folder

EVENTS = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                             reason="tensorboard (a dev dependency) reads the event files back")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_a_logged_run_folder_holds_config_history_events_weights_and_summary(tmp_path):
    run = fit(mlp(), "digits", epochs=2, seed=0, log_every=5, log_dir=tmp_path, name="small")
    folder = run.log_dir
    assert folder.parent == tmp_path and folder.name.startswith("small-")
    assert {"config.json", "history.jsonl", "system.jsonl", "model.safetensors", "summary.json"} <= \
        {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["data"] == "digits" and config["model"] == "Sequential" and config["config"]["log_every"] == 5
    rows = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert rows == run.history  # every row, in order
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    assert read_folder(folder).history == run.history and read_folder(folder).status == "completed"

    events = EVENTS.EventAccumulator(str(folder))
    events.Reload()
    for split, key in (("train", "loss"), ("val", "loss"), ("val", "accuracy"), ("train", "lr")):
        logged = [(e.step, e.value) for e in events.Scalars(f"{split}/{key}")]
        expected = [(r["step"], r[key]) for r in run.rows(split)]
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 in the file


KILLED = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    from bigmodel_nb.api import fit
    from bigmodel_nb.engine import Callback

    class Slow(Callback):  # so the parent can kill it mid-run
        def on_step_end(self, run, logs):
            time.sleep(0.01)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(model, "digits", epochs=1000, log_every=1, log_dir=sys.argv[1], name="doomed", callbacks=[Slow()])
""")


def test_a_killed_process_leaves_every_logged_row_on_disk(tmp_path):
    """SIGKILL: no Python cleanup runs, so only what was flushed as it was written survives."""
    script = tmp_path / "train.py"
    script.write_text(KILLED)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "logs")], env=env)
    try:
        history = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = list((tmp_path / "logs").glob("doomed-*/history.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 30:
                history = found[0]
                break
            time.sleep(0.2)
        assert history is not None, "the child never logged 30 rows"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = history.read_text().splitlines()
    record = read_folder(history.parent)
    assert record.status == "interrupted" and len(record.history) >= 30  # killed: no summary.json
    assert len(record.history) in (len(lines), len(lines) - 1)  # at most the line being written is cut off
    steps = [r["step"] for r in record.rows("train")]
    assert steps == list(range(1, len(steps) + 1))  # no train row lost before the kill
    # nor a validation: every epoch end before the last train row has its row; the kill may land between an epoch's
    # last train row and its validation, which then had not run yet
    vals, expected = [r["step"] for r in record.rows("val")], list(range(20, steps[-1] + 1, 20))
    assert vals == expected or (steps[-1] % 20 == 0 and vals == expected[:-1])


def test_a_fresh_interpreter_lists_the_logged_runs(tmp_path):
    fit(mlp(), "digits", steps=4, log_every=2, log_dir=tmp_path, name="a")
    fit(mlp(), "digits", steps=4, log_every=2, lr=0.01, log_dir=tmp_path, name="b")
    code = ("import sys, json; from bigmodel_nb.api import runs; r = runs(sys.argv[1], show=False); "
            "print(json.dumps([(x.name, x.status, len(x.history), x.config['lr']) for x in r]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [["a", "completed", 3, None], ["b", "completed", 3, 0.01]]


def test_a_truncated_history_is_read_up_to_the_cut_with_one_note(tmp_path):
    run = fit(mlp(), "digits", steps=6, log_every=2, log_dir=tmp_path)
    path = run.log_dir / "history.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 7])  # the last line cut mid-way, as a kill mid-write leaves it
    table = collect(tmp_path, session=False)
    assert len(table.records[0].history) == len(run.history) - 1
    assert len(table.notes) == 1 and "has 1 unreadable line" in table.notes[0] and "complete rows are listed" in \
        table.notes[0]
    assert path.read_text() == text[: len(text) - 7]  # reading never rewrites what was logged


def test_bad_folders_are_one_sentence(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(BigModelError, match=r"Cannot write the run's logs to '.*file/sub'.*pass a --log-dir you can"):
        fit(mlp(), "digits", steps=2, log_dir=blocked / "sub")
    with pytest.raises(BigModelError, match=r"No folder '.*nowhere'; pass the --log-dir the runs were written to"):
        collect(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    table = collect(tmp_path, session=False)
    assert len(table) == 0 and "is not a run folder written by --log-dir" in table.notes[0]
