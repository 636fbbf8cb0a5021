"""`%%sweep`: a hyperparameter search with Optuna whose trials run the cell body and its %%train line again, in
the notebook or (--workers N) on Ray Tune workers with a copy of what the body reads."""
from __future__ import annotations

import ast
import difflib

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .engine.core.errors import BigModelError
from .magics import CELL_NAMES, BigModelMagics, MagicsBase, optimizes, train_options, user_errors
from .parsing import parse, positive_number, result_name, seed_value, split_sweep, unquote, whole_number


@magics_class
class SweepMagics(MagicsBase):
    @magic_arguments()
    @argument("--trials", type=whole_number, default=20, help="Trials to run (default 20).")
    @argument("--metric", default="val_loss", help="Validation metric to optimise: val_loss (down), val_accuracy (up).")
    @argument("--prune", default="median", help="median, hyperband or none: stop bad trials at a validation.")
    @argument("--storage", default=None, metavar="URL", help="A study database, e.g. sqlite:///sweeps.db.")
    @argument("--study", default=None, metavar="NAME", help="With --storage: the study to create or continue.")
    @argument("--timeout", type=positive_number, default=None, metavar="S", help="Stop starting trials after S s.")
    @argument("--seed", type=seed_value, default=0, help="Seeds the sampler and every trial's training.")
    @argument("--workers", type=whole_number, default=None, metavar="N",
              help="Run N trials at a time on Ray Tune workers (a local Ray cluster unless --cluster).")
    @argument("--cluster", default=None, metavar="ADDRESS", help="With --workers: a Ray cluster.")
    @argument("--name", type=result_name, default="sweep", help="Variable that receives the Sweep (default: sweep).")
    @cell_magic
    @user_errors
    def sweep(self, line: str, cell: str):
        """A hyperparameter search with Optuna: %%train flags given as ranges (lo..hi, lo..hi:log) or choices
        (a,b,c) are searched, other flags become variables of the cell body, run again for every trial.

        %%sweep --trials 20 --data digits --epochs 3 --lr 1e-4..1e-1:log --hidden 32,64,128
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        """
        from .api import sweep_with
        from .engine.sweep import parse_space

        own, rest = split_sweep(line, self.sweep)
        args = parse(self.sweep, own)
        train_flags = {o[2:] for a in BigModelMagics.train.parser._actions for o in a.option_strings
                       if o.startswith("--")}
        searched, fixed = parse_space({k: v for k, v in rest.items() if v is not True})
        fixed.update({k: True for k, v in rest.items() if v is True})
        variables = [k for k in rest if k not in train_flags]
        used = _names_in(cell)
        for name in variables:
            var = name.replace("-", "_")
            if not var.isidentifier() or (used is not None and var not in used):
                close = difflib.get_close_matches(name, train_flags, n=1)
                hint = f" (did you mean --{close[0]}?)" if close else ""
                raise UsageError(f"--{name} is neither a %%train flag nor used by the cell body{hint}; use "
                                 f"`{var}` in the cell (e.g. nn.Linear(64, {var})) or drop it.")
        if "background" in rest:
            raise UsageError("--background is not available in a %%sweep (each trial is a run named trial_N); "
                             "drop it.")
        self._trial_line({**fixed, **{k: _first(p) for k, p in searched.items()}}, variables, args)  # checked now
        ns = self.shell.user_ns
        if "data" in fixed:  # the metric against the data's task, before any trial
            from .engine.core.adapters import as_bundle
            from .engine.core.early_stop import check_monitor

            try:
                check_monitor(args.metric, as_bundle(self._data(str(fixed["data"]))).task)
            except BigModelError as exc:  # it names --monitor, the %%train flag; here it is --metric
                raise UsageError(str(exc).replace("--monitor", "--metric")) from None

        if args.workers is not None:
            self.shell.user_ns[args.name] = self._sweep_on_ray(cell, fixed, searched, variables, args, used)
            return None
        if args.cluster is not None:
            raise UsageError("--cluster goes with --workers N (the trials then run on that Ray cluster); add "
                             "--workers or drop --cluster.")

        def train_trial(params, callbacks, name, quiet):
            values = {**fixed, **params}
            ns.update({k.replace("-", "_"): values[k] for k in variables})
            line = self._trial_line(values, variables, args) + f" --name {name} --monitor {args.metric}"
            run = self._train_cell(line, cell, callbacks=callbacks, kind="sweep", quiet=quiet)
            if run is None:  # the body raised; IPython has shown its error
                raise UsageError(f"The cell body failed in {name} (its error is shown above); fix it and run the "
                                 "%%sweep again.")
            return run

        result = sweep_with(train_trial, searched, trials=args.trials, metric=args.metric, prune=args.prune,
                            storage=unquote(args.storage) if args.storage else None, study=args.study,
                            timeout=args.timeout, seed=args.seed)
        ns[args.name] = result
        if result.best:  # the cell's variables at the best trial's values: `%%train --from sweep` rebuilds that model
            ns.update({k.replace("-", "_"): {**fixed, **result.best["params"]}[k] for k in variables})
        return None

    def _sweep_on_ray(self, cell: str, fixed: dict, searched: dict, variables: list, args, used: set | None):
        """%%sweep --workers N: the cell body and the trial's %%train line run on each Ray Tune worker, in a copy
        of what the notebook's namespace holds that they use. `used`: the names the body reads (None: it does not
        parse). Ray starts in `api.sweep_on_ray`, once the line is checked."""
        from IPython.core.inputtransformer2 import TransformerManager

        from .api import sweep_on_ray

        if TransformerManager().transform_cell(cell).rstrip() != cell.rstrip():  # IPython syntax in the body
            raise UsageError("With --workers the cell body runs on Ray workers as plain Python, where % and ! lines "
                             "do not exist; move them to a cell above the %%sweep.")
        if used is None:  # said once here, not by every worker
            try:
                compile(cell, "<cell body>", "exec")
            except SyntaxError as exc:
                raise UsageError(f"The cell body does not parse ({exc.msg}, line {exc.lineno}); fix it before "
                                 "the sweep.") from None
        ns = self.shell.user_ns
        source = fixed.get("from")
        shipped_source = _weights_for_workers(ns[source]) if isinstance(source, str) and source in ns else None
        # What the body reads and what the line names (--data X, --model a,b, --from RUN): the rest stays here.
        named = [*fixed.values(), *(c for p in searched.values() if p.choices for c in p.choices)]
        wanted = (used or set()) | {v for v in named if isinstance(v, str) and v.isidentifier()}
        snapshot, metric, seed = namespace_snapshot(ns, wanted), args.metric, args.seed
        if shipped_source is not None:  # a Run cannot be pickled: its weights travel instead
            snapshot[source] = shipped_source

        def train_on_worker(params, callbacks):
            import torch

            from bigmodel_nb.api import prepare_run

            values = {**fixed, **params}
            env = {**snapshot, **{k.replace("-", "_"): values[k] for k in variables}}
            trial = parse(BigModelMagics.train, trial_line(values, variables, seed) + f" --monitor {metric}")
            if trial.seed is not None:
                torch.manual_seed(trial.seed)  # as %%train: the model of the cell starts from the same weights
            exec(cell, env)  # noqa: S102 - the user's own cell body, as %%train runs it
            defined = {k: env[k] for k in CELL_NAMES if k in env and env[k] is not snapshot.get(k)}
            data = {k.removesuffix("_data"): v for k, v in defined.items() if k.endswith("_data")} \
                if "train_data" in defined else env.get(trial.data, trial.data)
            source = env.get(trial.from_, trial.from_) if trial.from_ is not None else None
            model = env[trial.model or trial.model_name or "model"]
            if defined.get("optimizer") is not None and not optimizes(defined["optimizer"], model):
                raise BigModelError("The `optimizer` defined in the cell does not hold this model's parameters; "
                                    "create it from model.parameters() after defining the model.")
            # The same set-up as a trial in the notebook (api.prepare_run): the cell's optimizer and loss,
            # --target, --from/--new-head/--freeze/--unfreeze-after; no system sampler on a worker.
            run, trial_callbacks, _ = prepare_run(
                model, data, name="trial", kind="sweep",
                callbacks=callbacks, from_=source, new_head=trial.new_head, freeze=trial.freeze,
                unfreeze_after=trial.unfreeze_after, target=None if "train_data" in defined else trial.target,
                system=False,
                log_dir=trial.log_dir or "",  # only an explicit --log-dir: not the session's, from every worker
                **train_options(trial, defined))
            return run.run_here(trial_callbacks)

        return sweep_on_ray(train_on_worker, searched, trials=args.trials, workers=args.workers, metric=metric,
                            prune=args.prune, storage=unquote(args.storage) if args.storage else None,
                            study=args.study, timeout=args.timeout, seed=seed, cluster=args.cluster,
                            context={"data": str(fixed.get("data", "data")), "model": "model"})

    def _train_cell(self, line: str, cell: str, **extra):
        """A trial: the cell body and its %%train line, run as %%train runs them (not stored in the notebook)."""
        return self.shell.magics_manager.registry["BigModelMagics"].train_cell(line, cell, publish=False, **extra)

    def _trial_line(self, values: dict, variables: list, args) -> str:
        """The %%train line of one trial (parsed here, so a bad fixed flag is said before any trial)."""
        line = trial_line(values, variables, args.seed)
        train_options(parse(BigModelMagics.train, line + " --monitor " + args.metric), {})
        return line


