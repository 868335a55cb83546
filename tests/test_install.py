"""A non-editable install finds its templates from any directory (issue 13 step 4).

How: a fresh venv with torch, transformers and the platform stack would take many minutes and
the network, so the test reuses the installed dependencies instead. It copies the project's
package sources (``serendip/``, ``setup.cfg``, ``pyproject.toml``, ``README.md``) to a temporary
folder — so the build never writes into the checkout — and builds and installs that with
``pip install --no-deps --no-build-isolation --target SITE .``: a regular, *non-editable*
wheel install whose only Python files are what the wheel ships. Every command then runs from an
empty temporary directory with ``PYTHONPATH=SITE``, in the test's own interpreter (its
site-packages provide the dependencies; ``PYTHONPATH`` comes first on ``sys.path``, ahead of
the checkout's editable install, which is a meta-path finder tried only after the path). Each
run asserts that ``serendip`` was imported from ``SITE`` and that no ``sys.path`` entry is the
checkout, then runs ``serendip synth``, ``serendip cluster`` and ``serendip export`` (the Triton
templates) and ``prepare_repo`` (the Feast repo template). With templates found through
``Path(__file__).parents[N]`` (next to a checkout) the export fails: there is no
``model_repository/`` beside an installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("serendip", "setup.cfg", "pyproject.toml", "README.md")

# the CLI, with two checks first: the package comes from SITE, the checkout is not on sys.path
RUN_CLI = """
import sys
from pathlib import Path
import serendip
site, root = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
assert Path(serendip.__file__).resolve().is_relative_to(site), serendip.__file__
assert all(Path(p or ".").resolve() != root for p in sys.path), sys.path
from serendip.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _install(tmp: Path) -> Path:
    src, site = tmp / "src", tmp / "site"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-compile", "--target", str(site), "."],
                         cwd=src, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert not (site / "__editable__.serendip-0.1.0.pth").exists()
    return site


def _env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENDIP_")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", SERENDIP_TORCH_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _serendip(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-c", RUN_CLI, str(site), str(ROOT), *args], cwd=cwd,
                         env=_env(site), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{args}:\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out


def _python(site: Path, cwd: Path, code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(site),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_non_editable_install_runs_synth_cluster_export_from_an_empty_directory(tmp_path):
    site = _install(tmp_path)
    assert (site / "serendip" / "serving" / "model_repository" / "mllm" / "config.pbtxt").is_file()
    assert (site / "serendip" / "platform" / "feature_repo" / "definitions.py").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()

    _serendip(site, empty, "synth", "--out", "wd", "--items", "300", "--users", "80",
              "--seed", "3", "--branching", "2/2/3/2")
    _serendip(site, empty, "cluster", "--data", "wd", "--branching", "2/2/3/2")
    assert (empty / "wd" / "item_clusters.parquet").exists()

    # export needs trained models: the library's serving fixture makes tiny ones (its own
    # synthetic work directory), then the CLI exports them with the packaged templates
    _python(site, empty, "from serendip.testing.serving import FixtureConfig, "
                         "build_serving_workdir as b; b('served', FixtureConfig(items=200, "
                         "users=60, interactions=2000, retriever_epochs=1))")
    out = _serendip(site, empty, "export", "--workdir", "served", "--source", "local")
    assert "mllm" in out.stdout and "retriever" in out.stdout
    repo = empty / "served" / "model_repository"
    for model in ("mllm", "retriever", "recommend"):
        assert f'name: "{model}"' in (repo / model / "config.pbtxt").read_text()
        assert (repo / model / "1" / "model.py").is_file()
    assert json.loads((repo / "mllm" / "export.json").read_text())["model"] == "mllm"

    # the Feast repo template, copied into a work directory (no Feast import needed)
    got = _python(site, empty, "from serendip.platform.features import prepare_repo; "
                               "print(prepare_repo('wd'))")
    assert (empty / "wd" / "feature_repo" / "definitions.py").is_file(), got
    assert (empty / "wd" / "feature_repo" / "feature_store.yaml").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["served", "wd"]   # nothing else written


def test_setup_cfg_ships_every_template_file_as_package_data():
    """Each file of the template folders matches a ``[options.package_data]`` pattern, so a
    template added later is not silently missing from a wheel (the slow test above would
    only notice the files it exercises)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    data = cfg["options.package_data"]
    for package, folder in (("serendip.serving", "model_repository"),
                            ("serendip.platform", "feature_repo")):
        root = ROOT.joinpath(*package.split("."))
        patterns = [p.strip() for p in data[package].splitlines() if p.strip()]
        shipped = {p for pat in patterns for p in root.glob(pat) if p.is_file()}
        files = {p for p in (root / folder).rglob("*") if p.is_file()
                 and "__pycache__" not in p.parts and "data" not in p.relative_to(root).parts}
        assert files and files <= shipped, sorted(str(p.relative_to(root)) for p in files - shipped)
