"""Experiments run by ``handgrad run NAME``: one module per experiment, each with ``run(opts)`` and optionally
``add_arguments(parser)``. They are listed in the static table of ``handgrad/cli/registry.py`` (its docstring
says how to add one); ``handgrad run NAME`` imports only NAME's module. Shared helpers live in
``handgrad/experiments/_common.py``. The library (everything outside ``cli/`` and ``experiments/``) never
imports this package.
"""