def trial_line(values: dict, variables: list, seed) -> str:
    """The %%train line of one %%sweep trial: its flag values (cell variables left out) and the sweep's seed."""
    parts = [f"--{k}" if v is True else f"--{k} {v}" for k, v in values.items() if k not in variables]
    if "seed" not in values:
        parts.append(f"--seed {seed}")
    return " ".join(parts)


def _weights_for_workers(source):
    """A --from variable as it can travel to Ray workers: the CPU weights of a Run, of a sweep's best trial or of
    a model (anything else, e.g. a path, as it is)."""
    import torch

    from .engine.core.run import Run
    from .engine.sweep import Sweep

    if isinstance(source, Sweep):
        source = (source.best or {}).get("run")
        if source is None:
            raise UsageError("This sweep has no trial trained in this notebook to start from; run it without "
                             "--workers, or save the weights you want and pass --from FILE.")
    model = source.model if isinstance(source, Run) else source
    if isinstance(model, torch.nn.Module):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return source


def namespace_snapshot(ns: dict, names=None) -> dict:
    """What of the notebook's namespace (of `names` only, if given) can travel to Ray workers: modules by
    reference, the rest by value. A notebook function takes the globals it uses along (cloudpickle).
    Example: ``namespace_snapshot(shell.user_ns, {"torch", "nn", "X"})``"""
    from ray import cloudpickle

    skip = {"In", "Out", "get_ipython", "exit", "quit", "open"}
    snapshot = {}
    for key, value in ns.items():
        if key.startswith("_") or key in skip or (names is not None and key not in names):
            continue
        try:
            cloudpickle.dumps(value)
        except Exception:  # a Run (threads), an open file, a widget: the cell body cannot use them on a worker
            continue
        snapshot[key] = value
    return snapshot


def _names_in(cell: str) -> set[str] | None:
    """The variable names a cell body reads (so a %%sweep flag meant for it can be checked); % and ! lines are
    read as IPython runs them."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        tree = ast.parse(TransformerManager().transform_cell(cell or ""))
    except SyntaxError:
        return None  # not known: the body's own SyntaxError is said when it runs
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _first(param):
    """A representative value of a searched parameter (its low end or first choice), to check the line."""
    if param.choices is not None:
        return param.choices[0]
    return int(param.low) if param.integer else param.low
