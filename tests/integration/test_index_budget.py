"""`--index-memory`: sizes, the measured choice within a budget, warnings, rebuilds after adds."""

from __future__ import annotations

import json
import logging

import duckdb
import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from evaluator.cli.main import main
from evaluator.embedding.images import _write_part
from evaluator.embedding.index import (
    IndexConfig,
    _query_sample,
    build_kind,
    index_status,
    load_index,
    meta_path,
    recall_against,
    recall_warning,
    refine_factor,
    set_refine_factor,
    set_search_param,
    tune,
    update_index,
)
from evaluator.embedding.index_budget import RERANK_FACTOR, estimate_bytes, parse_size
from evaluator.errors import InputError
from evaluator.workspace.workdir import Workdir
from tests.support.vectors import clustered, unit

KEY = "ViT-B-32/random-seed0"  # what `--model ViT-B-32 --pretrained random` is stored under


def uniform(n, d=32, seed=0):
    return unit(np.random.default_rng(seed).normal(size=(n, d)))


def workdir_with(tmp_path, vecs, start=0):
    wd = Workdir.at(tmp_path)
    _write_part(wd.embeddings(KEY), list(range(start, start + len(vecs))), vecs, KEY)
    return wd


@pytest.mark.parametrize(("text", "size"), [("512MB", 512 * 10**6), ("2GB", 2 * 10**9), ("1.5GiB", int(1.5 * 2**30)),
                                            ("2000000", 2_000_000), (" 64 kb ", 64_000)])
def test_sizes_parse(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["2XB", "GB", "-1GB", "0MB", "two GB", ""])
def test_a_bad_size_names_the_option(text):
    with pytest.raises(InputError, match="--index-memory must be"):
        parse_size(text)


@pytest.mark.slow
def test_the_budget_decides_which_candidates_are_built_and_the_fastest_measured_one_wins(tmp_path):
    n, d = 4000, 32
    cfg = IndexConfig(ivf_threshold=1000, recall_queries=200)
    small = estimate_bytes("ivfpq", n, d, 102) + 10_000  # only the PQ codes fit
    assert small < min(estimate_bytes(k, n, d, 102) for k in ("flat", "ivf", "ivfsq", "hnsw"))
    wd = workdir_with(tmp_path / "a", clustered(n))
    tight = update_index(wd, KEY, cfg, memory_budget=small)
    status = {c["kind"]: c["status"] for c in tight.candidates}
    assert tight.kind == "ivfpq" and status == {"ivf": "over budget", "ivfsq": "over budget", "ivfpq": "measured",
                                                "hnsw": "over budget"}
    assert tight.layout.startswith("IVF102_HNSW32,PQ4") and tight.bytes <= small and tight.warning is None
    assert tight.recall_at_10 >= 0.96 and "fastest measured candidate" in tight.reason
    # the search index keeps the re-ranking vectors in the file (memory-mapped) and answers exactly near the top
    index, meta = load_index(wd, KEY)
    assert meta["disk_bytes"] == 4 * d * n
    wide = update_index(wd, KEY, cfg, memory_budget=parse_size("10MB"))
    assert wide.rebuilt == "--index-memory changed to 10MB"
    measured = [c for c in wide.candidates if c["status"] == "measured"]
    assert {c["kind"] for c in measured} == {"ivf", "ivfsq", "ivfpq", "hnsw"}
    meeting = [c for c in measured if c["recall_at_10"] >= 0.96]
    assert wide.kind == min(meeting, key=lambda c: c["ms_per_query"])["kind"]
    # the budget is kept: a later update without it adds to the same kind
    _write_part(wd.embeddings(KEY), list(range(n, n + 50)), clustered(50, seed=5), KEY)
    more = update_index(wd, KEY, cfg)
    assert (more.kind, more.added, more.memory_budget, more.rebuilt) == (wide.kind, 50, 10**7, None)


