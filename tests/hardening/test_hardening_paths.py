"""Hostile and odd files through `atelier import`: paths, seeds, names, text chunks (issue 12).

Every identifier that becomes a path component (artist id, checkpoint, template) is
checked before any write; a bad one, a seed the store cannot hold, a NUL in a text
chunk or a name too long for the file system is that file's recorded error and the
run goes on; nothing is written outside the workdir and later imports still work.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from support.hardening import write_catalog

from evaluator.cli.main import main

PARAMS = "a painting by Claude Monet\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 16x16, Model: sd15"


def _png(path: Path, color: str = "red", text: dict[str, str] | None = None, itxt: dict[str, str] | None = None) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    for key, value in (itxt or {}).items():
        info.add_itxt(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, pnginfo=info)
    return path


def _with_raw_itxt(path: Path, key: bytes, raw: bytes) -> Path:
    """Insert an iTXt chunk whose text is the raw bytes (Pillow cannot write invalid UTF-8)."""
    body = key + b"\0\0\0\0\0" + raw
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    data = path.read_bytes()
    path.write_bytes(data[:33] + chunk + data[33:])  # after the 8-byte signature and the IHDR chunk
    return path


def _import(src: Path, wd: Path, catalog: Path, *extra: str):
    return CliRunner().invoke(main, ["import", str(src), "-w", str(wd), "--no-progress", "--catalog", str(catalog), *extra])


def _rows(wd: Path) -> dict[str, dict]:
    """Store rows by source file name (from the error text or the row's source path: a kept
    original carries no 'Imported from' of its own)."""
    con = duckdb.connect(str(wd / "atelier.duckdb"), read_only=True)
    try:
        cursor = con.execute("SELECT artist_id, checkpoint, template, seed, seed_text, path, error, source_path FROM images")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    out = {}
    for row in rows:
        if row["error"]:
            out[row["error"].split(":", 1)[0]] = row
        else:
            assert (wd / row["path"]).is_file()
            out[row["source_path"]] = row
    return out


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def catalog(tmp_path):
    return write_catalog(tmp_path / "styles.csv")


def test_hostile_identifiers_are_that_files_error_and_nothing_leaves_the_workdir(tmp_path, catalog):
    src, wd = tmp_path / "src", tmp_path / "wd"
    outside = tmp_path / "abs-target"
    _png(src / "ok.png", "green", text={"parameters": PARAMS.format(seed=7)})
    _png(src / "dotdot.png", "red", itxt={"atelier": json.dumps({"artist_id": "../../../escaped", "checkpoint": "ck"})})
    _png(src / "absolute.png", "blue", itxt={"atelier": json.dumps({"artist_id": str(outside), "checkpoint": "ck"})})
    _png(src / "nul-id.png", "white", itxt={"atelier": json.dumps({"artist_id": "claude\u0000monet"})})
    _png(src / "ckpt.png", "yellow", itxt={"atelier": json.dumps({"artist_id": "claude-monet", "checkpoint": ".."})})
    _png(src / "tmpl.png", "purple")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,artist,template\ntmpl.png,Claude Monet,../../t\n")
    before = _files(tmp_path)

    result = _import(src, wd, catalog, "--labels", str(labels))

    assert result.exit_code == 0, result.output
    created = _files(tmp_path) - before
    assert created and all(p.is_relative_to(wd) for p in created), sorted(p for p in created if not p.is_relative_to(wd))
    assert not (tmp_path / "escaped").exists() and not outside.exists()
    rows = _rows(wd)
    assert rows["ok.png"]["path"] and rows["ok.png"]["error"] is None and rows["ok.png"]["seed"] == 7
    for name, field in [("dotdot.png", "artist id '../../../escaped'"), ("absolute.png", f"artist id {str(outside)!r}"),
                        ("nul-id.png", "artist id 'claude\\x00monet'"), ("tmpl.png", "template '../../t'")]:
        row = rows[name]
        assert row["path"] is None and field in row["error"], (name, row)
        assert f"failed: {name}: " in result.output
    assert rows["dotdot.png"]["artist_id"] == "_invalid"
    # a checkpoint '..' from metadata is made path-safe (its dots stripped), never a folder step
    assert rows["ckpt.png"]["checkpoint"] is None and rows["ckpt.png"]["path"].startswith("imported/_unknown/claude-monet/")

    # the next import of a clean folder, and a rerun of this one, still work
    clean = tmp_path / "clean"
    _png(clean / "fine.png", "orange", text={"parameters": PARAMS.format(seed=8)})
    again = _import(clean, wd, catalog)
    assert again.exit_code == 0, again.output
    assert "1 imported" in again.output and "rows written to the store" in again.output
    assert _rows(wd)["fine.png"]["path"]
    rerun = _import(src, wd, catalog, "--labels", str(labels))
    assert rerun.exit_code == 0 and "0 imported" in rerun.output, rerun.output


def test_huge_seeds_long_names_and_nul_text_are_their_files_errors(tmp_path, catalog):
    src, wd = tmp_path / "src", tmp_path / "wd"
    _png(src / "max63.png", "green", text={"parameters": PARAMS.format(seed=2**63 - 1)})
    _png(src / "seed63.png", "red", text={"parameters": PARAMS.format(seed=2**63)})
    _png(src / "seed64.png", "blue", text={"parameters": PARAMS.format(seed=2**64 - 1)})
    comfy = {"3": {"class_type": "KSampler", "inputs": {"seed": 2**64 - 1, "steps": 20, "cfg": 7.0, "positive": ["6", 0]}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a painting by Claude Monet"}}}
    _png(src / "comfy.png", "white", text={"prompt": json.dumps(comfy)})
    _png(src / "steps.png", "black", text={"parameters": PARAMS.format(seed=1).replace("Steps: 20", "Steps: 99999999999")})
    _png(src / "nul.png", "yellow", text={"parameters": "a c\x00at\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5"})
    long_name = "x" * 245 + ".png"
    _png(src / long_name, "purple", text={"parameters": PARAMS.format(seed=3)})
    labels = tmp_path / "labels.csv"
    _png(src / "label-seed.png", "orange")
    labels.write_text(f"file,artist,seed\nlabel-seed.png,Claude Monet,{2**64}\n")

    result = _import(src, wd, catalog, "--labels", str(labels))

    assert result.exit_code == 0, result.output
    rows = _rows(wd)
    assert rows["max63.png"]["seed"] == 2**63 - 1 and rows["max63.png"]["path"]
    assert rows["max63.png"]["seed_text"] == str(2**63 - 1)
    # seeds of [2**63, 2**64) are imported exactly (seed_text), seed is NULL: never -1 = unknown
    for name, seed in [("seed63.png", 2**63), ("seed64.png", 2**64 - 1), ("comfy.png", 2**64 - 1)]:
        row = rows[name]
        assert row["error"] is None and row["path"] and row["seed"] is None and row["seed_text"] == str(seed), row
        from PIL import Image

        from evaluator.generation.pngmeta import read_generation_info

        with Image.open(wd / row["path"]) as image:  # the copy (the original, kept) still says the exact seed
            assert read_generation_info(image)["seed"] == seed
    for name, text in [("label-seed.png", f"seed {2**64} does not fit"),
                       ("steps.png", "steps 99999999999 does not fit"), ("nul.png", "contains a NUL byte")]:
        assert rows[name]["path"] is None and text in rows[name]["error"], (name, rows[name])
        assert f"failed: {name}: " in result.output
    copy = rows[long_name]["path"]
    assert copy and len(Path(copy).name) <= 100 and (wd / copy).is_file()
    assert len(rows) == 8

    # deterministic: a second workdir names the long file the same way
    twin = _import(src, tmp_path / "twin", catalog, "--labels", str(labels))
    assert twin.exit_code == 0 and _rows(tmp_path / "twin")[long_name]["path"] == copy


def test_invalid_utf8_in_an_itxt_chunk_keeps_what_decodes_and_says_so(tmp_path, catalog):
    src, wd = tmp_path / "src", tmp_path / "wd"
    raw = b"a caf\xe9 painting by Claude Monet\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 16x16, Model: sd\xff15"
    _with_raw_itxt(_png(src / "latin1.png"), b"parameters", raw)

    result = _import(src, wd, catalog)

    assert result.exit_code == 0, result.output
    row = _rows(wd)["latin1.png"]
    assert row["error"] is None and row["seed"] == 42 and row["artist_id"] == "claude-monet"
    assert row["checkpoint"] == "sd-15"  # U+FFFD is not path-safe: replaced like any other character
    assert "note: latin1.png: iTXt chunk 'parameters' is not valid UTF-8: 2 undecodable" in result.output


@pytest.mark.parametrize("inside", ["source-in-workdir", "workdir-in-source", "same"])
def test_a_source_and_workdir_that_nest_are_refused(tmp_path, catalog, inside):
    wd = tmp_path / "wd"
    src = {"source-in-workdir": wd / "imported", "workdir-in-source": tmp_path / "src", "same": wd}[inside]
    _png(src / "a.png")
    target = tmp_path / "src" / "wd" if inside == "workdir-in-source" else wd
    before = _files(tmp_path)

    result = _import(src, target, catalog)

    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert "inside the" in result.output or "is the workdir" in result.output
    assert _files(tmp_path) == before and not (target / "atelier.duckdb").exists()


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_checkpoint_named_dot_or_dotdot_is_refused(tmp_path, catalog, name):
    from evaluator.generation.checkpoints import CheckpointError, load_checkpoints

    toml = tmp_path / "ck.toml"
    (tmp_path / "w.safetensors").write_bytes(b"")
    toml.write_text(f'[[checkpoint]]\nname = "{name}"\nsource = "w.safetensors"\n')
    with pytest.raises(CheckpointError, match=r"field 'name': .* not start with '\.'"):
        load_checkpoints(toml)
    _png(tmp_path / "src" / "a.png")
    result = _import(tmp_path / "src", tmp_path / "wd", catalog, "--checkpoint", name)
    assert result.exit_code != 0 and "--checkpoint" in result.output and not (tmp_path / "wd" / "imported").exists()

