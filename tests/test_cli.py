"""The ``handgrad`` command line: list, run, one-line errors with exit status 2, and a real quick run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from handgrad.cli import main as cli_main
from handgrad.cli import registry
from handgrad.errors import ExperimentError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def handgrad(*args: str, cwd: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m handgrad ARGS`` in a fresh interpreter (exactly what the console script runs)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HANDGRAD_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "handgrad", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


def fashion_mnist_missing() -> str | None:
    try:
        from handgrad.data import FashionMNIST

        FashionMNIST(train=False)
    except FileNotFoundError as e:
        return f"Fashion-MNIST is not installed here (run `bash setup.sh`): {e}"
    return None


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip()
    assert "\n" not in err, err
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in err, err


# -- list ------------------------------------------------------------------------------------------------------
def test_list_shows_the_experiments_with_descriptions():
    p = handgrad("list")
    assert p.returncode == 0, p.stderr
    lines = {line.split()[0]: line for line in p.stdout.splitlines()}
    for name in ("lenet-fashion", "mlp-fashion", "early-stopping-fashion"):
        assert name in lines
    assert "LeNet" in lines["lenet-fashion"] and "90%" in lines["lenet-fashion"]


def test_console_script_is_the_same_program():
    exe = shutil.which("handgrad")
    if exe is None:
        pytest.skip("the `handgrad` console script is not installed (bash setup.sh installs it)")
    p = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == handgrad("list").stdout


def test_list_into_a_closed_pipe_is_quiet():
    # ``handgrad list | head -1``: the reader has gone (its end of the pipe is closed before the
    # program writes), so every write fails with EPIPE; no BrokenPipeError traceback, exit 0
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "handgrad", "list"], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_version_and_help():
    p = handgrad("--version")
    assert p.returncode == 0 and p.stdout.startswith("handgrad ")
    p = handgrad("run", "lenet-fashion", "--help")
    assert p.returncode == 0
    for opt in ("--epochs", "--batch-size", "--lr", "--seed", "--out", "--quick", "--data", "--resume", "--patience"):
        assert opt in p.stdout


# -- errors: one line, exit 2, no traceback --------------------------------------------------------------------
def test_bad_arguments_in_a_fresh_process_give_one_line_and_exit_2():
    assert_one_line_error(handgrad("run", "no-such-thing"), "unknown experiment 'no-such-thing'", "handgrad list")
    assert_one_line_error(handgrad("run", "lenet-fashion", "--epochs", "zero"),
                          "--epochs", "expected a positive integer, got 'zero'")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("frobnicate",), ("invalid choice: 'frobnicate'",)),
        ((), ("required: COMMAND",)),
        (("run",), ("required: experiment",)),
        (("run", "lenet-fashion", "--epochs", "0"), ("--epochs", "expected a positive integer, got '0'")),
        (("run", "lenet-fashion", "--lr", "-1"), ("--lr", "expected a positive number, got '-1'")),
        (("run", "lenet-fashion", "--lr", "nan"), ("--lr", "expected a positive number, got 'nan'")),
        (("run", "lenet-fashion", "--seed", "-3"), ("--seed", "expected a non-negative integer, got '-3'")),
        (("run", "lenet-fashion", "--bogus"), ("unrecognized arguments: --bogus",)),
        (("run", "mlp-fashion", "--hidden", "256,x"), ("--hidden", "comma-separated layer sizes")),
        (("translate", "m.safetensors", "hola", "--length-penalty", "nan"), ("--length-penalty",
                                                                           "expected a finite number, got 'nan'")),
        (("run", "vanishing-gradients", "--resume", "x.safetensors"), ("--resume is not supported by",)),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, needles, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main.main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("handgrad"), err
    for n in needles:
        assert n in err, err


def test_missing_data_gives_one_line_and_exit_2(tmp_path):
    p = handgrad("run", "lenet-fashion", "--quick", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert_one_line_error(p, "handgrad run lenet-fashion: error: --data: no such file or folder", "nowhere")
    assert not (tmp_path / "o").exists()  # a failed run leaves no empty out dir
    empty = tmp_path / "empty"
    empty.mkdir()
    p = handgrad("run", "lenet-fashion", "--quick", "--data", str(empty), "--out", str(tmp_path / "o"))
    assert_one_line_error(p, "handgrad run lenet-fashion: error: FashionMNIST: dataset not found", "empty")
    assert not (tmp_path / "o").exists()


def test_experiment_errors_give_one_line_and_exit_2(tmp_path, capsys):
    reason = fashion_mnist_missing()
    if reason:
        pytest.skip(reason)
    assert cli_main.main(["run", "lenet-fashion", "--quick", "--patience", "-1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "handgrad run lenet-fashion: error: --patience must be >= 0, got -1\n"
    assert cli_main.main(["run", "mlp-fashion", "--quick", "--resume", str(tmp_path / "none.safetensors"),
                          "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("handgrad run mlp-fashion: error: --resume: no checkpoint at") and err.count("\n") == 1


# -- real runs ---------------------------------------------------------------------------------------------------
def test_lenet_fashion_quick_runs_in_seconds_and_writes_its_files(tmp_path):
    reason = fashion_mnist_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "lenet"
    p = handgrad("run", "lenet-fashion", "--quick", "--out", str(out))
    assert p.returncode == 0, p.stderr
    for f in ("results.json", "history.csv", "history.json", "learning_curves.png", "best.safetensors",
              "last.safetensors"):
        assert (out / f).stat().st_size > 0, f
    r = json.loads((out / "results.json").read_text())
    assert r["experiment"] == "lenet-fashion" and r["epochs_run"] == 2
    assert (r["n_train"], r["n_val"], r["n_test"]) == (512, 256, 512)
    assert r["parameters"] == 32 * 25 + 32 + 64 * 32 * 25 + 64 + 1024 * 128 + 128 + 128 * 10 + 10
    assert 0.3 < r["test_accuracy"] <= 1.0  # 2 epochs on 512 images: far above chance (0.1)
    assert r["options"]["quick"] is True and r["options"]["batch_size"] == 64
    hist = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in hist["rows"]] == [1, 2]
    assert "test accuracy" in p.stdout and "Traceback" not in p.stderr


def test_resume_from_the_command_line(tmp_path, capsys):
    reason = fashion_mnist_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "mlp"
    assert cli_main.main(["run", "mlp-fashion", "--quick", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli_main.main(["run", "mlp-fashion", "--quick", "--epochs", "3", "--out", str(out),
                          "--resume", str(out / "last.safetensors")]) == 0
    stdout = capsys.readouterr().out
    assert "epoch 1/3" not in stdout and "epoch 2/3" in stdout  # epoch 1 came from the checkpoint
    hist = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in hist["rows"]] == [1, 2, 3]
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 3


def _default_sigint() -> None:
    """Run in the child before exec: a test suite started in the background (``cmd &`` in a script) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so the child would never see Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_saves_a_clean_checkpoint_and_exits_130(tmp_path):
    reason = fashion_mnist_missing()
    if reason:
        pytest.skip(reason)
    import signal

    out = tmp_path / "mlp"
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "handgrad", "run", "mlp-fashion", "--quick", "--epochs", "500",
                             "--patience", "500", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            preexec_fn=_default_sigint)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 3/500"):
                # epoch 3's line is printed before its end-of-epoch hooks finish, so the signal may land in
                # epoch 3 or 4: either way at least two epochs are complete
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Trainer: interrupted during epoch" in stderr and "interrupted.safetensors" in stderr
    from handgrad.serialization import load

    saved = load(out / "interrupted.safetensors")
    assert saved["epoch"] >= 2 and len(saved["history"]["rows"]) == saved["epoch"]
    r = json.loads((out / "results.json").read_text())
    assert r["interrupted"] is True and r["epochs_run"] == saved["epoch"]  # test metrics of the kept weights


