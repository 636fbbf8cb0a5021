"""IPython magics: parse the line, resolve names in the user namespace, call the engine
through the ui, store the result. Every user mistake becomes one `UsageError` sentence."""
from __future__ import annotations

import difflib
import functools

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .engine.core.errors import BigModelError
from .parsing import (
    batch_size_value,
    lr_spec,
    one_sentence,
    parse,
    positive_number,
    real_number,
    result_name,
    seed_value,
    shown,
    variable_name,
    whole_number,
)

# Names a %%train cell may define to override the flags (only if the cell itself assigns them).
CELL_NAMES = ("loss_fn", "optimizer", "train_data", "val_data", "test_data")


def user_errors(fn):
    """Turn engine errors into UsageError and keep each UsageError one printable line. `parse` has already
    made any failure while reading the line one sentence; errors that model or training code raises after
    that keep their traceback: they are bugs to see, not usage mistakes.

    Example: under IPython's decorator, ``@line_magic`` then ``@user_errors`` above ``def summary(self, line)``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BigModelError, UsageError) as exc:  # a name echoed from the line may hold control characters
            raise UsageError(one_sentence(str(exc), limit=1000)) from None

    return wrapper


class MagicsBase(Magics):
    """Name resolution shared by every magics class: notebook variables and data flags."""

    def _variable(self, name: str, what: str):
        if name not in self.shell.user_ns and not name.isidentifier():  # `3 = ...` would be wrong advice
            raise UsageError(f"{shown(name)} is not a variable name; pass the name of your {what}.")
        if name not in self.shell.user_ns:
            raise UsageError(f"No variable named '{name}'; define `{name} = ...` first "
                             f"or pass the name of your {what}.")
        return self.shell.user_ns[name]

    def _data(self, spec: str | None, target: str | None = None):
        """A data flag: a notebook variable or a built-in dataset name; `target` (--target COLUMN) names the
        label column of a pandas frame or a Hugging Face dataset."""
        from .engine.data import DATASETS

        if target is not None:
            from .engine.core.adapters import as_bundle

            return as_bundle(self._data(spec), target=target)
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
    @argument("model_name", type=variable_name, nargs="?", default=None,
              help="Model variable (line form: %%train MODEL).")
    @argument("--model", type=variable_name, default=None, help="Model variable name (default: model).")
    @argument("--data", type=variable_name, default=None,
              help="Built-in dataset name or a variable: DataBundle, (X, y), DataFrame, Dataset, DataLoader, "
                   "Hugging Face dataset, dict.")
    @argument("--target", default=None, metavar="COLUMN",
              help="With --data a pandas DataFrame or Hugging Face dataset: the label column.")
    @argument("--epochs", type=whole_number, default=None, help="Epochs (default 10).")
    @argument("--steps", type=whole_number, default=None, help="Total optimizer steps (instead of epochs).")
    @argument("--batch-size", type=batch_size_value, default=64,
              help="Samples per step, or auto (the largest that fits).")
    @argument("--lr", type=positive_number, default=None, help="Learning rate (default: the optimizer's usual one).")
    @argument("--optimizer", default="adam", help="sgd, momentum, nesterov, rmsprop, adagrad, adam, adamw.")
    @argument("--schedule", default="constant", help="constant, step, cosine, warmup-cosine, onecycle, plateau.")
    @argument("--warmup", type=whole_number, default=0, help="Warm-up steps for the schedule.")
    @argument("--loss", default=None, help="cross_entropy, mse, l1, huber, bce, nll (default: from the task).")
    @argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps.")
    @argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="Mixed precision.")
    @argument("--seed", type=seed_value, default=None, help="Seed for model init (cell body), shuffling and dropout.")
    @argument("--grad-clip", type=real_number, default=None, help="Clip the gradient norm to this value.")
    @argument("--val-every", type=whole_number, default=None, help="Validate every N steps (default: each epoch).")
    @argument("--log-every", type=whole_number, default=10, help="Steps between logged train rows.")
    @argument("--early-stop", type=whole_number, default=None, metavar="N",
              help="Stop after N validations without improvement; the model keeps the best validation's weights.")
    @argument("--monitor", default="val_loss", help="What --early-stop and run.best watch: val_loss, val_accuracy.")
    @argument("--min-delta", type=real_number, default=0.0, metavar="X",
              help="With --early-stop: the smallest change that counts as an improvement.")
    @argument("--log-dir", default=None, metavar="DIR",
              help="Write the run as it trains to DIR/<name>-<time>/ (JSON lines, TensorBoard events, weights).")
    @argument("--checkpoint", default=None, help="Folder for checkpoints (each epoch and at the end).")
    @argument("--resume", action="store_true", help="Continue from the last checkpoint in --checkpoint.")
    @argument("--background", action="store_true", help="Return at once; the run trains in the background.")
    @argument("--name", type=result_name, default="run", help="Variable that receives the Run (default: run).")
    @argument("--quiet", action="store_true", help="No dashboard or progress output.")
    @argument("--watch-grads", action="store_true",
              help="Record gradient flow; a live panel (report in run.gradients).")
    @argument("--watch-every", type=whole_number, default=1, help="With --watch-grads: record every N steps.")
    @argument("--from", type=variable_name, dest="from_", default=None, metavar="PATH_OR_RUN",
              help="Start from these weights: a .safetensors file, a checkpoint folder, or a Run/model variable.")
    @argument("--new-head", type=whole_number, default=None, metavar="N",
              help="Replace the classifier head with one for N classes.")
    @argument("--freeze", default=None, metavar="PATTERN",
              help="Freeze matching parameters: convs.*, layers.0,layers.1 or a regex.")
    @argument("--unfreeze-after", type=whole_number, default=None, metavar="N",
              help="With --freeze: train everything after N epochs.")
    @argument("--accumulate", type=whole_number, default=1, metavar="N", help="Micro-batches per optimizer step.")
    @argument("--compile", action="store_true", help="torch.compile the model (compile time shown apart).")
    @argument("--activation-checkpointing", action="store_true", help="Recompute transformer blocks in backward.")
    @argument("--workers", type=whole_number, default=None, metavar="N", help="Train on N Ray Train workers.")
    @argument("--gpus-per-worker", type=real_number, default=0, metavar="G",
              help="With --workers: GPUs for each worker.")
    @argument("--cluster", default=None, metavar="ADDRESS",
              help="With --workers: a Ray cluster (default: a local one).")
    @argument("--strategy", default="ddp", choices=["ddp", "fsdp"], help="With --workers: DDP or FSDP.")
    @line_cell_magic
    @user_errors
    def train(self, line: str, cell: str | None = None):
        """Train a model with a live dashboard; the Run is stored as `run` (or --name).

        %%train --data digits --epochs 5
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        """
        self.train_cell(line, cell)
        return None

    def train_cell(self, line: str, cell: str | None, publish: bool = True, **extra):
        """%%train itself; `extra` goes to `api.train` (a %%sweep's trials add callbacks, kind and quiet).
        Returns the Run, or None when the cell body failed."""
        import torch

        from .api import train

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
            data = self._data(args.data, args.target)

        optimizer = defined.get("optimizer")
        if optimizer is not None and args.new_head is not None:
            raise UsageError("--new-head replaces the head after the cell has run, so an `optimizer` defined in the "
                             "cell cannot hold it; leave the optimizer to --optimizer.")
        if optimizer is not None and not optimizes(optimizer, model):
            raise UsageError("The `optimizer` defined in the cell does not hold this model's parameters; "
                             "create it from model.parameters() after defining the model.")
        options = train_options(args, defined)
        source = ns.get(args.from_, args.from_) if args.from_ is not None else None  # a Run/model variable, or a path
        extra.setdefault("quiet", args.quiet)
        return train(model, data, name=args.name, background=args.background,
                     publish=(lambda run: ns.__setitem__(args.name, run)) if publish else None,
                     watch_grads=args.watch_grads, watch_every=args.watch_every, from_=source, new_head=args.new_head,
                     freeze=args.freeze, unfreeze_after=args.unfreeze_after, workers=args.workers,
                     gpus_per_worker=args.gpus_per_worker, cluster=args.cluster, strategy=args.strategy,
                     log_dir=args.log_dir, **extra, **options)

    def _stop_previous(self, name: str) -> None:
        """Re-running a cell while its run is alive stops the old run first."""
        old = self.shell.user_ns.get(name)
        from .engine.core.run import Run

        if isinstance(old, Run) and old.alive and old.status != "created":
            old.stop().wait(timeout=30)
            print(f"Stopped the previous '{name}' at step {old.step} before starting a new one.")

    @magic_arguments()
    @argument("model_name", type=variable_name, nargs="?", default=None, help="Model variable (default: model).")
    @argument("--data", type=variable_name, default=None, help="Built-in dataset name or a data variable.")
    @argument("--optimizers", default="sgd,momentum,rmsprop,adam,adamw", help="Comma-separated optimizer names.")
    @argument("--lr", type=lr_spec, default=None,
              help="A number for all, pairs like sgd=0.1,adam=1e-3, or auto (LR range test each).")
    @argument("--epochs", type=whole_number, default=None, help="Epochs (default 10).")
    @argument("--steps", type=whole_number, default=None, help="Steps (with --function: iterations, default 200).")
    @argument("--batch-size", type=whole_number, default=64)
    @argument("--seed", type=seed_value, default=0, help="Seed for the initial weights (cell body) and batch order.")
    @argument("--target", type=real_number, default=None,
              help="Report the steps each optimizer needs to reach this train loss.")
    @argument("--function", default=None, help="rosenbrock, beale, rastrigin, saddle or quadratic: 2-D trajectories.")
    @argument("--start", default=None, help="With --function: the starting point x,y.")
    @argument("--mode", default="auto", choices=["auto", "together", "sequential"], help="How the copies train.")
    @argument("--name", type=result_name, default="comparison",
              help="Variable that receives the result (default: comparison).")
    @line_cell_magic
    @user_errors
    def compare_optimizers(self, line: str, cell: str | None = None):
        """Train copies of one model with several optimizers — same initial weights, same batches —
        and overlay their curves; or, with --function, draw their paths on a 2-D test function.

        %compare_optimizers model --data digits --optimizers sgd,momentum,adam --epochs 5
        """
        import torch

        from .api import compare_optimizers

        args = parse(self.compare_optimizers, line)
        if args.function:
            self.shell.user_ns[args.name] = compare_optimizers(
                None, None, args.optimizers, function=args.function, start=args.start, steps=args.steps, lr=args.lr)
            return None
        if args.seed is not None:
            torch.manual_seed(args.seed)
        if cell is not None and cell.strip() and not self.shell.run_cell(cell, store_history=False).success:
            return None
        model = self._variable(args.model_name or "model", "model")
        self.shell.user_ns[args.name] = compare_optimizers(
            model, self._data(args.data), args.optimizers, lr=args.lr, epochs=args.epochs, steps=args.steps,
            batch_size=args.batch_size, seed=args.seed, target=args.target, mode=args.mode)
        return None

    @magic_arguments()
    @argument("--function", default="rosenbrock",
              help="rosenbrock, beale, rastrigin, saddle, quadratic, or the name of your own f(x, y) on tensors.")
    @argument("--optimizers", default="sgd,momentum,rmsprop,adam", help="Comma-separated optimizer names.")
    @argument("--steps", type=whole_number, default=300, help="Steps per path (default 300; the slider goes to 1000).")
    @argument("--start", default=None, help="The starting point x,y (or click the contour).")
    @argument("--lr", type=lr_spec, default=None, help="A number for all, or pairs like sgd=0.1,adam=0.05.")
    @argument("--condition", type=positive_number, default=20.0,
              help="The quadratic's condition number κ, 1 to 10000 (default 20).")
    @argument("--name", type=result_name, default="playground",
              help="Variable that receives the playground (default: playground).")
    @line_magic
    @user_errors
    def optimizer_playground(self, line: str):
        """Sliders for each optimizer's learning rate and hyperparameters, a function dropdown, a clickable start
        point and a step scrubber over real torch.optim paths; `playground.settings` holds what you chose.

        %optimizer_playground --function saddle --optimizers sgd,momentum,adam
        """
        from .api import optimizer_playground
        from .engine.compare.landscapes import FUNCTIONS

        args = parse(self.optimizer_playground, line)
        function = args.function
        if function.lower() not in FUNCTIONS and function in self.shell.user_ns:
            function = self.shell.user_ns[function]
            if not callable(function):
                raise UsageError(f"'{args.function}' is not a function; pass a name like rosenbrock or a function "
                                 "f(x, y) of two tensors.")
        self.shell.user_ns[args.name] = optimizer_playground(function, args.optimizers, steps=args.steps,
                                                             start=args.start, lr=args.lr, condition=args.condition)
        return None

    @magic_arguments()
    @argument("model_name", type=variable_name, nargs="?", default="model", help="Model variable (default: model).")
    @argument("--data", type=variable_name, default=None, help="Built-in dataset name or a data variable.")
    @argument("--optimizer", default="adam", help="sgd, momentum, nesterov, rmsprop, adagrad, adam, adamw.")
    @argument("--start-lr", type=positive_number, default=1e-7)
    @argument("--end-lr", type=positive_number, default=10.0)
    @argument("--steps", type=whole_number, default=100, help="Batches in the sweep (one LR each).")
    @argument("--batch-size", type=whole_number, default=64)
    @argument("--loss", default=None, help="As in %%train (default: from the task or the model).")
    @argument("--device", default="auto")
    @argument("--seed", type=seed_value, default=0)
    @argument("--name", type=result_name, default="lr_finder",
              help="Variable that receives the result (default: lr_finder).")
    @line_magic
    @user_errors
    def lr_find(self, line: str):
        """LR range test: smoothed loss against an exponentially rising LR, a suggestion marked;
        the model's weights are restored afterwards.  %lr_find model --data digits"""
        from .api import lr_find

        args = parse(self.lr_find, line)
        model = self._variable(args.model_name, "model")
        result = lr_find(model, self._data(args.data), optimizer=args.optimizer, start_lr=args.start_lr,
                         end_lr=args.end_lr, steps=args.steps, batch_size=args.batch_size, loss=args.loss,
                         device=args.device, seed=args.seed)
        self.shell.user_ns[args.name] = result
        return None

    @magic_arguments()
    @argument("directory", nargs="?", default=None, help="Also list the runs logged under this --log-dir folder.")
    @argument("--log-dir", default=None, metavar="DIR",
              help="Write every later run of the session to DIR (off: stop).")
    @argument("--name", type=result_name, default="runs", help="Variable that receives the Runs (default: runs).")
    @line_magic
    @user_errors
    def runs(self, line: str):
        """Every run of the session (and those logged under DIR) in one table, with their curves overlaid.

        %runs logs
        """
        from .api import default_log_dir, runs, set_log_dir

        args = parse(self.runs, line)
        if args.log_dir is not None:
            set_log_dir(None if args.log_dir == "off" else args.log_dir)
            where = default_log_dir()
            print(f"Runs of this session are written to {where}/<name>-<time>/." if where else
                  "Runs of this session are no longer written to disk.")
        self.shell.user_ns[args.name] = runs(args.directory)
        return None

    @magic_arguments()
    @argument("spec", nargs="?", default=None, help="Set the default device: cpu, cuda, cuda:1, mps, auto.")
    @line_magic
    @user_errors
    def device(self, line: str):
        """Show every detected device, or set the default: %device cuda:1"""
        from .engine.core import device as dev

        args = parse(self.device, line)
        if args.spec:
            chosen = dev.set_default_device(args.spec)
            print(f"default device: {chosen}")
            return None
        from .ui.tables import device_table

        device_table(dev.detect_devices(), dev.default_device())
        return None


def train_options(args, defined: dict) -> dict:
    """The TrainConfig options of a parsed %%train line; a `loss_fn` or `optimizer` the cell defined wins."""
    optimizer = defined.get("optimizer")
    options = dict(
        epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        optimizer=optimizer if optimizer is not None else args.optimizer, schedule=args.schedule,
        warmup=args.warmup, loss=defined.get("loss_fn", args.loss), device=args.device, amp=args.amp,
        seed=args.seed, grad_clip=args.grad_clip, checkpoint=args.checkpoint, resume=args.resume,
        val_every=args.val_every, log_every=max(1, args.log_every), accumulate=args.accumulate,
        compile=args.compile, activation_checkpointing=args.activation_checkpointing,
        early_stop=args.early_stop, monitor=args.monitor, min_delta=args.min_delta,
    )
    _check_positive(options)
    return options


def optimizes(optimizer, model) -> bool:
    """Whether `optimizer` holds only `model`'s parameters. Example: ``optimizes(torch.optim.SGD(m.parameters()), m)``
    """
    ids = {id(p) for p in model.parameters()}
    return all(id(p) in ids for group in optimizer.param_groups for p in group["params"])


def _check_positive(options: dict) -> None:
    for field in ("epochs", "steps", "batch_size", "accumulate"):
        value = options[field]
        if isinstance(value, (int, float)) and value < 1:
            raise UsageError(f"--{field.replace('_', '-')} must be a positive whole number, got {value}.")
    if options["lr"] is not None and not options["lr"] > 0:
        raise UsageError(f"--lr must be a positive number, got {options['lr']}.")
