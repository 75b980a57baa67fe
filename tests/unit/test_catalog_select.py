"""Selection filters and the stratified, seeded sample."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from catalog.model import Artist, catalog_frame, load_catalog
from catalog.select import select_artists

REPO = Path(__file__).resolve().parents[2]


def make(i: int, movement: str, **extra) -> Artist:
    return Artist(artist_id=f"a-{i:03d}", name=f"Artist {i}", movements=(movement,) if movement else (), **extra)


ARTISTS = (
    [make(i, "Impressionism") for i in range(60)]
    + [make(100 + i, "Cubism") for i in range(30)]
    + [make(200 + i, "Ukiyo-e") for i in range(9)]
    + [make(300, "", tags=("portrait",), living=True, recognized_sdxl="yes", aliases=("Zoë Q",))]
)


def test_filters():
    assert len(select_artists(ARTISTS, movement="impressionism")) == 60
    assert len(select_artists(ARTISTS, movement="ukiyo-e")) == 9
    assert [a.artist_id for a in select_artists(ARTISTS, tag="Portrait")] == ["a-300"]
    assert [a.artist_id for a in select_artists(ARTISTS, living=True)] == ["a-300"]
    assert len(select_artists(ARTISTS, living=False)) == 0
    assert [a.artist_id for a in select_artists(ARTISTS, recognized="sdxl=yes")] == ["a-300"]
    assert len(select_artists(ARTISTS, recognized="sdxl=blank")) == 99
    assert len(select_artists(ARTISTS, recognized="blank")) == 100  # either model unlabelled
    assert [a.artist_id for a in select_artists(ARTISTS, text="zoe")] == ["a-300"]
    with pytest.raises(ValueError, match="recognized must be"):
        select_artists(ARTISTS, recognized="maybe")


def test_sample_is_stratified_and_deterministic():
    sample = select_artists(ARTISTS, sample=10, seed=3)
    assert len(sample) == 10
    counts = Counter(a.primary_movement for a in sample)
    # proportional (6, 3, 0.9, 0.1), but every movement at least once: 5, 3, 1, 1
    assert (counts["Impressionism"], counts["Cubism"], counts["Ukiyo-e"], counts[""]) == (5, 3, 1, 1)
    assert sample == select_artists(ARTISTS, sample=10, seed=3)
    assert [a.artist_id for a in sample] == sorted(a.artist_id for a in sample)
    assert any(select_artists(ARTISTS, sample=10, seed=s) != sample for s in range(4, 10))
    assert select_artists(ARTISTS, sample=1000) == sorted(ARTISTS, key=lambda a: a.artist_id)
    # every movement (and "none") is represented once the sample is big enough
    assert len({a.primary_movement for a in select_artists(ARTISTS, sample=4, seed=0)}) == 4


def test_sample_of_the_real_catalog():
    artists = load_catalog(REPO / "styles.csv")
    # 300 of ~43,000 rows (most Danbooru rows have no movement): the share of the
    # ~9,700 artists with movements is still spread over several of them
    first = select_artists(artists, sample=300, seed=7)
    again = select_artists(load_catalog(REPO / "styles.csv"), sample=300, seed=7)
    assert first == again and len(first) == 300
    assert len({a.primary_movement for a in first}) > 5


def test_catalog_frame_loads_into_the_store(tmp_path):
    from evaluator.workspace.store import open_store, transaction, upsert_df

    frame = catalog_frame(ARTISTS[:2] + [Artist("x", "X", born=1800, died=1850, living=False)])
    assert str(frame["born"].dtype) == "Int64" and str(frame["living"].dtype) == "boolean"
    assert frame["born"].isna().sum() == 2
    real = catalog_frame(load_catalog(REPO / "styles.csv"))
    with open_store(tmp_path / "atelier.duckdb") as con:
        store_columns = [r[0] for r in con.execute("DESCRIBE artists").fetchall()]
        assert list(real.columns) == store_columns
        with transaction(con):
            upsert_df(con, "artists", real, ["artist_id"])
        count, living, monet = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE living), "
            "max(born) FILTER (WHERE artist_id = 'claude-monet') FROM artists"
        ).fetchone()
    assert count == len(real) and living > 1000 and monet == 1840


def test_a_value_no_row_has_is_refused_with_close_spellings():
    from catalog.model import load_catalog
    from catalog.select import select_artists
    from evaluator.errors import InputError

    artists = load_catalog()
    with pytest.raises(InputError, match=r"movement 'Impresionism'; did you mean 'Impressionism'"):
        select_artists(artists, movement="Impresionism")
    with pytest.raises(InputError, match="medium 'zzzq'"):
        select_artists(artists, medium="zzzq")
    # a known value that other filters leave empty is an empty selection, not an error
    assert select_artists(artists, movement="Impressionism", text="no such name at all") == []
