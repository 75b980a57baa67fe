"""Importing images made elsewhere: real labelled data, A1111/ComfyUI metadata, bad files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from support.gen import CORPUS, SHARED_DATA

from evaluator.generation.pngmeta import format_parameters, parse_comfyui, parse_parameters
from evaluator.ingest.importer import import_images, read_labels
from evaluator.workspace.store import open_store

IMAGES = CORPUS / "images"


def rows(workdir: Path, sql: str):
    with open_store(workdir / "atelier.duckdb", read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA / "images"


@pytest.mark.slow
def test_generated_sd15_folder_with_labels(tmp_path, data):
    src = data / "generated-sd15"
    summary = import_images(src, tmp_path, labels_csv=src / "labels.csv", progress=False)
    assert summary.imported == 150 and not summary.failed and not summary.missing
    total, distinct, errors, checkpoints = rows(
        tmp_path, "SELECT count(*), count(DISTINCT image_id), count(error), count(DISTINCT checkpoint) FROM images"
    )[0]
    assert (total, distinct, errors) == (150, 150, 0)
    assert checkpoints >= 2  # e.g. Deliberate-2.0, DreamShaper-3.2 from the labels
    (monet,) = rows(tmp_path, "SELECT artist_id, checkpoint, prompt, source, width FROM images WHERE path LIKE '%Fragonard%'")
    assert monet[0] == "jean-honore-fragonard"  # NFC/accents matched to the catalog id
    assert monet[1] == "Deliberate-2.0" and monet[2] == "style of Jean-Honoré Fragonard" and monet[3] == "imported"
    # every copy is the original WebP byte for byte (its SHA-256 the row's), and has a thumbnail
    for path, thumb, sha, source_path in rows(tmp_path, "SELECT path, thumb_path, sha256, source_path FROM images LIMIT 5"):
        assert path.endswith(".webp") and (tmp_path / path).read_bytes() == (src / source_path).read_bytes()
        assert hashlib.sha256((tmp_path / path).read_bytes()).hexdigest() == sha
        assert (tmp_path / thumb).is_file()
    # unknown artists are reported and still recorded under a slug
    known = set(summary.unknown_artists)
    recorded = {r[0] for r in rows(tmp_path, "SELECT DISTINCT artist_id FROM images")}
    from evaluator.ingest.importer import slugify

    assert {slugify(name) for name in known} <= recorded
    from evaluator.workspace.records import load_checkpoint_records

    records = {r["name"]: r for r in load_checkpoint_records(tmp_path)}
    assert "Deliberate-2.0" in records and records["Deliberate-2.0"]["source"].startswith("imported:")
    # a rerun adds nothing
    again = import_images(src, tmp_path, labels_csv=src / "labels.csv", progress=False)
    assert (again.imported, again.unchanged) == (0, 150)
    assert rows(tmp_path, "SELECT count(*) FROM images")[0][0] == 150


def test_paintings_as_references(tmp_path, data):
    src = data / "paintings"
    summary = import_images(src, tmp_path, labels_csv=src / "labels.csv", as_reference=True, progress=False)
    assert summary.imported == 18 and not summary.failed
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT source), min(source) FROM images")[0] == (18, 1, "reference")
    refs = dict(rows(tmp_path, "SELECT artist_id, count(*) FROM reference_images GROUP BY 1"))
    assert refs["vincent-van-gogh"] == 2 and sum(refs.values()) == 18
    assert ("escher_sphere.jpg", "L converted to RGB") in summary.notes


def test_bad_and_odd_files_are_recorded_not_lost(tmp_path):
    summary = import_images(IMAGES, tmp_path, checkpoint="ext", progress=False)
    failed = dict(summary.failed)
    assert failed["empty.png"] == "empty file (0 bytes)"
    assert failed["text-as.png"].startswith("not an image Pillow can read")
    assert "truncated" in failed["truncated.png"]
    assert failed["bomb.png"].startswith("decompression bomb refused")
    assert "garbage.jpg" in failed
    assert set(summary.ignored) == {"make_images.py", "notes.txt"}
    images = len([p for p in IMAGES.iterdir() if p.suffix in (".png", ".jpg", ".gif")])
    table = rows(tmp_path, "SELECT count(*), count(DISTINCT image_id), count(error) FROM images")[0]
    assert table == (images, images, len(failed))  # every file one row; failures carry their reason
    errors = dict(rows(tmp_path, "SELECT split_part(error, ':', 1), error FROM images WHERE error IS NOT NULL"))
    assert set(errors) == set(failed)
    notes = dict(summary.notes)
    assert notes["cmyk.jpg"] == "CMYK converted to RGB"
    assert notes["gray16.png"].startswith("I;16")
    assert notes["palette.png"] == "P with alpha composited on white"
    assert any(n == ("animated.gif", "animated (3 frames): first frame kept") for n in summary.notes)
    (rotated,) = rows(tmp_path, "SELECT width, height FROM images WHERE path LIKE '%rotated%'")
    assert rotated == (8, 16)  # EXIF orientation applied
    (a1111,) = rows(tmp_path, "SELECT prompt, negative_prompt, seed, steps, guidance, scheduler, artist_id FROM images WHERE path LIKE '%a1111%'")
    assert a1111 == ("portrait of a woman, in the style of Claude Monet,\nsoft light", "blurry, lowres", 1234567, 30, 6.5,
                     "DPM++ 2M Karras", "claude-monet")
    (comfy,) = rows(tmp_path, "SELECT prompt, seed, steps, guidance, artist_id FROM images WHERE path LIKE '%comfyui%'")
    assert comfy == ("a harbour, style of Hokusai", 42, 20, 8.0, "katsushika-hokusai")
    again = import_images(IMAGES, tmp_path, checkpoint="ext", progress=False)
    assert again.imported == 0 and again.rows_ingested == 0
    assert rows(tmp_path, "SELECT count(*) FROM images")[0][0] == images


def test_checkpoint_from_metadata_and_cli(tmp_path):
    from click.testing import CliRunner

    from evaluator.cli.main import main

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(IMAGES / "a1111.png", src / "one.png")
    result = CliRunner().invoke(main, ["import", str(src), "-w", str(tmp_path / "wd"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 imported" in result.output
    assert rows(tmp_path / "wd", "SELECT checkpoint FROM images") == [("v1-5-pruned-emaonly",)]
    bad = CliRunner().invoke(main, ["import", str(src), "-w", str(tmp_path / "wd"), "--checkpoint", "my model"])
    assert bad.exit_code != 0 and "must match [A-Za-z0-9._-]+" in bad.output


def test_identical_copies_are_recorded_once(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(IMAGES / "gray.png", src / "a.png")
    shutil.copy(IMAGES / "gray.png", src / "sub" / "b.png")
    shutil.copy(IMAGES / "rgba.png", src / "c.png")
    summary = import_images(src, tmp_path / "wd", checkpoint="x", progress=False)
    assert summary.imported == 2
    assert ("sub/b.png", "same content and labels as a.png: recorded once") in summary.notes
    assert rows(tmp_path / "wd", "SELECT count(*), count(DISTINCT sha256) FROM images")[0] == (2, 2)


def test_labels_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("filename,artist\nx.png,Monet\n")
    with pytest.raises(ValueError, match=r"labels.csv: line 1: the header needs a 'file' column \(found: filename, artist\)"):
        read_labels(bad, tmp_path)
    bad.write_text("file,artist\nx.png,Monet\ny.png,Turner\nx.png,Klimt\n")
    with pytest.raises(ValueError, match="line 4: file 'x.png' is already labelled on line 2"):
        read_labels(bad, tmp_path)


def test_parameters_round_trip():
    text = format_parameters("a cat,\nby Klimt", "dog", 20, "Euler a", 7.0, 42, 512, 768, model_hash="abc", model="m",
                             extra={"Lora hashes": "x: 1, y: 2"})
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "a cat,\nby Klimt" and parsed["negative_prompt"] == "dog"
    assert (parsed["steps"], parsed["sampler"], parsed["guidance"], parsed["seed"]) == (20, "Euler a", 7.0, 42)
    assert (parsed["width"], parsed["height"], parsed["model"], parsed["model_hash"]) == (512, 768, "m", "abc")
    assert parsed["settings"]["Lora hashes"] == "x: 1, y: 2"
    assert parse_parameters("just a prompt")["prompt"] == "just a prompt"
    assert parse_comfyui("not json") is None and parse_comfyui('{"1": {"class_type": "Note"}}') is None
