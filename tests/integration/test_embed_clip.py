"""open_clip loading offline (tiny random-weight model) and resumable image/text embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evaluator.embedding.embed import (
    ClipSpec,
    embed_image_files,
    embed_images,
    embed_texts,
    embedded_ids,
    load_clip,
    load_embeddings,
    model_key,
    text_cache_dir,
)
from evaluator.testing.tiny_clip import build_tiny_clip
from evaluator.workspace.workdir import Workdir


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


def _images(root, n, seed=0, size=40):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rel = f"images/x/img{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(size, size + i % 3, 3), dtype=np.uint8)).save(root / rel)
        rows.append({"image_id": 1000 + i, "path": rel})
    return rows


def test_tiny_clip_loads_offline_with_a_stable_key(clip_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip(str(clip_dir))
    assert clip.key.startswith("tiny-clip@") and len(clip.key) == len("tiny-clip@") + 8
    assert clip.embed_dim == 16
    # the same seed rebuilt elsewhere is the same model; another seed is another
    assert model_key(str(build_tiny_clip(tmp_path / "again", seed=0))) == clip.key
    assert model_key(str(build_tiny_clip(tmp_path / "other", seed=1))) != clip.key
    assert load_clip(f"local-dir:{clip_dir}") is clip  # loaded once per process
    vec = embed_texts(clip, ["art by Claude Monet"])
    assert vec.shape == (1, 16) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)


def test_bad_model_specs_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="did you mean ViT-B-32"):
        load_clip("ViT-B-33", "openai")
    with pytest.raises(ValueError, match="needs --pretrained"):
        load_clip("ViT-B-32")
    with pytest.raises(ValueError, match="neither a weights file nor a pretrained tag"):
        load_clip("ViT-B-32", "laion2b_s34b_b7")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no open_clip_config.json"):
        load_clip(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        ClipSpec("x", dtype="float8").validate()
    with pytest.raises(ValueError, match="device must be"):
        ClipSpec("x", device="tpu").validate()


def test_embed_images_normalises_skips_done_and_records_bad_files(clip_dir, tmp_path):
    wd = Workdir.at(tmp_path / "wd")
    clip = load_clip(str(clip_dir))
    rows = _images(wd.root, 10)
    (wd.root / "images/x/broken.png").write_bytes(b"\x89PNG truncated")
    rows.append({"image_id": 5, "path": "images/x/broken.png"})
    rows.append({"image_id": 6, "path": "images/x/missing.png"})
    first = embed_images(wd, clip, rows[:6], batch_size=4, num_workers=0, part_size=4, progress=False)
    assert (first.n_done, first.n_skipped, first.n_failed) == (6, 0, 0)
    assert len(first.parts) == 2  # a part every 4 images: what a killed run can lose
    second = embed_images(wd, clip, pd.DataFrame(rows), batch_size=4, num_workers=2, part_size=100, progress=False)
    assert (second.n_done, second.n_skipped, second.n_failed) == (4, 6, 2)
    assert set(second.errors) == {5, 6} and "missing.png" in second.errors[6]
    ids, vecs = load_embeddings(wd, clip.key)
    assert ids.tolist() == sorted(r["image_id"] for r in rows[:10])
    assert vecs.dtype == np.float32 and vecs.shape == (10, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=2e-3)  # float16 storage
    assert embedded_ids(wd, clip.key) == set(ids.tolist())
    # workers and the main process compute the same vectors
    direct = embed_image_files(clip, [wd.root / rows[7]["path"]])
    np.testing.assert_allclose(vecs[ids.tolist().index(1007)], direct[0], atol=2e-3)
    third = embed_images(wd, clip, rows[:10], progress=False)
    assert third.n_done == 0 and third.n_skipped == 10


def test_embedding_rows_need_ids_and_paths(clip_dir, tmp_path):
    wd = Workdir.at(tmp_path)
    clip = load_clip(str(clip_dir))
    with pytest.raises(ValueError, match=r"image row 0 \(image_id 3\) has no path"):
        embed_images(wd, clip, [{"image_id": 3, "path": None}], progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        embed_images(wd, clip, [], batch_size=0, progress=False)


def test_duplicate_parts_are_deduplicated_on_load(clip_dir, tmp_path):
    wd = Workdir.at(tmp_path)
    clip = load_clip(str(clip_dir))
    rows = _images(wd.root, 3)
    embed_images(wd, clip, rows, num_workers=0, progress=False)
    # a second process that raced this one writes the same images again
    (wd.embeddings(clip.key) / "copy").mkdir()
    for part in wd.embeddings(clip.key).glob("part-*.parquet"):
        (wd.embeddings(clip.key) / f"part-zz-{part.name}").write_bytes(part.read_bytes())
    ids, _ = load_embeddings(wd, clip.key)
    assert ids.tolist() == [1000, 1001, 1002]
    ids, _ = load_embeddings(wd, clip.key, ids=[1001])
    assert ids.tolist() == [1001]


def test_text_cache_reuses_embeddings_and_keeps_order(clip_dir, tmp_path):
    clip = load_clip(str(clip_dir))
    wd = Workdir.at(tmp_path)
    cache = text_cache_dir(wd, clip.key)
    texts = [f"art by artist {i}" for i in range(50)]
    first = embed_texts(clip, texts, cache_dir=cache)
    files = sorted(cache.glob("texts-*.parquet"))
    assert len(files) == 1
    again = embed_texts(clip, [texts[3], texts[3], texts[10]], cache_dir=cache)
    assert sorted(cache.glob("texts-*.parquet")) == files  # nothing re-encoded
    np.testing.assert_array_equal(again, first[[3, 3, 10]])
    fresh = embed_texts(clip, [texts[3]])  # no cache: the same numbers
    np.testing.assert_allclose(fresh[0], first[3], atol=1e-6)
    more = embed_texts(clip, [*texts[:2], "a new text"], cache_dir=cache)
    assert len(list(cache.glob("texts-*.parquet"))) == 2 and more.shape == (3, 16)


def test_text_cache_compacts_its_parts_and_the_artist_template_matrix(clip_dir, tmp_path, monkeypatch):
    import evaluator.embedding.text as E

    clip = load_clip(str(clip_dir))
    cache = tmp_path / "texts"
    monkeypatch.setattr(E, "MAX_TEXT_PARTS", 3)
    for i in range(5):
        embed_texts(clip, [f"text {i}"], cache_dir=cache)
    assert len(list(cache.glob("texts-*.parquet"))) <= 3
    again = embed_texts(clip, [f"text {i}" for i in range(5)], cache_dir=cache)
    np.testing.assert_allclose(again, embed_texts(clip, [f"text {i}" for i in range(5)]), atol=1e-6)
    order, matrix = E.artist_template_texts(clip, ["Claude Monet", "Hokusai"], {"art-by": "art by {name}", "null": "a painting"}, cache)
    assert order == ["art-by", "null"] and matrix.shape == (2, 2, 16)
    np.testing.assert_allclose(matrix[0, 1], matrix[1, 1])  # the baseline names no artist
    np.testing.assert_allclose(matrix[1, 0], embed_texts(clip, ["art by Hokusai"])[0], atol=1e-6)
