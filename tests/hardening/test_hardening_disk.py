"""Disk full and permission denied: a clear error naming the path, the previous state intact.

Disk full is simulated with ``RLIMIT_FSIZE`` in the subprocess (writes past the limit
fail with EFBIG "File too large", as ENOSPC would; SIGXFSZ is ignored so the process
sees the error instead of dying). Permission denied: ``chmod`` when not root; as root
(CI), chmod stops nothing, so a regular file is put where a folder is needed (the
same failure path: the OS refuses to create or write the file).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from support.hardening import (
    COMPARED,
    REPO,
    atelier_cmd,
    check_store,
    env_for_subprocess,
    generate_args,
    prepare_workdir,
    score_args,
    table_rows,
    temporaries,
    tiny_models,
    write_catalog,
)

# Real subprocesses, kills, full disks: minutes in all, so outside the quick subset.
pytestmark = pytest.mark.slow

IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def generated(models, tmp_path_factory):
    """A workdir whose base checkpoint is generated (the plan also has `ft`, not made)."""
    from evaluator.generation.runner import GenerateConfig, generate

    root = tmp_path_factory.mktemp("disk") / "wd"
    units = prepare_workdir(root, models)
    base = [u for u in units if u.checkpoint == "base"]
    generate(base, root / "checkpoints.toml", root, GenerateConfig(batch_size=4, threads=1, progress=False))
    return root, units


def run_limited(cmd: list[str], fsize: int | None = None) -> subprocess.CompletedProcess:
    """Run with files capped at ``fsize`` bytes (no .pyc writes: a capped interpreter
    would leave truncated bytecode caches in the repo for everyone else)."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = env_for_subprocess(PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit)


