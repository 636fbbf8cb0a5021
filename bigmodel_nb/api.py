"""The front door: the Python twin of every magic, each taking exactly its magic's options as keyword
arguments. The magics parse a line, resolve names in the notebook and call these; nothing else wires
transfer, distributed or display options.

    run = bigmodel_nb.train(model, "digits", epochs=5, lr=1e-3)
    report = bigmodel_nb.compress(model, "digits", prune=0.5, structured=True, finetune=2, quantize="int8")
"""
from __future__ import annotations

import dataclasses
import difflib
import functools

import torch

from .engine.core.config import TrainConfig
from .engine.core.errors import BigModelError
from .engine.core.run import Run

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# What a --workers run supports beyond the config, and what it refuses (one sentence each, before anything starts).
WORKER_REFUSALS = {
    "watch_grads": "--watch-grads records this notebook's copy of the model, which does not train with --workers",
    "unfreeze_after": "--unfreeze-after changes which parameters train mid-run, which DDP/FSDP fix when the "
                      "workers start",
    "resume": "--resume reads this notebook's checkpoints, while --workers restarts from Ray Train's own",
    "val_every": "--val-every is not available on Ray workers, which validate once per epoch",
}


def _config(options: dict) -> TrainConfig:
    unknown = [k for k in options if k not in CONFIG_FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], CONFIG_FIELDS, n=1)
        hint = f" — did you mean {close[0]}?" if close else f"; the options are: {', '.join(CONFIG_FIELDS)}."
        raise BigModelError(f"Unknown training option '{unknown[0]}'{hint}")
    return TrainConfig(**options)


def prepare_run(model, data, *, name: str = "run", callbacks=(), from_=None, new_head: int | None = None,
                freeze: str | None = None, unfreeze_after: int | None = None, watch_grads: bool = False,
                watch_every: int = 1, workers: int | None = None, gpus_per_worker: float = 0,
                cluster: str | None = None, strategy: str = "ddp", target: str | None = None, announce=None,
                log_dir=None, kind: str = "train", system: bool = True, **options):
    """Check every option, apply the transfer options to `model` and build the `Run` (a `DistributedRun`
    with `workers`); returns ``(run, callbacks, recorder)``. Nothing trains yet.
    Example: ``run, callbacks, _ = prepare_run(model, "digits", epochs=2)``"""
    optimizer = options.pop("optimizer", "adam")
    instance = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
    if instance is None:
        options["optimizer"] = optimizer
    config = _config(options)
    if target is not None:  # --target COLUMN: the label column of a pandas frame or a Hugging Face dataset
        from .engine.core.adapters import as_bundle

        data = as_bundle(data, target=target)
    if workers is None and (gpus_per_worker or cluster or strategy != "ddp"):
        raise BigModelError("--gpus-per-worker, --cluster and --strategy go with --workers N; add it.")
    if workers is not None:
        given = {"watch_grads": watch_grads, "unfreeze_after": unfreeze_after is not None,
                 "resume": config.resume, "val_every": config.val_every is not None}
        refused = next((k for k, v in given.items() if v), None)
        if refused:
            raise BigModelError(f"{WORKER_REFUSALS[refused]}; drop it or train without --workers.")
    if instance is not None and new_head is not None:
        raise BigModelError("--new-head replaces the head after the optimizer was made, so that optimizer cannot "
                            "hold it; leave the optimizer to --optimizer.")
    callbacks = list(callbacks)
    from .engine.sweep import Sweep

    if isinstance(from_, Sweep):  # --from sweep: the best trial's weights
        if not from_.best or from_.best.get("run") is None:
            raise BigModelError("This sweep has no finished trial to start from; run more trials first.")
        from_ = from_.best["run"]
    if any(v is not None for v in (from_, new_head, freeze, unfreeze_after)):
        from .engine.transfer import prepare

        setup = prepare(model, from_=from_, new_head=new_head, freeze=freeze, unfreeze_after=unfreeze_after)
        if announce is not None:
            announce("\n".join(setup.lines()))
        callbacks = [*setup.callbacks, *callbacks]
    from .engine.tracking import RunLogger, SystemSampler

    log_dir = log_dir if log_dir is not None else default_log_dir()
    logger = RunLogger(log_dir) if log_dir else None  # checked now: an unwritable folder is said before training
    if workers is not None:
        from .engine.scale.distributed import DistributedRun

        run = DistributedRun(model, data, config, name=name, optimizer=instance, workers=workers,
                             gpus_per_worker=gpus_per_worker, cluster=cluster, strategy=strategy, kind=kind)
    else:
        run = Run(model, data, config, name=name, optimizer=instance, kind=kind)
    callbacks = [*([SystemSampler()] if system else []), *callbacks, *([logger] if logger else [])]
    recorder = None
    if watch_grads:  # off by default: then nothing is recorded and no step pays for it
        from .engine.inspect.grads import GradientRecorder

        recorder = GradientRecorder(run.model, every=watch_every)
        callbacks.append(recorder)  # before any dashboard, so its report is ready when the dashboard ends
    return run, callbacks, recorder


