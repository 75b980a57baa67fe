"""The builder: name forms that must merge, near-names that must not, drops, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog.build import (
    BuildReport,
    Record,
    assign_ids,
    build_catalog,
    build_styles_csv,
    wikiart_display_name,
)
from catalog.model import load_catalog
from catalog.names import expand_name, fix_mojibake, invert_name, name_key, slugify
from catalog.units import LIST_SEPARATOR
from catalog.validate import validate_catalog
from evaluator.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SOURCES = Path(__file__).resolve().parents[3] / "shared" / "data" / "artist-sources"
needs_sources = pytest.mark.skipif(not SOURCES.is_dir(), reason="shared artist sources not present")

SDXL_HEADER = ["last_name", "first_name", "name", "recognized_sdxl", "recognized_sd1", "tags", "year_of_death", "notes"]


def write_sources(folder: Path, sdxl=(), cheat=(), excluded=(), clip=(), wikiart=()) -> Path:
    """Six small source files in the real formats."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "sdxl-style-studies-artists.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SDXL_HEADER)
        for row in sdxl:
            last, first, rec_xl, rec_1, tags, died, notes = row
            writer.writerow([last, first, f"{first} {last}", rec_xl, rec_1, tags, died, notes])
    entries = []
    for name, born, death, category, prompt in cheat:
        entries.append({"Type": "1", "Name": name, "Born": born, "Death": death, "Prompt": f"style of {prompt}",
                        "NPrompt": "", "Category": category, "Checkpoint": "Deliberate 2.0", "Extrainfo": "",
                        "Image": "x.webp", "Creation": "1"})
    (folder / "sd15-cheatsheet-artists.json").write_text(json.dumps(entries), encoding="utf-8")
    (folder / "sd15-cheatsheet-excluded.json").write_text(
        json.dumps([{"Name": last, "FirstName": first, "Code": code, "Extrainfo": info} for last, first, code, info in excluded]),
        encoding="utf-8",
    )
    (folder / "clip-interrogator-artists.txt").write_text("\n".join(clip) + "\n", encoding="utf-8")
    (folder / "clip-interrogator-movements.txt").write_text("impressionism\npost-impressionism\nukiyo-e\nromanticism\n", encoding="utf-8")
    (folder / "clip-interrogator-mediums.txt").write_text("a watercolor painting\nan oil painting\na portrait\n", encoding="utf-8")
    with open(folder / "wikiart-artist-styles.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["artist_slug", "style", "n_images"])
        writer.writerows(wikiart)
    return folder


def by_id(artists):
    return {a.artist_id: a for a in artists}


# --------------------------------------------------------------------- name forms


@pytest.mark.parametrize(
    "forms",
    [
        ["Claude Monet", "claude monet", "  Claude   Monet ", "CLAUDE MONET"],
        ["J.M.W. Turner", "J. M. W. Turner", "JMW Turner", "j m w turner"],
        ["Salvador Dalí", "Salvador Dali", "salvador dali"],
        ["Jean-Michel Basquiat", "Jean Michel Basquiat"],
        ["Georgia O\u2019Keeffe", "Georgia O'Keeffe", "Georgia OKeeffe"],
        ["the Brothers Hildebrandt", "Brothers Hildebrandt"],
        ["Sir Alfred Munnings", "Alfred Munnings"],
        ["Rene\u0301 Magritte", "Ren\u00e9 Magritte"],
    ],
)
def test_forms_share_a_key(forms):
    assert len({name_key(f) for f in forms}) == 1


@pytest.mark.parametrize(
    "a, b",
    [
        ("Pieter Bruegel the Elder", "Pieter Bruegel the Younger"),
        ("Lucas Cranach the Elder", "Lucas Cranach"),
        ("George Barret, Jr.", "George Barret, Sr."),
        ("Jeff Smith", "Jeffrey Smith"),
    ],
)
def test_near_names_keep_different_keys(a, b):
    assert name_key(a) != name_key(b)


def test_invert_and_expand():
    assert invert_name("Monet, Claude") == "Claude Monet"
    assert invert_name("Barret, George, Jr.") == "George Barret Jr."
    assert invert_name("Moebius (Giraud, Jean)") == "Moebius (Giraud, Jean)"
    primary, links = expand_name("Hokusai (Katsushika Hokusai)")
    assert primary == "Hokusai" and [link.name for link in links] == ["Katsushika Hokusai"]
    primary, links = expand_name("Alfons (Alphonse) Mucha", frozenset({"alphonse"}))
    assert primary == "Alfons Mucha" and links[0].name == "Alphonse Mucha" and links[0].confident
    primary, links = expand_name("Ambrosius (the Elder) Bosschaert")
    assert primary == "Ambrosius Bosschaert the Elder" and links == []
    primary, links = expand_name('Mike "Beeple" Winkelmann')
    assert primary == "Mike Winkelmann" and "Beeple" in [link.name for link in links]
    primary, links = expand_name("H. R. (Hans Ruedi) Giger")
    assert primary == "H. R. Giger" and [link.name for link in links] == ["Hans Ruedi Giger"]


def test_wikiart_slugs_and_mojibake():
    assert fix_mojibake("andrã©-lhote") == "andré-lhote"
    assert fix_mojibake("joaquã\xadn-sorolla") == "joaquín-sorolla"
    assert fix_mojibake("georges-lacombeâ\xa0") == "georges-lacombe"
    assert fix_mojibake("claude-monet") == "claude-monet"
    assert wikiart_display_name("leonardo-da-vinci") == "Leonardo da Vinci"
    assert wikiart_display_name("a.y.-jackson") == "A.Y. Jackson"
    assert slugify("Ren\u00e9 Magritte") == "rene-magritte"


# --------------------------------------------------------------------- merging


@pytest.fixture()
def small(tmp_path):
    folder = write_sources(
        tmp_path / "src",
        sdxl=[
            ("Monet", "Claude", "Yes", "Yes", "impressionism, landscape", "1926", ""),
            ("Hokusai", "Katsushika", "Yes", "", "ukiyo-e", "1849", ""),
            ("Turner", "J.M.W.", "", "Yes", "romanticism", "1851", ""),
            ("Turner", "William", "", "", "", "1851", ""),
            ("Bruegel the Elder", "Pieter", "Yes", "Yes", "", "1569", ""),
            ("Brueghel the Younger", "Pieter", "Yes", "Yes", "", "1638", ""),
            ("Giraud", "Jean", "Yes", "Yes", "comics", "2012", "AKA Moebius"),
            ("Moebius", "N/A", "", "Yes", "", "2012", 'AKA Jean Giraud, also "Mœbius"'),
            ("Arad", "Ron", "", "", "", "N/A", "AKA Giorgione"),
            ("Giorgione", "N/A", "", "", "", "1510", ""),
            ("Barra", "Didier", "", "", "", "1656", "AKA Monsù Desiderio"),
            ("De Nomé", "François", "", "", "", "1620", "AKA Monsù Desiderio"),
            ("Summers", "Scott Samuel", "", "", "", "N/A", "This artist doesn't exist"),
            ("Smith", "Jeff", "", "", "", "", ""),
            ("Abramović", "Marina", "Yes", "Yes", "", "N/A", ""),
        ],
        cheat=[
            ("Monet, Claude", "1840", "1926", "Painting, Oil, Impressionism, France, 19th Century", "Claude Monet"),
            ("Hokusai (Katsushika Hokusai)", "1760", "1849", "Ukiyo-e, Japan", "Hokusai"),
            ("Rutkowski, Grzegorz (Greg)", "", "", "Illustration, Poland", "Greg Rutkowski"),
        ],
        excluded=[
            ("Smith", "Jeffrey", "204", ""),
            ("Abramović", "Marina", "404", ""),
        ],
        clip=["Claude Monet", "Monet", "J. M. W. Turner", "Greg Rutkowski", "Mœbius", "Pieter Bruegel the Elder",
              "senior artist", "national geographic", "Hokusai", "Lucas Cranach the Elder", "Lucas Cranach the Younger",
              "Monsù Desiderio"],
        wikiart=[("claude-monet", "Impressionism", "50"), ("claude-monet", "Realism", "3"),
                 ("pieter-bruegel-the-elder", "Northern_Renaissance", "20"), ("andrã©-lhote", "Cubism", "5")],
    )
    artists, report = build_catalog(folder)
    return folder, by_id(artists), report


def test_forms_merge_across_sources(small):
    _, artists, _ = small
    monet = artists["claude-monet"]
    assert monet.sources == ("sdxl-studies", "sd15-cheatsheet", "clip-interrogator", "wikiart")
    assert (monet.born, monet.died, monet.living) == (1840, 1926, False)
    assert monet.movements[0] == "Impressionism"  # WikiArt's best-attested style first
    assert "oil" in monet.mediums and monet.nationality == "France"
    assert "monet" not in artists  # the bare surname joined the only Monet
    hokusai = artists["katsushika-hokusai"]
    assert "Hokusai" in hokusai.aliases and hokusai.born == 1760
    assert "clip-interrogator" in hokusai.sources
    turner = artists["j-m-w-turner"]
    assert "William Turner" in turner.aliases  # same surname, initials, same death year
    assert turner.sources == ("sdxl-studies", "clip-interrogator")
    giraud = artists["jean-giraud"]
    assert {"Moebius", "Mœbius"} <= set(giraud.aliases)
    assert "greg-rutkowski" in artists and "Grzegorz Rutkowski" in artists["greg-rutkowski"].aliases
    assert artists["andre-lhote"].name == "André Lhote"


def test_different_people_stay_apart(small):
    _, artists, report = small
    assert {"pieter-bruegel-the-elder", "pieter-brueghel-the-younger"} <= set(artists)
    assert {"lucas-cranach-the-elder", "lucas-cranach-the-younger"} <= set(artists)
    assert {"jeff-smith", "jeffrey-smith"} <= set(artists)
    # a note that belongs to another row does not join a living artist and a dead one
    assert {"ron-arad", "giorgione"} <= set(artists)
    # a pseudonym claimed for two painters joins neither
    assert {"didier-barra", "francois-de-nome", "monsu-desiderio"} <= set(artists)
    assert "Monsù Desiderio" in artists["didier-barra"].aliases
    assert any("Monsù Desiderio" in line for line in report.refused)


def test_drops_are_reported(small):
    _, artists, report = small
    dropped = {(d.source, d.text): d.reason for d in report.dropped}
    assert ("sdxl-studies", "Scott Samuel Summers") in dropped
    assert "job title" in dropped[("clip-interrogator", "senior artist")]
    assert "magazine" in dropped[("clip-interrogator", "national geographic")]
    assert not any("summers" in i or "senior" in i for i in artists)
    assert "dropped: 3 line(s)" in report.summary()


def test_recognition_from_sheet_and_exclusion_codes(small):
    _, artists, _ = small
    assert artists["claude-monet"].recognized_sdxl == "yes"
    assert artists["claude-monet"].recognized_sd1 == "yes"
    assert artists["jeffrey-smith"].recognized_sd1 == "unsure"  # code 204
    marina = artists["marina-abramovic"]
    assert marina.recognized_sd1 == "unsure"  # sheet says yes, code 404 says no
    assert "disagrees" in marina.notes
    assert marina.living is True and marina.died is None


def test_slug_collisions_get_a_year():
    def record(name: str, died: int | None, source: str = "clip-interrogator") -> Record:
        return Record(source=source, line=1, raw=name, name=name, key=name_key(name),
                      display_forms=[(0, name)], died=died)

    report = BuildReport()
    groups = [
        [record("Jo Doe", 1900), record("Jo Doe", 1900, "sdxl-studies")],
        [record("Jo Doe", 1950)],
        [record("Jo Doe", None)],
        [record("Jo-Doe", 1700)],
    ]
    ids = assign_ids(groups, report)
    # the artist most lists name keeps the plain slug; the others get a year or a number
    assert ids == ["jo-doe", "jo-doe-1950", "jo-doe-3", "jo-doe-1700"]
    assert report.slug_collisions == 3
    assert assign_ids(groups, BuildReport()) == ids


def test_missing_source_file_is_named(tmp_path):
    folder = write_sources(tmp_path / "src", clip=["A B"])
    (folder / "sd15-cheatsheet-excluded.json").unlink()
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(folder), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "sd15-cheatsheet-excluded.json" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_small_build_is_deterministic_and_valid(small, tmp_path):
    folder, _, _ = small
    build_styles_csv(folder, tmp_path / "a.csv")
    build_styles_csv(folder, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert validate_catalog(tmp_path / "a.csv").ok
    loaded = load_catalog(tmp_path / "a.csv")
    assert [a.artist_id for a in loaded] == sorted(a.artist_id for a in loaded)
    text = (tmp_path / "a.csv").read_text(encoding="utf-8")
    assert f"Impressionism{LIST_SEPARATOR}Realism" in text


# --------------------------------------------------------------------- the real catalog


@needs_sources
def test_real_build_is_byte_identical_and_matches_committed(tmp_path):
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(SOURCES), "--out", str(tmp_path / "a.csv"),
                                       "--report", str(tmp_path / "report.txt")])
    assert result.exit_code == 0, result.output
    assert "dropped:" in result.output and "merged:" in result.output
    build_styles_csv(SOURCES, tmp_path / "b.csv")
    first = (tmp_path / "a.csv").read_bytes()
    assert first == (tmp_path / "b.csv").read_bytes()
    assert first == (REPO / "styles.csv").read_bytes(), "styles.csv is stale: run `atelier catalog build`"
    assert "middle-name:" in (tmp_path / "report.txt").read_text(encoding="utf-8")


