"""The README's promises: the two set-up commands (and CI running exactly the second), and the five-minute
tour, whose Python blocks are run here in order, in a scratch folder."""

from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_setup_commands_come_first_and_ci_runs_the_test_one():
    text = readme()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert blocks[0].strip() == "bash setup.sh && handgrad run lenet-fashion"
    assert blocks[1].strip() == "bash setup.sh --test && python -m pytest"
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert ci[-1] == "bash setup.sh --test && python -m pytest"


def test_the_tour_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = re.findall(r"```python\n(.*?)```", readme(), flags=re.S)
    assert len(code) >= 5
    namespace: dict = {}
    exec(compile("\n".join(code), "README.md", "exec"), namespace)
    history, trainer = namespace["history"], namespace["trainer"]
    es = history.meta["early_stopping"]
    assert 1 <= es["best_epoch"] <= len(history) <= 30
    assert trainer.evaluate(namespace["val"])["accuracy"] > 0.8  # the 3-class rule is learnt
    for f in ("history.csv", "history.json", "best.safetensors", "last.safetensors", "learning_curves.png",
              "model.safetensors"):
        assert (tmp_path / "runs" / "tour" / f).exists(), f
    out = capsys.readouterr().out
    assert out.startswith("tensor([[2., 4.],\n        [6., 8.]]"), out  # the first print: x.grad (rows aligned)


def test_tour_autograd_numbers():
    import handgrad

    x = handgrad.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [[2.0, 4.0], [6.0, 8.0]]


@pytest.mark.parametrize("path", ["CONTRIBUTING.md", "handgrad/data/README.md"])
def test_linked_files_exist(path):
    assert f"]({path})" in readme()
    assert os.path.exists(os.path.join(REPO, path))
