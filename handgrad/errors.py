"""Error types that the library raises for problems a user can cause and fix.

They live in the library (not in ``handgrad.cli``) so that library code can raise them without importing the
command line; the command line catches them and prints one line with exit status 2.
"""

from __future__ import annotations

__all__ = ["ExperimentError"]


class ExperimentError(Exception):
    """A user-facing problem in a run (bad option combination, missing or unreadable data, a checkpoint that
    does not fit): ``handgrad run`` prints it on one line and exits with status 2 instead of a traceback."""
