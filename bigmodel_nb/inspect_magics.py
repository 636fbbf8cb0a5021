"""Magics that look inside a model or shrink it: `%summary`, `%grads`, `%attention`, `%compress`.
Each parses its line, calls the engine, stores the typed result and renders it."""
from __future__ import annotations

import ast
import re

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .magics import MagicsBase, _number, parse, user_errors


@magics_class
class InspectMagics(MagicsBase):
    @magic_arguments()
    @argument("model_name", nargs="?", default="model", help="Model variable (default: model).")
    @argument("--input-shape", default=None, help="Shape of one sample, e.g. 64 or 1,28,28 (default: inferred).")
    @argument("--batch-size", type=_number(int), default=32, help="Batch size for the memory estimate.")
    @argument("--precision", default="fp32", help="fp32, bf16, fp16 or int8.")
    @argument("--optimizer", default="adam", help="Optimizer whose state is counted (sgd, momentum, adam, ...).")
    @argument("--device", default=None, help="Device to check the fit against (default: the detected one).")
    @argument("--name", default="model_summary", help="Variable that receives the result (default: model_summary).")
    @line_magic
    @user_errors
    def summary(self, line: str):
        """Parameters, per-layer table, training memory for a batch size and precision, FLOPs, and the fit.

        %summary model --batch-size 64 --precision bf16
        """
        from .engine.summary import summarize
        from .ui.summary import show_summary

        args = parse(self.summary, line)
        model = self._variable(args.model_name, "model")
        result = summarize(model, args.input_shape, batch_size=args.batch_size, precision=args.precision,
                           optimizer=args.optimizer, device=args.device)
        self.shell.user_ns[args.name] = result
        show_summary(result)
        return None

    @magic_arguments()
    @argument("model_name", nargs="?", default="model", help="Model variable (default: model).")
    @argument("--data", default=None, help="Built-in dataset name or a data variable.")
    @argument("--steps", type=_number(int), default=20, help="Training steps to record (default 20).")
    @argument("--layers", default=None, help="Only these layers: names, globs or a regex (e.g. 'blocks.*').")
    @argument("--every", type=_number(int), default=1, help="Record every N steps.")
    @argument("--optimizer", default="adam")
    @argument("--lr", type=float, default=None)
    @argument("--batch-size", type=_number(int), default=64)
    @argument("--loss", default=None)
    @argument("--device", default="auto")
    @argument("--seed", type=_number(int), default=0)
    @argument("--inplace", action="store_true", help="Train the model itself, not a copy.")
    @argument("--name", default="gradients", help="Variable that receives the report (default: gradients).")
    @line_magic
    @user_errors
    def grads(self, line: str):
        """Gradient flow over a few training steps (on a copy): per-layer norms, histograms, and flags for
        vanishing, exploding, dead ReLUs and the first non-finite layer.

        %grads model --data digits --steps 30
        """
        from .engine.grads import grads
        from .ui.grads import show_gradient_report

        args = parse(self.grads, line)
        model = self._variable(args.model_name, "model")
        report = grads(model, self._data(args.data), steps=args.steps, layers=args.layers, inplace=args.inplace,
                       optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, loss=args.loss,
                       device=args.device, seed=args.seed, every=args.every)
        self.shell.user_ns[args.name] = report
        show_gradient_report(report)
        return None

    @magic_arguments()
    @argument("model_name", help="Model variable.")
    @argument("input", nargs="?", default=None,
              help='"text" (quoted), a variable holding text or token ids, [ids], or a dataset index.')
    @argument("--layer", type=_number(int), default=None, help="Layer index (default: all, subsampled if large).")
    @argument("--head", type=_number(int), default=None, help="Head index (default: all).")
    @argument("--data", default=None, help="Dataset whose tokenizer reads text (or that an index points into).")
    @argument("--tokenizer", default=None, help="Variable holding a tokenizer (encode/decode, or Hugging Face).")
    @argument("--max-tokens", type=_number(int), default=64, help="Tokens shown per axis (the last ones).")
    @argument("--name", default="attention_maps", help="Variable that receives the result (default: attention_maps).")
    @line_magic
    @user_errors
    def attention(self, line: str):
        """Attention weights by layer and head as heatmaps with token labels.

        %attention model "def add(a, b):" --layer 1
        """
        from .engine.attention import attention
        from .ui.attention import show_attention

        args = parse(self.attention, line)
        model = self._variable(args.model_name, "model")
        if args.input is None:
            raise UsageError('Give an input after the model: %attention model "some text" (or token ids, or an index).')
        value = self._input(args.input, line)
        data = self._data(args.data) if args.data else self._dataset_of(model)
        tokenizer = self._variable(args.tokenizer, "tokenizer") if args.tokenizer else getattr(model, "tokenizer", None)
        maps = attention(model, value, layer=args.layer, head=args.head, tokenizer=tokenizer, data=data,
                         max_tokens=args.max_tokens)
        self.shell.user_ns[args.name] = maps
        show_attention(maps, args.layer if args.layer is not None else None,
                       args.head if args.head is not None else None)
        return None

    @magic_arguments()
    @argument("model_name", nargs="?", default="model", help="Model variable (default: model).")
    @argument("--data", default=None, help="Data for accuracy, fine-tuning and distillation.")
    @argument("--prune", type=float, default=None, help="Fraction of weights to remove, in (0, 1).")
    @argument("--structured", action="store_true", help="Remove whole channels/neurons (Torch-Pruning): really faster.")
    @argument("--scope", default="layer", choices=["layer", "global"], help="Prune each layer, or rank all weights together.")
    @argument("--finetune", type=_number(int), default=None, help="Epochs of recovery training after pruning.")
    @argument("--quantize", default=None, help="int8, int8-weight, fp16 or bf16.")
    @argument("--distill", default=None, help="Student model variable, trained against MODEL as the teacher.")
    @argument("--temperature", type=float, default=4.0, help="Distillation temperature T.")
    @argument("--alpha", type=float, default=0.7, help="Weight of the soft-target term.")
    @argument("--epochs", type=_number(int), default=None, help="Epochs for distillation.")
    @argument("--lr", type=float, default=None)
    @argument("--batch-size", type=_number(int), default=64)
    @argument("--optimizer", default="adam")
    @argument("--seed", type=_number(int), default=None)
    @argument("--example", default=None, help="Variable holding an input batch, for latency without --data.")
    @argument("--inplace", action="store_true", help="Compress the model itself, not a copy.")
    @argument("--quiet", action="store_true", help="No dashboards while distilling or fine-tuning.")
    @argument("--name", default="compression", help="Variable that receives the report (default: compression).")
    @line_magic
    @user_errors
    def compress(self, line: str):
        """Prune, fine-tune, distill and quantize in the order given, with a before/after report of
        parameters, non-zeros, file size, latency and accuracy that says which gains are real.

        %compress model --data digits --prune 0.5 --structured --finetune 2 --quantize int8
        """
        from .engine.compress import compress, steps_from_flags
        from .ui.compress import live_trainer, show_compression_report

        args = parse(self.compress, line)
        model = self._variable(args.model_name, "model")
        student = self._variable(args.distill, "student model") if args.distill else None
        flags = {f: line.find(f"--{f}") for f in ("prune", "finetune", "distill", "quantize")}
        order = sorted((f for f, at in flags.items() if at >= 0), key=flags.get)
        steps = steps_from_flags(prune=args.prune, structured=args.structured, scope=args.scope,
                                 finetune=args.finetune, quantize=args.quantize, distill=student,
                                 temperature=args.temperature, alpha=args.alpha, order=order)
        if not steps:
            raise UsageError("Nothing to do; give at least one of --prune R, --quantize MODE, --distill STUDENT.")
        data = self._data(args.data) if args.data else None
        example = self._variable(args.example, "example batch") if args.example else None
        report = compress(model, data, steps=steps, inplace=args.inplace, example=example, epochs=args.epochs,
                          lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer, seed=args.seed,
                          temperature=args.temperature, alpha=args.alpha, trainer=live_trainer(quiet=args.quiet))
        self.shell.user_ns[args.name] = report
        show_compression_report(report)
        return None

    def _input(self, text: str, line: str):
        """A variable, quoted text (the quotes are gone after parsing, so look at the raw line), or a literal."""
        if text in self.shell.user_ns:
            return self.shell.user_ns[text]
        if re.search(r"([\"'])" + re.escape(text) + r"\1", line):
            return text
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UsageError(f"'{text}' is not a variable, quoted text, a list of token ids or an index; "
                             f'quote text like %attention model "{text}".') from None
        return value

    def _dataset_of(self, model):
        """The data of the newest run in the notebook that trained this model, so its vocabulary reads text."""
        from .engine.run import Run

        runs = [v for v in self.shell.user_ns.values() if isinstance(v, Run) and v.model is model]
        return runs[-1].data if runs else None


__all__ = ["InspectMagics"]
