"""Symbolic links and huge files (issue 12, item 5).

`passwd.png -> /etc/passwd` leaked its first bytes into `images.error` (shown by the
dashboard), a link to an image outside the source folder was imported, a link to an
8 GB file was read whole into memory. Now links leaving the source are skipped and
listed (`--follow-links` opts in), loops are walked once, files over 512 MiB are that
file's error without being read, an error never quotes a file's content, and a link
inside the workdir pointing out is refused: nothing is written through it.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from support.hardening import write_catalog

from evaluator.cli.main import main

PARAMS = "a painting by Claude Monet\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 16x16, Model: sd15"


def _png(path: Path, color: str, seed: int) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", PARAMS.format(seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, pnginfo=info)
    return path


def _import(src: Path, wd: Path, catalog: Path, *extra: str):
    return CliRunner().invoke(main, ["import", str(src), "-w", str(wd), "-q", "--catalog", str(catalog), *extra])


def _store(wd: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(wd / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _everything_stored(wd: Path) -> str:
    """Every text the store holds about images, for "nothing of that file leaked"."""
    return repr(_store(wd, "SELECT * FROM images")) + repr(_store(wd, "SELECT * FROM runs"))


@pytest.fixture()
def catalog(tmp_path):
    return write_catalog(tmp_path / "styles.csv")


@pytest.fixture()
def linked(tmp_path):
    """A source with a real image, links out (a secret, an image, a folder), a link
    inside, a broken link and a loop."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    _png(src / "real.png", "red", 1)
    _png(outside / "elsewhere.png", "blue", 2)
    _png(outside / "folder" / "deep.png", "green", 3)
    secret = outside / "secret.txt"
    secret.write_text("root:x:0:0:TOPSECRET:/root:/bin/bash\n")
    (src / "passwd.png").symlink_to(secret)
    (src / "linked-out.png").symlink_to(outside / "elsewhere.png")
    (src / "outdir").symlink_to(outside / "folder", target_is_directory=True)
    (src / "same.png").symlink_to(src / "real.png")
    (src / "broken.png").symlink_to(tmp_path / "nothing-here.png")
    (src / "sub").mkdir()
    (src / "sub" / "loop").symlink_to(src, target_is_directory=True)
    return src, outside


def test_links_leaving_the_source_are_skipped_and_listed_and_nothing_of_them_is_read(tmp_path, catalog, linked):
    src, _ = linked
    wd = tmp_path / "wd"
    result = _import(src, wd, catalog)

    assert result.exit_code == 0, result.output
    assert "1 imported" in result.output, result.output
    for name in ("passwd.png", "linked-out.png", "outdir"):
        assert f"skipped: {name}: symbolic link to " in result.output and "outside the source folder" in result.output
    assert "skipped: broken.png: symbolic link that cannot be resolved" in result.output
    assert "same content and labels as real.png" in result.output or "note: same.png" in result.output
    assert _store(wd, "SELECT count(*) FROM images") == [(1,)]
    assert "TOPSECRET" not in _everything_stored(wd) and "TOPSECRET" not in result.output


def test_follow_links_imports_what_they_point_to_walks_a_loop_once_and_quotes_no_content(tmp_path, catalog, linked):
    src, _ = linked
    wd = tmp_path / "wd"
    result = _import(src, wd, catalog, "--follow-links")

    assert result.exit_code == 0, result.output
    rows = dict(_store(wd, "SELECT seed, error FROM images WHERE error IS NULL OR error LIKE '%passwd%'"))
    assert sorted(k for k in rows if k != -1) == [1, 2, 3], rows  # real, linked-out, outdir/deep; same.png once
    passwd = [e for e in rows.values() if e]
    assert len(passwd) == 1 and "not an image Pillow can read (looks like text)" in passwd[0]
    assert "TOPSECRET" not in _everything_stored(wd) and "root:x" not in _everything_stored(wd)
    assert "already walked (a loop)" in result.output  # sub/loop -> src: each real folder once


