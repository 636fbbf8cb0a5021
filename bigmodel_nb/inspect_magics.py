"""Magics that look inside a model, judge it or shrink it: `%summary`, `%grads`, `%attention`, `%evaluate`,
`%compress`.
Each parses its line, calls the engine, stores the typed result and renders it."""
from __future__ import annotations

import ast
import re

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .magics import MagicsBase, user_errors
from .parsing import parse, positive_number, real_number, result_name, seed_value, variable_name, whole_number


@magics_class
class InspectMagics(MagicsBase):
    @magic_arguments()
    @argument("model_name", type=variable_name, nargs="?", default="model", help="Model variable (default: model).")
    @argument("--input-shape", default=None, help="Shape of one sample, e.g. 64 or 1,28,28 (default: inferred).")
    @argument("--batch-size", type=whole_number, default=32, help="Batch size for the memory estimate.")
    @argument("--precision", default="fp32", help="fp32, bf16, fp16 or int8.")
    @argument("--optimizer", default="adam", help="Optimizer whose state is counted (sgd, momentum, adam, ...).")
    @argument("--device", default=None, help="Device to check the fit against (default: the detected one).")
    @argument("--name", type=result_name, default="model_summary",
              help="Variable that receives the result (default: model_summary).")
    @line_magic
    @user_errors
    def summary(self, line: str):
        """Parameters, per-layer table, training memory for a batch size and precision, FLOPs, and the fit.

        %summary model --batch-size 64 --precision bf16
        """
        from .api import summary

        args = parse(self.summary, line)
        model = self._variable(args.model_name, "model")
        self.shell.user_ns[args.name] = summary(model, args.input_shape, batch_size=args.batch_size,
                                                precision=args.precision, optimizer=args.optimizer, device=args.device)
        return None

    @magic_arguments()
    @argument("model_name", type=variable_name, nargs="?", default="model", help="Model variable (default: model).")
    @argument("--data", type=variable_name, default=None, help="Built-in dataset name or a data variable.")
    @argument("--steps", type=whole_number, default=20, help="Training steps to record (default 20).")
    @argument("--layers", default=None, help="Only these layers: names, globs or a regex (e.g. 'blocks.*').")
    @argument("--every", type=whole_number, default=1, help="Record every N steps.")
    @argument("--optimizer", default="adam")
    @argument("--lr", type=positive_number, default=None)
    @argument("--batch-size", type=whole_number, default=64)
    @argument("--loss", default=None)
    @argument("--device", default="auto")
    @argument("--seed", type=seed_value, default=0)
    @argument("--inplace", action="store_true", help="Train the model itself, not a copy.")
    @argument("--name", type=result_name, default="gradients",
              help="Variable that receives the report (default: gradients).")
    @line_magic
    @user_errors
    def grads(self, line: str):
        """Gradient flow over a few training steps (on a copy): per-layer norms, histograms, and flags for
        vanishing, exploding, dead ReLUs and the first non-finite layer.

        %grads model --data digits --steps 30
        """
        from .api import grads

        args = parse(self.grads, line)
        model = self._variable(args.model_name, "model")
        self.shell.user_ns[args.name] = grads(
            model, self._data(args.data), steps=args.steps, layers=args.layers, inplace=args.inplace,
            optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, loss=args.loss, device=args.device,
            seed=args.seed, every=args.every)
        return None

    @magic_arguments()
    @argument("model_name", type=variable_name, help="Model variable.")
    @argument("input", nargs="?", default=None,
              help='"text" (quoted), a variable holding text or token ids, [ids], or a dataset index.')
    @argument("--layer", type=whole_number, default=None, help="Layer index (default: all, subsampled if large).")
    @argument("--head", type=whole_number, default=None, help="Head index (default: all).")
    @argument("--data", type=variable_name, default=None,
              help="Dataset whose tokenizer reads text (or that an index points into).")
    @argument("--tokenizer", type=variable_name, default=None,
              help="Variable holding a tokenizer (encode/decode, or Hugging Face).")
    @argument("--max-tokens", type=whole_number, default=64, help="Tokens shown per axis (the last ones).")
    @argument("--name", type=result_name, default="attention_maps",
              help="Variable that receives the result (default: attention_maps).")
    @line_magic
    @user_errors
    def attention(self, line: str):
        """Attention weights by layer and head as heatmaps with token labels.

        %attention model "def add(a, b):" --layer 1
        """
        from .api import attention

        args = parse(self.attention, line)
        model = self._variable(args.model_name, "model")
        if args.input is None:
            raise UsageError('Give an input after the model: %attention model "some text" (or token ids, or an index).')
        value = self._input(args.input, line)
        data = self._data(args.data) if args.data else self._dataset_of(model)
        tokenizer = self._variable(args.tokenizer, "tokenizer") if args.tokenizer else getattr(model, "tokenizer", None)
        self.shell.user_ns[args.name] = attention(model, value, layer=args.layer, head=args.head, tokenizer=tokenizer,
                                                  data=data, max_tokens=args.max_tokens)
        return None

    @magic_arguments()
    @argument("model_name", type=variable_name, nargs="?", default="model", help="Model variable (default: model).")
    @argument("--data", type=variable_name, default=None, help="Data for accuracy, fine-tuning and distillation.")
    @argument("--prune", type=real_number, default=None, help="Fraction of weights to remove, in (0, 1).")
    @argument("--structured", action="store_true", help="Remove whole channels/neurons (Torch-Pruning): really faster.")
    @argument("--scope", default="layer", choices=["layer", "global"],
              help="Prune each layer, or rank all weights together.")
    @argument("--finetune", type=whole_number, default=None, help="Epochs of recovery training after pruning.")
    @argument("--quantize", default=None, help="int8, int8-weight, fp16 or bf16.")
    @argument("--distill", type=variable_name, default=None,
              help="Student model variable, trained against MODEL as the teacher.")
    @argument("--temperature", type=real_number, default=4.0, help="Distillation temperature T.")
    @argument("--alpha", type=real_number, default=0.5, help="Weight of the soft-target term.")
    @argument("--epochs", type=whole_number, default=None, help="Epochs for distillation (default 10).")
    @argument("--lr", type=positive_number, default=None,
              help="Learning rate for distillation (default 3e-2) and fine-tuning (default: the optimizer's).")
    @argument("--no-baseline", action="store_true",
              help="With --distill: do not also train the student alone with the same budget for comparison.")
    @argument("--batch-size", type=whole_number, default=64)
    @argument("--optimizer", default="adam")
    @argument("--seed", type=seed_value, default=None)
    @argument("--example", type=variable_name, default=None,
              help="Variable holding an input batch, for latency without --data.")
    @argument("--inplace", action="store_true", help="Compress the model itself, not a copy.")
    @argument("--quiet", action="store_true", help="No dashboards while distilling or fine-tuning.")
    @argument("--name", type=result_name, default="compression",
              help="Variable that receives the report (default: compression).")
    @line_magic
    @user_errors
    def compress(self, line: str):
        """Prune, fine-tune, distill and quantize in the order given, with a before/after report of
        parameters, non-zeros, file size, latency and accuracy that says which gains are real.

        %compress model --data digits --prune 0.5 --structured --finetune 2 --quantize int8
        %compress model --data digits --distill student   (beside it: the student trained alone, same budget)
        """
        from .api import compress

        args = parse(self.compress, line)
        model = self._variable(args.model_name, "model")
        student = self._variable(args.distill, "student model") if args.distill else None
        flags = {f: line.find(f"--{f}") for f in ("prune", "finetune", "distill", "quantize")}
        order = sorted((f for f, at in flags.items() if at >= 0), key=flags.get)
        if all(v is None for v in (args.prune, args.finetune, args.quantize, student)):
            raise UsageError("Nothing to do; give at least one of --prune R, --quantize MODE, --distill STUDENT.")
        data = self._data(args.data) if args.data else None
        example = self._variable(args.example, "example batch") if args.example else None
        self.shell.user_ns[args.name] = compress(
            model, data, prune=args.prune, structured=args.structured, scope=args.scope, finetune=args.finetune,
            quantize=args.quantize, distill=student, temperature=args.temperature, alpha=args.alpha, order=order,
            inplace=args.inplace, example=example, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            optimizer=args.optimizer, seed=args.seed, quiet=args.quiet, baseline=not args.no_baseline)
        return None

    @magic_arguments()
    @argument("target", type=variable_name, nargs="?", default=None,
              help="A finished Run or a model variable (default: run, else model).")
    @argument("--data", type=variable_name, default=None,
              help="Data to evaluate on: a built-in dataset or a variable (default: the run's data).")
    @argument("--split", default="test", help="train, val or test (default: test).")
    @argument("--metrics", default=None, help="Only these metrics, comma-separated, e.g. accuracy,f1_macro.")
    @argument("--batch-size", type=whole_number, default=None, help="Samples per forward pass (default 256).")
    @argument("--samples", type=int, default=2, help="Language models: texts sampled from the model (default 2).")
    @argument("--name", type=result_name, default="evaluation",
              help="Variable that receives the Evaluation (default: evaluation).")
    @line_magic
    @user_errors
    def evaluate(self, line: str):
        """Metrics by task (precision/recall/F1, MAE/RMSE/R², perplexity), the confusion matrix, the top
        losses with their inputs and a reliability curve, on a split.

        %evaluate run --split test
        """
        from .api import evaluate
        from .engine.core.run import Run

        args = parse(self.evaluate, line)
        ns = self.shell.user_ns
        name = args.target or ("run" if isinstance(ns.get("run"), Run) or "model" not in ns else "model")
        target = self._variable(name, "run or model")
        data = self._data(args.data) if args.data else None
        if data is None and not isinstance(target, Run):
            data = self._dataset_of(target)
            if data is None:
                raise UsageError(f"No data to evaluate '{name}' on; pass --data digits (a built-in dataset or a "
                                 "variable), or evaluate the run that trained it (%evaluate run).")
        self.shell.user_ns[args.name] = evaluate(target, data, split=args.split, metrics=args.metrics,
                                                 batch_size=args.batch_size, samples=max(0, args.samples))
        return None

    def _input(self, text: str, line: str):
        """A variable, quoted text (the quotes are gone after parsing, so look at the raw line), or a literal."""
        if text in self.shell.user_ns:
            return self.shell.user_ns[text]
        if re.search(r"([\"'])" + re.escape(text) + r"\1", line):
            return text
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # {[]: 1}; deep nesting
            raise UsageError(f"'{text[:40]}' is not a variable, quoted text, a list of token ids or an index; "
                             f'quote text like %attention model "{text[:40]}".') from None
        return value

    def _dataset_of(self, model):
        """The data of the newest run in the notebook that trained this model, so its vocabulary reads text."""
        from .engine.core.run import Run

        runs = [v for v in self.shell.user_ns.values() if isinstance(v, Run) and v.model is model]
        return runs[-1].data if runs else None


__all__ = ["InspectMagics"]
