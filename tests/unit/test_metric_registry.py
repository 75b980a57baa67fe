"""The metric registry drives scoring: which metrics run per seed, which need references.

Metrics registered here go into a copy of the registry (monkeypatched), so the real one
is left as it was for the other tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalog.units import BASELINE_ARTIST_ID
from evaluator.errors import AtelierError, InputError
from evaluator.scoring import metrics as M
from evaluator.scoring.aggregate import ScoringBatch, compute_scores, scored_meta
from evaluator.scoring.stats import BootstrapConfig


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: what a test registers disappears after it."""
    monkeypatch.setattr(M, "_REGISTRY", dict(M._REGISTRY))
    return M._REGISTRY


def _batch(with_references: bool = False) -> ScoringBatch:
    """Two checkpoints x two artists + baseline x three seeds, in 8 dimensions."""
    rng = np.random.default_rng(0)
    rows = [(ck, art, seed) for ck in ("base", "ft") for art in ("a", "b", BASELINE_ARTIST_ID) for seed in (0, 1, 2)]
    n = len(rows)
    vecs = rng.normal(size=(n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    text = rng.normal(size=(2, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    frame = pd.DataFrame(rows, columns=["checkpoint", "artist_id", "seed"])
    frame["image_id"] = np.arange(n)
    frame["template"] = "style"
    inputs = M.EvalInputs(
        image_ids=frame["image_id"].to_numpy(dtype=np.int64),
        vecs=vecs,
        checkpoint=frame["checkpoint"].to_numpy(dtype=object),
        artist_id=frame["artist_id"].to_numpy(dtype=object),
        template=frame["template"].to_numpy(dtype=object),
        seed=frame["seed"].to_numpy(dtype=np.int64),
        prompt_vecs=vecs.copy(),
        catalog_ids=["a", "b"],
        artist_text_vecs=text,
        ref_vecs=text.copy() if with_references else None,
        ref_artist=np.array(["a", "b"], dtype=object) if with_references else None,
        baseline_artist=BASELINE_ARTIST_ID,
    )
    return ScoringBatch(
        inputs=inputs, meta=scored_meta(frame), new_mask=np.ones(n, dtype=bool),
        old_scores=pd.DataFrame(columns=["image_id", "metric", "value"]), model="m", pairs=[("base", "ft")],
        bootstrap=BootstrapConfig(n_boot=20), k_neighbors=1,
    )


def test_registry_lists_itself_and_leaves_out_reference_metrics_without_references():
    names = [m.name for m in M.list_metrics()]
    table = M.metrics_table()
    assert all(name in table for name in names)
    without = {m.name for m in M.list_metrics(has_references=False)}
    needing = {m.name for m in M.list_metrics() if m.needs_references}
    assert needing == {"reference_similarity", "retrieval_map@1", "retrieval_map@5", "retrieval_map@10", "fd_clip",
                       "prototype_top1", "prototype_top5", "prototype_mrr", "discrimination_gap"}
    assert without == set(names) - needing
    assert {m.name for m in M.seed_metrics("artist")} == {"recognition_margin"}


def test_unknown_names_get_close_ones_suggested_as_an_atelier_error():
    with pytest.raises(M.UnknownMetricError, match="did you mean top1, top5") as caught:
        M.get_metric("top_1")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, AtelierError)


def test_registry_refuses_collisions_and_per_seed_metrics_it_could_not_pair(registry):
    with pytest.raises(InputError, match="already registered"):
        M.register_metric("diversity", "again", True, level="artist", per_seed=False)(lambda inp: None)
    with pytest.raises(InputError, match="needs seed_values"):
        M.register_metric("x_artist", "no seed values", True, level="artist")
    with pytest.raises(InputError, match="no per-seed value"):
        M.register_metric("x_checkpoint", "per seed?", True, level="checkpoint")
    assert "x_artist" not in registry and "x_checkpoint" not in registry


def test_comparisons_cover_exactly_the_per_seed_metrics_of_the_registry(registry):
    def seed_values(inp):
        keep = inp.artist_id != inp.baseline_artist
        frame = pd.DataFrame({"checkpoint": inp.checkpoint[keep], "artist_id": inp.artist_id[keep], "seed": inp.seed[keep]})
        return frame.drop_duplicates().assign(value=np.where(frame.drop_duplicates()["checkpoint"] == "ft", 1.0, 0.0))

    def artist_fn(inp):
        values = seed_values(inp)
        return values.groupby(["checkpoint", "artist_id"], sort=True)["value"].agg(["mean", "size"]).reset_index().rename(
            columns={"mean": "value", "size": "n"})

    M.register_metric("x_seeded", "per-seed artist metric", True, level="artist", seed_values=seed_values)(artist_fn)
    M.register_metric("x_image_no_seed", "image metric without a per-seed comparison", True, per_seed=False)(
        lambda inp: np.ones(inp.n))
    tables = compute_scores(_batch())
    compared = set(tables.comparisons["metric"])
    assert "x_seeded" in compared and "recognition_margin" in compared and "clip_score" in compared
    assert "x_image_no_seed" not in compared and "diversity" not in compared
    assert "x_image_no_seed" in set(tables.image_scores["metric"])  # still scored, only not compared
    gained = tables.comparisons[tables.comparisons["metric"] == "x_seeded"]
    assert (gained["delta"] == 1.0).all() and (gained["n"] == 3).all()


def test_metrics_needing_references_are_not_run_without_them(registry):
    calls = []

    def image_fn(inp):
        calls.append(inp.has_references())
        return np.zeros(inp.n)

    M.register_metric("x_refs", "needs references", True, needs_references=True)(image_fn)
    without = compute_scores(_batch(with_references=False))
    assert calls == [] and "x_refs" not in set(without.image_scores["metric"])
    assert not {"reference_similarity", "retrieval_map@10", "fd_clip"} & set(without.checkpoint_scores["metric"])
    with_refs = compute_scores(_batch(with_references=True))
    assert calls == [True] and "x_refs" in set(with_refs.image_scores["metric"])
    assert {"reference_similarity", "fd_clip"} <= set(with_refs.image_scores["metric"]) | set(with_refs.checkpoint_scores["metric"])
