"""Reading and writing Trainer checkpoints: atomic writes, and one typed error for every bad file.

A Trainer checkpoint is a nested dict written by ``handgrad.save`` (safetensors)::

    {"format": "handgrad.trainer/1", "updater": "<updater class name>", "run_name": ..., "epoch": k,
     "model": ..., "optimizer": ..., "updater_state": ..., "history": ..., "callbacks": ...,
     "rng": <JSON of handgrad's generator>, ["scheduler": ...], ["loaders": ...]}

Writes go to a temporary file in the same folder that is then renamed over the target
(``handgrad.save`` does this), so a crash or Ctrl-C while saving never leaves half a checkpoint behind
and an older checkpoint at that path survives. A file that cannot be used -- missing, a folder,
truncated, not safetensors, not a Trainer checkpoint, written by another kind of run or for another
model -- raises :class:`~handgrad.serialization.CheckpointError` (a ``ValueError``) with a one-line
message; :class:`CheckpointNotFoundError` is also a ``FileNotFoundError``.
"""

from __future__ import annotations

import os
from typing import Any

from handgrad.serialization import CheckpointError

CHECKPOINT_FORMAT = "handgrad.trainer/1"

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "CheckpointNotFoundError", "read_checkpoint", "write_checkpoint"]


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the checkpoint path."""


def write_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> str:
    """Write ``state`` to ``path`` atomically (temporary file + rename), creating the folder; returns the path."""
    from handgrad.serialization import save

    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    save(state, path)
    return path


def read_checkpoint(path: str | os.PathLike[str], updater: str | None = None,
                    run_name: str | None = None) -> dict[str, Any]:
    """The state dict of the Trainer checkpoint at ``path``; a :class:`CheckpointError` if it is not one.

    ``updater``: the class name of the updater that will load it; a checkpoint written by another kind of
    update step (e.g. a translator's checkpoint given to a classifier) is refused, and so is one saved under
    another ``run_name`` (another experiment's).
    """
    from handgrad.serialization import load

    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointNotFoundError(f"Trainer: no checkpoint at {where}")
    try:
        state = load(where)
    except CheckpointError as e:
        raise CheckpointError(" ".join(str(e).split())) from e
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Trainer: cannot read {where} as a checkpoint ({type(e).__name__}: {e})") from e
    check_state(state, where, updater, run_name)
    return state


def check_state(state: Any, where: str, updater: str | None = None, run_name: str | None = None) -> None:
    """Refuse (CheckpointError) a dict that is not a complete Trainer checkpoint for ``updater``/``run_name``."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"Trainer: {where} is not a Trainer checkpoint (no format {CHECKPOINT_FORMAT!r})")
    missing = [k for k in ("epoch", "model", "history", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"Trainer: {where} is an incomplete Trainer checkpoint (missing {', '.join(missing)})")
    saved = state.get("updater")
    if updater is not None and saved is not None and saved != updater:
        raise CheckpointError(f"Trainer: {where} was written by a {saved} run; this run trains with a {updater}")
    saved_name = state.get("run_name")
    if run_name is not None and saved_name is not None and saved_name != run_name:
        raise CheckpointError(f"Trainer: {where} is a checkpoint of {saved_name}, not of {run_name}")


def check_model_state(model: Any, saved: Any, where: str) -> None:
    """Refuse (CheckpointError) model weights whose names or shapes differ from ``model``'s: the checkpoint of
    another experiment or of another configuration. Nothing is loaded in that case."""
    import numpy

    own = model.state_dict()
    if not isinstance(saved, dict):
        raise CheckpointError(f"Trainer: {where} holds no model weights")
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k} {tuple(numpy.shape(saved[k]))} vs {tuple(numpy.shape(v))}" for k, v in own.items()
              if k in saved and tuple(numpy.shape(saved[k])) != tuple(numpy.shape(v))]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise CheckpointError(f"Trainer: {where} is a checkpoint of another model or configuration: weights "
                              + "; ".join(parts))
