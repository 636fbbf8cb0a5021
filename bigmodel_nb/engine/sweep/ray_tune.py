"""`--workers N` sweeps: the trials run in parallel on Ray Tune — its Optuna search (the same TPE sampler,
on a study the notebook can open) and its ASHA scheduler, which stops bad trials at a validation —
on a local Ray cluster or `--cluster`. Each trial trains a core `Run` on its worker and reports every
validation; the rows stream back to the notebook as they arrive.

    run_on_ray(train_on_worker, space, trials=20, workers=2).best
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable

from ..core.callbacks import Callback
from ..core.early_stop import LOWER_IS_BETTER
from ..core.errors import BigModelError
from ..core.run import register_result
from .space import Param
from .study import PRUNERS, Sweep, open_study, study_rows


class TuneReporter(Callback):
    """On the worker: each validation row goes to Ray Tune (which may stop the trial there)."""

    def __init__(self, key: str, direction: str = "minimize"):
        self.key = key
        self.worst = math.inf if direction == "minimize" else -math.inf  # a missing or NaN value never looks best

    def _value(self, value):
        return value if isinstance(value, (int, float)) and math.isfinite(value) else self.worst

    def on_eval_end(self, run, logs):
        from ray import tune

        tune.report({"value": self._value(logs.get(self.key)),
                     "row": {k: v for k, v in logs.items() if isinstance(v, (int, float, str))}, "finished": False})

    def on_train_end(self, run, logs):
        from ray import tune

        best = run.best or {}
        tune.report({"value": self._value(best.get(self.key)), "row": None, "finished": True, "status": run.status,
                     "error": run.error, "steps": run.step})


class _Stream:
    """The driver's view of the trials (a Ray Tune callback): rows as they arrive, a row per finished trial."""

    def __init__(self, result: Sweep, space, on_trial):
        from ray.tune import Callback as TuneCallback

        outer = self

        class Relay(TuneCallback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                outer.received(trial, result)

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.finished(trial)

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.finished(trial, error=True)

        self.callback = Relay()
        self.result, self.space, self.on_trial = result, space, on_trial
        self.rows: dict[str, list] = {}
        self.last: dict[str, dict] = {}
        self.rows_seen = 0  # rows streamed back while the sweep ran (the tests read it)

    def received(self, trial, metrics: dict) -> None:
        if metrics.get("row") is not None:
            self.rows.setdefault(trial.trial_id, []).append(dict(metrics["row"]))
            self.rows_seen += 1
        self.last[trial.trial_id] = metrics

    def finished(self, trial, error: bool = False) -> None:
        last = self.last.get(trial.trial_id, {})
        # A trial that raised on its worker still ends its run (status "failed"): not a completed trial
        status = last.get("status") if last.get("finished") else None
        state = ("fail" if error or status == "failed" else "stopped" if status == "stopped"
                 else "complete" if last.get("finished") else "pruned")
        vals = [r for r in self.rows.get(trial.trial_id, []) if r.get("split") == "val"]
        number = len(self.result.trials)
        # "value": the last report, the best value when finished, else the last validation's
        row = {"number": number, **{k: trial.config.get(k) for k in self.space}, "value": last.get("value"),
               "state": state,
               "steps": last.get("steps") or (vals[-1]["step"] if vals else 0),
               "time_s": round(last.get("time_total_s") or 0.0, 3),  # the trial's own time, as Tune counts it
               "run": f"trial_{number}", "history": self.rows.get(trial.trial_id, [])}
        self.result.trials.append(row)
        if last.get("error"):
            self.result.notes.append(f"trial {number} failed: {last['error']}")
        done = [t for t in self.result.trials if t["state"] == "complete" and _finite(t["value"])]
        if done:
            best = (min if self.result.direction == "minimize" else max)(done, key=lambda t: t["value"])
            self.result.best = {"params": {k: best[k] for k in self.space}, "value": best["value"], "run": None,
                                "number": best["number"]}
        if self.on_trial is not None:
            self.on_trial(self.result)


def check_workers(workers) -> None:
    """One sentence for a worker count Ray cannot use, before Ray starts. Example: ``check_workers(2)``"""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BigModelError(f"--workers must be a whole number ≥ 1, not {workers!r}.")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def run_on_ray(train_on_worker: Callable, space: dict[str, Param], *, trials: int, workers: int,
               metric: str = "val_loss", prune: str = "median", storage: str | None = None,
               study_name: str | None = None, timeout: float | None = None, seed: int | None = 0,
               cluster: str | None = None, on_trial: Callable | None = None) -> Sweep:
    """`trials` trials on `workers` Ray Tune workers; `train_on_worker(params, callbacks)` (shipped by value)
    trains one trial's `Run` there. Example: ``run_on_ray(fn, {"lr": Param("lr", 1e-4, 1e-1, log=True)}, trials=8,
    workers=2)``"""
    import optuna

    from ..scale.distributed import connect

    check_workers(workers)
    if prune not in PRUNERS:
        from ..core.errors import unknown_choice

        raise unknown_choice("--prune", prune, PRUNERS)
    key = str(metric).removeprefix("val_")
    direction = "minimize" if key in LOWER_IS_BETTER else "maximize"
    # A stored study is opened as the notebook's sweeps open it: the same checks (its space and direction, a
    # --study without --storage) and one sentence for a storage that cannot be opened; Optuna then loads it.
    stored = open_study(space, direction=direction, storage=storage, study_name=study_name, seed=seed,
                        prune=prune) if storage or study_name else None
    # Tune's progress tables: the view reports the trials instead (its result files, which it reads back, stay)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    connect(cluster)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    mode = "min" if direction == "minimize" else "max"
    name = study_name or "sweep"
    backend = optuna.storages.RDBStorage(storage) if storage else optuna.storages.InMemoryStorage()
    searcher = OptunaSearch(space={k: p.distribution() for k, p in space.items()}, metric="value", mode=mode,
                            sampler=optuna.samplers.TPESampler(seed=seed), storage=backend, study_name=name)
    # ASHA stops a trial at a validation where it trails the others (Ray Tune's answer to median pruning)
    scheduler = FIFOScheduler() if prune == "none" else ASHAScheduler(metric="value", mode=mode, grace_period=1)
    result = Sweep(trials=[], best=None, study=None, metric=metric, direction=direction)
    if stored is not None:  # its earlier trials come first, as in the notebook's sweeps: new numbers follow theirs
        result.trials = study_rows(stored, space)
    stream = _Stream(result, space, on_trial)
    def trainable(config):
        train_on_worker(dict(config), [TuneReporter(key, direction)])

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials,
                                    max_concurrent_trials=workers, time_budget_s=timeout,
                                    reuse_actors=True),  # a worker keeps torch imported between its trials
        run_config=tune.RunConfig(name=f"sweep-{time.time_ns()}", callbacks=[stream.callback], verbose=0,
                                  storage_path=tempfile.mkdtemp(prefix="bigmodel_nb-tune-")))
    try:
        tuner.fit()
    except KeyboardInterrupt:
        result.status = "stopped"
    result.study = optuna.load_study(study_name=name, storage=backend)
    result.rows_streamed = stream.rows_seen
    result.number = register_result(result)  # %runs lists each trial (its streamed rows)
    return result
