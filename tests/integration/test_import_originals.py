"""Import keeps originals: a whole RGB WebP / JPEG / PNG is copied byte for byte in its own
encoding, other files are converted to PNG, and everything downstream reads the copies."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from evaluator.generation.pngmeta import read_generation_info
from evaluator.ingest.importer import import_images
from evaluator.ingest.originals import bytes_look_complete, copy_is_complete, keep_original
from evaluator.workspace.store import open_store

WEBP_PARAMS = ("a harbour in the style of Claude Monet\nNegative prompt: blurry\n"
               "Steps: 25, Sampler: Euler a, CFG scale: 7, Seed: 4242, Size: 64x64, Model: sd15")
PNG_PARAMS = "a field, by Vincent van Gogh\nSteps: 20, Sampler: Euler, CFG scale: 6, Seed: 7, Size: 64x64"


def _noise(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _a1111_exif(text: str) -> bytes:
    """EXIF with the infotext in UserComment, as A1111 saves JPEG and WebP."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    return exif.tobytes()


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _rows(wd: Path) -> dict[str, dict]:
    """The store's images rows by source path."""
    with open_store(wd / "atelier.duckdb", read_only=True) as con:
        cursor = con.execute("SELECT * FROM images")
        names = [d[0] for d in cursor.description]
        return {r["source_path"]: r for r in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())}


@pytest.fixture()
def originals(tmp_path) -> Path:
    """A WebP with A1111 EXIF, a labelled JPEG, a PNG with a parameters chunk (all RGB, whole)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "harbour.webp").write_bytes(_encoded(_noise(1), "WEBP", quality=80, exif=_a1111_exif(WEBP_PARAMS)))
    (src / "photo.jpg").write_bytes(_encoded(_noise(2), "JPEG", quality=85))
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", PNG_PARAMS)
    (src / "field.png").write_bytes(_encoded(_noise(3), "PNG", pnginfo=info))
    (src / "labels.csv").write_text("file,artist,checkpoint,prompt,seed\n"
                                    "photo.jpg,Katsushika Hokusai,camera,a wave by Hokusai,99\n")
    return src


def test_webp_jpeg_png_are_kept_byte_for_byte_with_their_parameters_in_the_store(tmp_path, originals):
    wd = tmp_path / "wd"
    summary = import_images(originals, wd, labels_csv=originals / "labels.csv", progress=False)
    assert summary.imported == 3 and not summary.failed and not summary.notes
    rows = _rows(wd)
    for name, suffix in (("harbour.webp", ".webp"), ("photo.jpg", ".jpg"), ("field.png", ".png")):
        row, original = rows[name], (originals / name).read_bytes()
        copy = wd / row["path"]
        assert copy.suffix == suffix and copy.read_bytes() == original  # same bytes, same encoding
        assert row["sha256"] == row["source_sha256"] == hashlib.sha256(original).hexdigest()  # provenance
        with Image.open(wd / row["thumb_path"]) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 192
    webp = rows["harbour.webp"]  # its own A1111 EXIF, parsed into the store and still in the copy
    assert (webp["prompt"], webp["negative_prompt"], webp["seed"], webp["steps"], webp["guidance"], webp["scheduler"],
            webp["artist_id"], webp["checkpoint"]) == ("a harbour in the style of Claude Monet", "blurry", 4242, 25, 7.0,
                                                       "Euler a", "claude-monet", "sd15")
    with Image.open(wd / webp["path"]) as image:
        assert read_generation_info(image)["seed"] == 4242
    jpg = rows["photo.jpg"]  # the labels' settings live in the store only (the copy is the original)
    assert (jpg["prompt"], jpg["seed"], jpg["artist_id"], jpg["checkpoint"]) == (
        "a wave by Hokusai", 99, "katsushika-hokusai", "camera")
    assert rows["field.png"]["seed"] == 7 and rows["field.png"]["artist_id"] == "vincent-van-gogh"
    again = import_images(originals, wd, labels_csv=originals / "labels.csv", progress=False)
    assert (again.imported, again.unchanged, again.rows_ingested) == (0, 3, 0)


def test_files_that_need_a_change_are_converted_to_png_and_say_why(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rotated = Image.Exif()
    rotated[0x0112] = 6  # rotate 90 degrees on display
    (src / "rotated.jpg").write_bytes(_encoded(_noise(4, 32).resize((32, 16)), "JPEG", exif=rotated.tobytes()))
    translucent = _noise(5).convert("RGBA")
    translucent.putalpha(128)  # an opaque alpha channel would be dropped by the WebP encoder
    (src / "alpha.webp").write_bytes(_encoded(translucent, "WEBP", lossless=True))
    (src / "cmyk.jpg").write_bytes(_encoded(_noise(6).convert("CMYK"), "JPEG"))
    (src / "old.bmp").write_bytes(_encoded(_noise(7), "BMP"))
    (src / "tail.jpg").write_bytes(_encoded(_noise(8), "JPEG") + b"appended by some tool")
    summary = import_images(src, tmp_path / "wd", checkpoint="ext", progress=False)
    assert summary.imported == 5 and not summary.failed
    notes = dict(summary.notes)
    assert notes == {"rotated.jpg": "EXIF orientation 6 applied", "alpha.webp": "RGBA with alpha composited on white",
                     "cmyk.jpg": "CMYK converted to RGB", "old.bmp": "BMP re-encoded as PNG (kept as they are: PNG, JPEG, WebP)",
                     "tail.jpg": "JPEG does not end the way a whole file does (data past its end?): re-encoded as PNG"}
    rows = _rows(tmp_path / "wd")
    for name, row in rows.items():
        with Image.open(tmp_path / "wd" / row["path"]) as image:
            assert image.format == "PNG" and image.mode == "RGB", name
            assert "Imported from" in image.text["parameters"]  # a converted copy carries its settings
        assert row["source_sha256"] == hashlib.sha256((src / name).read_bytes()).hexdigest()  # the original's hash
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (16, 32)


def test_a_half_written_copy_is_written_again_and_old_png_copies_keep_working(tmp_path, originals):
    wd = tmp_path / "wd"
    import_images(originals, wd, labels_csv=originals / "labels.csv", progress=False)
    rows = _rows(wd)
    for name in ("harbour.webp", "photo.jpg"):  # cut off as a killed non-atomic writer would leave them
        copy = wd / rows[name]["path"]
        copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
        assert not copy_is_complete(copy)
    # an old store: field.png's copy is a re-encoded PNG under another name, as imports made before
    old = Path(rows["field.png"]["path"]).with_name("field-old.png").as_posix()
    (wd / rows["field.png"]["path"]).rename(wd / old)
    _replace_path(wd, rows["field.png"]["image_id"], old)

    again = import_images(originals, wd, labels_csv=originals / "labels.csv", progress=False)

    assert (again.imported, again.unchanged) == (2, 1)
    after = _rows(wd)
    for name in ("harbour.webp", "photo.jpg"):
        assert (wd / after[name]["path"]).read_bytes() == (originals / name).read_bytes()
    assert after["field.png"]["path"] == old and copy_is_complete(wd / old)  # left as it is, still served
    assert len(after) == 3


def _replace_path(wd: Path, image_id: int, path: str) -> None:
    """Point one image's manifest row and store row at ``path`` (what an older import recorded)."""
    for shard in (wd / "manifests").rglob("*.parquet"):
        table = pq.read_table(shard).to_pandas()
        table.loc[table["image_id"] == image_id, "path"] = path
        table.to_parquet(shard, index=False)
    with open_store(wd / "atelier.duckdb") as con:
        con.execute("UPDATE images SET path = ? WHERE image_id = ?", [path, image_id])


