"""Crash harness: SIGKILL `generate`, `embed` and `score` at random points, rerun, and
find exactly what an uninterrupted run on a twin workdir has.

Each stage is killed ``ATELIER_CRASH_SEEDS`` times (6 by default) in a row on one
workdir; kill ``i`` draws its moment from ``random.Random(<stage> + i)``:

- ``time``: a delay over the stage's clean duration (startup, model loading, planning);
- ``progress``: the n-th new image / embedding part, plus a few ms;
- ``replace:N``: just before the N-th ``os.replace`` (a temporary written, not renamed);
- ``upsert:N`` (score): after the N-th table write of the store transaction;
- ``commit:1`` (score): right after COMMIT, before the store is closed.

After every kill the visible state must be sound (every PNG decodes, the store opens
with no duplicate key); after a final rerun the files and tables must equal the
clean run's, with no duplicate and no orphan row.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.hardening import (
    TABLE_KEYS,
    assert_same_tables,
    atelier_cmd,
    check_images,
    check_store,
    cli_cmd,
    connect_ro,
    copy_workdir,
    crash_kills,
    embed_cmd,
    generate_args,
    kill_at,
    prepare_workdir,
    run_to_end,
    score_cmd,
    temporaries,
    tiny_models,
)

# Real subprocesses, kills, full disks: minutes in all, so outside the quick subset.
pytestmark = pytest.mark.slow

GENERATED = ("images", "thumbs", "manifests", "checkpoints", "runs", "styles.csv", "checkpoints.toml", "plan.parquet")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def clean(models, tmp_path_factory):
    """The twin: generate -> score (embedding inside), never interrupted; durations measured."""
    root = tmp_path_factory.mktemp("clean") / "wd"
    units = prepare_workdir(root, models, seeds=_seeds())
    times = {}
    times["generate"], _ = run_to_end(atelier_cmd(*generate_args(root)))
    gen_only = copy_workdir(root, tmp_path_factory.mktemp("clean-gen") / "wd", GENERATED)
    times["score"], out = run_to_end(score_cmd(root, models))
    assert f"DONE False {len(units)}" in out.stdout, out.stdout
    return {"root": root, "units": units, "times": times, "gen_only": gen_only}


def _seeds() -> tuple[int, ...]:
    """2 seeds (20 units) for the CI's 6 kills; a longer soak gets more work to kill."""
    return tuple(range(max(2, crash_kills() // 3)))


def _score_config(models):
    from evaluator.scoring.run import ScoreConfig

    return ScoreConfig(model=str(models.clip), bootstrap=50, batch_size=1, num_workers=0, part_size=2, progress=False)


def _count(folder: Path, pattern: str) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob(pattern) if not p.name.startswith("."))


def _run_kills(stage_seed: int, make_cmd, clean_seconds: float, progress, modes_now, check) -> list[str]:
    """``crash_kills()`` kills in a row; ``modes_now(i)`` gives the kill points that can
    still land (e.g. none of the embedding ones once every image is embedded)."""
    log, landed = [], 0
    for i in range(crash_kills()):
        what, killed = kill_at(make_cmd, random.Random(stage_seed + i), clean_seconds, progress, modes_now(i))
        log.append(what)
        landed += killed
        check()
    print(f"{landed}/{len(log)} kills landed:", "; ".join(log))
    # the harness must not degrade into rerunning finished work: most kills land mid-run
    assert landed >= (len(log) + 1) // 2, log
    return log


def _assert_sound(root: Path, units) -> None:
    """What a reader may see after a kill: whole PNGs, and a store without duplicates."""
    check_images(root, units, complete=False)
    store = root / "atelier.duckdb"
    if store.is_file():
        con = connect_ro(store)
        try:
            for table, key in TABLE_KEYS.items():
                exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0]
                if exists:
                    cols = ", ".join(key)
                    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({cols})) FROM {table}").fetchone()
                    assert total == distinct, f"{table} duplicated after a kill"
        finally:
            con.close()


def _assert_no_unswept_temporaries(root: Path) -> None:
    """Images and thumbnails: no temporary survives a rerun (generate sweeps its own).

    A kill mid-write can leave ``.<name>.<rand>.tmp`` beside a manifest part, an
    embedding part, the FAISS index, a run or checkpoint record: nothing sweeps those
    (see docs/HARDENING.md), so they are allowed there, but every reader must ignore
    them (hidden names).
    """
    for leftover in temporaries(root):
        rel = leftover.relative_to(root).parts
        assert rel[0] in ("manifests", "embeddings", "index", "runs", "checkpoints"), f"temporary file left behind: {leftover}"
        assert leftover.name.startswith(".") and leftover.suffix == ".tmp"
    from evaluator.workspace.manifest import shard_paths

    assert all(not p.name.startswith(".") for p in shard_paths(root / "manifests"))