def test_committed_catalog_is_large_and_valid():
    report = validate_catalog(REPO / "styles.csv")
    assert report.ok and not report.warnings, report.format()
    artists = by_id(load_catalog(REPO / "styles.csv"))
    assert len(artists) >= 8000
    header = (REPO / "styles.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header.startswith("artist_id,name,aliases,born,died,living,nationality,movements,mediums,tags,"
                             "recognized_sdxl,recognized_sd1,sources,notes")
    monet = artists["claude-monet"]
    assert len(monet.sources) == 4 and monet.born == 1840
    assert "Hokusai" in artists["katsushika-hokusai"].aliases
    assert "pieter-bruegel-the-elder" in artists and "pieter-brueghel-the-younger" in artists
    assert "William Turner" in artists["j-m-w-turner"].aliases
    assert "william-turner-of-oxford" in artists
    assert "ron-arad" in artists and "giorgione" in artists
    # bare surnames, transliterations, word order, same death year
    assert "Monet" in artists["claude-monet"].aliases and "monet" not in artists
    assert "Alexei Savrasov" in artists["aleksey-savrasov"].aliases
    assert "Jan Vermeer" in artists["johannes-vermeer"].aliases
    assert "Kawase Hasui" in artists["hasui-kawase"].aliases
    assert "Giovanni Paolo Panini" in artists["giovanni-paolo-pannini"].aliases
    assert {"david-bailey", "david-bailly"} <= set(artists)
    # near-names that are two people
    assert {"gavin-hamilton", "gawen-hamilton"} <= set(artists)
    assert {"arthur-boyd", "arthur-merric-boyd"} <= set(artists)
    assert {"alexander-calder", "alexander-milne-calder", "alexander-stirling-calder"} <= set(artists)
    assert {"jeff-smith", "jeffrey-smith"} <= set(artists)
    assert {"didier-barra", "francois-de-nome", "monsu-desiderio"} <= set(artists)
    names = [a.name for a in artists.values()]
    assert not any("N/A" in n or n != n.strip() or "  " in n for n in names)
    assert len({name_key(n) for n in names}) > 0.99 * len(names)


