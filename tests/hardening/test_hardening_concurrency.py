"""Concurrency through the real commands: two `atelier score` at once, `embed` beside
`score`, and the dashboard's reader polling while a `score` subprocess writes.

Already covered elsewhere (not repeated): two library-level score() calls at once
compared by row counts (test_score_store), the store's lock wait/timeout
(test_store), the dashboard waiting for / serving the last result past a lock held by
a stand-in writer (test_dashboard_queries, test_dashboard_app). Here the writers are
the real CLI commands and the final tables are compared row by row with a single run.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from support.hardening import (
    REPO,
    assert_same_tables,
    atelier_cmd,
    check_store,
    connect_ro,
    env_for_subprocess,
    prepare_workdir,
    score_args,
    tiny_models,
)

# Real subprocesses, kills, full disks: minutes in all, so outside the quick subset.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def generated(models, tmp_path_factory):
    from evaluator.generation.runner import GenerateConfig, generate

    root = tmp_path_factory.mktemp("conc") / "wd"
    units = prepare_workdir(root, models)
    generate(units, root / "checkpoints.toml", root, GenerateConfig(batch_size=4, threads=1, progress=False))
    return root


@pytest.fixture(scope="module")
def single(generated, models, tmp_path_factory):
    """One score run alone: what any interleaving must end in."""
    root = tmp_path_factory.mktemp("single") / "wd"
    shutil.copytree(generated, root)
    done = subprocess.run(atelier_cmd(*score_args(root, models)), env=env_for_subprocess(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return root


def _spawn(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env_for_subprocess(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_score_commands_at_once_queue_and_end_as_one_run(generated, single, models, tmp_path):
    root = tmp_path / "wd"
    shutil.copytree(generated, root)
    procs = [_spawn(atelier_cmd(*score_args(root, models))) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("scored 20 new images" in o for o in outs) == 1, outs
    assert sum("nothing new" in o for o in outs) == 1, outs  # the second waited, then found it done
    check_store(root / "atelier.duckdb", expect_images=20)
    assert_same_tables(root / "atelier.duckdb", single / "atelier.duckdb")
    con = connect_ro(root / "atelier.duckdb")
    try:
        assert con.execute("SELECT count(*) FROM runs WHERE kind = 'score'").fetchone()[0] == 1
    finally:
        con.close()


def test_embed_and_score_commands_at_once_embed_each_image_once(generated, single, models, tmp_path):
    import numpy as np

    from evaluator.embedding.clip import model_key
    from evaluator.embedding.images import _part_paths, load_embeddings
    from evaluator.workspace.workdir import Workdir

    root = tmp_path / "wd"
    shutil.copytree(generated, root)
    embed = _spawn(atelier_cmd("embed", "-w", str(root), "--model", str(models.clip), "--batch-size", "1",
                               "--num-workers", "0"))
    scorer = _spawn(atelier_cmd(*score_args(root, models)))
    outs = [embed.communicate(timeout=300)[0], scorer.communicate(timeout=300)[0]]
    assert [embed.returncode, scorer.returncode] == [0, 0], outs
    key = model_key(str(models.clip))
    import pyarrow.parquet as pq

    raw = [i for p in _part_paths(Workdir(root).embeddings(key)) for i in pq.read_table(p).column("image_id").to_pylist()]
    assert sorted(raw) == sorted(set(raw)) and len(raw) == 20  # the lock serialised them: no image twice
    ids, vecs = load_embeddings(Workdir(root), key)
    want_ids, want_vecs = load_embeddings(Workdir(single), key)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(vecs, want_vecs, atol=2e-3)
    check_store(root / "atelier.duckdb", expect_images=20)
    assert_same_tables(root / "atelier.duckdb", single / "atelier.duckdb")


STATE_SQL = """
SELECT (SELECT run_id FROM score_state) AS state_run,
       (SELECT count(*) FROM runs WHERE kind = 'score') AS score_runs,
       (SELECT count(*) FROM images) AS images,
       (SELECT count(*) FROM image_scores) AS image_scores,
       (SELECT count(*) FROM artist_scores) AS artist_scores,
       (SELECT count(*) FROM comparisons) AS comparisons,
       (SELECT round(sum(ci_high - ci_low), 9) FROM artist_scores) AS ci_width,
       (SELECT round(sum(ci_high - ci_low), 9) FROM comparisons) AS cmp_width
"""


def test_dashboard_reads_while_score_writes_see_before_or_after_never_between(single, models, tmp_path):
    from dashboard import queries as q

    root = tmp_path / "wd"
    shutil.copytree(single, root)
    patient = q.Store.at(root, use_cache=False, lock_timeout=60)  # waits out every write
    quick = q.Store.at(root, use_cache=False, lock_timeout=0.05)  # serves the last result meanwhile
    model = q.models(patient)[0]

    def state(store) -> tuple:
        return tuple(store.df(STATE_SQL).iloc[0].tolist())

    before = state(patient)
    state(quick)  # a last result to fall back on
    q.leaderboard(quick, model)
    # a new bootstrap size: score rewrites every aggregate and its CI in one transaction
    proc = _spawn(atelier_cmd(*score_args(root, models, "--bootstrap", "80")))
    seen, reads, boards = set(), 0, 0
    try:
        while proc.poll() is None:
            for store in (patient, quick):
                seen.add(state(store))
                reads += 1
            board = q.leaderboard(quick, model)  # a real page query
            assert len(board) > 0
            boards += 1
            q.take_notices()
            time.sleep(0.01)
    finally:
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    after = state(patient)
    assert after != before and after[1] == before[1] + 1  # the write happened: one more score run
    assert seen <= {before, after}, seen - {before, after}  # never a half-written state
    assert reads >= 4 and boards >= 2
    check_store(root / "atelier.duckdb")