_LOG_DIR: list = [None]  # the session's default --log-dir (%runs --log-dir DIR), over $BIGMODEL_NB_LOG_DIR


def set_log_dir(directory) -> None:
    """Log every later run of the session to `directory` (None: stop). Example: ``set_log_dir("runs")``"""
    if directory is not None:
        from .engine.tracking import check_writable

        check_writable(directory)
    _LOG_DIR[0] = directory


def default_log_dir():
    """The folder runs are logged to when `log_dir=` is not given: `set_log_dir`'s, else $BIGMODEL_NB_LOG_DIR."""
    import os

    return _LOG_DIR[0] if _LOG_DIR[0] is not None else (os.environ.get("BIGMODEL_NB_LOG_DIR") or None)


def fit(model, data, *, background: bool = False, **options) -> Run:
    """Train without any display; the same options as `train`. Example: ``run = fit(model, "digits", epochs=5)``"""
    run, callbacks, _ = prepare_run(model, data, **options)
    return run.start(callbacks) if background else run.run_here(callbacks)


def train(model, data, *, background: bool = False, quiet: bool = False, mode: str | None = None, publish=None,
          **options) -> Run:
    """Train with the live dashboard in a notebook (text progress elsewhere); the options of %%train as
    keyword arguments (``--from`` is ``from_=``; ``workers=N`` trains on Ray Train workers). In the cell's
    thread until the run ends or is paused, or in a worker thread from the start (`background`).

    Example: ``run = bigmodel_nb.train(model, "digits", epochs=5, lr=1e-3)``
    """
    from .ui.dashboard import TrainingDashboard

    run, callbacks, recorder = prepare_run(model, data, announce=None if quiet else print, **options)
    if publish is not None:  # e.g. store it in the notebook before the first step, for --background
        publish(run)
    dashboard = None if quiet else TrainingDashboard(run, mode, recorder=recorder).show()
    callbacks = [*callbacks, *([dashboard] if dashboard else [])]
    if background:
        return run.start(callbacks)
    controls = dashboard.controls if dashboard else None
    if controls is None:
        return run.run_here(callbacks)
    controls.arm()
    try:
        run.run_here(callbacks, until=lambda: run.paused, on_interrupt=controls.hold_after_interrupt)
    finally:
        controls.disarm()
    if run.paused and run.alive and not controls.interrupted:
        print(f"{run.name} is paused at step {run.step}; the notebook is free. Resume continues it in the "
              f"background ({run.name}.resume()), Stop ends it.")
    return run


def launch(model, data, config: TrainConfig, **options) -> Run:
    """`train` with a ready `TrainConfig` (how compression stages train with a dashboard).
    Example: ``launch(model, "digits", TrainConfig(epochs=2), quiet=True)``"""
    return train(model, data, **{name: getattr(config, name) for name in CONFIG_FIELDS}, **options)


