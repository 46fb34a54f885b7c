"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest

from handgrad.functional.rnn import _kernels


@pytest.fixture
def numpy_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the NumPy reference path instead of the compiled (numba) LSTM/GRU/col2im kernels.

    The compiled kernels agree with the NumPy code to a few ulps (``tests/test_recurrent_kernels.py``,
    ``tests/test_functional_cnn_kernels.py``), not bit for bit (their ``exp`` is not NumPy's). Tests that
    demand bit-identical numbers against NumPy-path results (another device runs the NumPy path; numbers
    pinned before the kernels existed) use this fixture so that they test what they are about.
    """
    monkeypatch.setattr(_kernels, "ENABLED", False)
