"""Shared fixtures: where the real data lives, and a small store made by the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared sits beside the clone (locally and in CI); tests read real data from it.
SHARED_DATA = REPO.parent / "shared" / "data"

# One intra-op thread: the tiny test models gain nothing from more, and two OpenMP
# threads on a busy 2-core machine spin against each other (50x slower, measured).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Text embeddings stay in each test's workdir: a test writes nothing under ~/.cache, and
# tests running side by side share no cache (tests of the shared cache set it themselves).
os.environ.setdefault("ATELIER_TEXT_CACHE", "workdir")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; clone atelier beside ../shared")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pipeline_workdir(tmp_path_factory) -> Path:
    """A workdir filled by the real pipeline (demo path) on tiny random-weight models.

    8 artists x (style, portrait) x 2 seeds x 3 checkpoints, plus the null baseline:
    small enough for CI, large enough that every table has rows.
    """
    return _demo(tmp_path_factory.mktemp("pipeline"), "--random-weights", "--artists", "8", "--seeds", "2")


@pytest.fixture(scope="session")
def world_workdir(tmp_path_factory) -> Path:
    """A workdir filled by `atelier demo` on the world (issue 18): the committed world model,
    two LoRAs trained with planted answers, fresh paintings as references. Run once per session."""
    return _demo(tmp_path_factory.mktemp("world"))


def _demo(workdir: Path, *options: str) -> Path:
    """``atelier demo --workdir workdir *options``, its output kept as ``demo-output.txt``."""
    from click.testing import CliRunner

    from evaluator.cli.main import main

    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), *options])
    if result.exit_code != 0:
        raise RuntimeError(f"demo {' '.join(options)} failed:\n{result.output}") from result.exception
    (workdir / "demo-output.txt").write_text(result.output)
    return workdir
