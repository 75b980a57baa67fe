"""Import finds catalog rows by their Danbooru tag (issue 15): labels and booru prompts
written with a tag, an escaped tag or one of Danbooru's aliases of it land on the row,
and a qualified tag is never cut down to the bare name it starts with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from catalog.model import Artist
from evaluator.generation.pngmeta import encode_png, format_parameters
from evaluator.ingest.importer import ArtistIndex, import_images
from evaluator.workspace.store import open_store

CATALOG = [
    Artist("akira", "Akira"),
    Artist("akira-coffee-curry", "Akira (coffee curry)", tag="akira_(coffee_curry)", post_count=418),
    Artist("jonathan-hamilton", "Jonathan Hamilton", tag="tsuaii", post_count=275, tag_aliases=("jonathan_hamilton",)),
    Artist("artgerm", "Artgerm", aliases=("Stanley Lau",), tag="stanley_lau", post_count=619),
    Artist("hatsune-miku", "Hatsune Miku", kind="character", tag="hatsune_miku", post_count=100000),
]


def test_labels_in_tag_form_find_their_rows():
    index = ArtistIndex(CATALOG)
    assert index.lookup("tsuaii") == "jonathan-hamilton"
    assert index.lookup("jonathan_hamilton") == "jonathan-hamilton"  # Danbooru's alias of the tag
    assert index.lookup("akira_\\(coffee_curry\\)") == "akira-coffee-curry"  # escaped as in a prompt
    assert index.lookup("Hatsune Miku") == "hatsune-miku"
    # a qualifier names the person: an unknown qualified tag is unknown, never "Akira"
    assert index.lookup("akira_(been0328)") is None
    assert index.lookup("Akira") == "akira"


def test_booru_prompts_name_their_tag():
    index = ArtistIndex(CATALOG)
    assert index.lookup_in_prompt("tsuaii, 1girl, solo, masterpiece") == "jonathan-hamilton"
    assert index.lookup_in_prompt("1girl, (artist:stanley_lau:1.2), smile") == "artgerm"
    assert index.lookup_in_prompt("akira_\\(coffee_curry\\), hatsune_miku, 1girl") == "akira-coffee-curry"
    assert index.lookup_in_prompt("1girl, solo, smile") is None
    assert index.lookup_in_prompt("a portrait in the style of Artgerm") == "artgerm"


def _png(path: Path, prompt: str, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    params = format_parameters(prompt, "", 20, "Euler a", 7.0, seed, 32, 32, model="noobai-xl")
    path.write_bytes(encode_png(Image.fromarray(pixels), params))


def test_import_assigns_tag_labels_and_booru_prompts(tmp_path):
    from catalog.model import write_catalog

    catalog = tmp_path / "styles.csv"
    write_catalog(CATALOG, catalog)
    src = tmp_path / "src"
    src.mkdir()
    _png(src / "a.png", "akira_\\(coffee_curry\\), 1girl, solo", 1)
    _png(src / "b.png", "1girl, (artist:jonathan_hamilton:1.1)", 2)
    _png(src / "c.png", "1girl", 3)
    (src / "labels.csv").write_text("file,artist\nc.png,stanley_lau\n")
    wd = tmp_path / "wd"
    summary = import_images(src, wd, labels_csv=src / "labels.csv", catalog_path=catalog, progress=False)
    assert summary.imported == 3 and not summary.failed and not summary.unknown_artists
    with open_store(wd / "atelier.duckdb", read_only=True) as con:
        got = dict(con.execute("SELECT regexp_extract(source_path, '[abc]'), artist_id FROM images").fetchall())
    assert got == {"a": "akira-coffee-curry", "b": "jonathan-hamilton", "c": "artgerm"}
