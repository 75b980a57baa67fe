"""Crash harness for `atelier import` and `atelier references add` (issue 12, item 4).

A clean twin imports a folder (A1111 and ComfyUI PNGs, a labels CSV with a baseline
row, a broken file), adds an artist's references, then scores, never interrupted.
Each command then runs on its own workdir and is SIGKILLed ``ATELIER_CRASH_SEEDS``
times in a row (6 by default; kill *i* draws its moment from ``random.Random``):
``time`` (startup, reading), ``replace:N`` (a copy, thumbnail, run record or the shard
written but not renamed), ``upsert:N`` (inside the store transaction), ``commit:1``
(after COMMIT). After every kill: every PNG decodes, the store has no duplicate key.
After a rerun: the store equals the twin's, no temporary is left, and a further rerun
has nothing to do; `score` then gives the twin's every table. A kill after the manifest
shard (or a store that stays locked) followed directly by `score` gives the same.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.hardening import (
    COMPARED,
    REPO,
    TABLE_KEYS,
    assert_same_tables,
    atelier_cmd,
    check_store,
    cli_cmd,
    connect_ro,
    crash_kills,
    env_for_subprocess,
    kill_at,
    run_atelier,
    run_to_end,
    temporaries,
    write_catalog,
)

pytestmark = pytest.mark.slow

PARAMS = "{prompt}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 96x96, Model: {model}"
N_SOURCE = 9  # images in the import source (one more file is broken)


def _noise_png(path: Path, seed: int, text: dict[str, str] | None = None) -> Path:
    """A 96x96 noise PNG (~28 kB: a copy takes long enough for kills to land mid-write)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, pnginfo=info)
    return path


