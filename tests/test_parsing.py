"""Parsing never leaks: any line ends as a parsed Namespace or one UsageError sentence.

A seeded fuzzer feeds each magic's own parser (the parse stage only, nothing trains); a few lines go
through a real IPython shell to check the message the user sees and that their variables are untouched.
Run with -s to see the counts per magic."""
import argparse
import random
import re

import pytest
from IPython.core.error import UsageError

from bigmodel_nb.inspect_magics import InspectMagics
from bigmodel_nb.magics import BigModelMagics
from bigmodel_nb.parsing import (
    batch_size_value,
    lr_spec,
    one_sentence,
    parse,
    positive_number,
    real_number,
    seed_value,
    whole_number,
)
from bigmodel_nb.sweep_magics import SweepMagics

MAGICS = {
    "train": BigModelMagics.train, "compare_optimizers": BigModelMagics.compare_optimizers,
    "lr_find": BigModelMagics.lr_find, "device": BigModelMagics.device, "summary": InspectMagics.summary,
    "grads": InspectMagics.grads, "attention": InspectMagics.attention, "compress": InspectMagics.compress,
    "evaluate": InspectMagics.evaluate, "runs": BigModelMagics.runs, "sweep": SweepMagics.sweep,
    "optimizer_playground": BigModelMagics.optimizer_playground,
}
LINES_PER_MAGIC = 400

# Values a user might type, or paste by mistake.
GOOD = ["3", "0.01", "1e-3", "digits", "model", "adam", "auto", "cpu", "bf16", "0.5", "gpt", "[1,2,3]", '"def f(x):"']
BAD = ["", " ", "1e309", "-1e309", "inf", "-inf", "nan", "-nan", "-0", "1.5", "-1", "-1e-3", str(10**30), "9" * 5000,
       "0x10", "1_000", "é", "中文", "🙂", "\u200f", "\u200b", "\u202e", "\x00", "\x1b[31m", "\x0b", "\x0c", "\x85",
       "\u2028", "(X, y)", "(X,", "y)", "X[0]", 'df["a"]', "a+b", "{1: 2}", "'", '"', "\\", "\\n", "'open", 'close"',
       '"a b"', "'it''s'", "--", "-", "=", "—data", "–epochs", "$x", "%", "?", "x" * 400]


def random_line(rng: random.Random, parser) -> str:
    """A mix of real flags (abbreviated, repeated, with = or garbage values), unknown flags and junk."""
    flags = [o for a in parser._actions for o in a.option_strings] or ["--spec"]  # %device has no options
    words = []
    for _ in range(rng.randint(0, 7)):
        kind = rng.random()
        value = rng.choice(GOOD if rng.random() < 0.4 else BAD)
        if kind < 0.45:
            words.append(f"{rng.choice(flags)}{rng.choice([' ', '='])}{value}")
        elif kind < 0.55:
            words.append(rng.choice(flags)[: rng.randint(2, 6)])  # an abbreviation, maybe ambiguous
        elif kind < 0.65:
            words.append("--" + "".join(rng.choice("abcdefgh-_=é") for _ in range(rng.randint(0, 8))))
        else:
            words.append(value)
    if words and rng.random() < 0.2:
        words.append(rng.choice(words))  # a repeated flag
    return rng.choice([" ", "  ", "\t", " \u3000 "]).join(words)


def outcome(magic, line: str) -> str:
    """'success' or 'usage_error'; anything else, or a message that is not one clean sentence, fails."""
    try:
        assert isinstance(parse(magic, line), argparse.Namespace)
        return "success"
    except UsageError as exc:
        message = str(exc)
    assert message.isprintable() and "\n" not in message, f"{line!r} -> {message!r}"
    assert 0 < len(message) < 300 and message.endswith((".", "?")), f"{line!r} -> {message!r}"
    assert "Traceback" not in message and not re.match(r"\w*(Error|Exception)\b", message), f"{line!r} -> {message!r}"
    return "usage_error"


@pytest.mark.parametrize("name", list(MAGICS))
def test_fuzzed_lines_end_as_a_namespace_or_one_sentence(name):
    magic, rng = MAGICS[name], random.Random(f"parsing-{name}")
    lines = ["", "   ", "\t"] + [random_line(rng, magic.parser) for _ in range(LINES_PER_MAGIC - 3)]
    counts = {"success": 0, "usage_error": 0}
    for line in lines:
        counts[outcome(magic, line)] += 1
    print(f"\nfuzz %{name}: {len(lines)} lines, {counts['usage_error']} UsageError, {counts['success']} success")
    assert len(lines) >= 300 and counts["success"] > 0 and counts["usage_error"] > 0


