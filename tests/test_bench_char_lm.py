"""Smoke test of ``benchmarks/bench_char_lm.py`` (the equal-budget char-LM head-to-head of issue 11): a tiny
model for a 1-second budget per library; both sides train, are scored on held-out text and start equal."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_char_lm.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_char_lm", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_char_lm_runs_both_libraries_on_a_tiny_budget(capsys):
    bench = _load()
    args = bench._parse(["--budget", "1", "--threads", "1", "--hidden", "16", "--layers", "2", "--embed", "8",
                         "--batch-size", "8", "--bptt", "20", "--train-chars", "20000", "--val-chars", "2000",
                         "--block", "2"])
    rows = bench.main(args)
    out = capsys.readouterr().out
    assert "cpu:" in out and "same start" in out and "held-out bpc" in out
    assert [r["library"] for r in rows] == ["handgrad", "torch"]
    for r in rows:
        assert r["steps"] >= 1 and r["train_s"] >= 1.0
        assert r["chars"] == r["steps"] * 8 * 20
        assert math.isfinite(r["heldout_bpc"]) and 0.0 < r["heldout_bpc"] < math.log2(84) + 1.0


def test_torch_model_copies_handgrad_weights():
    """The PyTorch twin starts from handgrad's weights: every tensor equal after the copy."""
    import numpy as np

    bench = _load()
    from handgrad.recurrent.generation import RNNLanguageModel

    m = RNNLanguageModel(20, 8, 12, 2, dropout=0.1)
    t = bench.TorchCharLM(20, 8, 12, 2, 0.1)
    t.load_from_handgrad(m)
    sd = m.state_dict()
    np.testing.assert_array_equal(t.lstm.weight_hh_l1.detach().numpy(), np.asarray(sd["rnn.layers.1.weight_hh_l0"]))
    np.testing.assert_array_equal(t.embedding.weight.detach().numpy(), np.asarray(sd["embedding.weight"]))
