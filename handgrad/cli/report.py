"""``handgrad report [RUNS_DIR]``: one static HTML page with every run's results and figures.

Every folder under RUNS_DIR that holds a ``results.json`` is a run. The page has a summary table (one row per
run: experiment, folder, the headline metrics, data fingerprint, wall time), then one section per run with
all its scalar results, the options it ran with (in a ``<details>`` element, which needs no JavaScript) and
every PNG figure of the run folder. Images are linked by relative paths, so the page works from the file
system (``file://``) or any static server; nothing on the page runs code.
"""

from __future__ import annotations

import datetime
import html
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handgrad.errors import ExperimentError

__all__ = ["find_runs", "render_report", "write_report"]

# metrics shown in the summary table when a run has them (in this order); the rest are in the run's section
HEADLINE = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "val_bits_per_char", "test_bleu",
            "bleu", "recall@1", "mAP@R", "epochs_run", "best_epoch")
_MAX_DEPTH = 4

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
td.other { max-width: 22em; overflow-wrap: anywhere; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
section { border-top: 2px solid #888; margin-top: 2em; padding-top: 0.5em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #555; }
.interrupted { color: #b00; font-weight: bold; }
"""


def find_runs(runs_dir: str | os.PathLike[str]) -> list[Path]:
    """The folders under ``runs_dir`` (itself included, up to 4 levels down) that hold a ``results.json``."""
    root = Path(runs_dir)
    found = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= _MAX_DEPTH:
            dirs[:] = []
        dirs.sort()
        if "results.json" in files:
            found.append(Path(folder))
    return sorted(found)


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        text = ", ".join(str(x) if not isinstance(x, (dict, list)) else json.dumps(x) for x in v)
        return html.escape(text if len(text) <= 400 else text[:400] + f" ... ({len(v)} items)")
    text = str(v)
    return html.escape(text if len(text) <= 400 else text[:400] + " ...")


def _cell(v: Any) -> str:
    cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
    return f"<td{cls}>{_fmt(v)}</td>"


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _read(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError) as e:
        return {"experiment": "?", "error": f"unreadable results.json: {e}"}
    return data if isinstance(data, dict) else {"experiment": "?", "error": "results.json is not an object"}


def render_report(runs_dir: str | os.PathLike[str], page_dir: str | os.PathLike[str] | None = None) -> str:
    """The HTML text of the report (image paths relative to ``page_dir``, default ``runs_dir``)."""
    root = Path(runs_dir)
    page_dir = Path(page_dir) if page_dir is not None else root
    runs = find_runs(root)
    results = [(folder, _read(folder)) for folder in runs]
    headline = [k for k in HEADLINE if any(k in r for _, r in results)]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>handgrad runs: {html.escape(str(root))}</title><style>{_STYLE}</style></head><body>",
           f"<h1>handgrad runs in <code>{html.escape(str(root))}</code></h1>",
           f"<p>{len(runs)} run(s); generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by "
           "<code>handgrad report</code>.</p>"]
    head = "".join(f"<th>{html.escape(h)}</th>"
                   for h in ("run", "experiment", *headline, "other test metrics", "data", "wall time (s)"))
    out.append(f"<h2>Summary</h2><table><tr>{head}</tr>")
    for i, (folder, r) in enumerate(results):
        rel = folder.relative_to(root).as_posix() or "."
        data = r.get("data") if isinstance(r.get("data"), dict) else {}
        flag = ' <span class="interrupted">interrupted</span>' if r.get("interrupted") else ""
        cells = "".join(_cell(r.get(k, "")) for k in headline)
        others = [(k, v) for k, v in _flatten({k: v for k, v in r.items() if k not in HEADLINE and k != "options"})
                  if "test" in k and not k.split(".")[-1].startswith(("n_", "target", "test_chars"))
                  and isinstance(v, (int, float)) and not isinstance(v, bool)][:4]
        cells += f"<td class=\"other\">{'<br>'.join(f'{html.escape(k)} {_fmt(v)}' for k, v in others)}</td>"
        out.append(f'<tr><td><a href="#run{i}">{html.escape(rel)}</a>{flag}</td>{_cell(r.get("experiment", "?"))}'
                   f'{cells}{_cell(data.get("fingerprint", ""))}{_cell(r.get("wall_time_s", ""))}</tr>')
    out.append("</table>")
    for i, (folder, r) in enumerate(results):
        rel = folder.relative_to(root).as_posix() or "."
        out.append(f'<section id="run{i}"><h2>{html.escape(rel)}: {html.escape(str(r.get("experiment", "?")))}</h2>')
        if r.get("interrupted"):
            out.append('<p class="interrupted">This run was interrupted: the results are for the weights kept.</p>')
        scalars = [(k, v) for k, v in _flatten({k: v for k, v in r.items() if k not in ("options", "history")})]
        out.append(_table(scalars))
        if isinstance(r.get("options"), dict):
            out.append(f"<details><summary>options</summary>{_table(list(_flatten(r['options'])))}</details>")
        pngs = sorted(p for p in folder.rglob("*.png") if p.is_file() and
                      (p.parent == folder or not (p.parent / "results.json").exists()))
        for png in pngs:
            src = Path(os.path.relpath(png, page_dir)).as_posix()
            cap = png.relative_to(folder).as_posix()
            out.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}">'
                       f"<figcaption>{html.escape(cap)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(runs_dir: str | os.PathLike[str] = "runs", output: str | os.PathLike[str] | None = None) -> str:
    """Write the page (default ``RUNS_DIR/report.html``) and return its path."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ExperimentError(f"{root} is not a folder (give the folder that holds the runs, default runs/)")
    if not find_runs(root):
        raise ExperimentError(f"no results.json under {root}: run an experiment first (handgrad run NAME)")
    path = Path(output) if output is not None else root / "report.html"
    if path.is_dir():
        raise ExperimentError(f"--output {path} is a folder; give a file name such as {path / 'report.html'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(root, path.parent), encoding="utf-8")
    return str(path)
