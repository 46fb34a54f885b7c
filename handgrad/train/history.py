"""``History``: one row of logs per epoch, kept in memory and written as CSV and JSON.

Each row is the dict the ``Trainer`` logs at the end of an epoch, e.g.
``{"epoch": 3, "loss": 0.41, "accuracy": 0.85, "val_loss": 0.40, "val_accuracy": 0.86, "lr": 0.001,
"time": 12.3}``. ``history["val_loss"]`` is that column as a list (``None`` where a row lacks it), and
``history.history`` is the whole table as ``{column: [values]}`` (Keras' spelling). ``meta`` holds
facts about the run that are not per epoch (the early-stopping point, whether it was interrupted).
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any


class History:
    """The per-epoch logs of a training run (epochs are numbered from 1)."""

    def __init__(self, rows: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]
        self.meta: dict[str, Any] = dict(meta or {})

    # -- reading ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Any:
        return iter(self.rows)

    @property
    def columns(self) -> list[str]:
        """Column names in first-seen order (``epoch`` first)."""
        cols: list[str] = []
        for r in self.rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        return cols

    def __getitem__(self, key: str) -> list[Any]:
        if not any(key in r for r in self.rows):
            raise KeyError(f"History has no column {key!r}; columns: {', '.join(self.columns) or '(empty)'}")
        return [r.get(key) for r in self.rows]

    def __contains__(self, key: str) -> bool:
        return any(key in r for r in self.rows)

    @property
    def history(self) -> dict[str, list[Any]]:
        return {c: self[c] for c in self.columns}

    @property
    def epochs(self) -> list[int]:
        return [int(r["epoch"]) for r in self.rows]

    def best(self, monitor: str = "val_loss", mode: str = "min") -> tuple[int, float]:
        """``(epoch, value)`` of the best ``monitor`` value (the first one on ties; NaN never wins)."""
        if mode not in ("min", "max"):
            raise ValueError(f"History.best: mode must be 'min' or 'max', got {mode!r}")
        best_e, best_v = -1, math.nan
        for r in self.rows:
            v = r.get(monitor)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if best_e < 0 or (v < best_v if mode == "min" else v > best_v):
                best_e, best_v = int(r["epoch"]), float(v)
        if best_e < 0:
            raise KeyError(f"History.best: no values of {monitor!r}; columns: {', '.join(self.columns)}")
        return best_e, best_v

    # -- writing ------------------------------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def to_csv(self, path: str) -> None:
        """Write the table as CSV (header = columns; empty cell where a row lacks a column)."""
        cols = self.columns
        tmp = f"{path}.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in self.rows:
                w.writerow(["" if r.get(c) is None else _fmt(r[c]) for c in cols])
        os.replace(tmp, path)  # a reader never sees half a file

    def to_json(self, path: str) -> None:
        """Write ``{"columns": [...], "rows": [...], "meta": {...}}`` as JSON."""
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"columns": self.columns, "rows": self.rows, "meta": self.meta}, f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, path: str) -> History:
        with open(path) as f:
            d = json.load(f)
        return cls(d.get("rows", []), d.get("meta", {}))

    @classmethod
    def from_csv(cls, path: str) -> History:
        rows = []
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                rows.append({k: _parse(v) for k, v in r.items() if v != ""})
        return cls(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "meta": dict(self.meta)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.meta = dict(state.get("meta", {}))

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, columns={self.columns})"


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # full precision, so the CSV round-trips
    return v


def _parse(s: str) -> Any:
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s
