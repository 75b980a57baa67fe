"""Danbooru tags and catalog names: the merges that must happen, the ones that must not,
franchises from qualifiers, and a build with a tag list (ids kept, rebuild identical)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog.build import build_catalog, build_styles_csv
from catalog.build.danbooru import CatalogIndex, Franchises, Tag, display_name, judge_tag
from catalog.model import Artist, load_catalog
from evaluator.cli.main import main


def tag(name: str, posts: int = 500, aliases: tuple[str, ...] = (), type_: str = "1") -> Tag:
    return Tag(name, type_, posts, aliases, 1)


CATALOG = [
    Artist("ilya-kuvshinov", "Ilya Kuvshinov"),
    Artist("masamune-shirow", "Masamune Shirow"),
    Artist("akira-toriyama", "Akira Toriyama"),
    Artist("akira", "Akira"),
    Artist("artgerm", "Artgerm", aliases=("Stanley Lau",)),
    Artist("alphonse-mucha", "Alphonse Mucha", aliases=("Alfons Mucha", "mucha")),
    # a Roman-numeral "Ⅽ" and a Cyrillic form fold to Latin letters; "@@@" has none
    Artist("carl-theta", "Carl Theta", aliases=("\u216d", "С Тета", "@@@")),
    Artist("john-smith", "John Smith"),
    Artist("john-smith-1900", "John Smith", born=1900),
]


def merged_with(name: str, aliases: tuple[str, ...] = ()) -> tuple[str | None, str | None, str | None]:
    """(artist_id it merges with, route, refusal) of an artist tag against CATALOG."""
    match, refusal = judge_tag(CatalogIndex(CATALOG), tag(name, aliases=aliases))
    if match is None:
        return None, None, refusal
    return CATALOG[match.row].artist_id, match.route, refusal


@pytest.mark.parametrize(
    ("name", "artist_id", "route"),
    [
        ("ilya_kuvshinov", "ilya-kuvshinov", "tag=name"),
        ("shirow_masamune", "masamune-shirow", "family-name-first"),
        ("toriyama_akira", "akira-toriyama", "family-name-first"),
        ("stanley_lau", "artgerm", "tag=alias"),
    ],
)
def test_tags_that_name_a_catalog_artist_merge(name, artist_id, route):
    assert merged_with(name)[:2] == (artist_id, route)


def test_a_danbooru_alias_that_is_a_name_merges():
    assert merged_with("some_handle", aliases=("artgerm", "/ag"))[:2] == ("artgerm", "danbooru-alias")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("mucha_(muchakai)", "qualifier (muchakai) names another person than 'Alphonse Mucha'"),
        ("akira_(coffee_curry)", "qualifier (coffee_curry) names another person than 'Akira'"),
        ("c_(theta)", None),
        ("c", "too short"),
        ("@@@_(eckzahn)", None),
        ("mucha", "only the one-word alias 'mucha'"),
        ("john_smith", "fits 2 catalog rows"),
    ],
)
def test_tags_that_must_not_merge(name, reason):
    artist_id, _, refusal = merged_with(name)
    assert artist_id is None
    if reason:
        assert refusal is not None and reason in refusal
    # never with the person the stripped or folded letters would name
    assert artist_id not in ("alphonse-mucha", "akira-toriyama", "carl-theta")


def test_symbol_tag_and_its_symbol_alias_never_match_a_folding_alias():
    assert merged_with("@@@_(eckzahn)", aliases=("@@@",))[0] is None
    assert merged_with("c_(theta)", aliases=("c",))[0] is None
    # the qualifier is used, never stripped: the full form merges when a name carries it
    catalog = [*CATALOG, Artist("c-theta", "C (theta)")]
    match, _ = judge_tag(CatalogIndex(catalog), tag("c_(theta)"))
    assert match is not None and catalog[match.row].artist_id == "c-theta"


def test_display_name_keeps_the_qualifier():
    assert display_name("ilya_kuvshinov") == "Ilya Kuvshinov"
    assert display_name("akira_(coffee_curry)") == "Akira (coffee curry)"


COPYRIGHTS = [
    tag("kantai_collection", type_="3", aliases=("kancolle", "kankore")),
    tag("touhou", type_="3", aliases=("/to", "toho")),
    tag("fate_(series)", type_="3"),
    tag("dark_souls_(series)", type_="3", aliases=("dark_souls",)),
    tag("dark_souls_i", type_="3", aliases=("dark_souls",)),
]


@pytest.mark.parametrize(
    ("character", "franchise"),
    [
        ("admiral_(kancolle)", "kantai_collection"),  # an alias of the copyright
        ("remilia_scarlet_(touhou)", "touhou"),  # the copyright tag itself
        ("saber_(fate)", "fate_(series)"),  # the copyright with Danbooru's _(series)
        ("link_(male)", ""),
        ("boo_(ghost)", ""),
        ("solaire_(dark_souls)", ""),  # an alias of two copyrights names neither
        ("hatsune_miku", ""),  # no qualifier
        ("admiral_(kancolle)_(cosplay)", ""),
    ],
)
def test_franchise_only_from_a_copyright_qualifier(character, franchise):
    assert Franchises(COPYRIGHTS).of(character) == franchise


# ------------------------------------------------------------------ a build with a tag list


def write_sources(folder: Path, clip: list[str], tags: list[tuple[str, str, int, str]]) -> Path:
    """The builder's source files, nearly empty but for clip-interrogator and Danbooru."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sdxl-style-studies-artists.csv").write_text(
        "last_name,first_name,name,recognized_sdxl,recognized_sd1,tags,year_of_death,notes\n"
        "Mucha,Alphonse,Alphonse Mucha,Yes,Yes,art nouveau,1939,\n", encoding="utf-8")
    (folder / "sd15-cheatsheet-artists.json").write_text(json.dumps([]), encoding="utf-8")
    (folder / "sd15-cheatsheet-excluded.json").write_text(json.dumps([]), encoding="utf-8")
    (folder / "clip-interrogator-artists.txt").write_text("\n".join(clip) + "\n", encoding="utf-8")
    (folder / "clip-interrogator-movements.txt").write_text("art nouveau\n", encoding="utf-8")
    (folder / "clip-interrogator-mediums.txt").write_text("an oil painting\n", encoding="utf-8")
    (folder / "wikiart-artist-styles.csv").write_text("artist_slug,style,n_images\n", encoding="utf-8")
    with open(folder / "danbooru-tags.csv", "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(tags)
    return folder


TAGS = [
    ("ilya_kuvshinov", "1", 1508, "kr0npr1nz,madartist"),
    ("toriyama_akira", "1", 275, ""),
    ("mucha_(muchakai)", "1", 199, "mutyakai"),
    ("akira_(coffee_curry)", "1", 418, "akira02"),
    ("@@@_(eckzahn)", "1", 223, "@@@"),
    ("akira_toriyama", "4", 300, ""),  # a character tag that slugs like an artist: -2
    ("rare_artist", "1", 99, ""),
    ("admiral_(kancolle)", "4", 37876, "admiral_(kantai_collection)"),
    ("kantai_collection", "3", 497436, "kancolle,kankore"),
    ("1girl", "0", 6008644, "1girls"),
]


def test_build_merges_tags_keeps_ids_and_is_byte_identical(tmp_path):
    clip = ["Ilya Kuvshinov", "Akira Toriyama", "Mucha"]  # a bare "Mucha": Alphonse Mucha's alias
    before, _ = build_catalog(write_sources(tmp_path / "old", clip, []))
    folder = write_sources(tmp_path / "src", clip, TAGS)
    rows, report = build_catalog(folder)
    by_id = {a.artist_id: a for a in rows}
    assert {a.artist_id for a in before} <= set(by_id)  # every id of the catalog without tags
    assert by_id["ilya-kuvshinov"].tag == "ilya_kuvshinov" and by_id["ilya-kuvshinov"].post_count == 1508
    assert by_id["ilya-kuvshinov"].sources[-1] == "danbooru" and by_id["ilya-kuvshinov"].kind == "artist"
    assert by_id["akira-toriyama"].tag == "toriyama_akira"
    assert by_id["alphonse-mucha"].tag == "" and by_id["mucha-muchakai"].tag == "mucha_(muchakai)"
    assert by_id["akira-coffee-curry"].name == "Akira (coffee curry)"
    character = by_id["akira-toriyama-2"]  # the slug was taken: disambiguated, not renamed
    assert (character.kind, character.tag) == ("character", "akira_toriyama")
    assert by_id["admiral-kancolle"].franchise == "kantai_collection"
    assert not any(a.tag in ("rare_artist", "1girl", "kantai_collection") for a in rows)  # < 100 posts, not a kind
    assert not any(a.tag == "@@@_(eckzahn)" for a in rows)
    assert any(d.text == "@@@_(eckzahn)" and "formula" in d.reason for d in report.dropped)
    details = report.details()
    assert "tag:tag=name: ilya_kuvshinov" in details and "tag:family-name-first: toriyama_akira" in details
    assert "mucha_(muchakai): the qualifier (muchakai) names another person than 'Alphonse Mucha'" in details
    build_styles_csv(folder, tmp_path / "a.csv")
    build_styles_csv(folder, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert {a.artist_id for a in load_catalog(tmp_path / "a.csv")} == set(by_id)


def test_min_posts_and_report_from_the_cli(tmp_path):
    folder = write_sources(tmp_path / "src", ["Ilya Kuvshinov"], TAGS)
    out, report = tmp_path / "styles.csv", tmp_path / "report.txt"
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(folder), "--out", str(out),
                                       "--report", str(report), "--min-posts", "1000"])
    assert result.exit_code == 0, result.output
    tags = {a.tag for a in load_catalog(out)} - {""}
    assert tags == {"ilya_kuvshinov", "admiral_(kancolle)"}
    assert "refused tag merges:" in report.read_text(encoding="utf-8")
    assert "danbooru: read 10 tag(s)" in result.output


