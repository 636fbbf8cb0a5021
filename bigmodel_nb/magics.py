"""IPython magics: parse the line, resolve names in the user namespace, call the engine
through the ui, store the result. Every user mistake becomes one `UsageError` sentence."""
from __future__ import annotations

import difflib
import functools
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .engine.errors import BigModelError

# Names a %%train cell may define to override the flags (only if the cell itself assigns them).
CELL_NAMES = ("loss_fn", "optimizer", "train_data", "val_data", "test_data")


def user_errors(fn):
    """Turn engine errors into UsageError: one sentence, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BigModelError as exc:
            raise UsageError(str(exc)) from None

    return wrapper


def parse(magic, line: str):
    """`parse_argstring` with a friendlier message for unknown options and bad values."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        message = str(exc)
        options = [a for action in magic.parser._actions for a in action.option_strings]
        unknown = [w for w in shlex.split(line) if w.startswith("-") and w.split("=")[0] not in options]
        if unknown:
            flag = unknown[0].split("=")[0]
            close = difflib.get_close_matches(flag, options, n=1)
            hint = f" — did you mean {close[0]}?" if close else f"; see %{magic.__name__}? for the options."
            raise UsageError(f"Unknown option {flag}{hint}") from None
        raise UsageError(f"{message.rstrip('.')}; see %{magic.__name__}? for the options.") from None


def _number(kind):
    def convert(text):
        try:
            return kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except ValueError:
            raise ValueError(text) from None

    convert.__name__ = kind.__name__
    return convert


def _batch_size(text: str):
    return "auto" if text.strip().lower() == "auto" else _number(int)(text)


_batch_size.__name__ = "int"  # argparse's message: "invalid int value: 'x'"


class MagicsBase(Magics):
    """Name resolution shared by every magics class: notebook variables and data flags."""

    def _variable(self, name: str, what: str):
        if name not in self.shell.user_ns:
            raise UsageError(f"No variable named '{name}'; define `{name} = ...` first or pass the name of your {what}.")
        return self.shell.user_ns[name]

    def _data(self, spec: str | None):
        """A data flag: a notebook variable or a built-in dataset name."""
        from .engine.data import DATASETS

        ns = self.shell.user_ns
        if spec is None:
            raise UsageError("No data to train on; pass --data digits (or another built-in: "
                             f"{', '.join(DATASETS)}), --data MYVAR, or define train_data in the cell.")
        if spec in ns:
            return ns[spec]
        if spec in DATASETS:
            return spec
        close = difflib.get_close_matches(spec, list(DATASETS) + [k for k in ns if not k.startswith("_")], n=1)
        hint = f" — did you mean '{close[0]}'?" if close else "."
        raise UsageError(f"--data '{spec}' is neither a variable in the notebook nor a built-in dataset "
                         f"({', '.join(DATASETS)}){hint}")


