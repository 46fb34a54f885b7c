"""``handgrad``: list, run and report the experiments, and translate with a saved translator.

    handgrad list
    handgrad run NAME [--epochs N] [--batch-size N] [--lr X] [--seed N] [--out DIR] [--quick]
                      [--data PATH] [--resume CKPT] [--threads N] [--no-progress] [experiment options]
    handgrad translate MODEL "sentence" [--beam K] [--length-penalty A]
    handgrad report [RUNS_DIR] [--output FILE]

Only the common options an experiment honours are offered (the table in ``handgrad/cli/registry.py`` says
which); the others are refused with one line. A run writes into its out dir (default ``runs/NAME/``, or
``runs/NAME-quick/`` under ``--quick``) the files the registry lists for it plus ``results.json`` (the final
metrics, the options, the data used and the BLAS threads). Every error a user can cause ends with one line on
stderr and exit status 2, never a traceback (set ``HANDGRAD_TRACEBACK=1`` to see one anyway); a failed run
leaves no empty out dir behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from handgrad.cli import registry
from handgrad.cli.threads import blas_threads
from handgrad.errors import ExperimentError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "out": "--out",
          "quick": "--quick", "data": "--data", "resume": "--resume"}


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a single line (``prog: error: message``) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        m = re.match(r"argument experiment: invalid choice: '([^']*)'", message)
        if m:
            message = f"unknown experiment '{m.group(1)}' (see `handgrad list`)"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _escape(text: str) -> str:
    """argparse %-formats help texts: a bare ``%`` ('90% accuracy') must be doubled."""
    return text.replace("%", "%%")


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
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


class _Refused(argparse.Action):
    """A common option that this experiment does not honour: refuse it instead of ignoring it."""

    def __init__(self, option_strings: list[str], dest: str, experiment: str = "", why: str = "", **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=kw.pop("nargs", None), help=argparse.SUPPRESS, **kw)
        self.experiment, self.why = experiment, why

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        why = f": {self.why}" if self.why else ""
        parser.error(f"{option} is not supported by {self.experiment}{why} "
                     f"(see `handgrad run {self.experiment} --help`)")


def add_common_arguments(p: argparse.ArgumentParser, entry: registry.ExperimentEntry | None = None) -> None:
    """The common options (``None`` means: the experiment's own default). With ``entry``, only those it
    honours are offered; the others are refused with a one-line error."""
    offered = set(registry.COMMON_OPTIONS) if entry is None else set(entry.options)
    missing = [_FLAGS[o] for o in registry.COMMON_OPTIONS if o not in offered]
    desc = f"not offered by {entry.name}: {', '.join(missing)}" if entry is not None and missing else None
    g = p.add_argument_group("common options", desc)
    specs: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
        "epochs": ((), dict(type=_positive_int, default=None, help="maximum number of epochs")),
        "batch_size": ((), dict(type=_positive_int, default=None, help="mini-batch size")),
        "lr": ((), dict(type=_positive_float, default=None, help="learning rate")),
        "seed": ((), dict(type=_non_negative_int, default=0, help="random seed (default 0)")),
        "out": ((), dict(default=None, metavar="DIR", help="output directory (default runs/NAME, runs/NAME-quick "
                                                           "under --quick)")),
        "quick": ((), dict(action="store_true", help="a tiny subset and 1-2 epochs: a smoke test in seconds")),
        "data": ((), dict(default=None, metavar="PATH", help="the dataset's file or folder (default: the installed "
                                                             "or bundled one)")),
        "resume": ((), dict(default=None, metavar="CKPT", help="continue training from this checkpoint")),
    }
    for name in registry.COMMON_OPTIONS:
        _, kw = specs[name]
        if name in offered:
            g.add_argument(_FLAGS[name], **kw)
        else:
            nargs = 0 if kw.get("action") == "store_true" else None
            p.add_argument(_FLAGS[name], action=_Refused, experiment=entry.name if entry else "", nargs=nargs,
                           why=entry.why.get(name, "") if entry else "", default=None)
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="BLAS threads (default: the free cores, from the load average; 1 on a busy machine; "
                        "OMP_NUM_THREADS/OPENBLAS_NUM_THREADS win if set)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway without a TTY)")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: start with `mpiexec -n N handgrad run ...` (as root add "
                        "--allow-run-as-root); --batch-size is then the global batch (handgrad/cli/distributed.py)")


def _selected_experiment(argv: Sequence[str]) -> str | None:
    """NAME in ``handgrad run NAME ...`` (the only experiment module the parser has to import)."""
    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 2 and words[0] == "run" and words[1] in registry.EXPERIMENTS:
        return words[1]
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; for ``run NAME`` it imports NAME's module (only it) to add NAME's own options."""
    from handgrad import __version__

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog="handgrad", description="handgrad: hand-written backprop on NumPy. Run an experiment.")
    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("list", help="list the experiments with one-line descriptions")
    run = sub.add_parser("run", help="run an experiment: handgrad run NAME [options]")
    exps = run.add_subparsers(dest="experiment", metavar="experiment", parser_class=_Parser)
    exps.required = True
    selected = _selected_experiment(argv)
    for name, entry in registry.EXPERIMENTS.items():
        ep = exps.add_parser(name, help=_escape(entry.help), description=_escape(entry.help))
        if name != selected:
            continue
        add_common_arguments(ep, entry)
        loaded = registry.load(name)
        if loaded.add_arguments is not None:
            loaded.add_arguments(ep.add_argument_group(f"{name} options"))
    tr = sub.add_parser("translate", help="translate a sentence with a translator saved by a translate-* run")
    tr.add_argument("model", help="translator file (e.g. runs/translate-dates/translator.safetensors)")
    tr.add_argument("text", help="the sentence to translate")
    tr.add_argument("--beam", type=_positive_int, default=1, help="beam size (default 1: greedy decoding)")
    tr.add_argument("--length-penalty", type=_finite_float, default=1.0,
                    help="beam search ranks hypotheses by log p / len^A (default 1.0)")
    rp = sub.add_parser("report", help="one static HTML page with every run's results and figures")
    rp.add_argument("runs_dir", nargs="?", default="runs", help="folder holding the runs (default runs)")
    rp.add_argument("--output", default=None, metavar="FILE", help="the page (default RUNS_DIR/report.html)")
    from handgrad.cli import detect, track

    track.add_parser(sub)
    detect.add_parser(sub)
    return parser