def snapshot(root: Path) -> dict[str, str]:
    """relpath -> sha256 of every file but the store and the lock (compared by rows)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(("atelier.duckdb", ".score.lock")):
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_clear_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: ") or "\nError: " in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in: {result.stderr}"


def block_folder(folder: Path) -> None:
    """Make ``folder`` impossible to create or write into, even for root."""
    if IS_ROOT:
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.write_text("a file where a folder should be\n")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)


def unblock_folder(folder: Path) -> None:
    if folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        folder.chmod(stat.S_IRWXU)


# ------------------------------------------------------------------ generate


def test_generate_on_a_full_disk_stops_clearly_and_keeps_what_was_there(generated, tmp_path):
    from evaluator.generation.runner import GenerateConfig, generate
    from evaluator.workspace.manifest import read_manifests

    src, units = generated
    root = tmp_path / "wd"
    shutil.copytree(src, root)
    before = snapshot(root)
    # 6 kB: the checkpoint records fit, a 64 px PNG (~12 kB) does not
    result = run_limited(atelier_cmd(*generate_args(root, batch_size=4)), fsize=6000)
    assert_clear_error(result, "File too large", str(root / "images" / "ft"))
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    new = [k for k in after if k not in before]
    assert all(k.startswith(("runs/", "checkpoints/ft.")) for k in new), new  # the run and ft records only
    assert not list((root / "images" / "ft").rglob("*.png"))
    assert temporaries(root) == []
    frame = read_manifests(root / "manifests")
    assert frame["error"].isna().all() and len(frame) == len(units) // 2  # no unit marked failed
    # with space again, a rerun makes exactly the missing images
    summary = generate(units, root / "checkpoints.toml", root, GenerateConfig(batch_size=4, threads=1, progress=False))
    assert (summary.done, summary.skipped, summary.failed) == (len(units) // 2, len(units) // 2, 0)


def test_generate_into_an_unwritable_folder_stops_clearly_and_keeps_what_was_there(generated, tmp_path):
    src, units = generated
    root = tmp_path / "wd"
    shutil.copytree(src, root)
    before = snapshot(root)
    block_folder(root / "images" / "ft")
    try:
        result = run_limited(atelier_cmd(*generate_args(root, batch_size=4)))
        assert_clear_error(result, str(root / "images" / "ft"))
        assert ("Not a directory" in result.stderr or "File exists" in result.stderr) if IS_ROOT else \
            "Permission denied" in result.stderr
        after = snapshot(root)
        assert {k: v for k, v in after.items() if k in before and k != "images/ft"} == \
            {k: v for k, v in before.items() if k != "images/ft"}
        assert temporaries(root) == []
    finally:
        unblock_folder(root / "images" / "ft")
    done = run_limited(atelier_cmd(*generate_args(root, batch_size=4)))
    assert done.returncode == 0, done.stderr
    assert "10 made, 10 skipped" in done.stdout


# ------------------------------------------------------------------ score


@pytest.fixture(scope="module")
def scored(generated, models, tmp_path_factory):
    """The base images scored into a store: the previous state the failures must keep."""
    src, _ = generated
    root = tmp_path_factory.mktemp("scored") / "wd"
    shutil.copytree(src, root)
    done = run_limited(atelier_cmd(*score_args(root, models)))
    assert done.returncode == 0, done.stderr
    return root


def _store_rows(root: Path) -> dict[str, list]:
    return {t: table_rows(root / "atelier.duckdb", t) for t in [*COMPARED, "runs"]}


def test_score_on_a_full_disk_fails_clearly_and_leaves_the_store_as_it_was(scored, models, tmp_path):
    root = tmp_path / "wd"
    shutil.copytree(scored, root)
    rows_before, files_before = _store_rows(root), snapshot(root)
    # a new bootstrap size makes score rewrite every aggregate; 10 kB cannot hold the WAL
    result = run_limited(atelier_cmd(*score_args(root, models, "--bootstrap", "60")), fsize=10_000)
    assert_clear_error(result, "File too large", str(root / "atelier.duckdb"))
    assert "nothing was written" in result.stderr
    assert _store_rows(root) == rows_before
    check_store(root / "atelier.duckdb")
    assert snapshot(root) == files_before
    # with space again the same command works and changes the store
    again = run_limited(atelier_cmd(*score_args(root, models, "--bootstrap", "60")))
    assert again.returncode == 0, again.stderr
    assert _store_rows(root)["runs"] != rows_before["runs"]
    check_store(root / "atelier.duckdb")


def test_score_with_an_unwritable_cache_folder_fails_clearly_and_leaves_the_store_as_it_was(scored, models, tmp_path):
    from evaluator.embedding.embed import model_key, text_cache_dir
    from evaluator.workspace.workdir import Workdir

    root = tmp_path / "wd"
    shutil.copytree(scored, root)
    rows_before = _store_rows(root)
    texts = text_cache_dir(Workdir(root), model_key(str(models.clip)))
    block_folder(texts)
    # one more artist in the catalog: its "artwork by ..." text must be embedded and cached
    write_catalog(root / "styles.csv", artists=[*_artists(), ("gustav-klimt", "Gustav Klimt", "yes")])
    try:
        result = run_limited(atelier_cmd(*score_args(root, models)))
        assert_clear_error(result, str(texts))
        assert _store_rows(root) == rows_before
        check_store(root / "atelier.duckdb")
    finally:
        unblock_folder(texts)
    again = run_limited(atelier_cmd(*score_args(root, models)))
    assert again.returncode == 0, again.stderr
    con_rows = table_rows(root / "atelier.duckdb", "artists")
    assert any(r[0] == "gustav-klimt" for r in con_rows)


def _artists():
    from support.hardening import ARTISTS

    return ARTISTS


def test_tables_compared_cover_every_contract_table():
    from evaluator.workspace.store import MIGRATIONS

    created = set()
    for _, _, statements in MIGRATIONS:
        for statement in statements:
            words = statement.split()
            if words[:5] == ["CREATE", "TABLE", "IF", "NOT", "EXISTS"]:
                created.add(words[5].rstrip("("))
    assert created <= {*COMPARED, "runs"}
