"""`Runs`: every run of the session (the core's registry) and every run logged under a folder, in one
table — name, kind, status, data, model, the config fields that differ, best and last validation,
steps, time, throughput, peak memory — with the curves in long form, CSV and TensorBoard export.

    runs = collect(log_dir="runs"); runs.table(); runs.to_csv("runs.csv")
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import BigModelError
from ..core.run import Run, results
from ..core.run import runs as session_runs
from .system import peak

CONFIG_SHOWN = ("epochs", "steps", "batch_size", "lr", "optimizer", "schedule", "loss", "seed", "grad_clip",
                "weight_decay", "accumulate", "amp", "early_stop", "monitor", "warmup")


@dataclass
class RunRecord:
    """One run as the table reads it: a live `Run` of this session, or a folder written by `--log-dir`."""

    name: str
    number: int | None
    kind: str
    status: str
    data: str
    model: str
    params: int | None
    config: dict = field(repr=False)
    history: list = field(repr=False)
    system: list = field(default_factory=list, repr=False)
    elapsed: float | None = None
    best: dict | None = None
    path: Path | None = None
    run: Run | None = None  # the live run, when it is one of this session's

    @property
    def label(self) -> str:
        return f"{self.name} #{self.number}" if self.number is not None else self.name

    def rows(self, split: str) -> list[dict]:
        return [r for r in self.history if r.get("split") == split]


def from_run(run: Run) -> RunRecord:
    """A session run as a record (its history is the live list: the table sees new rows)."""
    return RunRecord(name=run.name, number=run.number, kind=getattr(run, "kind", "train"), status=run.status,
                     data=run.data.name, model=type(run.model).__name__,
                     params=sum(p.numel() for p in run.model.parameters()), config=run.config.to_dict(),
                     history=run.history, system=run.system, elapsed=run.elapsed, best=run.best,
                     path=run.log_dir, run=run)


def _read_jsonl(path: Path, notes: list) -> list[dict]:
    """The complete lines of a JSON-lines file; a cut-off last line (a killed writer) is noted and left out."""
    rows, bad = [], 0
    if not path.exists():
        return rows
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        rows.append({k: (float(v) if v in ("nan", "inf", "-inf") else v) for k, v in row.items()})
    if bad:
        notes.append(f"{path} has {bad} unreadable line{'s' if bad > 1 else ''} (cut off when its run was "
                     f"killed mid-write); its {len(rows)} complete rows are listed.")
    return rows


def read_folder(folder, notes: list | None = None) -> RunRecord:
    """A run folder written by `--log-dir`. Example: ``read_folder("runs/run-20261202-101500").history``"""
    folder, notes = Path(folder), notes if notes is not None else []
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BigModelError(f"'{folder}' is not a run folder written by --log-dir (its config.json cannot be "
                            f"read: {type(exc).__name__}); point at the --log-dir folder itself.") from None
    summary = {}
    if (folder / "summary.json").exists():
        try:
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            notes.append(f"{folder}/summary.json cannot be read; the run is listed from its history.")
    history = _read_jsonl(folder / "history.jsonl", notes)
    vals = [r for r in history if r.get("split") == "val"]
    best = summary.get("best") or (min(vals, key=lambda r: r.get("loss", math.inf)) if vals else None)
    return RunRecord(name=config.get("name", folder.name), number=None, kind=config.get("kind", "train"),
                     # no summary.json: the process ended before the run did (a killed or crashed kernel)
                     status=summary.get("status", "interrupted"), data=config.get("data", "?"),
                     model=config.get("model", "?"), params=config.get("params"), config=config.get("config", {}),
                     history=history, system=_read_jsonl(folder / "system.jsonl", notes),
                     elapsed=summary.get("elapsed", history[-1].get("time") if history else None), best=best,
                     path=folder.resolve())


def read_log_dir(directory, notes: list) -> list[RunRecord]:
    """Every run folder under `directory` (oldest first), or one sentence if there is no such folder."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise BigModelError(f"No folder '{directory}'; pass the --log-dir the runs were written to.")
    found = sorted((p.parent for p in root.rglob("config.json")), key=lambda p: (p.stat().st_mtime, p.name))
    records = []
    for folder in found:
        try:
            records.append(read_folder(folder, notes))
        except BigModelError as exc:
            notes.append(str(exc))
    return records


def collect(log_dir=None, session: bool = True) -> Runs:
    """The session's runs and those logged under `log_dir` (a session run already logged there once).
    Example: ``collect("runs").table()``"""
    notes: list[str] = []
    records = [from_run(r) for r in session_runs()] if session else []
    if session:  # results without a Run each (a stacked optimizer comparison), one row per optimizer
        records += [RunRecord(**row) for result in results() for row in result.run_records()]
        records.sort(key=lambda r: r.number or 0)
    if log_dir is not None:
        mine = {r.path.resolve() for r in records if r.path is not None}
        records += [r for r in read_log_dir(log_dir, notes) if r.path not in mine]
    return Runs(records, notes)