def _sources(root: Path) -> dict[str, Path]:
    """The import folder (with labels.csv), the reference folder and the catalog."""
    src, refs = root / "src", root / "refs"
    prompts = ["a painting by Claude Monet", "a harbour, art by Pablo Picasso", "a wave by Katsushika Hokusai"]
    for i in range(6):
        model = "base" if i % 2 else "ft"
        _noise_png(src / "a1111" / f"img-{i}.png", i, {"parameters": PARAMS.format(prompt=prompts[i % 3], seed=i // 2,
                                                                                 model=model)})
    comfy = {"3": {"class_type": "KSampler", "inputs": {"seed": 2**64 - 1, "steps": 20, "cfg": 7.0, "positive": ["6", 0]}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a painting by Frida Kahlo"}}}
    _noise_png(src / "comfy.png", 10, {"prompt": json.dumps(comfy)})
    _noise_png(src / "labelled" / "kahlo.png", 11)
    _noise_png(src / "labelled" / "baseline.png", 12)
    (src / "labelled" / "broken.png").write_bytes(b"not a png at all")
    (src / "labels.csv").write_text("file,artist,checkpoint,seed,template\nlabelled/kahlo.png,Frida Kahlo,base,3,\n"
                                    "labelled/baseline.png,,base,3,null\n")
    for i in range(4):
        _noise_png(refs / f"monet-{i}.png", 100 + i)
    return {"src": src, "refs": refs, "catalog": write_catalog(root / "styles.csv"), "labels": src / "labels.csv"}


def _import_args(wd: Path, s: dict[str, Path]) -> list[str]:
    return ["import", str(s["src"]), "-w", str(wd), "--catalog", str(s["catalog"]), "--labels", str(s["labels"]), "-q"]


def _refs_args(wd: Path, s: dict[str, Path]) -> list[str]:
    return ["references", "add", "claude-monet", str(s["refs"]), "-w", str(wd), "--catalog", str(s["catalog"])]


def _score_args(wd: Path, clip: Path, s: dict[str, Path]) -> list[str]:
    return ["score", "-w", str(wd), "--model", str(clip), "--catalog", str(s["catalog"]), "--bootstrap", "50",
            "--batch-size", "4", "--num-workers", "0", "-q"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sources, a tiny CLIP, and the clean twin: import, references add, score."""
    from evaluator.testing.tiny_clip import build_tiny_clip

    root = tmp_path_factory.mktemp("import-crash")
    sources = _sources(root)
    clip = Path(build_tiny_clip(root / "clip", seed=0))
    wd = root / "clean"
    times = {}
    times["import"], out = run_to_end(atelier_cmd(*_import_args(wd, sources)))
    assert f"{N_SOURCE} imported" in out.stdout and "1 failed" in out.stdout, out.stdout
    times["refs"], _ = run_to_end(atelier_cmd(*_refs_args(wd, sources)))
    imported = root / "clean-imported"
    shutil.copytree(wd, imported)
    run_to_end(atelier_cmd(*_score_args(wd, clip, sources)))
    return {"sources": sources, "clip": clip, "clean": wd, "imported": imported, "times": times}


def _in_process_import(wd: Path, s: dict[str, Path], **kw):
    from evaluator.ingest.importer import import_images

    return import_images(s["src"], wd, labels_csv=s["labels"], catalog_path=s["catalog"], progress=False, **kw)


def _pngs_whole(root: Path) -> int:
    """Every PNG under its final name in the import folders decodes completely."""
    from PIL import Image

    found = [p for p in (root / "imported").rglob("*.png") if not p.name.startswith(".")] if (root / "imported").is_dir() else []
    for path in found:
        with Image.open(path) as image:
            image.load()
    return len(found)


def _assert_sound(root: Path) -> None:
    _pngs_whole(root)
    store = root / "atelier.duckdb"
    if store.is_file():
        con = connect_ro(store)
        try:
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            for table, key in TABLE_KEYS.items():
                if table in tables:
                    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({', '.join(key)})) FROM {table}").fetchone()
                    assert total == distinct, f"{table} duplicated after a kill"
        finally:
            con.close()


def _shards(root: Path) -> int:
    return len(list((root / "manifests").glob("import-*/*.parquet"))) if (root / "manifests").is_dir() else 0


def _kill_series(stage_seed: int, args: list[str], clean_seconds: float, root: Path, n_files: int) -> list[str]:
    """``crash_kills()`` kills in a row at points drawn from ``random.Random(stage_seed + i)``.

    Until this command's shard exists, a kill can land anywhere before it (``time``,
    the ``replace`` of any copy, thumbnail, record or the shard itself; the first half
    of the kills only there); after, only the store write is left (``upsert``), and a
    kill after COMMIT (which leaves no work for later kills) is drawn for the last only.
    """
    first = _shards(root)
    log, landed = [], 0
    for i in range(crash_kills()):
        last = [("commit", 1)] if i == crash_kills() - 1 else []
        replace = ("replace", 2 * n_files + 3)  # copies + thumbnails, the interrupted record, the shard, the record
        if _shards(root) == first:  # the first half of the kills before the shard, the rest anywhere
            modes = [("time", 1), replace, replace] if i < crash_kills() // 2 else [replace, ("upsert", 3), *last]
        else:
            modes = [("upsert", 3), *last]
        what, killed = kill_at(lambda kill: cli_cmd(*args, kill=kill), random.Random(stage_seed + i), clean_seconds,
                               lambda: 0, modes)
        log.append(what)
        landed += killed
        _assert_sound(root)
    print(f"{landed}/{len(log)} kills landed:", "; ".join(log))
    assert landed >= (len(log) + 1) // 2, log
    return log


def _assert_no_import_temporaries(root: Path) -> None:
    """The import sweeps its own; only checkpoint records' may stay (hidden, ignored)."""
    left = [p for p in temporaries(root) if p.relative_to(root).parts[0] != "checkpoints"]
    assert not left, left


def _store_counts(root: Path) -> dict[str, int]:
    con = connect_ro(root / "atelier.duckdb")
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("images", "reference_images", "runs")}
    finally:
        con.close()


def _assert_no_orphans(root: Path) -> None:
    con = connect_ro(root / "atelier.duckdb")
    try:
        for sql in ("SELECT count(*) FROM reference_images WHERE image_id NOT IN (SELECT image_id FROM images)",
                    "SELECT count(*) FROM images WHERE run_id NOT IN (SELECT run_id FROM runs)"):
            assert con.execute(sql).fetchone()[0] == 0, sql
    finally:
        con.close()


def test_import_and_references_killed_at_random_points_finish_on_rerun(world, tmp_path):
    s, wd = world["sources"], tmp_path / "wd"
    _kill_series(4000, _import_args(wd, s), world["times"]["import"], wd, N_SOURCE)
    rerun = run_atelier(*_import_args(wd, s))
    assert rerun.returncode == 0, rerun.stderr
    _kill_series(5000, _refs_args(wd, s), world["times"]["refs"], wd, 4)
    again = run_atelier(*_refs_args(wd, s))
    assert again.returncode == 0 and "claude-monet: 4 reference images" in again.stdout, again.stdout + again.stderr

    # the store equals the uninterrupted twin's; nothing is left over
    assert_same_tables(wd / "atelier.duckdb", world["imported"] / "atelier.duckdb", tables=["images", "reference_images"])
    assert _pngs_whole(wd) == _pngs_whole(world["imported"]) == N_SOURCE + 4
    _assert_no_orphans(wd)
    _assert_no_import_temporaries(wd)
    # a further rerun has nothing to import and nothing to write
    before = _store_counts(wd)
    idle = run_atelier(*_import_args(wd, s))
    assert f"0 imported, {N_SOURCE + 1} already there" in idle.stdout and "0 rows written" in idle.stdout, idle.stdout
    assert _store_counts(wd) == before
    # and `score` gives every table of the twin's
    run_to_end(atelier_cmd(*_score_args(wd, world["clip"], s)))
    check_store(wd / "atelier.duckdb", expect_images=N_SOURCE + 1 + 4)
    assert_same_tables(wd / "atelier.duckdb", world["clean"] / "atelier.duckdb", tables=COMPARED)


def _killed(args: list[str], kill: str) -> None:
    done = subprocess.run(cli_cmd(*args, kill=kill), env=env_for_subprocess(), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -9, (kill, done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("kill", ["upsert:1", "upsert:3"])
def test_an_import_killed_at_its_store_write_is_finished_by_the_next_import_or_score(world, tmp_path, kill):
    """The issue's case: killed after its manifest shard, the rerun said "N already there,
    0 rows written" on every run while the store had none of them; references were
    orphans. Now the next import, references add or score finishes it."""
    s = world["sources"]
    for next_command in ("import", "score"):
        wd = tmp_path / next_command
        _killed(_import_args(wd, s), kill)
        _killed(_refs_args(wd, s), kill)
        assert (wd / "manifests").is_dir() and _pngs_whole(wd) == N_SOURCE + 4
        if next_command == "import":
            rerun = run_atelier(*_import_args(wd, s))
            assert rerun.returncode == 0, rerun.stderr
            assert f"0 imported, {N_SOURCE + 1} already there" in rerun.stdout, rerun.stdout
            assert "of these rows were recorded by an earlier import" in rerun.stdout, rerun.stdout
            assert_same_tables(wd / "atelier.duckdb", world["imported"] / "atelier.duckdb",
                               tables=["images", "reference_images"])
            _assert_no_orphans(wd)
        run_to_end(atelier_cmd(*_score_args(wd, world["clip"], s)))
        check_store(wd / "atelier.duckdb", expect_images=N_SOURCE + 1 + 4)
        assert_same_tables(wd / "atelier.duckdb", world["clean"] / "atelier.duckdb", tables=COMPARED)


def test_an_import_that_times_out_on_the_store_lock_says_so_and_the_next_import_finishes_it(world, tmp_path):
    import duckdb

    from evaluator.workspace.store import StoreLockedError

    s, wd = world["sources"], tmp_path / "wd"
    wd.mkdir()
    duckdb.connect(str(wd / "atelier.duckdb")).close()
    # another process holds the store (DuckDB lets one process hold a file for writing)
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(120)", str(wd / "atelier.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=r"this import's rows are in .*manifests/import-.*next `atelier import`"):
            _in_process_import(wd, s, store_timeout=0.5)
    finally:
        holder.kill()
        holder.wait()
    summary = _in_process_import(wd, s)
    assert (summary.imported, summary.unchanged, summary.rows_recovered) == (0, N_SOURCE + 1, N_SOURCE + 1)
    assert _images(wd) == _images(world["imported"], "source <> 'reference'")
    _assert_no_orphans(wd)


def _images(root: Path, where: str = "true") -> list[tuple]:
    con = connect_ro(root / "atelier.duckdb")
    try:
        return con.execute(f"SELECT image_id, source, artist_id, checkpoint, template, seed, seed_text, sha256, path, "
                           f"error FROM images WHERE {where} ORDER BY image_id").fetchall()
    finally:
        con.close()