def lr_find(model, data, *, show: bool = True, **options):
    """LR range test; in a notebook it also draws the loss-vs-LR curve with the suggestion; the options of %lr_find.

    Example: ``bigmodel_nb.lr_find(model, "digits", optimizer="adam").suggestion``
    """
    from .engine.inspect.lr_find import lr_find as sweep

    result = sweep(model, data, **options)
    if show:
        from .ui.display import show_figure
        from .ui.figures import lr_finder_figure

        tip = (f"suggested lr {result.suggestion:.2g}" if result.suggestion
               else "no suggestion: " + "; ".join(result.notes))
        if result.min_loss_lr:
            tip += f" (lowest loss at lr {result.min_loss_lr:.2g})"
        show_figure(lr_finder_figure(result), f"LR range test over {len(result.lrs)} steps: {tip}")
    return result


def compare_optimizers(model=None, data=None, optimizers=("sgd", "momentum", "rmsprop", "adam", "adamw"), *,
                       function: str | None = None, start=None, steps: int | None = None, lr=None, show: bool = True,
                       **options):
    """Same initial weights, same batches, one curve per optimizer (live in a notebook) -> `Comparison`; or with
    `function` ("rosenbrock", ...), optimizer paths on a 2-D test function -> `Trajectories`. The options of
    %compare_optimizers.

    Example: ``bigmodel_nb.compare_optimizers(model, "digits", ["sgd", "adam"], epochs=5).table()``
    or ``bigmodel_nb.compare_optimizers(function="rosenbrock", optimizers="sgd,adam")``
    """
    names = [o.strip() for o in optimizers.split(",")] if isinstance(optimizers, str) else list(optimizers)
    if function is not None:
        return _trajectories(function, names, start=start, steps=steps, lr=lr, show=show)
    if model is None:
        raise BigModelError("compare_optimizers needs a model to train, or function='rosenbrock' (or another 2-D "
                            "test function) for optimizer paths without one.")
    from .engine.compare.optimizers import OptimizerComparison
    from .ui.compare import ComparisonDashboard

    comparison = OptimizerComparison(model, data, names, lr=lr, steps=steps, **options)
    if not show:
        return comparison.run()
    return ComparisonDashboard(comparison).show().run()


def _trajectories(function: str, names: list[str], *, start, steps, lr, show: bool):
    from .engine.compare.landscapes import trajectories

    result = trajectories(function, names, steps=steps or 200, start=start, lr=lr)
    if show:
        from .ui.display import show_figure
        from .ui.landscape import trajectory_figure

        summary = ", ".join(f"{n} d={f['distance']:.3g}{' (diverged)' if f['diverged'] else ''}"
                            for n, f in result.results.items())
        show_figure(trajectory_figure(result), f"{function}: distance to the {result.distance_to} after the last "
                                               f"step — {summary}")
    return result


def optimizer_playground(function="rosenbrock", optimizers=("sgd", "momentum", "rmsprop", "adam"), *,
                         steps: int = 300, start=None, lr=None, options: dict | None = None, condition: float = 20.0,
                         show: bool = True):
    """Real `torch.optim` paths on a 2-D function with a slider per learning rate and hyperparameter, a clickable
    start, a step scrubber and a loss panel -> `Playground` (its ``.settings`` and ``.results`` follow the
    controls). `function`: a name or your own ``f(x, y)`` on tensors; `lr`: a number, a dict or "sgd=0.1,adam=0.05";
    `options`: e.g. ``{"momentum": {"momentum": 0.5}}``. Where no widgets run, the static figure of these settings.

    Example: ``pg = bigmodel_nb.optimizer_playground("saddle", ["sgd", "momentum", "adam"])``
    """
    from .engine.compare.playground import Playground

    pg = Playground(function, optimizers, steps=steps, start=start, lr=lr, options=options, condition=condition)
    if show:
        from .ui.playground import PlaygroundView

        PlaygroundView(pg).show()
    return pg