class Runs:
    """The result of `%runs`. ``.table()`` (one row per run), ``.history()`` (long form: run, step, split,
    metric columns), ``.to_csv(path)``, ``.to_tensorboard(dir)``; ``runs["cnn_run"]`` is one record."""

    def __init__(self, records: list[RunRecord], notes: list[str] = ()):
        self.records, self.notes = list(records), list(notes)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, key) -> RunRecord:
        if isinstance(key, int):
            found = [r for r in self.records if r.number == key]
        else:
            found = [r for r in self.records if r.name == key or r.label == key]
        if len(found) == 1:
            return found[0]
        if not found:
            names = ", ".join(dict.fromkeys(r.label for r in self.records)) or "none"
            raise BigModelError(f"No run '{key}' in this table; the runs are: {names}.")
        if isinstance(key, int):  # the optimizers of one comparison share its number
            raise BigModelError(f"{len(found)} runs have the number {key} ({', '.join(r.label for r in found)}); "
                                f"pick one by its label, e.g. runs['{found[-1].label}'].")
        raise BigModelError(f"{len(found)} runs are named '{key}' ({', '.join(r.label for r in found)}); "
                            f"pick one by its number, e.g. runs[{found[-1].number}]."
                            if all(r.number is not None for r in found) else
                            f"{len(found)} runs are named '{key}' ({', '.join(str(r.path) for r in found)}); "
                            "rename one, or read a folder with read_folder(path).")

    def differing(self) -> list[str]:
        """The config fields whose values differ between the runs (the columns worth reading)."""
        keys = [k for k in CONFIG_SHOWN if any(k in r.config for r in self.records)]
        return [k for k in keys if len({json.dumps(r.config.get(k)) for r in self.records}) > 1]

    def rows(self) -> list[dict]:
        """One dict per run: the table's rows."""
        differing = self.differing()
        out = []
        for r in self.records:
            vals = r.rows("val")
            last = vals[-1] if vals else None
            trains = r.rows("train")
            row = {"run": r.label, "kind": r.kind, "status": r.status, "data": r.data, "model": r.model,
                   "params": r.params, **{k: r.config.get(k) for k in differing}}
            best = r.best or (min(vals, key=lambda v: v.get("loss", math.inf)) if vals else None)
            for label, source in (("best", best), ("last", last)):
                for key in ("loss", "accuracy"):
                    if source is not None and key in source:
                        row[f"{label} val {key}"] = source[key]
            row["steps"] = (r.history[-1].get("step") if r.history else 0)
            row["time_s"] = r.elapsed
            speeds = sorted(t["samples_per_s"] for t in trains if t.get("samples_per_s"))
            row["samples/s"] = speeds[len(speeds) // 2] if speeds else None  # the median logging window
            row["peak rss"] = peak(r.system, "rss_bytes")
            gpu = peak(r.system, "torch_memory_bytes")
            if gpu is not None:
                row["peak gpu memory"] = gpu
            out.append(row)
        return out

    def table(self):
        """The rows as a pandas DataFrame (the list of dicts without pandas). Example: ``runs.table()``"""
        return _frame(self.rows())

    def history(self):
        """Every run's rows in long form — ``run``, ``step``, ``split`` and the metric columns."""
        rows = [{"run": r.label, **row} for r in self.records for row in r.history]
        return _frame(rows)

    def to_csv(self, path) -> Path:
        """The long-form history as CSV (the whole session's curves in one file). Example: ``runs.to_csv("a.csv")``"""
        import csv

        rows = [{"run": r.label, **row} for r in self.records for row in r.history]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        path = Path(path)
        try:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise BigModelError(f"Cannot write '{path}' ({type(exc).__name__}: {exc.strerror or exc}); "
                                "pass a path you can write to.") from None
        return path

    def to_tensorboard(self, directory) -> Path:
        """Event files, one folder per run, for ``tensorboard --logdir DIR``. Example: ``runs.to_tensorboard("tb")``"""
        from .logdir import SCALARS, check_writable, event_writer

        root = check_writable(directory)
        for r in self.records:
            writer = event_writer(root / r.label.replace(" #", "-"))
            if writer is None:
                raise BigModelError("Writing TensorBoard event files needs tensorboardX: "
                                    "pip install 'bigmodel-nb[tensorboard]'.")
            for row in r.history:
                for key in SCALARS:
                    value = row.get(key)
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        writer.add_scalar(f"{row.get('split', 'train')}/{key}", value, row.get("step", 0))
            writer.close()
        return root

    def __repr__(self) -> str:
        names = ", ".join(r.label for r in self.records[:6]) + (", …" if len(self) > 6 else "")
        return f"<Runs: {len(self.records)} ({names})>"


def _frame(rows: list[dict]):
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)
