"""Date normalisation pairs: a date written in some locale's style -> ISO 8601 (``1987-03-14``).

Generated offline from the CLDR data shipped in the ``babel`` package: ``format_date`` in the ``full``,
``long``, ``medium`` and ``short`` styles of many locales ("Samstag, 14. März 1987", "14/3/87",
"sábado, 14 de marzo de 1987"). Dates are drawn from 1950-2049 so that two-digit years are unambiguous
(yy >= 50 -> 19yy).

Only locales whose numeric styles put the day before the month (or the year first) are used, so that
"3/4/87" always means 3 April: month-first locales (en_US, ...) would make numeric dates ambiguous for a
model that is not told the locale. Locales are split by name, not by example: the held-out locales are
regional variants whose language is also seen in training through another region (en_AU held out, en_GB
seen), so month and weekday names are learnable while the exact formats are new.
"""

from __future__ import annotations

import datetime
import random
from collections import defaultdict
from dataclasses import dataclass

STYLES = ("full", "long", "medium", "short")
_START = datetime.date(1950, 1, 1).toordinal()
_END = datetime.date(2049, 12, 31).toordinal()


def _babel():
    try:
        from babel import Locale, localedata
        from babel.dates import format_date
    except ImportError as e:  # pragma: no cover - babel is a dependency
        raise ImportError("the dates data set needs the 'babel' package: pip install babel") from e
    return Locale, localedata, format_date


def _day_first_ok(locale: str) -> bool:
    """True if the locale writes 3 April 2011 with ASCII digits and never month-before-day in numbers."""
    _, _, format_date = _babel()
    probe = datetime.date(2011, 4, 3)
    for style in STYLES:
        s = format_date(probe, style, locale=locale)
        if any(ch.isdigit() and not ch.isascii() for ch in s):
            return False
        digits = [tok for tok in _numbers(s)]
        if "4" in digits and "3" in digits and digits.index("4") < digits.index("3") and digits[0] != "2011":
            return False  # month before day
    return True


def _numbers(s: str) -> list[str]:
    out, cur = [], ""
    for ch in s:
        if ch.isdigit():
            cur += ch
        elif cur:
            out.append(cur.lstrip("0") or "0")
            cur = ""
    if cur:
        out.append(cur.lstrip("0") or "0")
    return out


def candidate_locales(latin_only: bool = True) -> list[str]:
    """Region-specific locales (``ll_RR``) usable for the task, sorted by name."""
    Locale, localedata, _ = _babel()
    out = []
    for name in sorted(localedata.locale_identifiers()):
        parts = name.split("_")
        if len(parts) != 2 or not parts[1].isalpha() or not parts[1].isupper():
            continue
        try:
            loc = Locale.parse(name)
        except Exception:
            continue
        if latin_only and not all(
            ch.isascii() or "LATIN" in _uname(ch) for ch in "".join(loc.months["format"]["wide"].values())
        ):
            continue
        if _day_first_ok(name):
            out.append(name)
    return out


def _uname(ch: str) -> str:
    import unicodedata

    return unicodedata.name(ch, "")


@dataclass
class DateSplit:
    """Source texts, ISO targets and the locale of each pair, for one split."""

    sources: list[str]
    targets: list[str]
    locales: list[str]


def locale_split(locales: list[str], held_out_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out a fraction of each language's regional variants, keeping at least one in training."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for loc in locales:
        by_lang[loc.split("_")[0]].append(loc)
    rng = random.Random(seed)
    train, test = [], []
    for lang in sorted(by_lang):
        variants = sorted(by_lang[lang])
        rng.shuffle(variants)
        k = int(round(held_out_fraction * len(variants))) if len(variants) > 1 else 0
        k = min(k, len(variants) - 1)
        test += variants[:k]
        train += variants[k:]
    return sorted(train), sorted(test)


def make_pairs(locales: list[str], n: int, seed: int = 0) -> DateSplit:
    """``n`` random (date text, ISO date) pairs over the given locales and all four styles."""
    _, _, format_date = _babel()
    rng = random.Random(seed)
    src, tgt, locs = [], [], []
    for _ in range(n):
        d = datetime.date.fromordinal(rng.randint(_START, _END))
        loc = rng.choice(locales)
        style = rng.choice(STYLES)
        src.append(format_date(d, style, locale=loc).replace("\u202f", " ").replace("\xa0", " "))
        tgt.append(d.isoformat())
        locs.append(loc)
    return DateSplit(src, tgt, locs)


def load_dates(
    n_train: int = 40000, n_val: int = 2000, n_test: int = 4000, seed: int = 0, latin_only: bool = True
) -> dict[str, DateSplit]:
    """Train/val pairs from the training locales, test pairs from the held-out locales (new dates too)."""
    train_locs, test_locs = locale_split(candidate_locales(latin_only), seed=seed)
    return {
        "train": make_pairs(train_locs, n_train, seed=seed + 1),
        "val": make_pairs(train_locs, n_val, seed=seed + 2),
        "test": make_pairs(test_locs, n_test, seed=seed + 3),
        "train_locales": train_locs,  # type: ignore[dict-item]
        "test_locales": test_locs,  # type: ignore[dict-item]
    }
