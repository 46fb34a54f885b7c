"""The ``handgrad`` console script: ``list``, ``run NAME``, ``translate``, ``report`` (see ``handgrad.cli.main``).

The experiments it runs are listed in the static table of ``handgrad.cli.registry``.
"""
