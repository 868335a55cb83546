"""Issue 13, step 1: stages live in the library, not the CLI. The KFP components, the pipelines
and the library call the same stage entries as the CLI; none of them imports the CLI package
(``serendip.cli``, ``serendip.commands``). Starting ``python -m serendip.cli`` as a server
process (the demo, the serving harness) is not an import and stays allowed."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KFP = ROOT / "serendip" / "platform" / "kfp"
CLI = ("serendip.cli", "serendip.commands")


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement anywhere in ``path`` names (component bodies import
    inside the function: that is the code that runs in the container)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_cli(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CLI)


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_components_and_pipelines_do_not_import_the_cli_package():
    files = sorted((KFP / "components").glob("*.py")) + sorted((KFP / "pipelines").glob("*.py"))
    assert len(files) >= 8, files
    modules = {_module(p) for p in files}
    bodies = set().union(*(_imported_modules(p) for p in files))
    named = sorted(m for m in bodies if _is_cli(m))
    assert not named, f"components/pipelines name the CLI package: {named}"
    # ... nor pull it in through the library: import the component modules and every module
    # their bodies import in a fresh interpreter, then look at sys.modules.
    wanted = sorted(modules | {m for m in bodies if m.split(".")[0] == "serendip"})
    code = ("import importlib, json, sys\n"
            f"for m in {wanted!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "serendip.mllm.stage" in loaded and "serendip.evaluation.offline" in loaded
    leaked = [m for m in loaded if _is_cli(m)]
    assert not leaked, f"importing the components loads the CLI package: {leaked}"


def test_library_modules_do_not_import_the_cli_package():
    offenders = {}
    for path in sorted((ROOT / "serendip").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "serendip/cli.py" or rel.startswith("serendip/commands/"):
            continue
        bad = sorted(m for m in _imported_modules(path) if _is_cli(m))
        if bad:
            offenders[rel] = bad
    assert not offenders, f"library modules import the CLI package: {offenders}"


def test_only_the_serendip_package_is_installed():
    """``setup.cfg`` installed the KFP code as generic top-level ``components`` and
    ``pipelines`` packages into site-packages (issue 13 step 1); they live in
    ``serendip.platform.kfp`` now and nothing else is installed at the top level."""
    import configparser

    import setuptools

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    include = [s.strip() for s in cfg["options.packages.find"]["include"].split(",")]
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert {"serendip.platform.kfp.components", "serendip.platform.kfp.pipelines"} <= set(packages)
    outside = sorted(p for p in packages if p.split(".")[0] != "serendip")
    assert not outside, f"installed outside the serendip namespace: {outside}"
    assert not (ROOT / "components").exists() and not (ROOT / "pipelines").exists()


def test_pipelines_compile_from_outside_the_checkout(tmp_path):
    """The pipelines and their components import from the installed package, from any
    current directory."""
    code = ("from serendip.platform.kfp import runner\n"
            "print([p.name for p in runner.compile_all('out')])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["['training.yaml',", "'scoring.yaml']"]
