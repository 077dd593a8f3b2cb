"""The package layout (docs: README's Architecture): no import cycle among restlit's modules, the
method's modules import without torch, no module grows past the size a reader can hold, and the
deprecated flat import paths still resolve for one release."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "restlit"
# restlit/cli and restlit/data_prep are the repository's cli/ and data_prep/ folders
ROOTS = {"restlit": PACKAGE, "restlit.cli": REPO / "cli", "restlit.data_prep": REPO / "data_prep"}


def project_modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    out: dict[str, Path] = {}
    for prefix, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if prefix == "restlit" and rel.parts[0] in ("cli", "data_prep"):
                continue  # the symlinks: listed under their own root
            parts = [*prefix.split("."), *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at module level or inside functions (a lazy import
    that closes a circle is still a circle). ``from pkg import mod`` counts as importing ``pkg.mod``
only; ``from pkg import name`` as importing ``pkg``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            found.update(subs & modules.keys())
            if not subs <= modules.keys():  # a name defined in the package itself, not a submodule
                found.add(base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert len(graph) > 60 and "restlit.cli.main" in graph and "restlit.data_prep.pipeline" in graph
    assert cycles(graph) == []


# The rooms, lowest first: a module may import its own room and rooms of a lower rank only.
BASE = {"restlit", "restlit.errors", "restlit._moved"}
RANK = {"base": 0, "kernels": 1, "method": 2, "runtime": 2, "data_prep": 3, "rollout": 3, "training": 4,
        "evaluation": 5, "report": 6, "experiments": 7, "cli": 8}


def room(module: str) -> str:
    """The room of a module: a sub-package's name, ``method`` for the modules at the top of restlit/."""
    if module in BASE:
        return "base"
    part = module.split(".")[1]
    return part if part in RANK else "method"


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} ({room(a)}) imports {b} ({room(b)})" for a, deps in sorted(graph.items()) for b in sorted(deps)
            if room(a) != room(b) and RANK[room(b)] >= RANK[room(a)]]


def test_each_room_imports_only_the_rooms_below_it():
    assert layering_violations({"restlit.regions": {"restlit.training.run"}}) == [
        "restlit.regions (method) imports restlit.training.run (training)"]
    assert layering_violations({"restlit.objective": {"restlit.kernels.lmhead"}}) == []
    assert layering_violations(import_graph()) == []


def test_the_method_and_the_config_import_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'numpy', 'transformers', 'lightning'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import restlit.config, restlit.regions, restlit.callscan, restlit.toolcalls, restlit.rewards, restlit.prompts\n"
        "import restlit.formats\n"
        "cfg = restlit.config.load_config(None, ['objective.weights.mode=uniform'])\n"
        "assert cfg.objective.weights.mode == 'uniform'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_torch_blocker_itself_blocks_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'torch':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import restlit.objective\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert out.returncode != 0 and "blocked torch" in out.stderr


@pytest.mark.parametrize("name", sorted(project_modules()))
def test_no_module_over_500_lines(name):
    lines = project_modules()[name].read_text().count("\n")
    assert lines <= 500, f"{name} has {lines} lines"


def test_old_flat_import_paths_resolve_with_a_deprecation_warning():
    import restlit.training.run

    sys.modules.pop("restlit.train", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import restlit.train as old
    assert old is restlit.training.run
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "restlit.training.run" in str(caught[0].message)


def test_cli_and_data_prep_are_not_top_level_packages():
    from importlib.metadata import entry_points

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "restlit"]
    assert script.value == "restlit.cli.main:app"
    for name in project_modules():
        assert name.startswith("restlit"), name
