"""The command line over every registered experiment: help, the common options (honoured or refused), bad
``--resume`` files, a missing ``--data``, a real ``--quick`` run (the files the registry promises, the data
record, every offered option read), the quick out dir, and resuming after Ctrl-C."""

from __future__ import annotations

import fnmatch
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from _markers import needs_fashion_mnist

from handgrad.cli import main as cli_main
from handgrad.cli import registry

REPO = pathlib.Path(__file__).resolve().parent.parent
NAMES = sorted(registry.EXPERIMENTS)
FLAGS = cli_main._FLAGS
REFUSED = [(n, o) for n in NAMES for o in registry.COMMON_OPTIONS if o not in registry.EXPERIMENTS[n].options]
RESUMABLE = [n for n in NAMES if "resume" in registry.EXPERIMENTS[n].options]
WITH_DATA = [n for n in NAMES if "data" in registry.EXPERIMENTS[n].options]
# --quick takes longer than ~10 s on an idle core (deepgum 44 s, clockwork-waveform 11 s; the detection and
# tracking runs 11-14 s on a loaded machine): in the slow suite here, and their own test files run a quick
# variant by default
SLOW_QUICK = {"deepgum", "clockwork-waveform", "fast-rcnn-scenes", "rcnn-scenes", "tracking-benchmark",
              "faster-rcnn-scenes", "mask-rcnn-scenes"}


def _one_line_exit_2(code, capsys, *needles):
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _main(args, capsys=None):
    try:
        return cli_main.main(args)
    except SystemExit as e:  # argparse's own exits (help, usage errors)
        return e.code


# -- help ---------------------------------------------------------------------------------------------------------
def test_run_help_lists_every_experiment_in_a_fresh_process():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "handgrad", "run", "--help"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    for name in NAMES:
        assert name in p.stdout
    assert "90% test accuracy" in p.stdout.replace("\n", " ").replace("  ", " ") or "90%" in p.stdout


@pytest.mark.parametrize("name", NAMES)
def test_experiment_help_offers_exactly_the_honoured_common_options(name, capsys):
    assert _main(["run", name, "--help"]) == 0
    out = capsys.readouterr().out
    entry = registry.EXPERIMENTS[name]
    common = out.split("common options:")[1].split(f"{name} options:")[0]
    listed = common.split("not offered by", 1)[-1].split("\n\n", 1)[-1] if "not offered by" in common else common
    offered = {line.split()[0] for line in listed.splitlines() if line.strip().startswith("--")}
    # process-level options every run has (BLAS threads, bars, data parallelism over MPI)
    assert {FLAGS[o] for o in entry.options} == offered - {"--threads", "--no-progress", "--distributed"}, common
    if entry.options != set(registry.COMMON_OPTIONS):
        assert f"not offered by {name}:" in common


@pytest.mark.parametrize(("name", "option"), REFUSED, ids=[f"{n}{FLAGS[o]}" for n, o in REFUSED])
def test_options_an_experiment_does_not_honour_are_refused(name, option, capsys):
    value = [] if option == "quick" else ["1"]
    code = _main(["run", name, FLAGS[option], *value])
    _one_line_exit_2(code, capsys, f"{FLAGS[option]} is not supported by {name}")


