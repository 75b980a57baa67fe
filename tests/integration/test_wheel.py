"""An atelier installed from its wheel, outside the repository, has its catalog and runs.

The wheel is built from this tree and installed into a new virtual environment whose
only view of the dependencies is the test environment's site-packages (a ``.pth`` line;
the editable install's own ``.pth`` there is not processed), so the repository itself is
not importable: whatever the installed commands read must be inside the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


# Checkout-local folders that are not part of the source (the top-level ones only:
# evaluator/demo/ is source, ./demo is a demo run's output).
TOP_LEVEL_SKIPPED = {".venv", ".git", "build", "demo", ".pytest_cache", ".ruff_cache", "bench"}
ANYWHERE_SKIPPED = shutil.ignore_patterns("__pycache__", "*.egg-info", "artifacts", "results")


def _not_source(folder: str, names: list[str]) -> set[str]:
    skipped = set(ANYWHERE_SKIPPED(folder, names))
    if Path(folder) == REPO:
        skipped |= TOP_LEVEL_SKIPPED & set(names)
    return skipped


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy (symlinks kept, as in a clone), so the build writes nothing into the repository.
    source = root / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=_not_source)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", source],
         cwd=root)
    (wheel,) = (root / "dist").glob("atelier-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel], cwd=root)
    return {"root": root, "wheel": wheel, "venv": venv, "python": python}


def test_wheel_contains_the_catalog_and_configs(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "catalog/data/styles.csv" in names
    assert "catalog/data/templates.toml" in names
    assert "evaluator/generation/configs/sd1/unet/config.json" in names
    modules = {str(path.relative_to(REPO)) for package in ("catalog", "evaluator", "dashboard")
               for path in (REPO / package).rglob("*.py")}
    missing = sorted(modules - set(names))
    assert not missing, f"source modules the wheel lacks: {missing}"
    shipped = zipfile.ZipFile(installed["wheel"]).read("catalog/data/styles.csv")
    assert shipped == (REPO / "styles.csv").read_bytes(), "the wheel's catalog differs from the repository's styles.csv"


def test_installed_atelier_lists_the_catalog_outside_the_repo(installed):
    where = _run([installed["python"], "-c", "import catalog; print(catalog.__file__)"], cwd=installed["root"])
    assert str(installed["venv"]) in where.stdout, f"imported from {where.stdout} instead of the installed wheel"
    listed = _run([installed["venv"] / "bin" / "atelier", "catalog", "list", "--limit", "3"], cwd=installed["root"])
    lines = [line for line in listed.stdout.splitlines() if line.strip()]
    assert len(lines) >= 3, listed.stdout
    assert "styles.csv" not in listed.stderr


def test_installed_demo_runs(installed):
    workdir = installed["root"] / "demo"
    result = _run([installed["venv"] / "bin" / "atelier", "demo", "--random-weights", "--workdir", workdir, "--artists", "3", "--seeds", "2"],
                  cwd=installed["root"])
    assert "failed 0" in result.stdout, result.stdout
    assert (workdir / "atelier.duckdb").is_file()
