"""A hyperparameter sweep on Optuna: TPE sampling, median or Hyperband pruning on every validation, an
in-memory study or a real database (``sqlite:///FILE``) that the next sweep of the same study continues.
Each trial trains a `Run` (kind ``sweep``) through `train_trial(params, callbacks, name)`, so the runs
table lists them; stopping a trial's run (Stop, ■) ends the sweep with the finished trials kept.

    result = run_sweep(lambda p, cbs, name: Run(build(**p), "digits", TrainConfig(lr=p["lr"]), cbs).run_here(),
                       parse_space({"lr": "1e-4..1e-1:log"})[0], trials=10)
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.callbacks import Callback
from ..core.early_stop import LOWER_IS_BETTER
from ..core.errors import BigModelError, describe_exception, unknown_choice
from .space import Param

PRUNERS = ("median", "hyperband", "none")


@dataclass
class Sweep:
    """The result of `%%sweep`. Fields (contract): ``trials`` (rows: number, each searched parameter, value,
    state, steps, time_s, run), ``best`` (params, value, run), ``study`` (the Optuna study), ``table()``."""

    trials: list
    best: dict | None
    study: object
    metric: str
    direction: str
    status: str = "completed"  # or "stopped"
    runs: list = field(default_factory=list, repr=False)  # every trial's Run, held so %runs lists them
    notes: list = field(default_factory=list)
    number: int | None = None  # among the session's runs, for a sweep on Ray Tune (its trials have no Run here)
    rows_streamed: int = 0  # on Ray Tune: rows that came back from the workers while the sweep ran
    context: dict = field(default_factory=dict, repr=False)  # data and model names, for the runs table

    def run_records(self) -> list[dict]:
        """The %runs rows of a sweep on Ray Tune, from the rows its workers streamed back."""
        return [{"name": t["run"], "number": self.number, "kind": "sweep", "status": t["state"],
                 "data": self.context.get("data", "?"), "model": self.context.get("model", "?"), "params": None,
                 "config": {k: v for k, v in t.items() if k not in ("number", "value", "state", "steps", "time_s",
                                                                   "run", "history")},
                 "history": t["history"], "elapsed": t.get("time_s")}
                for t in self.trials if "history" in t]  # a stored study's earlier trials trained elsewhere

    def table(self):
        """One row per trial (a pandas DataFrame when pandas is installed). Example: ``sweep.table()``"""
        rows = [{k: v for k, v in t.items() if k != "history"} for t in self.trials]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        best = f", best {self.metric} {self.best['value']:.4g} with {self.best['params']}" if self.best else ""
        return f"<Sweep {self.status}: {len(self.trials)} trials{best}>"


class _Reporter(Callback):
    """Reports each validation to the Optuna trial; stops the run when the pruner says so."""

    def __init__(self, trial, key: str):
        self.trial, self.key, self.pruned = trial, key, False

    def on_eval_end(self, run, logs):
        value = logs.get(self.key)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, step=logs["step"])
        if self.trial.should_prune():
            self.pruned = True
            run.stop()


def make_pruner(name: str):
    import optuna

    if name not in PRUNERS:
        raise unknown_choice("--prune", name, PRUNERS)
    if name == "median":  # short notebook sweeps: judge from the third finished trial on
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def open_study(space: dict[str, Param], *, direction: str, storage: str | None, study_name: str | None, seed, prune):
    """A new in-memory study, or the stored one (checked against this space and direction), or one sentence."""
    try:
        import optuna
    except ImportError:
        raise BigModelError("%%sweep needs Optuna: pip install 'bigmodel-nb[sweep]' (or pip install optuna).") from None

    # The view reports every trial and the notes say why one failed; Optuna's own lines would repeat them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = optuna.samplers.TPESampler(seed=seed)
    if storage is None:
        if study_name is not None:
            raise BigModelError("--study names a study in a database; add --storage sqlite:///sweeps.db (or drop "
                                "--study for an in-memory sweep).")
        return optuna.create_study(direction=direction, sampler=sampler, pruner=make_pruner(prune))
    name = study_name or "sweep"
    try:
        existing = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if name in existing:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=make_pruner(prune))
            _check_same_study(study, space, direction, name)
            return study
        return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                   pruner=make_pruner(prune))
    except BigModelError:
        raise
    except Exception as exc:  # a URL SQLAlchemy cannot open, a folder that cannot be written, ...
        raise BigModelError(f"Cannot open the study storage '{storage}' ({describe_exception(exc)}); give "
                            "--storage sqlite:///FILE with a file you can write.") from None


def _check_same_study(study, space: dict[str, Param], direction: str, name: str) -> None:
    stored = study.direction.name.lower()
    if stored != direction:
        raise BigModelError(f"The stored study '{name}' {stored}s its value but this sweep would {direction} it; "
                            "use the same --metric, or a new --study name.")
    done = [t for t in study.trials if t.distributions]
    if not done:
        return
    theirs = done[-1].distributions
    ours = {k: p.distribution() for k, p in space.items()}
    if theirs != ours:
        differ = sorted(set(theirs) ^ set(ours) | {k for k in ours if k in theirs and theirs[k] != ours[k]})
        raise BigModelError(f"The stored study '{name}' searched other parameters ({', '.join(differ)} "
                            f"differ{'s' if len(differ) == 1 else ''}; it had "
                            f"{', '.join(f'--{k} {_typed(v)}' for k, v in theirs.items())}); search the same space "
                            "to continue it, or give a new --study name.")


def _typed(distribution) -> str:
    """An Optuna distribution as it would be typed on a %%sweep line: 1e-3..1e-1:log, or a,b,c."""
    if hasattr(distribution, "choices"):
        return ",".join(map(str, distribution.choices))
    return f"{distribution.low:g}..{distribution.high:g}{':log' if distribution.log else ''}"


def run_sweep(train_trial: Callable, space: dict[str, Param], *, trials: int = 20, metric: str = "val_loss",
              prune: str = "median", storage: str | None = None, study_name: str | None = None,
              timeout: float | None = None, seed: int | None = 0, on_trial: Callable | None = None,
              on_start: Callable | None = None) -> Sweep:
    """Run `trials` trials; `train_trial(params, callbacks, name)` trains one and returns its finished `Run`.
    `on_trial(sweep)` is called after each trial (the live view), `on_start(number, params)` before each.

    Example: ``run_sweep(train_trial, {"lr": Param("lr", 1e-4, 1e-1, log=True)}, trials=5).best``
    """
    if not isinstance(trials, int) or trials < 1:
        raise BigModelError(f"--trials must be a whole number ≥ 1, not {trials}.")
    if not space:
        raise BigModelError("Nothing to search: give at least one flag as a range (--lr 1e-4..1e-1:log) or as "
                            "choices (--hidden 32,64,128).")
    if not str(metric).startswith("val_"):
        raise BigModelError(f"--metric is a validation metric such as val_loss or val_accuracy, not '{metric}'.")
    key = str(metric).removeprefix("val_")
    direction = "minimize" if key in LOWER_IS_BETTER else "maximize"
    study = open_study(space, direction=direction, storage=storage, study_name=study_name, seed=seed, prune=prune)
    import optuna  # present: open_study said so otherwise

    result = Sweep(trials=[], best=None, study=study, metric=metric, direction=direction)
    result.trials = study_rows(study, space)
    started = len(study.trials)

    def objective(trial):
        from .space import sample

        params = sample(space, trial)
        if on_start is not None:
            on_start(trial.number, params)
        reporter = _Reporter(trial, key)
        t0 = time.perf_counter()
        run = train_trial(params, [reporter], f"trial_{trial.number}")
        result.runs.append(run)
        trial.set_user_attr("steps", run.step)
        trial.set_user_attr("time_s", round(time.perf_counter() - t0, 3))
        trial.set_user_attr("run", f"{run.name} #{run.number}")
        if reporter.pruned:
            raise optuna.TrialPruned()
        if run.status == "stopped":  # Stop or ■ on the running trial: the sweep ends, what finished is kept
            result.status = "stopped"
            trial.set_user_attr("stopped", True)
            trial.study.stop()
            raise optuna.TrialPruned()
        if run.status == "failed":
            result.notes.append(f"trial {trial.number} failed: {run.error}")
            return float("nan")  # Optuna records it as FAIL; the sweep goes on
        if run.best is None or key not in run.best:
            raise BigModelError(f"Trial {trial.number} has no validation {key} to optimise; give data with a "
                                "validation split, or a --metric its validation rows have (val_loss).")
        return float(run.best[key])

    def after(study, frozen):
        result.trials = study_rows(study, space)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            run = next((r for r in result.runs if r.name == f"trial_{best.number}"), None)
            result.best = {"params": dict(best.params), "value": best.value, "run": run, "number": best.number}
        if on_trial is not None:
            on_trial(result)

    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[after], catch=())
    except KeyboardInterrupt:  # between trials: the finished ones and the study are kept
        result.status = "stopped"
    if len(study.trials) - started < trials and result.status != "stopped" and timeout is not None:
        result.notes.append(f"--timeout {timeout:g} s reached after {len(study.trials) - started} trials")
    return result


def study_rows(study, space: dict[str, Param]) -> list[dict]:
    """One row per trial of the study (earlier sweeps' included); a trial stopped by the user reads "stopped".
    Example: ``study_rows(optuna.load_study(study_name="sweep", storage=url), space)``"""
    rows = []
    for t in study.trials:
        state = "stopped" if t.user_attrs.get("stopped") else t.state.name.lower()
        rows.append({"number": t.number, **{k: t.params.get(k) for k in space}, "value": t.value, "state": state,
                     "steps": t.user_attrs.get("steps"), "time_s": t.user_attrs.get("time_s"),
                     "run": t.user_attrs.get("run")})
    return rows
