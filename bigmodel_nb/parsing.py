"""The line parsing every magic shares: split the line the way IPython does, check what argparse
cannot (names that are really expressions, non-finite numbers), run argparse, and turn every way
that can fail into one `UsageError` sentence. Nothing here imports the engine or torch."""
from __future__ import annotations

import argparse
import difflib
import keyword
import math
import re

from IPython.core.error import UsageError
from IPython.utils.process import arg_split  # the splitter IPython's parse_argstring uses

BIGGEST = 10**18  # torch and numpy hold whole numbers as int64 (< 9.2e18); bigger ones overflow inside them
# Characters no variable name, built-in dataset name or checkpoint path has, but (X, y), X[0], df["a"], a+b do.
EXPRESSION = re.compile(r"""[()\[\]{}+*,=<>!&|^%@;"'`]""")


def whole_number(text: str) -> int:
    """An int option that also reads 1e3 and -0, within int64. Example: whole_number("1e3") == 1000"""
    try:
        value = int(text)  # exact for plain digits
    except ValueError:
        try:
            number = float(text)  # 1e3, 2.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {shown(text)}") from None
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"needs a finite whole number below 1e18, got {shown(text)}.") from None
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"needs a whole number, got {shown(text)}.") from None
        value = int(number)
    if abs(value) >= BIGGEST:
        raise argparse.ArgumentTypeError(f"needs a finite whole number below 1e18, got {shown(text)}.")
    return value


def real_number(text: str) -> float:
    """A float option; inf and nan are refused here, before they reach an optimizer. Example: real_number("3e-4")"""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {shown(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"needs a finite number, got {shown(text)}.")
    return value


def positive_number(text: str) -> float:
    """A learning rate: finite and above 0 (torch's optimizers raise on a negative one).
    Example: positive_number("1e-3") == 0.001"""
    value = real_number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"needs a positive number, got {shown(text)}.")
    return value


def seed_value(text: str) -> int:
    """--seed: a whole number from 0 (numpy's generators refuse negative seeds). Example: seed_value("7") == 7"""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"needs a whole number from 0 up, got {shown(text)}.")
    return value


def batch_size_value(text: str) -> int | str:
    """--batch-size: a whole number or auto (the largest that fits). Example: batch_size_value("auto") == "auto" """
    return "auto" if text.strip().lower() == "auto" else whole_number(text)


def lr_spec(text: str) -> str:
    """%compare_optimizers --lr: auto, a number, or name=number pairs; the engine reads it, this refuses
    inf, nan and numbers <= 0 first. Example: lr_spec("sgd=0.1,adam=1e-3") == "sgd=0.1,adam=1e-3" """
    for part in text.split(","):
        try:
            number = float(part.rpartition("=")[2])
        except ValueError:
            continue  # not a number at all: the engine's parse_lrs says what it expects
        if not (math.isfinite(number) and number > 0):
            raise argparse.ArgumentTypeError(f"needs positive finite numbers, got {shown(part)}.")
    return text


def variable_name(text: str) -> str:
    """A name on the line: a notebook variable, a built-in dataset or a path; quotes are dropped.
    `parse` refuses expressions given here. Example: variable_name('"digits"') == "digits" """
    text = unquote(text)
    if not text or len(text) > 255:  # 255: the longest file name most systems allow
        raise argparse.ArgumentTypeError(f"needs a name, got {f'{len(text)} characters' if text else 'nothing'}.")
    return text


def result_name(text: str) -> str:
    """--name: the variable that receives the result, so a plain identifier. Example: result_name("my_run")"""
    text = unquote(text)
    if not text.isidentifier() or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"needs a plain variable name such as my_result, got {shown(text)}.")
    return text


def unquote(text: str) -> str:
    """IPython splits without removing quotes; drop one matching pair. Example: unquote("'a b'") == "a b" """
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def shown(text: str, width: int = 40) -> str:
    """A user's value quoted for a message: escaped and cut short. Example: shown("x" * 99)[:4] == "'xxx" """
    return repr(text if len(text) <= width else text[:width - 1] + "…")


def one_sentence(message: str, limit: int = 280) -> str:
    """A message fit for one UsageError line: control and invisible characters escaped, at most `limit`
    characters. Example: one_sentence("a\\nb") == "a\\\\nb" """
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(message))
    return text if len(text) <= limit else text[:limit - 2] + "…."  # argparse echoes a pasted blob in full


def split(line: str) -> list[str]:
    """The line as IPython's parse_argstring sees it (quotes kept), or one sentence about the quote
    left open. Example: split('--data digits "a b"') == ["--data", "digits", '"a b"']"""
    try:
        return arg_split(line)
    except ValueError:  # shlex: "No closing quotation", the only way a non-POSIX split fails
        quote = _open_quote(line)
        other = "'" if quote == '"' else '"'
        raise UsageError(f"Unbalanced {quote} in the line: close it, or wrap text that contains it in "
                         f"{other} quotes instead.") from None


def parse(magic, line: str) -> argparse.Namespace:
    """Parse a magic's line with its own @argument parser; every failure is one UsageError sentence.

    Example: ``args = parse(self.train, "--data digits --epochs 3")``
    """
    name, parser = magic.__name__, magic.parser
    try:
        return parser.parse_args(_prescan(parser, split(line), name))
    except UsageError as exc:  # ours, or argparse's via MagicArgumentParser.error
        message = str(exc)
    except (Exception, SystemExit) as exc:  # argparse or a converter failing in a way not foreseen here
        message = f"Could not read the %{name} line ({exc}); see %{name}? for the options."
    if message.startswith("unrecognized arguments: "):  # _prescan has already named unknown flags
        extra = message.removeprefix("unrecognized arguments: ")
        message = (f"Unexpected {shown(extra)} in the line; quote text that contains spaces and give "
                   f"each value after its --option (see %{name}? for the options).")
    elif not message.endswith((".", "?")):  # argparse's own phrases get a pointer to the help
        message = f"{message}; see %{name}? for the options."
    raise UsageError(one_sentence(message)) from None


