"""What the live dashboard sends to the browser over a long run, measured without a browser.

An MLP (64→256→256→10, as in bench/overhead.py) trains 20,000 steps on digits through the engine
(`Run.run_here`, as the default `%%train` does) with the widget dashboard attached
(`TrainingDashboard`, default tick, BIGMODEL_NB_UI=widget). `comm.create_comm` is replaced by a
comm that records every widget message (ipywidgets, anywidget and plotly's FigureWidget all go
through it) with its size on the wire: the signed JSON frames ipykernel's session would send plus
the binary buffers. IPython's display publisher is replaced by a notebook that keeps each display's
latest bundle (updates replace by display_id); the outputs left at the end, written with nbformat,
are the saved notebook output. The same steps without the dashboard run side by side (ratio).
Prints PASS/FAIL against the targets: ≤ ~5 messages/s, points per trace ≤ the cap, output < 1 MB.

Run: .venv/bin/python bench/ui.py [--steps 20000 --repeats 2 --threads N]
"""
import argparse
import collections
import json
import os
import statistics
import sys
import time

import nbformat
import torch
from comm.base_comm import BaseComm
from ipykernel.jsonutil import json_clean
from jupyter_client.session import Session, json_packer

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from overhead import make_model  # noqa: E402

from bigmodel_nb.engine import Run, TrainConfig, load_dataset  # noqa: E402

SENT = []  # one per widget message: (comm_id, content JSON bytes, buffer bytes, signed JSON frames bytes)
OUTPUTS = []  # the cell's outputs as a notebook keeps them: [display_id, data, metadata]
SESSION = Session(key=b"bench", username="bench")  # signs and frames messages as the kernel's session does
PARENT = SESSION.msg("execute_request", {"code": "%%train --steps 20000 ..."})  # the cell that is running


class RecordingComm(BaseComm):
    """A comm whose messages go nowhere but are sized as ipykernel would send them on the wire."""

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        content = json_packer(json_clean(dict(data=data, comm_id=self.comm_id, **keys)))
        msg = SESSION.msg(msg_type, content, parent=PARENT, metadata=json_clean(metadata or {}))
        frames = SESSION.serialize(msg, ident=self.topic)  # signed JSON frames; buffers follow as raw frames
        SENT.append((self.comm_id, len(content), sum(memoryview(b).nbytes for b in buffers or ()),
                     sum(map(len, frames))))


def publish(data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
    """IPython's display publisher, as a notebook frontend applies it: an update replaces by display_id."""
    display_id = (transient or {}).get("display_id")
    data, metadata = json_clean(data), json_clean(metadata or {})
    if update:
        for out in OUTPUTS:
            if out[0] == display_id:
                out[1:] = [data, metadata]
    else:
        OUTPUTS.append([display_id, data, metadata])


def saved_output() -> tuple[int, dict]:
    """Bytes the cell's final outputs add to the .ipynb file (nbformat's JSON), and the JSON size per MIME type."""
    outputs = [nbformat.v4.new_output("display_data", data=json.loads(json_packer(d)), metadata=m)
               for _, d, m in OUTPUTS]
    cell = "%%train --steps 20000 ..."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell, outputs=outputs)])
    nbformat.validate(nb)
    empty = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    per_mime = collections.Counter()
    for out in outputs:
        per_mime.update({k: len(json.dumps(v)) for k, v in out["data"].items()})
    return len(nbformat.writes(nb).encode()) - len(nbformat.writes(empty).encode()), per_mime


def train(data, steps, dashboard):
    """One run as `%%train` starts it (controls.launch, blocking), or the bare engine; returns (s, dashboard)."""
    run = Run(make_model(256), data, TrainConfig(steps=steps, lr=1e-3, seed=0))
    if not dashboard:
        t0 = time.perf_counter()
        run.run_here()
        return time.perf_counter() - t0, None
    from bigmodel_nb.ui.dashboard import TrainingDashboard

    OUTPUTS.clear()
    dash = TrainingDashboard(run).show()  # widgets open their comms here: set-up, not counted per second
    SENT.clear()
    dash.controls.arm()
    t0 = time.perf_counter()
    run.run_here([dash], until=lambda: run.paused, on_interrupt=dash.controls.hold_after_interrupt)
    seconds = time.perf_counter() - t0
    dash.controls.disarm()
    assert run.status == "completed", run.status
    return seconds, dash


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 on a loaded machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import comm
    import ipykernel.ipkernel  # noqa: F401  (importing it installs its own comm factory: ours must come after)
    from IPython.testing.globalipapp import start_ipython

    os.environ["BIGMODEL_NB_UI"] = "widget"
    comm.create_comm = RecordingComm
    shell = start_ipython()  # display() and display handles as in a notebook
    shell.display_formatter.active_types = list(shell.display_formatter.formatters)  # all MIME types, as a kernel
    shell.display_pub.publish = publish
    data = load_dataset("digits")
    train(data, 200, dashboard=True)  # warm-up: imports plotly, builds the first widgets
    times = {"engine": [], "engine+dashboard": []}
    for _ in range(args.repeats):  # alternating, medians compared
        times["engine"].append(train(data, args.steps, dashboard=False)[0])
        seconds, dash = train(data, args.steps, dashboard=True)
        times["engine+dashboard"].append(seconds)

    from ipywidgets.widgets.widget import _instances

    from bigmodel_nb.ui.figures import MAX_POINTS

    base = statistics.median(times["engine"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
          f"{args.steps} steps, MLP 64-256-256-10 on digits, batch 64, log_every 10; {args.repeats} alternating "
          "repeats (message figures: the last dashboard run)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<18} median {med:7.2f} s  {args.steps / med:7.0f} steps/s  ratio {med / base:.3f}")
    msgs, total = len(SENT), sum(s[2] + s[3] for s in SENT)
    by_widget = collections.Counter(type(_instances.get(s[0])).__name__ for s in SENT)
    rate, bps = msgs / seconds, total / seconds
    print(f"widget messages during the run: {msgs} in {seconds:.1f} s = {rate:.2f}/s "
          f"({', '.join(f'{k} {v}' for k, v in by_widget.most_common())}); "
          f"dashboard's own count: {dash.messages} ({dash.messages / seconds:.2f}/s)")
    print(f"bytes sent: {total / 1e6:.2f} MB = {bps / 1e3:.1f} kB/s on the wire (content JSON "
          f"{sum(s[1] for s in SENT) / 1e6:.2f} MB + binary buffers {sum(s[2] for s in SENT) / 1e6:.2f} MB + "
          f"headers/signatures {sum(s[3] - s[1] for s in SENT) / 1e6:.2f} MB)")
    points = {f"{split} {metric}": len(dash.figure.data[i].x) for (split, metric), i in dash._index.items()}
    rows = {s: len(dash.run.rows(s)) for s in ("train", "val")}
    print(f"points per trace at the end (cap {MAX_POINTS}; history has {rows['train']} train, {rows['val']} val rows): "
          + ", ".join(f"{k} {v}" for k, v in points.items()))
    saved, per_mime = saved_output()
    print(f"saved notebook output: {saved / 1e3:.1f} kB in {len(OUTPUTS)} display_data outputs ("
          + ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in per_mime.most_common()) + ")")
    checks = [(f"≤ ~5 widget messages/s ({rate:.2f})", rate <= 5.5),
              (f"points per trace ≤ {MAX_POINTS} ({max(points.values())})", max(points.values()) <= MAX_POINTS),
              (f"saved output < 1 MB ({saved / 1e6:.3f} MB)", saved < 1e6)]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