# -- bad --resume and --data: one line, exit 2, no out dir left ---------------------------------------------------
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    """A real Trainer checkpoint of another run, the same cut in half, a 6-byte text file and a folder."""
    import numpy

    from handgrad import nn, optim
    from handgrad.data import DataLoader, TensorDataset
    from handgrad.functional import mse_loss
    from handgrad.train import Trainer

    d = tmp_path_factory.mktemp("ckpts")
    model = nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(numpy.ones((4, 3), "float32"), numpy.ones((4, 1), "float32")), batch_size=2)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), mse_loss, run_name="some-other-experiment",
                      verbose=False)
    trainer.fit(loader, epochs=1)
    other = trainer.save_checkpoint(d / "other.safetensors")
    blob = pathlib.Path(other).read_bytes()
    (d / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    (d / "text.safetensors").write_text("hello\n")
    (d / "folder.safetensors").mkdir()
    return {"other experiment": (d / "other.safetensors", "some-other-experiment"),
            "truncated": (d / "truncated.safetensors", "not a readable handgrad checkpoint"),
            "6-byte text": (d / "text.safetensors", "not a readable handgrad checkpoint"),
            "directory": (d / "folder.safetensors", "is a directory"),
            "missing": (d / "missing.safetensors", "no checkpoint at")}


BAD_RESUME = ["other experiment", "truncated", "6-byte text", "directory", "missing"]


@pytest.mark.parametrize("variant", BAD_RESUME)
@pytest.mark.parametrize("name", RESUMABLE)
def test_a_bad_resume_file_is_one_line_and_exit_2(name, variant, bad_checkpoints, tmp_path, capsys):
    path, needle = bad_checkpoints[variant]
    out = tmp_path / "out"
    code = _main(["run", name, "--quick", "--no-progress", "--resume", str(path), "--out", str(out)])
    _one_line_exit_2(code, capsys, f"handgrad run {name}: error: --resume", needle)
    assert not out.exists()


@pytest.mark.parametrize("name", WITH_DATA)
def test_a_missing_data_path_is_one_line_and_exit_2(name, tmp_path, capsys):
    out = tmp_path / "out"
    code = _main(["run", name, "--quick", "--data", str(tmp_path / "nonexistent"), "--out", str(out)])
    _one_line_exit_2(code, capsys, f"handgrad run {name}: error: --data: no such file or folder")
    assert not out.exists()


# -- a real quick run of every experiment -------------------------------------------------------------------------
def _written(out: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_QUICK else n for n in NAMES])
def test_quick_run_writes_what_the_registry_says_and_reads_every_offered_option(name, tmp_path, capsys):
    from _markers import have_fashion_mnist

    out = tmp_path / name
    code = cli_main.main(["run", name, "--quick", "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    if code == 2 and "FashionMNIST: dataset not found" in captured.err and not have_fashion_mnist():
        pytest.skip("Fashion-MNIST is not installed (bash setup.sh installs it)")
    assert code == 0, captured.err[-2000:]
    assert "never read" not in captured.err, captured.err  # every offered common option is honoured
    files = _written(out)
    entry = registry.EXPERIMENTS[name]
    for pattern in ("results.json", *entry.writes):
        assert any(fnmatch.fnmatch(f, pattern) for f in files), (pattern, files)
    r = json.loads((out / "results.json").read_text())
    assert r["experiment"] == name and r["options"]["quick"] is True
    assert "data" in r and "blas_threads" in r
    if "data" in entry.options or (r["data"] and r["data"].get("path")):  # the files read: path + fingerprint
        assert r["data"]["path"] and len(r["data"]["fingerprint"]) == 12, r["data"]
    if name.endswith("-fashion") or name in ("noisy-labels",):
        assert "fashion-mnist" in str(r["data"]["path"]).lower(), r["data"]


def test_the_readme_says_what_each_experiment_writes():
    """The README's table of output files is the registry's ``writes``, experiment by experiment."""
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- writes-table -->")[1].split("<!-- /writes-table -->")[0]
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2] for line in section.splitlines()
            if line.startswith("| `")}
    assert set(rows) == set(NAMES), set(NAMES) ^ set(rows)
    for name in NAMES:
        listed = {w.strip().strip("`") for w in rows[name].replace("results.json", "").split(",") if w.strip()}
        assert listed == set(registry.EXPERIMENTS[name].writes), (name, listed)


@needs_fashion_mnist
def test_quick_writes_to_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main.main(["run", "mlp-fashion", "--quick", "--no-progress", "--epochs", "1"]) == 0
    assert (tmp_path / "runs" / "mlp-fashion-quick" / "results.json").exists()
    assert not (tmp_path / "runs" / "mlp-fashion").exists()
    r = json.loads((tmp_path / "runs" / "mlp-fashion-quick" / "results.json").read_text())
    assert r["options"]["val_size"] == r["n_val"] == 256  # what it used, not the full run's 6000


# -- Ctrl-C, then --resume: finishes with exit 0 and "interrupted": false ------------------------------------------
def _default_sigint() -> None:
    """In the child before exec: a suite started in the background inherits SIGINT ignored (see test_cli)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@needs_fashion_mnist
def test_resume_after_ctrl_c_finishes_cleanly(tmp_path):
    out = tmp_path / "mlp"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("HANDGRAD_TRACEBACK", None)
    cmd = [sys.executable, "-m", "handgrad", "run", "mlp-fashion", "--quick", "--no-progress", "--patience", "500",
           "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--epochs", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=_default_sigint)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 2/500"):
                proc.send_signal(signal.SIGINT)
                break
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert f"continue with: handgrad run mlp-fashion --resume {out / 'interrupted.safetensors'}" in stderr
    ckpt = out / "interrupted.safetensors"
    assert ckpt.exists()
    from handgrad.serialization import load

    done = int(load(ckpt)["epoch"])
    p = subprocess.run([*cmd, "--epochs", str(done + 2), "--resume", str(ckpt)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "interrupted" not in p.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["interrupted"] is False
    assert r["epochs_run"] == done + 2
    hist = json.loads((out / "history.json").read_text())
    assert not hist.get("meta", {}).get("interrupted")


def test_readme_translate_dates_locale_counts_are_what_the_pinned_babel_gives():
    from importlib.metadata import version

    import tomllib

    from handgrad.data.dates import candidate_locales, locale_split

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["experiments"]
    pinned = next(d.split("==")[1] for d in extra if d.startswith("babel=="))
    if version("babel") != pinned:
        pytest.skip(f"babel {version('babel')} is installed, the README's counts are for the pinned {pinned}")
    train, test = locale_split(candidate_locales(True), seed=0)
    row = next(line for line in (REPO / "README.md").read_text().splitlines()
               if line.startswith("| `handgrad run translate-dates`"))
    assert f"dates in {len(train) + len(test)} locales'" in row and f"from {len(test)} held-out locales" in row
    assert f"({len(train)} training locales)" in row and f"babel {pinned}" in row