@magics_class
class BigModelMagics(MagicsBase):
    @magic_arguments()
    @argument("model_name", nargs="?", default=None, help="Model variable (line form: %%train MODEL).")
    @argument("--model", default=None, help="Model variable name (default: model).")
    @argument("--data", default=None, help="Built-in dataset name or a variable: DataBundle, (X, y), Dataset, DataLoader, dict.")
    @argument("--epochs", type=_number(int), default=None, help="Epochs (default 10).")
    @argument("--steps", type=_number(int), default=None, help="Total optimizer steps (instead of epochs).")
    @argument("--batch-size", type=_batch_size, default=64, help="Samples per step, or auto (the largest that fits).")
    @argument("--lr", type=float, default=None, help="Learning rate (default: the optimizer's usual one).")
    @argument("--optimizer", default="adam", help="sgd, momentum, nesterov, rmsprop, adagrad, adam, adamw.")
    @argument("--schedule", default="constant", help="constant, step, cosine, warmup-cosine, onecycle, plateau.")
    @argument("--warmup", type=_number(int), default=0, help="Warm-up steps for the schedule.")
    @argument("--loss", default=None, help="cross_entropy, mse, l1, huber, bce, nll (default: from the task).")
    @argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps.")
    @argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="Mixed precision.")
    @argument("--seed", type=_number(int), default=None, help="Seed for model init (cell body), shuffling and dropout.")
    @argument("--grad-clip", type=float, default=None, help="Clip the gradient norm to this value.")
    @argument("--val-every", type=_number(int), default=None, help="Validate every N steps (default: each epoch).")
    @argument("--log-every", type=_number(int), default=10, help="Steps between logged train rows.")
    @argument("--checkpoint", default=None, help="Folder for checkpoints (each epoch and at the end).")
    @argument("--resume", action="store_true", help="Continue from the last checkpoint in --checkpoint.")
    @argument("--background", action="store_true", help="Return at once; the run trains in the background.")
    @argument("--name", default="run", help="Variable that receives the Run (default: run).")
    @argument("--quiet", action="store_true", help="No dashboard or progress output.")
    @argument("--watch-grads", action="store_true", help="Record gradient flow; a live panel (report in run.gradients).")
    @argument("--watch-every", type=_number(int), default=1, help="With --watch-grads: record every N steps.")
    @argument("--from", dest="from_", default=None, metavar="PATH_OR_RUN",
              help="Start from these weights: a .safetensors file, a checkpoint folder, or a Run/model variable.")
    @argument("--new-head", type=_number(int), default=None, metavar="N", help="Replace the classifier head with one for N classes.")
    @argument("--freeze", default=None, metavar="PATTERN", help="Freeze matching parameters: convs.*, layers.0,layers.1 or a regex.")
    @argument("--unfreeze-after", type=_number(int), default=None, metavar="N", help="With --freeze: train everything after N epochs.")
    @argument("--accumulate", type=_number(int), default=1, metavar="N", help="Micro-batches per optimizer step.")
    @argument("--compile", action="store_true", help="torch.compile the model (compile time shown apart).")
    @argument("--activation-checkpointing", action="store_true", help="Recompute transformer blocks in backward.")
    @argument("--workers", type=_number(int), default=None, metavar="N", help="Train on N Ray Train workers.")
    @argument("--gpus-per-worker", type=float, default=0, metavar="G", help="With --workers: GPUs for each worker.")
    @argument("--cluster", default=None, metavar="ADDRESS", help="With --workers: a Ray cluster (default: a local one).")
    @argument("--strategy", default="ddp", choices=["ddp", "fsdp"], help="With --workers: DDP or FSDP.")
    @line_cell_magic
    @user_errors
    def train(self, line: str, cell: str | None = None):
        """Train a model with a live dashboard; the Run is stored as `run` (or --name).

        %%train --data digits --epochs 5
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        """
        import torch

        from .engine.trainer import TrainConfig
        from .ui.controls import launch

        args = parse(self.train, line)
        ns = self.shell.user_ns
        self._stop_previous(args.name)
        if args.seed is not None:
            torch.manual_seed(args.seed)  # so the model defined in the cell starts from the same weights
        defined: dict = {}
        if cell is not None and cell.strip():
            before = {k: id(ns[k]) for k in CELL_NAMES + ("model",) if k in ns}
            result = self.shell.run_cell(cell, store_history=False)
            if not result.success:
                return None  # the cell's own error was shown; nothing was trained
            defined = {k: ns[k] for k in CELL_NAMES if k in ns and before.get(k) != id(ns[k])}

        model_name = args.model or args.model_name or "model"
        if model_name not in ns:
            raise UsageError(f"No variable named '{model_name}'; define `{model_name} = ...` in the cell "
                             f"or pass the name of your model (%train MYMODEL or --model MYMODEL).")
        model = ns[model_name]
        if "train_data" in defined:
            data = {k.removesuffix("_data"): v for k, v in defined.items() if k.endswith("_data")}
        else:
            data = self._data(args.data)

        optimizer = defined.get("optimizer")
        if optimizer is not None and args.new_head is not None:
            raise UsageError("--new-head replaces the head after the cell has run, so an `optimizer` defined in the "
                             "cell cannot hold it; leave the optimizer to --optimizer.")
        if optimizer is not None and not _optimizes(optimizer, model):
            raise UsageError("The `optimizer` defined in the cell does not hold this model's parameters; "
                             "create it from model.parameters() after defining the model.")
        config = TrainConfig(
            epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
            schedule=args.schedule, warmup=args.warmup, loss=defined.get("loss_fn", args.loss), device=args.device,
            amp=args.amp, seed=args.seed, grad_clip=args.grad_clip, checkpoint=args.checkpoint, resume=args.resume,
            val_every=args.val_every, log_every=max(1, args.log_every), accumulate=args.accumulate,
            compile=args.compile, activation_checkpointing=args.activation_checkpointing,
        )
        _check_positive(config)
        callbacks = self._transfer(model, args)
        launch(model, data, config, name=args.name, background=args.background, quiet=args.quiet,
               optimizer=optimizer, publish=lambda run: ns.__setitem__(args.name, run), callbacks=callbacks,
               watch_grads=args.watch_grads, watch_every=args.watch_every, distributed=_distributed(args))
        return None

    def _transfer(self, model, args) -> list:
        """--from / --new-head / --freeze / --unfreeze-after: everything is checked before the model changes."""
        if args.from_ is None and args.new_head is None and args.freeze is None and args.unfreeze_after is None:
            return []
        from .engine.transfer import prepare

        source = self.shell.user_ns.get(args.from_, args.from_) if args.from_ is not None else None
        setup = prepare(model, from_=source, new_head=args.new_head, freeze=args.freeze,
                        unfreeze_after=args.unfreeze_after)
        if not args.quiet:
            print("\n".join(setup.lines()))
        return setup.callbacks

    def _stop_previous(self, name: str) -> None:
        """Re-running a cell while its run is alive stops the old run first."""
        old = self.shell.user_ns.get(name)
        from .engine.run import Run

        if isinstance(old, Run) and old.alive and old.status != "created":
            old.stop().wait(timeout=30)
            print(f"Stopped the previous '{name}' at step {old.step} before starting a new one.")

    @magic_arguments()
    @argument("model_name", nargs="?", default=None, help="Model variable (default: model).")
    @argument("--data", default=None, help="Built-in dataset name or a data variable.")
    @argument("--optimizers", default="sgd,momentum,rmsprop,adam,adamw", help="Comma-separated optimizer names.")
    @argument("--lr", default=None, help="A number for all, pairs like sgd=0.1,adam=1e-3, or auto (LR range test each).")
    @argument("--epochs", type=_number(int), default=None, help="Epochs (default 10).")
    @argument("--steps", type=_number(int), default=None, help="Steps (with --function: iterations, default 200).")
    @argument("--batch-size", type=_number(int), default=64)
    @argument("--seed", type=_number(int), default=0, help="Seed for the initial weights (cell body) and batch order.")
    @argument("--target", type=float, default=None, help="Report the steps each optimizer needs to reach this train loss.")
    @argument("--function", default=None, help="rosenbrock, beale, rastrigin, saddle or quadratic: 2-D trajectories.")
    @argument("--start", default=None, help="With --function: the starting point x,y.")
    @argument("--mode", default="auto", choices=["auto", "together", "sequential"], help="How the copies train.")
    @argument("--name", default="comparison", help="Variable that receives the result (default: comparison).")
    @line_cell_magic
    @user_errors
    def compare_optimizers(self, line: str, cell: str | None = None):
        """Train copies of one model with several optimizers — same initial weights, same batches —
        and overlay their curves; or, with --function, draw their paths on a 2-D test function.

        %compare_optimizers model --data digits --optimizers sgd,momentum,adam --epochs 5
        """
        import torch

        args = parse(self.compare_optimizers, line)
        if args.function:
            return self._trajectories(args)
        if args.seed is not None:
            torch.manual_seed(args.seed)
        if cell is not None and cell.strip() and not self.shell.run_cell(cell, store_history=False).success:
            return None
        from .engine.compare import OptimizerComparison
        from .ui.compare import ComparisonDashboard

        model = self._variable(args.model_name or "model", "model")
        comparison = OptimizerComparison(model, self._data(args.data), args.optimizers, lr=args.lr, epochs=args.epochs,
                                         steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                         target=args.target, mode=args.mode)
        self.shell.user_ns[args.name] = ComparisonDashboard(comparison).show().run()
        return None

    def _trajectories(self, args):
        from .engine.landscapes import parse_start, trajectories
        from .ui.dashboard import show_figure
        from .ui.landscape import trajectory_figure

        start = parse_start(args.start) if args.start else None
        lr = None if args.lr is None else self._lr_option(args.lr, args.optimizers)
        result = trajectories(args.function, [o.strip() for o in args.optimizers.split(",")], steps=args.steps or 200,
                              start=start, lr=lr)
        summary = ", ".join(f"{n} d={f['distance']:.3g}{' (diverged)' if f['diverged'] else ''}"
                            for n, f in result.final.items())
        show_figure(trajectory_figure(result), f"{args.function}: distance to the {result.distance_to} after the last step — {summary}")
        self.shell.user_ns[args.name] = result
        return None

    @staticmethod
    def _lr_option(text: str, optimizers: str):
        from .engine.compare import parse_lrs

        names = [o.strip() for o in optimizers.split(",")]
        if text.strip() == "auto":
            raise UsageError("--lr auto applies to model comparisons; with --function give numbers or leave it out.")
        return parse_lrs(text, names)

    @magic_arguments()
    @argument("model_name", nargs="?", default="model", help="Model variable (default: model).")
    @argument("--data", default=None, help="Built-in dataset name or a data variable.")
    @argument("--optimizer", default="adam", help="sgd, momentum, nesterov, rmsprop, adagrad, adam, adamw.")
    @argument("--start-lr", type=float, default=1e-7)
    @argument("--end-lr", type=float, default=10.0)
    @argument("--steps", type=_number(int), default=100, help="Batches in the sweep (one LR each).")
    @argument("--batch-size", type=_number(int), default=64)
    @argument("--loss", default=None, help="As in %%train (default: from the task or the model).")
    @argument("--device", default="auto")
    @argument("--seed", type=_number(int), default=0)
    @argument("--name", default="lr_finder", help="Variable that receives the result (default: lr_finder).")
    @line_magic
    @user_errors
    def lr_find(self, line: str):
        """LR range test: smoothed loss against an exponentially rising LR, a suggestion marked;
        the model's weights are restored afterwards.  %lr_find model --data digits"""
        from . import lr_find

        args = parse(self.lr_find, line)
        model = self._variable(args.model_name, "model")
        result = lr_find(model, self._data(args.data), optimizer=args.optimizer, start_lr=args.start_lr,
                         end_lr=args.end_lr, steps=args.steps, batch_size=args.batch_size, loss=args.loss,
                         device=args.device, seed=args.seed)
        self.shell.user_ns[args.name] = result
        return None

    @magic_arguments()
    @argument("spec", nargs="?", default=None, help="Set the default device: cpu, cuda, cuda:1, mps, auto.")
    @line_magic
    @user_errors
    def device(self, line: str):
        """Show every detected device, or set the default: %device cuda:1"""
        from .engine import device as dev

        args = parse(self.device, line)
        if args.spec:
            chosen = dev.set_default_device(args.spec)
            print(f"default device: {chosen}")
            return None
        from .ui.tables import device_table

        device_table(dev.detect_devices(), dev.default_device())
        return None


def _optimizes(optimizer, model) -> bool:
    ids = {id(p) for p in model.parameters()}
    return all(id(p) in ids for group in optimizer.param_groups for p in group["params"])


def _distributed(args) -> dict | None:
    """--workers and its companions, or None for a run in this process."""
    if args.workers is None:
        if args.gpus_per_worker or args.cluster or args.strategy != "ddp":
            raise UsageError("--gpus-per-worker, --cluster and --strategy go with --workers N; add it.")
        return None
    return {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker, "cluster": args.cluster,
            "strategy": args.strategy}


def _check_positive(config) -> None:
    for field in ("epochs", "steps", "batch_size", "accumulate"):
        value = getattr(config, field)
        if isinstance(value, (int, float)) and value < 1:
            raise UsageError(f"--{field.replace('_', '-')} must be a positive whole number, got {value}.")
    if config.lr is not None and not config.lr > 0:
        raise UsageError(f"--lr must be a positive number, got {config.lr}.")