def summary(model, input_shape=None, *, show: bool = True, **options):
    """Parameters, per-layer table, memory estimate and fit (rendered in a notebook); the options of %summary.

    Example: ``bigmodel_nb.summary(model, batch_size=64, precision="bf16").estimate()["total_bytes"]``
    """
    from .engine.inspect.summary import summarize

    result = summarize(model, input_shape, **options)
    if show:
        from .ui.summary import show_summary

        show_summary(result)
    return result


def grads(model, data, *, show: bool = True, **options):
    """Gradient flow over a few training steps on a copy (figures and flags in a notebook); the options of %grads.

    Example: ``bigmodel_nb.grads(model, "digits", steps=30).flags``
    """
    from .engine.inspect.grads import grads as record

    report = record(model, data, **options)
    if show:
        from .ui.grads import show_gradient_report

        show_gradient_report(report)
    return report


def attention(model, input, *, show: bool = True, **options):
    """Attention maps by layer and head (heatmaps in a notebook); the options of %attention.

    Example: ``bigmodel_nb.attention(gpt, "def f(x):", data="python-stdlib", layer=0).weights(0)``
    """
    from .engine.inspect.attention import attention as capture

    result = capture(model, input, **options)
    if show:
        from .ui.attention import show_attention

        show_attention(result, options.get("layer"), options.get("head"))
    return result


def compress(model, data=None, *, prune: float | None = None, structured: bool = False, scope: str = "layer",
             finetune: int | None = None, quantize: str | None = None, distill=None, temperature: float = 4.0,
             alpha: float = 0.5, baseline: bool = True, order=None, steps=None, show: bool = True,
             quiet: bool = False, **options):
    """Prune / fine-tune / distill / quantize with a before/after report; the options of %compress. The steps
    run prune → finetune → distill → quantize, or in `order` (as the flags appear on a %compress line);
    `steps=[Prune(0.5), ...]` gives them explicitly instead. With `distill`, the student is also trained alone
    with the same budget and reported beside the distilled one (`report.baseline`); `baseline=False` skips it.

    Example: ``bigmodel_nb.compress(model, "digits", prune=0.5, structured=True, finetune=2, quantize="int8")``
    """
    import inspect

    from .engine.compress import compress as run_steps
    from .engine.compress import steps_from_flags

    known = [k for k in inspect.signature(run_steps).parameters if k not in ("model", "data", "steps", "trainer")]
    unknown = [k for k in options if k not in known]
    if unknown:  # before "nothing to do", which a misspelt prune= would otherwise say
        own = [k for k in inspect.signature(compress).parameters if k not in ("model", "data", "options")]
        close = difflib.get_close_matches(unknown[0], [*own, *known], n=1)
        hint = f" — did you mean {close[0]}?" if close else "."
        raise BigModelError(f"Unknown compress option '{unknown[0]}'{hint}")
    flagged = steps_from_flags(prune=prune, structured=structured, scope=scope, finetune=finetune, quantize=quantize,
                               distill=distill, temperature=temperature, alpha=alpha, order=order)
    if steps is not None and flagged:
        raise BigModelError("Give the compression either as steps=[...] or as prune=/finetune=/distill=/quantize=, "
                            "not both.")
    steps = flagged if steps is None else steps
    if not steps:
        raise BigModelError("Nothing to do; give at least one of prune=R, quantize=MODE, distill=STUDENT "
                            "(--prune, --quantize, --distill).")
    trainer = functools.partial(launch, quiet=quiet or not show)
    report = run_steps(model, data, steps=steps, temperature=temperature, alpha=alpha, baseline=baseline,
                       trainer=trainer, **options)
    if show:
        from .ui.compress import show_compression_report

        show_compression_report(report)
    return report