@pytest.mark.slow
def test_a_budget_too_small_for_float32_lists_gets_sq8_codes_with_exact_scores(tmp_path):
    n, d = 4000, 32
    cfg = IndexConfig(ivf_threshold=1000, recall_queries=200)
    budget = estimate_bytes("ivfsq", n, d, 102) + 10_000
    assert budget < min(estimate_bytes(k, n, d, 102) for k in ("flat", "ivf", "hnsw"))
    vecs = clustered(n)
    wd = workdir_with(tmp_path, vecs)
    info = update_index(wd, KEY, cfg, memory_budget=budget)
    status = {c["kind"]: c["status"] for c in info.candidates}
    assert status == {"ivf": "over budget", "ivfsq": "measured", "ivfpq": "measured", "hnsw": "over budget"}
    assert info.kind == "ivfsq" and info.layout == "IVF102_HNSW32,SQ8,RFlat" and info.warning is None
    assert info.recall_at_10 >= 0.96 and info.bytes <= budget
    # loaded for search with the float32 vectors memory-mapped: the scores are exact dot
    # products with the stored embeddings (float16 in the parts), not SQ8's approximations
    index, meta = load_index(wd, KEY)
    assert meta["disk_bytes"] == 4 * d * n
    assert meta["refine_factor"] == info.refine_factor == refine_factor(index) >= 4  # the tuned factor, kept
    stored = vecs.astype(np.float16).astype(np.float32)
    queries = clustered(20, seed=7)
    sims, found = index.search(queries, 10)
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", queries, stored[found]), atol=1e-6)
    ivf = faiss.extract_index_ivf(index)
    coarse, internal = ivf.search(queries, 10)  # the codes alone are visibly approximate
    coarse_ids = faiss.vector_to_array(index.id_map)[internal]
    assert np.abs(coarse - np.einsum("qd,qkd->qk", queries, stored[coarse_ids])).max() > 1e-5


def test_tuning_raises_the_re_ranking_factor_when_nprobe_alone_stops_gaining():
    vecs = uniform(10_000)  # no structure: PQ4 codes rank the true neighbours far down
    ids = np.arange(len(vecs), dtype=np.int64)
    cfg = IndexConfig(recall_queries=200, target_recall=0.85)
    index = build_kind("ivfpq", vecs, ids, cfg)
    sample = _query_sample(vecs, ids, 10, 200, 0)
    nprobe, recall = tune(index, "ivfpq", sample, cfg)
    factor = refine_factor(index)
    assert recall >= 0.86 and factor > RERANK_FACTOR and recall == recall_against(index, *sample)
    set_refine_factor(index, RERANK_FACTOR)  # the old fixed factor: every list probed does not reach the goal
    set_search_param(index, "ivfpq", faiss.extract_index_ivf(index).nlist)
    assert recall_against(index, *sample) < 0.86
    # kinds without re-ranking have no factor
    assert refine_factor(build_kind("ivf", vecs[:2000], ids[:2000], cfg)) is None


def test_an_impossible_budget_is_refused_naming_the_option_before_anything_is_written(tmp_path):
    wd = workdir_with(tmp_path, clustered(3000))
    with pytest.raises(InputError, match=r"--index-memory 1KB is too small for 3,000 vectors of dim 32.*IVF.*PQ"):
        update_index(wd, KEY, IndexConfig(ivf_threshold=1000), memory_budget=1000)
    assert not wd.index(KEY).exists()


def test_a_recall_under_the_target_is_said_in_the_meta_and_the_status(tmp_path):
    n = 4000
    wd = workdir_with(tmp_path, uniform(n))
    budget = estimate_bytes("ivfpq", n, 32, 102) + 10_000  # no room for exact search either
    info = update_index(wd, KEY, IndexConfig(ivf_threshold=1000, recall_queries=200, target_recall=0.99), memory_budget=budget)
    assert info.kind == "ivfpq" and info.recall_at_10 < 0.99
    assert info.warning.startswith(f"recall@10 {info.recall_at_10:.3f} (on 200 held-out queries) is under the target 0.99")
    assert "no candidate within the budget reached" in info.reason
    meta = json.loads(wd.index(KEY).with_suffix(".json").read_text())
    assert recall_warning(meta) == info.warning
    status = index_status(wd, KEY)
    assert status["recall_ok"] is False and status["warning"] == info.warning and status["kind"] == "ivfpq"
    # an exact index, or one over its target, has none
    assert recall_warning({"kind": "flat", "recall_at_10": 1.0}) is None
    assert recall_warning({"kind": "ivf", "recall_at_10": 0.97, "target_recall": 0.95}) is None
    assert "under the target 0.95" in recall_warning({"kind": "ivf", "recall_at_10": 0.9, "recall_queries": 500})