def test_build_without_a_tag_list_says_so(tmp_path):
    folder = write_sources(tmp_path / "src", ["Ilya Kuvshinov"], [])
    (folder / "danbooru-tags.csv").unlink()
    rows, report = build_catalog(folder)
    assert {a.kind for a in rows} == {"artist"} and "built without Danbooru" in report.summary()


def test_a_malformed_tag_line_is_named(tmp_path):
    folder = write_sources(tmp_path / "src", ["Ilya Kuvshinov"], TAGS)
    with open(folder / "danbooru-tags.csv", "a", encoding="utf-8") as handle:
        handle.write("broken,1,many,\n")
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(folder), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "danbooru-tags.csv:11:" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_a_previous_catalog_pins_the_ids_of_its_tag_rows(tmp_path):
    """A newer tag list must not move an id: a row keeps the id the catalog gave it before."""
    clip = ["Ilya Kuvshinov", "Akira Toriyama"]
    first = tmp_path / "styles.csv"
    build_styles_csv(write_sources(tmp_path / "v1", clip, TAGS), first)
    assert {a.tag: a.artist_id for a in load_catalog(first)}["akira_toriyama"] == "akira-toriyama-2"
    # the next list adds a character tag slugging the same and sorting first: without the
    # previous catalog it would take "-2" from the older character
    newer = [*TAGS, ("akira.toriyama", "4", 150, "")]
    folder = write_sources(tmp_path / "v2", clip, newer)
    unpinned = {a.tag: a.artist_id for a in build_catalog(folder)[0]}
    assert unpinned["akira.toriyama"] == "akira-toriyama-2" and unpinned["akira_toriyama"] == "akira-toriyama-3"
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(folder), "--out", str(first)])
    assert result.exit_code == 0, result.output
    pinned = {(a.kind, a.tag): a.artist_id for a in load_catalog(first)}
    assert pinned[("character", "akira_toriyama")] == "akira-toriyama-2"
    assert pinned[("character", "akira.toriyama")] == "akira-toriyama-3"
    again = tmp_path / "again.csv"
    build_styles_csv(folder, again, previous=first)
    assert again.read_bytes() == first.read_bytes()  # rebuilding over itself changes nothing