def evaluate(target, data=None, *, split: str = "test", metrics=None, batch_size: int | None = None,
             samples: int = 2, show: bool = True):
    """Metrics by task, confusion matrix, top losses and calibration on a split; the options of %evaluate.
    `target` is a finished `Run` (its model, data and loss) or a model with `data`.

    Example: ``bigmodel_nb.evaluate(run, split="test").top_losses(5)``
    """
    from .engine.core.adapters import as_bundle
    from .engine.evaluate import evaluate as evaluation

    if isinstance(target, Run):
        target.check_finished()
        model, loss, amp = target.model, target.config.loss, target.amp
        bundle = target.data if data is None else as_bundle(data)
        batch_size = batch_size or max(256, target.config.batch_size)  # as its validation: the same loss
    elif isinstance(target, torch.nn.Module):
        if data is None:
            raise BigModelError("Give the data to evaluate the model on: --data digits (a built-in dataset or a "
                                "variable), or evaluate the run that trained it (%evaluate run).")
        model, loss, amp, bundle = target, None, None, as_bundle(data)
    else:
        raise BigModelError(f"%evaluate takes a Run or a torch.nn.Module, not a {type(target).__name__}; "
                            "pass the run (e.g. run) or the model with --data.")
    result = evaluation(model, bundle, split, loss=loss, batch_size=batch_size or 256, amp=amp, metrics=metrics,
                        samples=samples)
    if show:
        from .ui.evaluation import show_evaluation

        show_evaluation(result)
    return result


def runs(log_dir=None, *, show: bool = True):
    """Every run of the session (and those logged under `log_dir`) in one table, curves overlaid in a notebook;
    the options of %runs. Example: ``bigmodel_nb.runs("runs").table()``"""
    from .engine.tracking import collect

    result = collect(log_dir)
    if show:
        from .ui.runs import show_runs

        show_runs(result)
    return result


def sweep(build, data, space: dict, *, trials: int = 20, metric: str = "val_loss", prune: str = "median",
          storage: str | None = None, study: str | None = None, timeout: float | None = None, seed: int | None = 0,
          workers: int | None = None, cluster: str | None = None, show: bool = True, **options):
    """A hyperparameter search (Optuna): `space` maps a training option (``lr``, ``batch_size``, ...) or an
    argument of `build` to a range ``"1e-4..1e-1:log"``, choices ``"32,64,128"`` (or a list) or one value;
    `build(**its arguments)` returns a fresh model per trial. The options of %%sweep; the other keyword
    arguments are `train`'s. Example: ``bigmodel_nb.sweep(lambda hidden: MLP(hidden), "digits",
    {"lr": "1e-4..1e-1:log", "hidden": [32, 64]}, trials=10, epochs=3).best``"""
    import inspect

    from .engine.sweep import Param, parse_space

    texts = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in space.items()}
    searched, fixed = parse_space({k: v for k, v in texts.items() if not isinstance(v, Param)})
    searched.update({k: v for k, v in texts.items() if isinstance(v, Param)})
    try:
        takes = inspect.signature(build).parameters
    except (TypeError, ValueError):
        takes = {}
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in takes.values())
    for name in {**searched, **fixed}:
        if name not in CONFIG_FIELDS and name not in takes and not accepts_any:
            builder = getattr(build, "__name__", "build")
            raise BigModelError(f"'{name}' is neither a training option nor an argument of {builder}(); add it to "
                                f"its parameters, or use one of: {', '.join(CONFIG_FIELDS)}.")
    if cluster is not None and workers is None:
        raise BigModelError("cluster= goes with workers=N (the trials then run on that Ray cluster); add workers= "
                            "or drop cluster=.")
    if workers is not None:  # on Ray Tune: each trial trains a core Run on its worker (no dashboard there)
        unknown = [k for k in options if k not in CONFIG_FIELDS]
        if unknown:
            raise BigModelError(f"With workers= the trials train on Ray Tune workers, which take training options "
                                f"only; drop {', '.join(unknown)}.")

        def train_on_worker(params, callbacks):
            from bigmodel_nb.engine.core.config import TrainConfig
            from bigmodel_nb.engine.core.run import Run

            values = {**fixed, **params}
            model = build(**{k: v for k, v in values.items() if k not in CONFIG_FIELDS})
            config = TrainConfig(**{"seed": seed, **options, **{k: v for k, v in values.items() if k in CONFIG_FIELDS},
                                    "monitor": metric})
            return Run(model, data, config, callbacks, name="trial", kind="sweep").run_here()

        return sweep_on_ray(train_on_worker, searched, trials=trials, workers=workers, cluster=cluster, metric=metric,
                            prune=prune, storage=storage, study=study, timeout=timeout, seed=seed, show=show,
                            context={"data": getattr(data, "name", str(data)), "model": getattr(build, "__name__", "")})

    def train_trial(params, callbacks, name, quiet):
        values = {**fixed, **params}
        model = build(**{k: v for k, v in values.items() if k not in CONFIG_FIELDS})
        return train(model, data, name=name, kind="sweep", callbacks=callbacks, monitor=metric, quiet=quiet,
                     **{"seed": seed, **options, **{k: v for k, v in values.items() if k in CONFIG_FIELDS}})

    return sweep_with(train_trial, searched, trials=trials, metric=metric, prune=prune, storage=storage, study=study,
                      timeout=timeout, seed=seed, show=show)