def test_heuristic_merges_and_their_limits(tmp_path):
    folder = write_sources(
        tmp_path / "src",
        sdxl=[
            ("Landseer", "Edwin", "", "", "", "1873", ""),
            ("Guardi", "Francesco", "", "", "", "", ""),
            ("Savrasov", "Aleksey", "", "", "", "1897", ""),
            ("Vermeer", "Johannes", "", "", "", "1675", ""),
            ("Calder", "Alexander", "", "", "", "1976", ""),
        ],
        cheat=[("Vermeer, Jan", "1632", "1675", "Painting", "Jan Vermeer")],
        excluded=[("Guardi", "Francesca", "404", "")],
        clip=["Edwin Henry Landseer", "Alexei Savrasov", "Alexander Milne Calder", "Alexander Stirling Calder",
              "Gavin Hamilton", "Gawen Hamilton", "Kawase Hasui", "Hasui Kawase"],
    )
    artists, report = build_catalog(folder)
    ids = {a.artist_id: a for a in artists}
    assert "Edwin Henry Landseer" in ids["edwin-landseer"].aliases  # middle name
    assert "Alexei Savrasov" in ids["aleksey-savrasov"].aliases  # transliteration
    assert "Jan Vermeer" in ids["johannes-vermeer"].aliases  # same surname, initial, death year
    assert {"francesco-guardi", "francesca-guardi"} <= set(ids)  # a gendered ending is not a slip
    assert {"gavin-hamilton", "gawen-hamilton"} <= set(ids)  # one list names both: two people
    assert {"alexander-calder", "alexander-milne-calder", "alexander-stirling-calder"} <= set(ids)
    assert len([i for i in ids if "kawase" in i]) == 1  # word order
    assert report.merges["middle-name"] == 1 and report.merges["same-year"] == 1


def test_broken_source_is_named_with_its_line(tmp_path):
    folder = write_sources(tmp_path / "src", clip=["A B"])
    (folder / "sd15-cheatsheet-artists.json").write_text('[\n{"Name": "Monet, Claude"},\n{"Name": oops}\n]\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(folder), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert "sd15-cheatsheet-artists.json:3: not valid JSON" in result.output
    (folder / "sd15-cheatsheet-artists.json").write_text('[\n{"Name": "Monet, Claude"},\n3\n]\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["catalog", "build", "--sources", str(folder), "--out", str(tmp_path / "o.csv")])
    assert "sd15-cheatsheet-artists.json:3: expected an object" in result.output
    assert not (tmp_path / "o.csv").exists()
