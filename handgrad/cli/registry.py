"""The experiment registry behind ``handgrad list`` and ``handgrad run NAME``.

An experiment is a function that takes the parsed command-line options (an ``argparse.Namespace``) and
returns a dict of final metrics (written to ``results.json`` by the caller). It lives in
``handgrad/experiments/<name>.py`` and registers itself with the decorator::

    from handgrad.cli.registry import experiment

    def _options(p):                      # experiment-specific options (optional)
        p.add_argument("--width", type=int, default=256, help="hidden units")

    @experiment("mlp-fashion", "MLP 784-256-128-10 on Fashion-MNIST", arguments=_options,
                defaults={"epochs": 20, "batch_size": 128, "lr": 1e-3})
    def run(opts):
        ...
        return {"test_accuracy": 0.89}

``discover()`` imports every module of the ``handgrad.experiments`` package, so adding a file is enough:
no list to edit. ``defaults`` fills the options the user did not give (typically the common ``--epochs``,
``--batch-size``, ``--lr``, whose parser default is ``None``; also the experiment's own options if they
default to ``None``), and ``quick_defaults`` overrides those under ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ExperimentFn = Callable[[argparse.Namespace], "dict[str, Any] | None"]
ArgumentsFn = Callable[[Any], None]  # receives an argparse parser (or argument group)


class ExperimentError(Exception):
    """A user-facing problem (bad option combination, missing data): the CLI prints it on one line and
    exits with status 2 instead of showing a traceback."""


@dataclass
class Experiment:
    name: str
    help: str
    fn: ExperimentFn
    arguments: ArgumentsFn | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    quick_defaults: dict[str, Any] = field(default_factory=dict)

    def __call__(self, opts: argparse.Namespace) -> dict[str, Any] | None:
        return self.fn(opts)


_REGISTRY: dict[str, Experiment] = {}
_discovered = False


def experiment(
    name: str,
    help: str,
    arguments: ArgumentsFn | None = None,
    defaults: dict[str, Any] | None = None,
    quick_defaults: dict[str, Any] | None = None,
) -> Callable[[ExperimentFn], ExperimentFn]:
    """Register ``fn`` as ``handgrad run NAME``.

    ``help`` is the one-line description shown by ``handgrad list``; ``arguments(parser)`` adds the
    experiment's own options; ``defaults`` maps common option names (``epochs``, ``batch_size``, ``lr``,
    ...) to this experiment's default values, and ``quick_defaults`` overrides them under ``--quick``.
    """
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"experiment: name must be a non-empty word, got {name!r}")
    if "\n" in help:
        raise ValueError(f"experiment {name!r}: help must be one line")

    def decorator(fn: ExperimentFn) -> ExperimentFn:
        if name in _REGISTRY and _REGISTRY[name].fn.__module__ != fn.__module__:
            raise ValueError(
                f"experiment {name!r} is registered twice: in {_REGISTRY[name].fn.__module__} and {fn.__module__}"
            )
        _REGISTRY[name] = Experiment(name, help, fn, arguments, dict(defaults or {}), dict(quick_defaults or {}))
        return fn

    return decorator


def discover(package: str = "handgrad.experiments") -> dict[str, Experiment]:
    """Import every module of ``package`` (each registers its experiments) and return the registry."""
    global _discovered
    if not _discovered:
        pkg = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            importlib.import_module(f"{package}.{info.name}")
        _discovered = True
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Experiment:
    """The registered experiment called ``name``; ``KeyError`` with the known names otherwise."""
    reg = discover()
    if name not in reg:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(reg) or '(none)'}")
    return reg[name]