def sweep_on_ray(train_on_worker, space: dict, *, trials: int, workers: int, cluster=None, metric: str = "val_loss",
                 prune: str = "median", storage=None, study=None, timeout=None, seed=0, show: bool = True,
                 context: dict | None = None):
    """`sweep_with` on Ray Tune workers: `train_on_worker(params, callbacks)` runs there (shipped by value) and
    trains one trial's Run. Example: ``sweep_on_ray(fn, space, trials=8, workers=2)``"""
    from .engine.scale.distributed import connect
    from .engine.sweep.ray_tune import check_workers, run_on_ray

    check_workers(workers)  # before Ray starts, and before the view is shown
    connect(cluster)  # a cluster that does not answer is said here too

    def search(view):
        result = run_on_ray(train_on_worker, space, trials=trials, workers=workers, cluster=cluster, metric=metric,
                            prune=prune, storage=storage, study_name=study, timeout=timeout, seed=seed,
                            on_trial=view.trial_done if view is not None else None)
        result.context = dict(context or {})
        return result

    return _shown_sweep(search, trials, metric, show)


def sweep_with(train_trial, space: dict, *, trials: int = 20, metric: str = "val_loss", prune: str = "median",
               storage: str | None = None, study: str | None = None, timeout: float | None = None,
               seed: int | None = 0, show: bool = True):
    """`sweep` with its own trial: `train_trial(params, callbacks, name, quiet)` trains one and returns the Run
    (%%sweep re-runs the cell body and its %%train line). Example: ``sweep_with(train_trial, space, trials=5)``"""
    from .engine.sweep import run_sweep

    def search(view):
        def one(params, callbacks, name):
            if view is None:
                return train_trial(params, callbacks, name, True)
            return view.train_trial(lambda quiet: train_trial(params, callbacks, name, quiet))

        return run_sweep(one, space, trials=trials, metric=metric, prune=prune, storage=storage, study_name=study,
                         timeout=timeout, seed=seed, on_trial=view.trial_done if view is not None else None)

    return _shown_sweep(search, trials, metric, show)


def _shown_sweep(search, trials: int, metric: str, show: bool):
    """`search(view)` under the live sweep view (None when not `show`n), which ends on the result."""
    view = None
    if show:
        from .ui.sweep import SweepView

        view = SweepView(trials=trials, metric=metric).show()
    try:
        result = search(view)
    except BaseException:  # raised on as it is; the view no longer reads as if trial 3 of 20 were running
        if view is not None:
            view.abandon()
        raise
    if view is not None:
        view.finish(result)
    return result