def _list() -> int:
    width = max((len(n) for n in registry.EXPERIMENTS), default=0)
    for name, entry in registry.EXPERIMENTS.items():
        print(f"{name:<{width}}  {entry.help}")
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


class RunOptions(argparse.Namespace):
    """The parsed options handed to an experiment; remembers which common options the experiment read, so the
    runner can check that every option it offers is honoured (an option never read is silently ignored)."""

    def __getattribute__(self, name: str) -> Any:
        if name in registry.COMMON_OPTIONS:
            object.__getattribute__(self, "__dict__").setdefault("_read", set()).add(name)
        return object.__getattribute__(self, name)


def _check_resume(path: str, name: str) -> None:
    """Refuse a ``--resume`` file that cannot be a checkpoint of this experiment before anything runs."""
    from handgrad.serialization import CheckpointError, load

    if not os.path.exists(path):
        raise ExperimentError(f"--resume: no checkpoint at {path}")
    if os.path.isdir(path):
        raise ExperimentError(f"--resume: {path} is a directory, not a checkpoint file")
    try:
        state = load(path)
    except CheckpointError as e:  # already says what is wrong with the file: do not say it twice
        raise ExperimentError(f"--resume: {_one_line(e).removeprefix('handgrad.load: ')}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExperimentError(f"--resume: {path} is not a readable handgrad checkpoint ({_one_line(e)})") from e
    if not isinstance(state, dict):
        raise ExperimentError(f"--resume: {path} is not a training checkpoint")
    saved = state.get("run_name")  # Trainer(run_name=NAME) checkpoints
    if saved is not None and saved != name:
        raise ExperimentError(f"--resume: {path} is a checkpoint of {saved}, not of {name}")


def _remove_if_empty(folder: str) -> None:
    """Remove ``folder`` if it (recursively) holds no file: a failed run leaves nothing behind."""
    if not os.path.isdir(folder):
        return
    for _root, _dirs, files in os.walk(folder):
        if files:
            return
    shutil.rmtree(folder, ignore_errors=True)


def _run(opts: argparse.Namespace) -> int:
    from handgrad.engine.random import manual_seed

    loaded = registry.load(opts.experiment)
    entry = loaded.entry
    defaults = {**entry.defaults, **(entry.quick_defaults if opts.quick else {})}
    for key, value in defaults.items():
        if getattr(opts, key, None) is None:
            setattr(opts, key, value)
    if opts.out is None:
        opts.out = os.path.join("runs", entry.quick_name if opts.quick else entry.name)
    opts.progress = False if opts.no_progress else None  # None: bars only on a TTY
    if getattr(opts, "resume", None) is not None:
        _check_resume(opts.resume, entry.name)
    if getattr(opts, "data", None) is not None and not os.path.exists(opts.data):
        raise ExperimentError(f"--data: no such file or folder: {opts.data}")
    created = not os.path.exists(opts.out)
    os.makedirs(opts.out, exist_ok=True)
    ok = False
    try:
        with blas_threads(opts.threads) as threads:
            manual_seed(opts.seed)
            run_opts = RunOptions(**{k: v for k, v in vars(opts).items() if k != "command"})
            start = time.perf_counter()
            results = loaded.run(run_opts) or {}
            elapsed = time.perf_counter() - start
        unread = sorted(o for o in entry.options - registry.ALWAYS if o not in vars(run_opts).get("_read", set()))
        if unread:  # a bug in the table or the experiment: say so rather than pretend
            print(f"handgrad run {entry.name}: warning: the experiment never read "
                  f"{', '.join(_FLAGS[o] for o in unread)}", file=sys.stderr)
        data = results.pop("data", None)
        if data is None and getattr(opts, "data", None) is not None:
            from handgrad.experiments._common import data_record

            data = data_record(opts.data)
        record = {
            "experiment": entry.name,
            **_jsonable(results),
            "data": _jsonable(data),
            "interrupted": bool(results.get("interrupted", False)),
            "wall_time_s": round(elapsed, 2),
            "blas_threads": threads,
            "options": _jsonable({k: v for k, v in vars(run_opts).items() if not k.startswith("_")}),
        }
        path = os.path.join(opts.out, "results.json")
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
        ok = True
    finally:
        if not ok and created:
            _remove_if_empty(opts.out)
    print(f"results: {path}")
    if results.get("interrupted"):
        ckpt = os.path.join(opts.out, "interrupted.safetensors")
        hint = (f"; continue with: handgrad run {entry.name} --resume {ckpt}"
                if "resume" in entry.options and os.path.exists(ckpt) else "")
        print(f"handgrad run {entry.name}: interrupted; the results are for the weights kept so far{hint}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from handgrad.serialization import CheckpointError

    return (ExperimentError, CheckpointError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``handgrad`` console script; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # ``handgrad list | head``: the reader went away; stop quietly, as Unix tools do, and keep
        # Python from complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    opts = parser.parse_args(argv)
    show_tb = os.environ.get("HANDGRAD_TRACEBACK", "") not in ("", "0")
    if opts.command == "list":
        return _list()
    if opts.command == "translate":
        return _guarded("handgrad translate", show_tb, lambda: _translate(opts))
    if opts.command == "report":
        from handgrad.cli.report import write_report

        def report() -> int:
            print(f"report: {write_report(opts.runs_dir, opts.output)}")
            return 0

        return _guarded("handgrad report", show_tb, report)
    if opts.command == "track":
        from handgrad.cli import track

        return _guarded("handgrad track", show_tb, lambda: track.run(opts))
    if opts.command == "detect":
        from handgrad.cli import detect

        return _guarded("handgrad detect", show_tb, lambda: detect.run(opts))
    if getattr(opts, "distributed", False):  # every rank runs this; an error on any rank stops them all
        from handgrad.cli.distributed import run_distributed

        return _guarded(f"handgrad run {opts.experiment}", show_tb,
                        lambda: run_distributed(opts, lambda: _run(opts), _user_errors()))
    return _guarded(f"handgrad run {opts.experiment}", show_tb, lambda: _run(opts))


def _guarded(prog: str, show_tb: bool, fn: Any) -> int:
    try:
        return fn()
    except _user_errors() as e:
        if show_tb:
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if show_tb:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _translate(opts: argparse.Namespace) -> int:
    from handgrad.seq2seq.translator import Translator, TranslatorError

    prog = "handgrad translate"
    try:
        tr = Translator.load(opts.model)
        unknown = list(dict.fromkeys(tr.encode(opts.text)[2]))
        if unknown:
            print(f"{prog}: warning: not in the vocabulary, translated as <unk>: {' '.join(map(repr, unknown))}",
                  file=sys.stderr)
        print(tr.translate(opts.text, beam_size=opts.beam, length_penalty=opts.length_penalty))
    except TranslatorError as e:  # a bad model file, an empty sentence, ...: one line
        raise ExperimentError(str(e)) from e
    return 0


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.strerror}: {e.filename}"
    else:
        text = str(e)
    return " ".join(text.split()) or type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
