"""English-Spanish sentence pairs: Bible verses aligned by reference.

Sources (public domain, Debian packages installed by ``setup.sh``): the World English Bible
(``sword-text-web``, module ``engWEB2015eb``) and the Reina-Valera 1909 (``sword-text-sparv``, module
``spaRV1909eb``), printed as plain text by SWORD's ``diatheke``. Verses are matched by book, chapter and
verse (31,081 pairs). Clean-up: Strong's number tags (``<H0430>``, ``<G5547>``) are removed (the English is
printed with them so that words around them keep their spaces), whitespace is normalised, and pairs whose
word counts differ by more than a factor of 2.5 are dropped (these are mostly Psalm headings that one
edition glues to a verse).
The aligned pairs are cached as TSV in the handgrad data dir (``$HANDGRAD_DATA``, default
``~/.cache/handgrad``) so diatheke runs once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

MODULES = {"en": "engWEB2015eb", "es": "spaRV1909eb"}
_VERSE = re.compile(r"^\s*((?:[1-3] )?[A-Z][A-Za-z ]*?) (\d+):(\d+):\s?(.*)$")
_TAG = re.compile(r"\s*<[GH]\d+[a-z]?>")


def data_dir() -> Path:
    return Path(os.environ.get("HANDGRAD_DATA", Path.home() / ".cache" / "handgrad"))


def _run_diatheke(module: str) -> str:
    if shutil.which("diatheke") is None:
        raise FileNotFoundError(
            "the English-Spanish verse pairs need SWORD's diatheke and the WEB and RV1909 modules: "
            "run 'bash setup.sh' or 'apt-get install diatheke sword-text-web sword-text-sparv'"
        )
    res = subprocess.run(
        ["diatheke", "-b", module, "-f", "plain", "-o", "n", "-k", "Gen-Rev"],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0 or len(res.stdout) < 1000:
        raise FileNotFoundError(f"diatheke could not print module {module}: is its sword-text package installed?")
    return res.stdout


def parse_verses(text: str) -> dict[tuple[str, int, int], str]:
    """``{(book, chapter, verse): text}`` from diatheke's plain output (verses may span several lines)."""
    verses: dict[tuple[str, int, int], str] = {}
    key = None
    for line in text.splitlines():
        m = _VERSE.match(line)
        if m:
            key = (m.group(1), int(m.group(2)), int(m.group(3)))
            verses[key] = m.group(4)
        elif key is not None and line.strip() and not line.startswith("("):
            verses[key] += " " + line.strip()
    return {k: clean(v) for k, v in verses.items()}


def clean(s: str) -> str:
    s = _TAG.sub(" ", s)  # a space: the tag may be the only thing between two words
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r"\s+([,.;:!?])", r"\1", s)


def load_verse_pairs(max_words: int | None = None, refresh: bool = False) -> list[tuple[str, str, str]]:
    """``(english, spanish, reference)`` triples, optionally only those with at most ``max_words`` words
    on both sides."""
    cache = data_dir() / "bible_en_es.tsv"
    if refresh or not cache.exists():
        en = parse_verses(_run_diatheke(MODULES["en"]))
        es = parse_verses(_run_diatheke(MODULES["es"]))
        rows = []
        for k in en:
            if k in es and en[k] and es[k]:
                a, b = len(en[k].split()), len(es[k].split())
                if max(a, b) <= 2.5 * min(a, b):
                    rows.append((en[k], es[k], f"{k[0]} {k[1]}:{k[2]}"))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), encoding="utf-8")
        os.replace(tmp, cache)
    pairs = [tuple(line.split("\t")) for line in cache.read_text(encoding="utf-8").splitlines()]
    if max_words is not None:
        pairs = [p for p in pairs if len(p[0].split()) <= max_words and len(p[1].split()) <= max_words]
    return pairs  # type: ignore[return-value]
