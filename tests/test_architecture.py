"""The shape of the library: a core that never imports the experiments, no import cycles
(every ``import`` statement counts, including those inside functions), small modules, and
packages that say what lives where."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cifutils"
MAX_LINES = 520  # "about 500": one concept per module


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The cifutils modules that ``name`` imports anywhere in its source: for
    ``from X import y``, ``X`` and, when ``X.y`` is a module, ``X.y``."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            out.add(source)
            out.update(f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _is_experiment(name: str) -> bool:
    return name == "cifutils.experiments" or name.startswith("cifutils.experiments.")


def test_the_import_graph_resolves_relative_imports():
    # a check of the checker: edges it must find
    assert "cifutils.experiments.mog.config" in GRAPH["cifutils.experiments.mog.training"]
    assert "cifutils.cif" in GRAPH["cifutils.families"]
    assert "cifutils.experiments.vae.fast_layers" in GRAPH["cifutils.experiments.vae.model"]
    assert "cifutils.fast" in GRAPH["cifutils.experiments.vae.fast_layers"]


def test_the_core_never_imports_the_experiments():
    offenders = {
        name: sorted(filter(_is_experiment, deps))
        for name, deps in GRAPH.items()
        if not _is_experiment(name) and any(map(_is_experiment, deps))
    }
    assert not offenders, f"core modules importing experiments: {offenders}"


def test_the_experiments_do_not_import_each_other():
    for name, deps in GRAPH.items():
        for exp in ("mog", "vae"):
            if name.startswith(f"cifutils.experiments.{exp}"):
                other = {"mog": "vae", "vae": "mog"}[exp]
                assert not any(d.startswith(f"cifutils.experiments.{other}") for d in deps), name


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert _find_cycle(GRAPH) is None, " -> ".join(_find_cycle(GRAPH))


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (split it by role)"


@pytest.mark.parametrize(
    "name", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"), ids=str
)
def test_every_package_says_what_lives_where(name):
    module = importlib.import_module(name)
    doc = module.__doc__ or ""
    subs = sorted(n for n in MODULES if n.rsplit(".", 1)[0] == name and n != name)
    subs = [s for s in subs if not s.endswith("__main__")]
    missing = [s for s in subs if s.rsplit(".", 1)[1] not in doc]
    assert not missing, f"{name}'s docstring does not mention {missing}"


def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    names = [n for n in MODULES if not n.endswith("__main__")]
    run = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