def test_generate_killed_at_random_points_resumes_to_the_clean_images(clean, models, tmp_path):
    from evaluator.generation.runner import GenerateConfig, generate, plan_work
    from evaluator.workspace.manifest import ingest_manifests, read_manifests
    from evaluator.workspace.store import open_store, transaction
    from evaluator.workspace.workdir import Workdir

    root = tmp_path / "wd"
    units = prepare_workdir(root, models, seeds=_seeds())
    _run_kills(1000, lambda kill: cli_cmd(*generate_args(root), kill=kill), clean["times"]["generate"],
               lambda: _count(root / "images", "*.png"), lambda i: [("time", 1), ("progress", 3), ("replace", 8)],
               lambda: _assert_sound(root, units))
    # rerun to completion (in process: same library call as the command)
    generate(units, root / "checkpoints.toml", root, GenerateConfig(batch_size=1, threads=1, progress=False))
    # every unit once, every PNG whole, pixel-identical to the clean twin's
    assert check_images(root, units) == check_images(clean["root"], clean["units"])
    frame = read_manifests(root / "manifests")
    assert sorted(frame["unit_id"]) == sorted(u.unit_id for u in units)
    assert frame["error"].isna().all()
    # a further rerun has nothing to make and nothing to recover
    todo, recover, skipped = plan_work(units, Workdir(root), retry_failed=False)
    assert (len(todo), len(recover), skipped) == (0, 0, len(units))
    # the images table ingested from these manifests equals the clean run's
    for _ in range(2):  # twice: still one row per image
        with open_store(root / "atelier.duckdb") as con, transaction(con):
            ingest_manifests(con, root / "manifests")
    assert_same_tables(root / "atelier.duckdb", clean["root"] / "atelier.duckdb", tables=["images"])
    _assert_no_unswept_temporaries(root)


def test_embed_killed_at_random_points_resumes_to_the_clean_embeddings(clean, models, tmp_path):
    import pyarrow.parquet as pq

    from evaluator.embedding.clip import load_clip, model_key
    from evaluator.embedding.images import _part_paths, embed_images, load_embeddings
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.workdir import Workdir

    root = copy_workdir(clean["gen_only"], tmp_path / "wd", GENERATED)
    key = model_key(str(models.clip))
    parts = Workdir(root).embeddings(key)
    n_parts = (len(clean["units"]) + 1) // 2  # part_size 2

    def embed_modes(i):
        done = _count(parts, "part-*.parquet")
        if done >= n_parts:
            # A kill that landed after the last part left nothing to interrupt: on a fast
            # machine the tiny model embeds all 20 images inside one poll. Start over, so
            # every kill still meets a run with work left (the final checks are unchanged).
            shutil.rmtree(parts)
            done = 0
        left = max(1, n_parts - done)  # replace:k dies before part k is renamed
        return [("time", 1), ("progress", 1), ("replace", min(3, left))]

    _run_kills(2000, lambda kill: embed_cmd(root, models, kill=kill), 0.5 * clean["times"]["score"],
               lambda: _count(parts, "part-*.parquet"), embed_modes,
               lambda: _assert_sound(root, clean["units"]))
    rows = read_manifests(root / "manifests")[["image_id", "path"]]
    embed_images(Workdir(root), load_clip(str(models.clip)), rows, batch_size=1, num_workers=0, part_size=2,
                 progress=False)
    raw = np.concatenate([pq.read_table(p, columns=["image_id"]).column(0).to_numpy() for p in _part_paths(parts)])
    assert len(raw) == len(set(raw.tolist())) == len(clean["units"]), "every image embedded exactly once"
    ids, vecs = load_embeddings(Workdir(root), key)
    want_ids, want_vecs = load_embeddings(Workdir(clean["root"]), key)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(vecs, want_vecs, atol=2e-3)  # float16 storage
    _assert_no_unswept_temporaries(root)


def test_score_killed_at_random_points_resumes_to_the_clean_store(clean, models, tmp_path):
    from evaluator.embedding.embed import model_key
    from evaluator.scoring.run import score
    from evaluator.workspace.workdir import Workdir

    root = copy_workdir(clean["gen_only"], tmp_path / "wd", GENERATED)
    parts = Workdir(root).embeddings(model_key(str(models.clip)))
    store = root / "atelier.duckdb"
    n_images = len(clean["units"])

    def modes(i):
        left = (n_images + 1) // 2 - _count(parts, "part-*.parquet")  # embedding parts still to write
        if left > 0:  # still embedding: any point that cannot overshoot the work left
            return [("time", 1), ("progress", min(2, left)), ("replace", min(4, left)), ("upsert", 12)]
        # embedded: the write. A kill after COMMIT leaves nothing for later kills, so last.
        return [("upsert", 12), ("commit", 1)] if i == crash_kills() - 1 else [("upsert", 12)]

    _run_kills(3000, lambda kill: score_cmd(root, models, kill=kill), clean["times"]["score"],
               lambda: _count(parts, "part-*.parquet"), modes, lambda: _assert_sound(root, clean["units"]))
    first = score(root, _score_config(models), catalog_path=root / "styles.csv")
    counts = check_store(store, expect_images=len(clean["units"]))
    assert_same_tables(store, clean["root"] / "atelier.duckdb", tol=1e-6)
    con = connect_ro(store)
    try:
        kinds = dict(con.execute("SELECT kind, count(*) FROM runs GROUP BY kind").fetchall())
        statuses = {r[0] for r in con.execute("SELECT DISTINCT status FROM runs").fetchall()}
    finally:
        con.close()
    # a killed score writes nothing before its one transaction, so there is one score
    # run: the final one, or a killed one whose COMMIT landed (then the final was a no-op)
    assert kinds.get("score") == 1 and kinds.get("generate") == 1, kinds
    assert statuses == {"ok"}, statuses
    assert counts["image_scores"] > 0 and counts["comparisons"] > 0
    again = score(root, _score_config(models), catalog_path=root / "styles.csv")
    assert again.noop and (first.noop or first.n_scored > 0)
    _assert_no_unswept_temporaries(root)
