"""One seeded generator for everything random in handgrad: ``manual_seed(n)`` makes a run reproducible."""

from __future__ import annotations

import random as _pyrandom

import numpy

_rng = numpy.random.default_rng()


def manual_seed(seed: int) -> numpy.random.Generator:
    """Seed handgrad's generator (used by init, dropout, randn, DataLoader shuffling) and Python's."""
    global _rng
    _rng = numpy.random.default_rng(int(seed))
    _pyrandom.seed(int(seed))
    return _rng


def get_rng() -> numpy.random.Generator:
    return _rng