def test_embed_curate_and_thumbnails_read_imported_webp(tmp_path, originals, tiny_clip):
    from evaluator.curation.runner import CurateOptions, curate
    from evaluator.embedding.clip import load_clip
    from evaluator.embedding.images import embed_image_files, embed_images, load_embeddings

    wd = tmp_path / "wd"
    import_images(originals, wd, labels_csv=originals / "labels.csv", progress=False)
    rows = _rows(wd)
    clip = load_clip(str(tiny_clip))
    from evaluator.workspace.workdir import Workdir

    workdir = Workdir.at(wd)
    frame = [{"image_id": r["image_id"], "path": r["path"]} for r in rows.values()]
    result = embed_images(workdir, clip, frame, batch_size=2, num_workers=1, progress=False)
    assert (result.n_done, result.n_failed) == (3, 0)
    ids, vectors = load_embeddings(workdir, clip.key)
    webp = rows["harbour.webp"]
    # the worker path and the uploaded-file path give the same pixels, hence the same vector
    direct = embed_image_files(clip, [originals / "harbour.webp"])[0]
    assert np.allclose(vectors[list(ids).index(webp["image_id"])], direct, atol=1e-3)
    summary = curate(None, wd, options=CurateOptions(workers=0, progress=False))
    assert summary.n_files == 3 and summary.counts.get("unreadable", 0) == 0


@pytest.fixture()
def tiny_clip(tmp_path):
    from evaluator.testing.tiny_clip import build_random_clip

    return build_random_clip(tmp_path / "clip", seed=0)


def test_end_of_file_checks_fit_each_format():
    image = _noise(9)
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")):
        data = _encoded(image, fmt)
        assert bytes_look_complete(data, suffix) and keep_original(data, False)[0] == suffix
        for cut in (len(data) // 2, len(data) - 1):
            assert not bytes_look_complete(data[:cut], suffix), (fmt, cut)
        assert keep_original(data, True) == (None, None)  # converted: never kept
    deep = _encoded(Image.fromarray(np.zeros((8, 8), dtype=np.uint16)), "PNG")  # a 16-bit grey PNG
    assert keep_original(deep, False) == (None, "16-bit PNG re-encoded as 8-bit PNG")
