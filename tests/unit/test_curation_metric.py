"""The `aesthetic` metric of the scoring registry: LAION's head when it matches the embedding model."""

from __future__ import annotations

import shutil

import numpy as np

from evaluator.scoring import metrics as M


def _inputs(vecs: np.ndarray, model: str) -> M.EvalInputs:
    n = len(vecs)
    return M.EvalInputs(
        image_ids=np.arange(n, dtype=np.int64), vecs=vecs.astype(np.float32),
        checkpoint=np.array(["ck"] * n, dtype=object), artist_id=np.array(["a"] * n, dtype=object),
        template=np.array(["t"] * n, dtype=object), seed=np.arange(n, dtype=np.int64), prompt_vecs=None,
        catalog_ids=["a"], artist_text_vecs=np.zeros((1, vecs.shape[1]), np.float32), model=model,
    )


def test_aesthetic_scores_with_the_cached_head_of_the_embedding_model(shared_data, tmp_path, monkeypatch):
    from evaluator.curation.aesthetic import load_head

    models = shared_data / "models" / "laion-aesthetic-v1"
    (tmp_path / "aesthetic").mkdir()
    shutil.copyfile(models / "sa_0_4_vit_b_32_linear.pth", tmp_path / "aesthetic" / "sa_0_4_vit_b_32_linear.pth")
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path))
    vecs = np.stack([np.load(models / "vit_b_32_embeddings" / f"rating{r}.npy").reshape(-1) for r in range(10)])
    metric = M.get_metric("aesthetic")
    assert metric.level == "image" and metric.higher_is_better
    values = metric.fn(_inputs(vecs, "ViT-B-32/openai"))
    np.testing.assert_allclose(values, load_head(models / "sa_0_4_vit_b_32_linear.pth").score(vecs), rtol=1e-6)
    assert np.all(np.diff(values) > 0)
    # another embedding model (same dimension) gets no score: NULL, not a wrong number
    assert np.isnan(metric.fn(_inputs(vecs, "ViT-B-32/laion2b_s34b_b79k"))).all()
    assert np.isnan(metric.fn(_inputs(vecs, "ViT-B-16/openai"))).all()  # no B/16 head in this cache