@pytest.mark.parametrize("line, message", [
    ("--data (X, y)", "--data expects a variable name, not an expression; assign it first, "
                      "e.g. `data = (X, y)`, then pass --data data."),
    ("model --data=X[0] --epochs 2", "e.g. `data = X[0]`, then pass --data data."),
    ('--model df["m"]', "e.g. `model = df[\"m\"]`, then pass --model model."),
    ("a+b --data digits", "%train expects the model as a variable name, not an expression; assign it first, "
                          "e.g. `model = a+b`, then run %train model."),
    ("--data 'digits", "Unbalanced ' in the line: close it, or wrap text that contains it in \" quotes instead."),
    ('--data digits --name "x', "Unbalanced \" in the line"),
    ("--freeze it's --name \"x", "Unbalanced \" in the line"),  # a quote inside a word is literal
    ("--lr 1e309", "argument --lr: needs a finite number, got '1e309'."),
    ("--lr -inf", "argument --lr: needs a finite number, got '-inf'."),
    ("--grad-clip nan", "argument --grad-clip: needs a finite number"),
    ("--lr -1e-3", "argument --lr: needs a positive number, got '-1e-3'."),  # argparse: "expected one argument"
    ("--epochs inf", "argument --epochs: needs a finite whole number below 1e18, got 'inf'."),
    (f"--steps {10**30}", "argument --steps: needs a finite whole number below 1e18"),
    ("--epochs 1.5", "argument --epochs: needs a whole number, got '1.5'."),
    ("--seed -1", "argument --seed: needs a whole number from 0 up"),
    ("--batch-size lots", "argument --batch-size: invalid int value: 'lots'; see %train? for the options."),
    ("--epoch-count 3", "Unknown option --epoch-count — did you mean --epochs?"),
    ("--s 3", "Ambiguous option --s: it could be"),
    ("—data digits", "—data starts with a typographic dash; type two hyphens: --data."),
    ("model (X, y)", "Unexpected '(X, y)' in the line"),
    ("--name run[0]", "argument --name: needs a plain variable name such as my_result, got 'run[0]'."),
    ("--data \u200b --epochs \x1b", "invalid int value: '\\x1b'"),
])
def test_train_line_messages(line, message):
    with pytest.raises(UsageError) as info:
        parse(BigModelMagics.train, line)
    assert message in str(info.value)


def test_good_lines_parse_as_before():
    args = parse(BigModelMagics.train, "net --data=digits --epochs 1e1 --lr 1e-3 --batch-size AUTO --seed 0 --epoch 4")
    assert (args.model_name, args.data, args.epochs, args.lr, args.batch_size) == ("net", "digits", 4, 1e-3, "auto")
    assert parse(BigModelMagics.compare_optimizers, "--target -1e-3").target == -1e-3  # not taken for a flag
    assert parse(BigModelMagics.train, '--from "runs/model (1).safetensors"').from_ == "runs/model (1).safetensors"
    assert parse(InspectMagics.attention, 'gpt "def f(x):" --layer -1').input == '"def f(x):"'
    assert parse(BigModelMagics.compare_optimizers, "--lr sgd=0.1,adam=1e-3").lr == "sgd=0.1,adam=1e-3"
    assert parse(BigModelMagics.device, "cuda:1").spec == "cuda:1"


def test_converters():
    assert whole_number("1e3") == 1000 and whole_number("-0") == 0 and whole_number(" 7 ") == 7
    assert real_number("3e-4") == 3e-4 and seed_value("7") == 7 and batch_size_value("auto") == "auto"
    assert lr_spec("sgd=0.1,adam=x") == "sgd=0.1,adam=x"  # not numbers: left for the engine to explain
    for convert, text in [(whole_number, "nan"), (whole_number, "2.5"), (real_number, "inf"), (positive_number, "0"),
                          (lr_spec, "adam=-inf"), (lr_spec, "sgd=-1")]:
        with pytest.raises(argparse.ArgumentTypeError):
            convert(text)
    assert one_sentence("a\nb\u200b") == "a\\nb\\u200b" and len(one_sentence("x" * 999)) == 280


@pytest.fixture
def ip(shell, monkeypatch):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn\nX = torch.zeros(8, 64); y = torch.zeros(8).long()\n"
                   "model = nn.Linear(64, 10); untouched = 1")
    before = {k: shell.user_ns[k] for k in ("X", "y", "model", "untouched")}
    yield shell
    assert all(shell.user_ns[k] is v for k, v in before.items()), "a failed magic changed the user's variables"
    assert "run" not in shell.user_ns and "model_summary" not in shell.user_ns
    for name in ("X", "y", "model", "untouched"):
        shell.user_ns.pop(name, None)


def test_shell_train_with_a_tuple_says_to_assign_it_first(ip):
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("train", "--data (X, y) --epochs 1")
    assert str(info.value) == ("--data expects a variable name, not an expression; assign it first, "
                               "e.g. `data = (X, y)`, then pass --data data.")


def test_shell_cell_train_with_an_infinite_lr_runs_nothing(ip):
    with pytest.raises(UsageError, match=r"^argument --lr: needs a finite number, got '1e309'\.$"):
        ip.run_cell_magic("train", "--data digits --lr 1e309", "untouched = 2\nmodel = nn.Linear(64, 3)")


def test_shell_summary_with_an_infinite_batch_size(ip):
    with pytest.raises(UsageError, match=r"^argument --batch-size: needs a finite whole number below 1e18, "
                                         r"got 'inf'\.$"):
        ip.run_line_magic("summary", "model --batch-size inf")


@pytest.mark.parametrize("magic, line, message", [
    ("train", "--data 'digits", "Unbalanced '"),
    ("compare_optimizers", "--lr nan", "argument --lr: needs positive finite numbers"),
    ("grads", "model --data digits --lr -1", "argument --lr: needs a positive number"),  # torch raised ValueError
    ("lr_find", "X[0] --data digits", "%lr_find expects the model as a variable name"),
    ("grads", "model --data digits --steps 1e309", "argument --steps: needs a finite whole number"),
    ("compress", "model --distill students[0]", "--distill expects a variable name, not an expression"),
    ("attention", "model \u200b \u200b", "Unexpected '\\u200b' in the line"),
    ("device", 'cpu "', 'Unbalanced "'),
])
def test_shell_every_magic_answers_in_one_sentence(ip, magic, line, message):
    with pytest.raises(UsageError) as info:
        ip.run_line_magic(magic, line)
    assert message in str(info.value) and str(info.value).isprintable()


def test_attention_input_that_is_no_literal_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="is not a variable, quoted text"):
        ip.run_line_magic("attention", "model {[]:1}")  # literal_eval raised TypeError (unhashable) here before
