"""One seeded generator per device: ``manual_seed(n)`` makes a run reproducible on every device.

``get_rng()`` is the CPU's NumPy ``Generator`` (init, data shuffling, host-side sampling); ``get_rng(device)``
is the generator of ``device``, which draws arrays where that device keeps its data (CuPy's ``default_rng``
on a GPU, the strict device's own), so dropout masks are made where the activations live. Each device's
stream is its own: seeding makes each reproducible, not equal across devices. Generators are per process,
shared by threads (like PyTorch's default generators).
"""

from __future__ import annotations

import random as _pyrandom
from typing import Any

import numpy

from handgrad.engine.backend import CPU, Device, DeviceLike, get_device

_seed: list[int | None] = [None]  # the last manual_seed, for generators of devices first used after it
_generators: dict[Device, Any] = {CPU: numpy.random.default_rng()}


def manual_seed(seed: int) -> numpy.random.Generator:
    """Seed every device's generator (used by init, dropout, randn, DataLoader shuffling) and Python's.
    Returns the CPU generator."""
    _seed[0] = int(seed)
    _generators.clear()
    _generators[CPU] = numpy.random.default_rng(int(seed))
    _pyrandom.seed(int(seed))
    return _generators[CPU]


def get_rng(device: DeviceLike = None) -> Any:
    """The generator of ``device`` (default: the CPU's NumPy ``Generator``), created from the last
    ``manual_seed`` on first use."""
    dev = CPU if device is None else get_device(device)
    g = _generators.get(dev)
    if g is None:
        g = _generators[dev] = _new_generator(dev, _seed[0])
    return g


def _new_generator(dev: Device, seed: int | None) -> Any:
    if dev.type == "cpu":
        return numpy.random.default_rng(seed)
    if dev.type == "strict":
        from handgrad.engine._strict import Generator

        return Generator(seed)
    import cupy  # type: ignore[import-not-found]  # pragma: no cover - needs a GPU

    with cupy.cuda.Device(dev.index):  # pragma: no cover - needs a GPU
        return cupy.random.default_rng(seed)
