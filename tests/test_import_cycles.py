"""Issue 13, step 1: no import cycles among the modules of ``serendip`` (``platform/demo.py``
and ``platform/demo_stages.py`` imported each other before the demo became a package).

Every ``import`` statement counts, at module level or inside a function: a lazy import only
postpones the cycle to the first call, and the two modules still cannot be understood (or
moved) one without the other. The graph is read from the source with ``ast``; its strongly
connected components with more than one module are the cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Known cycles, each to be broken by its owner (then removed here: the test fails while a listed
# cycle no longer exists, so the list stays true). None today: the last one (evaluation.baselines
# <-> evaluation.replay) ended when the MLLM's candidate ranking moved to evaluation.rankings.
KNOWN: list[set[str]] = []


def _modules(package: Path) -> dict[str, Path]:
    mods = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of the same top-level package it imports (``from a import b``
    names module ``a.b`` when that is a module, else ``a``; relative imports resolved)."""
    mods = _modules(package)
    top = package.name

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in node.names]
            else:
                continue
            for name in names:
                target = known(name) if name.split(".")[0] == top else None
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.add(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def test_cycle_finder_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "demo").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "demo" / "__init__.py").write_text("from pkg.demo.flow import run\n")
    (pkg / "demo" / "flow.py").write_text("def run():\n    from . import stages\n")
    (pkg / "demo" / "stages.py").write_text("from pkg.demo import flow\n")
    (pkg / "demo" / "sizes.py").write_text("X = 1\n")
    graph = import_graph(pkg)
    assert graph["pkg.demo.flow"] == {"pkg.demo.stages"}
    assert cycles(graph) == [{"pkg.demo.flow", "pkg.demo.stages"}]
    (pkg / "demo" / "stages.py").write_text("from pkg.demo.sizes import X\n")
    assert cycles(import_graph(pkg)) == []


def test_no_import_cycles_in_serendip():
    found = cycles(import_graph(ROOT / "serendip"))
    new = [sorted(c) for c in found if c not in KNOWN]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in KNOWN if c not in found]
    assert not gone, f"listed cycles that no longer exist (remove them from KNOWN): {gone}"


def test_the_demo_and_kfp_packages_have_no_cycle():
    graph = import_graph(ROOT / "serendip")
    assert {"serendip.platform.demo.flow", "serendip.platform.demo.stages",
            "serendip.platform.demo.report", "serendip.platform.kfp.runner"} <= set(graph)
    ours = ("serendip.platform.demo", "serendip.platform.kfp")
    assert not [c for c in cycles(graph) if any(m.startswith(ours) for m in c)]
