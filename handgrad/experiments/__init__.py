"""Experiments run by ``handgrad run NAME``: one module per experiment (or family), each registering itself
with ``@experiment(name, help)`` from ``handgrad.cli.registry``. ``handgrad.cli.registry.discover()`` imports
every module here, so adding an experiment is adding a file; nothing to list in this ``__init__``.
Shared helpers live in ``handgrad/experiments/_common.py``.
"""
