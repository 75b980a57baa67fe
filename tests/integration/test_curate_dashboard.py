"""The dashboard's curated-images listing (Gallery) and an artist's flagged images (Artist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest
from support.store import build_store, raw

from evaluator.cli.main import main

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curate-dash")
    build_store(root, n_artists=4, n_templates=1, n_seeds=2, n_checkpoints=2, with_images=True)
    # the synthetic images are 64 px: enlarge every other file, so the default --min-side
    # (256) splits them into low_resolution and kept ones
    from PIL import Image

    for i, (rel,) in enumerate(raw(root, "SELECT path FROM images WHERE path IS NOT NULL ORDER BY path")):
        if i % 2:
            Image.open(root / rel).convert("RGB").resize((320, 320 + 16 * i)).save(root / rel)
    result = CliRunner().invoke(main, ["curate", "--from-store", "-w", str(root), "-q", "--workers", "0"])
    assert result.exit_code == 0, result.output
    return root


def test_curated_files_sort_and_filter(workdir):
    from dashboard import queries as q

    store = q.Store(workdir)
    with store.session():
        everything, total = q.curated_files(store, q.CurationFilter(sort="resolution"), limit=500)
        flagged, n_flagged = q.curated_files(store, q.CurationFilter(flags=("low_resolution",)), limit=500)
        _, n_any = q.curated_files(store, q.CurationFilter(flagged=True), limit=1)
        kept, n_kept = q.curated_files(store, q.CurationFilter(flagged=False, sort="resolution", descending=False),
                                       limit=500)
    assert total == raw(workdir, "SELECT count(*) FROM curation_files")[0][0] == n_any + n_kept
    assert n_flagged <= n_any
    assert list(everything["megapixels"]) == sorted(everything["megapixels"], reverse=True)
    assert n_flagged > 0 and all("low_resolution" in f for f in flagged["flags"])
    assert n_kept > 0 and all(len(f) == 0 for f in kept["flags"])
    assert list(kept["megapixels"]) == sorted(kept["megapixels"])


def _open(workdir: Path, page: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("ATELIER_WORKDIR", str(workdir))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["page"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_gallery_lists_curated_files_and_filters_by_flag(workdir, monkeypatch):
    at = _open(workdir, "Gallery", monkeypatch)
    table = next(d.value for d in at.dataframe if "flags" in d.value.columns)
    assert len(table) == raw(workdir, "SELECT count(*) FROM curation_files")[0][0]
    at.multiselect(key="cur-flags").set_value(["low_resolution"]).run()
    table = next(d.value for d in at.dataframe if "flags" in d.value.columns)
    assert len(table) > 0 and table["flags"].str.contains("low_resolution").all()


@pytest.mark.slow
def test_artist_page_shows_the_artists_flagged_images(workdir, monkeypatch):
    artist, n = raw(workdir, "SELECT artist_id, count(*) FROM curation_files WHERE len(flags) > 0 "
                             "GROUP BY artist_id ORDER BY artist_id LIMIT 1")[0]
    monkeypatch.setenv("ATELIER_WORKDIR", str(workdir))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["page"] = "Artist"
    at.query_params["artist"] = artist
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value == f"Flagged images ({n:,})" for s in at.subheader)
    table = next(d.value for d in at.dataframe if "flags" in d.value.columns)
    assert len(table) == n and set(table["artist_id"]) == {artist}
