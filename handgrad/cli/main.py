"""``handgrad``: list and run the registered experiments.

    handgrad list
    handgrad run NAME [--epochs N] [--batch-size N] [--lr X] [--seed N] [--out DIR] [--quick]
                      [--data PATH] [--resume CKPT] [--no-progress] [experiment options]
    handgrad translate MODEL "sentence" [--beam K] [--length-penalty A]

Every run writes into its out dir (default ``runs/NAME/``): the checkpoint(s), ``history.csv`` /
``history.json``, ``learning_curves.png`` and ``results.json`` (the experiment's final metrics plus the
options it ran with). A bad option, an unknown experiment or missing data ends with one line on stderr
and exit status 2, never a traceback (set ``HANDGRAD_TRACEBACK=1`` to see one anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from handgrad.cli import registry

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a single line (``prog: error: message``) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        m = re.match(r"argument experiment: invalid choice: '([^']*)'", message)
        if m:
            message = f"unknown experiment '{m.group(1)}' (see `handgrad list`)"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options every experiment takes (``None`` means: the experiment's own default)."""
    g = p.add_argument_group("common options")
    g.add_argument("--epochs", type=_positive_int, default=None, help="maximum number of epochs")
    g.add_argument("--batch-size", type=_positive_int, default=None, help="mini-batch size")
    g.add_argument("--lr", type=_positive_float, default=None, help="learning rate")
    g.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    g.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/NAME)")
    g.add_argument("--quick", action="store_true", help="a tiny subset and 1-2 epochs: a smoke test in seconds")
    g.add_argument("--data", default=None, metavar="PATH", help="folder with the dataset files (default: bundled)")
    g.add_argument("--resume", default=None, metavar="CKPT", help="continue training from this checkpoint")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway without a TTY)")


def build_parser() -> argparse.ArgumentParser:
    from handgrad import __version__

    parser = _Parser(prog="handgrad", description="handgrad: hand-written backprop on NumPy. Run an experiment.")
    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("list", help="list the experiments with one-line descriptions")
    run = sub.add_parser("run", help="run an experiment: handgrad run NAME [options]")
    exps = run.add_subparsers(dest="experiment", metavar="experiment", parser_class=_Parser)
    exps.required = True
    for name, exp in registry.discover().items():
        ep = exps.add_parser(name, help=exp.help, description=exp.help)
        add_common_arguments(ep)
        if exp.arguments is not None:
            exp.arguments(ep.add_argument_group(f"{name} options"))  # type: ignore[arg-type]
    tr = sub.add_parser("translate", help="translate a sentence with a translator saved by a translate-* run")
    tr.add_argument("model", help="translator file (e.g. runs/translate-dates/translator.safetensors)")
    tr.add_argument("text", help="the sentence to translate")
    tr.add_argument("--beam", type=_positive_int, default=1, help="beam size (default 1: greedy decoding)")
    tr.add_argument("--length-penalty", type=float, default=1.0,
                    help="beam search ranks hypotheses by log p / len^A (default 1.0)")
    return parser


def _list() -> int:
    reg = registry.discover()
    width = max((len(n) for n in reg), default=0)
    for name, exp in reg.items():
        print(f"{name:<{width}}  {exp.help}")
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


def _run(opts: argparse.Namespace) -> int:
    from handgrad.engine.random import manual_seed

    exp = registry.get(opts.experiment)
    defaults = {**exp.defaults, **(exp.quick_defaults if opts.quick else {})}
    for key, value in defaults.items():
        if getattr(opts, key, None) is None:
            setattr(opts, key, value)
    if opts.out is None:
        opts.out = os.path.join("runs", exp.name)
    if opts.no_progress:
        opts.progress = False
    else:
        opts.progress = None  # auto: bars only on a TTY
    os.makedirs(opts.out, exist_ok=True)
    manual_seed(opts.seed)
    start = time.perf_counter()
    results = exp(opts) or {}
    elapsed = time.perf_counter() - start
    record = {
        "experiment": exp.name,
        **_jsonable(results),
        "wall_time_s": round(elapsed, 2),
        "options": _jsonable({k: v for k, v in vars(opts).items() if k not in ("command",)}),
    }
    path = os.path.join(opts.out, "results.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"results: {path}")
    if results.get("interrupted"):
        print(f"handgrad run {exp.name}: interrupted; the results are for the weights kept so far", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``handgrad`` console script; returns the exit status."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    show_tb = os.environ.get("HANDGRAD_TRACEBACK", "") not in ("", "0")
    if opts.command == "list":
        return _list()
    if opts.command == "translate":
        return _translate(opts, show_tb)
    prog = f"handgrad run {opts.experiment}"
    try:
        return _run(opts)
    except (registry.ExperimentError, FileNotFoundError) as e:
        if show_tb:
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if show_tb:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _translate(opts: argparse.Namespace, show_tb: bool) -> int:
    from handgrad.seq2seq.translator import Translator, TranslatorError

    prog = "handgrad translate"
    try:
        tr = Translator.load(opts.model)
        unknown = list(dict.fromkeys(tr.encode(opts.text)[2]))
        if unknown:
            print(f"{prog}: warning: not in the vocabulary, translated as <unk>: {' '.join(map(repr, unknown))}",
                  file=sys.stderr)
        print(tr.translate(opts.text, beam_size=opts.beam, length_penalty=opts.length_penalty))
    except (TranslatorError, FileNotFoundError) as e:
        if show_tb:
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e) if not isinstance(e, FileNotFoundError) or not e.filename else f"{e.strerror}: {e.filename}"
    return " ".join(text.split()) or type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