def _prescan(parser, tokens: list[str], name: str) -> list[str]:
    """Walk the tokens the way argparse will, to name unknown or ambiguous flags and refuse expressions
    where a variable name belongs before argparse gives a vaguer message. Returns the argv for argparse,
    with `--opt value` joined into `--opt=value` so that values like -1e-3 are not taken for flags."""
    options = {o: a for a in parser._actions for o in a.option_strings}
    slots = iter([a for a in parser._actions if not a.option_strings])  # positionals, in order
    argv, pending, flags_done = [], None, False
    for i, token in enumerate(tokens):
        if pending is not None and not _is_flag(token):
            _check_name(pending, token, tokens[i + 1:], name)
            argv[-1] += "=" + token
            pending = None
            continue
        pending = None
        if token.startswith(("–", "—")):  # an en or em dash: what autocorrect makes of --
            raise UsageError(f"{token[:40]} starts with a typographic dash; type two hyphens: --{token[1:40]}.")
        if token == "--":
            flags_done = True
        elif not flags_done and _is_flag(token):
            flag, eq, value = token.partition("=")
            action = _option(options, flag, name)
            if eq:
                _check_name(action, value, tokens[i + 1:], name)
            elif action.nargs != 0:
                pending = action
        else:
            slot = next(slots, None)
            if slot is not None:
                _check_name(slot, token, tokens[i + 1:], name)
        argv.append(token)
    return argv


def _is_flag(token: str) -> bool:
    """What argparse takes for an option: -x or --xx, but not -1e-3, -inf or text with a space."""
    if not token.startswith("-") or len(token) < 2 or " " in token:
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def _option(options: dict, flag: str, name: str):
    """The action for a flag, matching unique prefixes as argparse does, or a sentence saying what is wrong."""
    if flag in options:
        return options[flag]
    matches = [o for o in options if flag.startswith("--") and len(flag) > 2 and o.startswith(flag)]
    if len({id(options[o]) for o in matches}) == 1:
        return options[matches[0]]
    if matches:
        raise UsageError(f"Ambiguous option {flag[:40]}: it could be {', '.join(matches[:4])}"
                         f"{', …' if len(matches) > 4 else ''}; write the option out in full.")
    close = difflib.get_close_matches(flag, list(options), n=1) if flag.strip("-") else []
    hint = f" — did you mean {close[0]}?" if close else f"; see %{name}? for the options."
    raise UsageError(f"Unknown option {flag[:40]}{hint}")


def _check_name(action, value: str, following: list[str], name: str) -> None:
    """A variable-name argument given an expression, such as --data (X, y): say how to pass it instead."""
    if action.type is not variable_name or unquote(value) != value or not EXPRESSION.search(value):
        return  # quoted text is meant literally, e.g. --from "model (1).safetensors"
    expression = value
    for token in following:  # the line was split on spaces: rejoin (X, y) until its brackets close
        if sum(expression.count(o) - expression.count(c) for o, c in ("()", "[]", "{}")) <= 0:
            break
        expression += " " + token
    var = action.dest.removesuffix("_name")
    if action.option_strings:
        flag = action.option_strings[0]
        message = (f"{flag} expects a variable name, not an expression; assign it first, "
                   f"e.g. `{var} = {expression[:60]}`, then pass {flag} {var}.")
    else:
        message = (f"%{name} expects the {var} as a variable name, not an expression; assign it first, "
                   f"e.g. `{var} = {expression[:60]}`, then run %{name} {var}.")
    raise UsageError(message)


def _open_quote(line: str) -> str:
    """The quote left open, read as non-POSIX shlex does: a quote opens only at the start of a word
    (it's is one word), and there are no escapes."""
    quote, in_word = None, False
    for c in line:
        if quote:
            quote = None if c == quote else quote  # a closing quote also ends the word
        elif c in " \t\r\n":
            in_word = False
        elif not in_word and c in "'\"":
            quote = c
        else:
            in_word = True
    return quote or '"'


def split_sweep(line: str, magic) -> tuple[str, dict]:
    """A %%sweep line as (its own options, as a line for `parse`) and ``{flag: value}`` for the rest: the
    %%train flags and cell variables to search or fix (a flag with no value is True).
    Example: ``split_sweep("--trials 5 --lr 1e-4..1e-1:log --hidden 32,64", Magics.sweep)``"""
    own = {o for a in magic.parser._actions for o in a.option_strings}
    tokens, mine, rest = split(line), [], {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, value = token.partition("=")
        if not _is_flag(token) or not flag.startswith("--"):
            raise UsageError(f"Unexpected {shown(token)} in the %%sweep line; give each value after its --flag, "
                             "e.g. --lr 1e-4..1e-1:log --hidden 32,64,128.")
        has_value = bool(eq) or (i + 1 < len(tokens) and not _is_flag(tokens[i + 1]))
        value = value if eq else (tokens[i + 1] if has_value else None)
        i += 1 if eq or not has_value else 2
        if flag in own:
            mine += [flag] + ([value] if value is not None else [])
        else:
            name = flag[2:]
            if name in rest:
                raise UsageError(f"--{name} is given twice in the %%sweep line; give it once.")
            rest[name] = unquote(value) if value is not None else True
    return " ".join(mine), rest