def test_adds_that_drag_recall_under_the_target_trigger_a_logged_rebuild(tmp_path, caplog):
    cfg = IndexConfig(ivf_threshold=1000, recall_queries=300)
    wd = workdir_with(tmp_path, clustered(3000))
    first = update_index(wd, KEY, cfg)
    assert first.kind == "ivf" and first.recall_at_10 >= 0.96
    # structureless vectors land in centroids trained on clusters: the old layout cannot keep up
    _write_part(wd.embeddings(KEY), list(range(3000, 9000)), uniform(6000, seed=3), KEY)
    with caplog.at_level(logging.WARNING, logger="evaluator.embedding.index"):
        again = update_index(wd, KEY, cfg)
    assert again.rebuilt.startswith("after 6,000 adds recall@10 on held-out queries is")
    assert any("rebuilding the index of" in r.getMessage() for r in caplog.records)
    assert again.ntotal == 9000 and again.added == 9000
    assert again.warning is None and (again.kind == "flat" or again.recall_at_10 >= 0.96)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow
def test_cli_index_memory_records_the_choice_and_warns(tmp_path):
    n = 4000
    wd = workdir_with(tmp_path, uniform(n))
    base = ["index", "build", "-w", tmp_path, "--model", "ViT-B-32", "--pretrained", "random", "--ivf-threshold", 1000]
    bad = _run(*base, "--index-memory", "2XB")
    assert bad.exit_code == 1 and "--index-memory must be a size like 512MB or 2GB but is '2XB'" in bad.output
    tiny = _run(*base, "--index-memory", "1KB")
    assert tiny.exit_code == 1 and "--index-memory 1KB is too small" in tiny.output and not wd.index(KEY).exists()
    budget = estimate_bytes("ivfpq", n, 32, 102) + 10_000
    built = _run(*base, "--index-memory", f"{budget}B", "--target-recall", "0.99")
    assert built.exit_code == 0, built.output
    assert "IVF102_HNSW32,PQ4" in built.output and "WARNING: recall@10" in built.output
    con = duckdb.connect(str(wd.store), read_only=True)
    try:
        message, config = con.execute("SELECT message, config FROM runs WHERE kind = 'index'").fetchone()
    finally:
        con.close()
    row = json.loads(message)
    assert (row["kind"], row["memory_budget"], row["warning"] is not None) == ("ivfpq", budget, True)
    measured = {c["kind"]: c for c in row["candidates"] if c["status"] == "measured"}
    assert row["bytes"] <= budget and list(measured) == ["ivfpq"] and measured["ivfpq"]["ms_per_query"] > 0
    assert row["recall_at_10"] < 0.99
    assert json.loads(config)["memory_budget"] == budget
    info = _run("index", "info", "-w", tmp_path, "--model", "ViT-B-32", "--pretrained", "random")
    assert info.exit_code == 0 and "WARNING: recall@10" in info.output and "reason:" in info.output


def test_a_re_tune_starts_from_the_factor_tuned_before():
    vecs = clustered(4000)  # structured: the default factor reaches the goal
    ids = np.arange(len(vecs), dtype=np.int64)
    cfg = IndexConfig(recall_queries=200)
    index = build_kind("ivfpq", vecs, ids, cfg)
    sample = _query_sample(vecs, ids, 10, 200, 0)
    _, recall = tune(index, "ivfpq", sample, cfg)
    assert refine_factor(index) == RERANK_FACTOR and recall >= 0.96
    _, again = tune(index, "ivfpq", sample, cfg, from_factor=40)
    assert refine_factor(index) == 40 and again >= recall  # never below the factor it had


@pytest.mark.slow
def test_adds_re_tune_from_the_saved_re_ranking_factor(tmp_path):
    n, d = 4000, 32
    cfg = IndexConfig(ivf_threshold=1000, recall_queries=200)
    wd = workdir_with(tmp_path, clustered(n))
    first = update_index(wd, KEY, cfg, memory_budget=estimate_bytes("ivfpq", n, d, 102) + 10_000)
    assert first.kind == "ivfpq" and first.refine_factor == RERANK_FACTOR
    # an earlier tune that needed more candidates (as on harder data) left 40 in the meta
    meta_file = meta_path(wd.index(KEY))
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "refine_factor": 40}))
    _write_part(wd.embeddings(KEY), list(range(n, n + 50)), clustered(50, seed=5), KEY)
    after = update_index(wd, KEY, cfg)
    assert (after.added, after.rebuilt, after.refine_factor) == (50, None, 40)
