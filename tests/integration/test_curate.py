"""`atelier curate` end to end on a corpus built here from the real images.

Each file of the corpus gets exactly the flags it was made to have; the originals none.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from evaluator.cli.main import main
from evaluator.curation.sdmark import embed_sd_mark

GEN = "generated-sd15"
ORIGINALS = {  # name in the corpus -> real file (each used once, so no unplanned near duplicate)
    "a.webp": f"{GEN}/Adam-Hughes.webp",
    "b.webp": f"{GEN}/Claude-Monet.webp",
    "c.jpg": "paintings/the_scream.jpg",
    "d.jpg": "paintings/starry_night.jpg",
    "e.webp": f"{GEN}/Beeple.webp",
    "f.webp": f"{GEN}/Grant-Wood.webp",
}
EXPECTED = {
    **{name: [] for name in ORIGINALS},
    "a_copy.webp": ["duplicate"],
    "a_half.png": ["near_duplicate"],
    "b_q70.jpg": ["near_duplicate"],
    "c_crop.png": ["near_duplicate"],
    "marked_sd1.png": ["watermark_sd"],
    "marked_sdxl.png": ["watermark_sd"],
    "small.png": ["low_resolution"],
    "wide.png": ["extreme_aspect"],
    "truncated.png": ["unreadable"],
    "empty.jpg": ["unreadable"],
    "text.png": ["unreadable"],
}


def _real(shared_data: Path, rel: str) -> Image.Image:
    return Image.open(shared_data / "images" / rel).convert("RGB")


def build_corpus(shared_data: Path, out: Path) -> Path:
    """The corpus: originals, copies, marked images, small, wide and broken files, and labels."""
    out.mkdir()
    for name, rel in ORIGINALS.items():
        shutil.copyfile(shared_data / "images" / rel, out / name)
    shutil.copyfile(out / "a.webp", out / "a_copy.webp")
    a = _real(shared_data, ORIGINALS["a.webp"])
    a.resize((a.width // 2, a.height // 2), Image.LANCZOS).save(out / "a_half.png")
    _real(shared_data, ORIGINALS["b.webp"]).save(out / "b_q70.jpg", quality=70)
    c = _real(shared_data, ORIGINALS["c.jpg"])
    dx, dy = c.width // 20, c.height // 20
    c.crop((dx, dy, c.width - dx, c.height - dy)).save(out / "c_crop.png")
    for message, rel in (("sd1", f"{GEN}/Akihiko-Yoshida.webp"), ("sdxl", f"{GEN}/Alex-Toth.webp")):
        marked = embed_sd_mark(np.asarray(_real(shared_data, rel)), message)
        Image.fromarray(marked).save(out / f"marked_{message}.png")
    _real(shared_data, f"{GEN}/Bob-Mizer.webp").resize((240, 240)).save(out / "small.png")
    _real(shared_data, f"{GEN}/David-Aja.webp").resize((1200, 300)).save(out / "wide.png")
    png = io.BytesIO()
    _real(shared_data, f"{GEN}/Derek_Gores.webp").save(png, "PNG")
    (out / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (out / "empty.jpg").write_bytes(b"")
    (out / "text.png").write_text("not an image\n")
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "artist", "prompt"])
        for name in ("a.webp", "b.webp", "e.webp", "f.webp"):
            writer.writerow([name, "Test Artist", f"a picture {name}"])
    return out


def run(*args: str):
    result = CliRunner().invoke(main, ["curate", *args])
    assert result.exit_code == 0, result.output
    return result


def file_flags(workdir: Path, source: Path) -> dict[str, list[str]]:
    from evaluator.workspace.store import connect_read_only

    con = connect_read_only(workdir / "atelier.duckdb")
    try:
        rows = con.execute("SELECT path, flags FROM curation_files WHERE source = ?", [str(source.resolve())]).fetchall()
    finally:
        con.close()
    return {path: list(flags) for path, flags in rows}


@pytest.fixture(scope="module")
def curated(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("curate")
    corpus = build_corpus(shared_data, root / "corpus")
    workdir = root / "wd"
    result = run(str(corpus), "--workdir", str(workdir), "--quiet")
    return corpus, workdir, result.output


@pytest.mark.slow
def test_each_file_gets_exactly_its_flags(curated):
    corpus, workdir, output = curated
    assert file_flags(workdir, corpus) == EXPECTED
    assert "no --watermark-model" in output and output.count("no --watermark-model") == 1
    assert "near_duplicate: 3" in output and "unreadable: 3" in output and "duplicate: 1" in output


@pytest.mark.slow
def test_groups_name_the_kept_image_and_signals_are_stored(curated):
    from evaluator.workspace.store import connect_read_only

    corpus, workdir, _ = curated
    con = connect_read_only(workdir / "atelier.duckdb")
    try:
        cur = con.execute(
            "SELECT f.path, c.sha256, c.duplicate_of, c.duplicate_group, c.watermark_prob, c.sd_mark, c.megapixels, "
            "c.error FROM curation_files f JOIN curation c USING (sha256)")
        rows = {r[0]: dict(zip([d[0] for d in cur.description], r, strict=True)) for r in cur.fetchall()}
        config = con.execute("SELECT config FROM runs WHERE kind = 'curate'").fetchone()[0]
    finally:
        con.close()
    for name, kept in (("a_half.png", "a.webp"), ("b_q70.jpg", "b.webp"), ("c_crop.png", "c.jpg")):
        # the largest member is kept (b_q70 is as large as b.webp: the earlier path wins)
        assert rows[name]["duplicate_of"] == rows[kept]["sha256"] == rows[name]["duplicate_group"]
        assert rows[kept]["duplicate_of"] is None and rows[kept]["duplicate_group"] == rows[kept]["sha256"]
    assert rows["d.jpg"]["duplicate_group"] == rows["d.jpg"]["sha256"]  # alone: its own group
    assert rows["marked_sd1.png"]["sd_mark"] == "sd1" and rows["marked_sdxl.png"]["sd_mark"] == "sdxl"
    assert all(r["watermark_prob"] is None for r in rows.values())  # no detector given: NULL, not 0
    assert rows["wide.png"]["megapixels"] == pytest.approx(0.36)
    assert "empty file" in rows["empty.jpg"]["error"]
    assert '"min_side": 256' in config and '"sd_mark_agreement": 0.8' in config


@pytest.mark.slow
def test_a_rerun_skips_by_content_and_thresholds_apply_at_once(curated, tmp_path):
    corpus, workdir, _ = curated
    moved = tmp_path / "corpus"
    shutil.copytree(corpus, moved)
    (moved / "e.webp").rename(moved / "e_renamed.webp")
    result = run(str(moved), "--workdir", str(workdir), "--quiet", "--min-side", "600", "--workers", "0")
    assert f"0 computed, {len(EXPECTED)} already curated" in result.output  # the renamed file too
    flags = file_flags(workdir, moved)
    assert flags["e_renamed.webp"] == [] and flags["a_half.png"] == ["low_resolution", "near_duplicate"]
    assert flags["c_crop.png"] == ["near_duplicate"] and flags["wide.png"] == ["low_resolution", "extreme_aspect"]