# -- in process: the runner around an experiment -----------------------------------------------------------------
@pytest.fixture()
def toy_experiment(monkeypatch):
    """A toy experiment in the table (module ``toy_experiment_for_tests``, injected into sys.modules)."""
    import types

    calls = []
    module = types.ModuleType("toy_experiment_for_tests")

    def add_arguments(p):
        p.add_argument("--depth", type=int, default=3)

    def run(opts):
        calls.append(opts)
        opts.epochs, opts.lr  # noqa: B018 (honoured: read)
        if opts.depth < 0:
            raise ExperimentError("depth must be >= 0\n(second line)")
        if opts.depth == 99:
            raise KeyboardInterrupt
        return {"score": 0.25, "depth": opts.depth}

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "toy_experiment_for_tests", module)
    entry = registry.ExperimentEntry("toy-test", "toy_experiment_for_tests", "a toy for the CLI tests: 100% fake",
                                     {"epochs": 7, "lr": 0.5}, {"epochs": 1},
                                     frozenset({"epochs", "lr", "seed", "out", "quick"}))
    monkeypatch.setattr(registry, "EXPERIMENTS", {**registry.EXPERIMENTS, "toy-test": entry})
    yield calls


def test_runner_fills_defaults_and_writes_results(toy_experiment, tmp_path, capsys):
    assert cli_main.main(["run", "toy-test", "--out", str(tmp_path), "--depth", "5"]) == 0
    opts = toy_experiment[-1]
    assert (opts.epochs, opts.lr, opts.seed, opts.depth) == (7, 0.5, 0, 5)
    assert opts.batch_size is None  # not offered by this experiment: refused if given (below)
    r = json.loads((tmp_path / "results.json").read_text())
    assert (r["experiment"], r["score"], r["depth"], r["options"]["epochs"]) == ("toy-test", 0.25, 5, 7)
    assert cli_main.main(["run", "toy-test", "--out", str(tmp_path), "--quick"]) == 0
    assert toy_experiment[-1].epochs == 1
    assert cli_main.main(["run", "toy-test", "--out", str(tmp_path), "--quick", "--epochs", "4"]) == 0
    assert toy_experiment[-1].epochs == 4  # what the user says wins over quick defaults
    assert "results: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["run", "toy-test", "--out", str(tmp_path), "--batch-size", "4"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("handgrad run toy-test: error: --batch-size is not supported by toy-test "
                                       "(see `handgrad run toy-test --help`)\n")


def test_runner_turns_experiment_errors_into_one_line(toy_experiment, tmp_path, capsys):
    assert cli_main.main(["run", "toy-test", "--out", str(tmp_path), "--depth", "-1"]) == 2
    assert capsys.readouterr().err == "handgrad run toy-test: error: depth must be >= 0 (second line)\n"
    assert cli_main.main(["run", "toy-test", "--out", str(tmp_path), "--depth", "99"]) == 130
    assert capsys.readouterr().err == "handgrad run toy-test: interrupted\n"
