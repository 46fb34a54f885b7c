"""The device the test suite checks besides NumPy: ``HANDGRAD_TEST_DEVICE`` (default ``strict``).

``strict`` is the CuPy stand-in (``handgrad/engine/_strict.py``): it runs everywhere and refuses NumPy arrays
as CuPy does. On a machine with a GPU and CuPy, ``HANDGRAD_TEST_DEVICE=cuda python -m pytest ...`` runs the
same device checks on the GPU; ``HANDGRAD_TEST_DEVICE=cpu`` turns the device pass off.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import handgrad as hg

TEST_DEVICE = os.environ.get("HANDGRAD_TEST_DEVICE", "strict").strip().lower()
ON_DEVICE = TEST_DEVICE != "cpu"
# the strict device computes with NumPy itself: results equal the CPU's up to summation order; a GPU's
# kernels differ (cuBLAS, reductions): float64 results agree to ~1e-10
RTOL, ATOL = (1e-12, 1e-13) if TEST_DEVICE == "strict" else (1e-9, 1e-11)


def device() -> hg.Device:
    return hg.device(TEST_DEVICE)


def to_device(obj: Any) -> Any:
    """Float/int NumPy arrays and tensors (also inside tuples/lists) on the test device."""
    return hg.engine.backend.send(obj, TEST_DEVICE)


def assert_close_to_cpu(on_device: Any, on_cpu: Any, what: str = "", rtol: float = RTOL, atol: float = ATOL) -> None:
    """A device result (Tensor or array) against the CPU's, after an explicit copy to the host."""
    d = on_device.numpy() if isinstance(on_device, hg.Tensor) else hg.engine.backend.to_host(on_device)
    c = on_cpu.numpy() if isinstance(on_cpu, hg.Tensor) else np.asarray(on_cpu)
    np.testing.assert_allclose(d, c, rtol=rtol, atol=atol, err_msg=what)