def test_a_file_over_the_size_limit_is_its_error_and_is_not_read(tmp_path, catalog):
    from evaluator.ingest.importer import MAX_FILE_BYTES, import_images

    src = tmp_path / "src"
    _png(src / "fine.png", "red", 1)
    huge = src / "huge.png"
    with open(huge, "wb") as handle:  # sparse: 600 MiB on paper, nothing on disk
        handle.truncate(MAX_FILE_BYTES + 88 * 2**20)

    def read_bytes() -> int:
        return int(next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar")).split()[1])

    before = read_bytes()
    summary = import_images(src, tmp_path / "wd", catalog_path=catalog, progress=False)
    read = read_bytes() - before

    assert summary.imported == 1 and [name for name, _ in summary.failed] == ["huge.png"]
    assert "over the import limit of 536,870,912 bytes: not read" in summary.failed[0][1]
    assert read < 100 * 2**20, f"{read:,} bytes read"  # the catalog, the modules, one small PNG: not 600 MiB


@pytest.mark.parametrize("entry", ["imported", "thumbs", "manifests"])
def test_a_workdir_folder_that_links_out_is_refused_and_nothing_is_written_through_it(tmp_path, catalog, entry):
    src, wd, outside = tmp_path / "src", tmp_path / "wd", tmp_path / "elsewhere"
    _png(src / "a.png", "red", 1)
    wd.mkdir()
    outside.mkdir()
    (wd / entry).symlink_to(outside, target_is_directory=True)

    result = _import(src, wd, catalog)

    assert result.exit_code == 1 and f"{wd / entry} is a symbolic link to {outside}, outside the workdir" in result.output
    assert list(outside.iterdir()) == []
    for command in (["sql", "SELECT 1"], ["migrate"]):  # readers refuse it too, from the same check
        refused = CliRunner().invoke(main, [*command, "-w", str(wd)])
        assert refused.exit_code == 1 and "outside the workdir" in refused.output, refused.output


def test_a_deeper_link_out_makes_each_file_that_would_go_through_it_an_error(tmp_path, catalog):
    src, wd, outside = tmp_path / "src", tmp_path / "wd", tmp_path / "elsewhere"
    _png(src / "a.png", "red", 1)
    first = _import(src, wd, catalog)
    assert first.exit_code == 0, first.output
    folder = next((wd / "imported").iterdir())  # imported/<checkpoint>
    for child in folder.iterdir():
        for f in child.iterdir():
            f.unlink()
        child.rmdir()
    outside.mkdir()
    (folder / "claude-monet").symlink_to(outside, target_is_directory=True)
    _png(src / "b.png", "blue", 2)

    result = _import(src, wd, catalog)

    assert result.exit_code == 0, result.output
    assert "failed: b.png: cannot write its copy: path " in result.output and "escapes the workdir" in result.output
    assert list(outside.iterdir()) == [] and os.listdir(outside) == []


def _rchar() -> int:
    """Bytes this process has read so far (``/proc/self/io``)."""
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar")).split()[1])


def test_references_add_takes_the_same_walk_and_reads_nothing_a_link_out_points_to(tmp_path, catalog):
    from evaluator.ingest.importer import MAX_FILE_BYTES
    from evaluator.ingest.references import add_references
    from evaluator.workspace.workdir import Workdir

    refs, outside, wd = tmp_path / "refs", tmp_path / "outside", tmp_path / "wd"
    _png(refs / "monet-1.png", "red", 1)
    outside.mkdir()
    with open(outside / "huge.png", "wb") as handle:  # sparse, 600 MiB on paper
        handle.truncate(MAX_FILE_BYTES + 88 * 2**20)
    (refs / "monet-2.png").symlink_to(outside / "huge.png")
    (outside / "secret.png").write_text("root:x:0:0:TOPSECRET\n")
    (refs / "monet-3.png").symlink_to(outside / "secret.png")

    before = _rchar()
    results = add_references(Workdir.at(wd), refs, artist="claude-monet", catalog_path=catalog)
    read = _rchar() - before

    assert [(r.artist_id, len(r.added)) for r in results] == [("claude-monet", 1)]
    assert read < 100 * 2**20, f"{read:,} bytes read"
    assert _store(wd, "SELECT count(*) FROM reference_images") == [(1,)]
    assert "TOPSECRET" not in _everything_stored(wd)
