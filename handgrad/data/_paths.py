"""Where handgrad keeps data it fetched: ``$HANDGRAD_DATA``, else ``~/.cache/handgrad``."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_FILES = Path(__file__).resolve().parent / "files"


def data_dir() -> Path:
    """The handgrad data directory: ``$HANDGRAD_DATA`` if set, else ``~/.cache/handgrad`` (not created here)."""
    env = os.environ.get("HANDGRAD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "handgrad"
