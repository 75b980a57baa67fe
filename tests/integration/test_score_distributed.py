"""`atelier score` under torchrun (2 CPU processes, gloo): the same store as one process.

Each rank embeds and scores (image-level metrics) the images whose id % 2 is its rank and
writes its own ``image_scores`` part (rank 1 loads only those images' vectors and the
references); rank 0 reads the parts with DuckDB, aggregates and
writes the store in one transaction. Checked: every image scored once (the ranks' counts
add up, split by id), no part left once the store holds them, the store equal to a
one-process run's on the same inputs, and a rerun under the launcher writes nothing.

Equality: with 1 image a batch both runs embed the same batches, so the vectors are bit
for bit equal (asserted), and so are the image metrics: each is a row-wise dot product
of the image's vector with the class texts, whose float32 value does not depend on how
many other rows the matrix product holds (asserted exact). The aggregates are computed
by one process in both runs from the same rows in the same order: exact too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from support.hardening import TABLE_KEYS
from support.scoring import ARTISTS, _image, make_workdir, write_catalog

from evaluator.ingest.references import add_references
from evaluator.scoring.run import ScoreConfig, score
from evaluator.testing.tiny_clip import build_tiny_clip
from evaluator.workspace.workdir import Workdir

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
# The tables whose rows a scoring run computes, and the columns that identify a row.
TABLES = {name: TABLE_KEYS[name] for name in (
    "images", "image_scores", "artist_scores", "checkpoint_scores", "artist_neighbors", "comparisons",
    "embedding_errors", "reference_prototypes")}
VOLATILE = {"run_id", "created_at"}  # differ between two runs by construction


def _table(store: Path, table: str) -> pd.DataFrame:
    con = duckdb.connect(str(store), read_only=True)
    try:
        frame = con.execute(f"SELECT * FROM {table}").df()
    finally:
        con.close()
    frame = frame.drop(columns=[c for c in VOLATILE if c in frame])
    if "error" in frame:  # an unreadable file's message names it: the workdirs' roots differ
        frame["error"] = frame["error"].str.replace(str(store.parent), "<WD>", regex=False)
    return frame.sort_values(TABLES[table], ignore_index=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


def _command(workdir: Path, clip: Path, catalog: Path, bootstrap: int = 100,
             compare: tuple[str, ...] = ("--compare", "base:ft"), readout: str = "cosine") -> tuple[list[str], dict[str, str]]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "evaluator.cli.main", "score", "-w", str(workdir), "--model", str(clip), "--catalog", str(catalog),
           *compare, "--bootstrap", str(bootstrap), "--batch-size", "1", "--num-workers", "0", "--quiet",
           "--readout", readout]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    return cmd, env | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _launch(workdir: Path, clip: Path, catalog: Path, readout: str = "cosine") -> subprocess.CompletedProcess:
    cmd, env = _command(workdir, clip, catalog, readout=readout)
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _references(folder: Path) -> Path:
    """Three reference works per artist, as ``<artist id>/<n>.png`` (the reference metrics)."""
    for a_i, (artist_id, _, _) in enumerate(ARTISTS):
        (folder / artist_id).mkdir(parents=True, exist_ok=True)
        for n in range(3):
            _image(1000 * a_i + n, ((70 * a_i) % 256, 90, (30 * n) % 256)).save(folder / artist_id / f"{n}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("readout", ["cosine", "csls"])
def test_torchrun_two_processes_score_like_one(tmp_path, clip, readout):
    """Under CSLS too: r(c) is over every scored image, and each rank reads only its share."""
    catalog = write_catalog(tmp_path / "styles.csv")
    records = make_workdir(tmp_path / "two", broken=1)
    make_workdir(tmp_path / "one", broken=1)
    works = _references(tmp_path / "works")
    for name in ("two", "one"):
        add_references(Workdir.at(tmp_path / name), works, catalog_path=catalog)
    result = _launch(tmp_path / "two", clip, catalog, readout)
    # rank 1 scored exactly its share (odd ids among the readable images), rank 0 the rest
    broken = {int(records[0]["image_id"]), int(records[len(records) // 2]["image_id"])}  # each checkpoint's first
    readable = [int(r["image_id"]) for r in records if int(r["image_id"]) not in broken]
    odd = sum(1 for i in readable if i % 2 == 1)
    assert f"rank 1/2: image metrics of {odd} images written to parts" in result.stdout, result.stdout
    # rank 1 held only the vectors it needs: its share of the scored images and the references
    con = duckdb.connect(str(tmp_path / "two" / "atelier.duckdb"), read_only=True)
    n_refs = con.execute("SELECT count(*) FROM reference_images").fetchone()[0]
    con.close()
    assert n_refs == 3 * len(ARTISTS)
    assert f"rank 1/2: loaded {odd + n_refs} embeddings, its share of the scored images and the {n_refs} " \
           "reference works" in result.stdout, result.stdout
    assert f"scored {len(readable)} new images" in result.stdout
    assert not any((tmp_path / "two" / "image_scores").rglob("*.parquet"))  # the store holds them now

    one = score(tmp_path / "one", ScoreConfig(model=str(clip), catalog_path=catalog, base_pairs=[("base", "ft")],
                                              bootstrap=100, batch_size=1, num_workers=0, progress=False,
                                              readout=readout))
    assert one.n_scored == len(readable) and one.world_size == 1
    for table in TABLES:
        two_rows, one_rows = _table(tmp_path / "two" / "atelier.duckdb", table), _table(tmp_path / "one" / "atelier.duckdb", table)
        if table == "images":  # paths are relative: the workdirs differ only in their root
            assert len(two_rows) == len(records) + n_refs
        pd.testing.assert_frame_equal(two_rows, one_rows, check_exact=True, obj=table)
    scores = _table(tmp_path / "two" / "atelier.duckdb", "image_scores")
    assert not scores.duplicated(["image_id", "metric"]).any()
    assert set(scores["image_id"]) == set(readable)

    again = _launch(tmp_path / "two", clip, catalog, readout)  # nothing new: both ranks stop, nothing written
    assert again.stdout.count("nothing new") == 2


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children before their own children."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        out.extend(frontier)
    return out


def _image_score_rows(store: Path) -> int:
    if not store.is_file():
        return 0
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM image_scores").fetchone()[0]
    finally:
        con.close()


@pytest.mark.slow
def test_a_launch_killed_before_its_store_write_leaves_parts_that_a_rerun_reuses(tmp_path, clip):
    from evaluator.scoring.parts import read_parts

    catalog = write_catalog(tmp_path / "styles.csv")
    records = make_workdir(tmp_path / "wd", checkpoints=("base",), seeds=(0, 1, 2))
    cmd, env = _command(tmp_path / "wd", clip, catalog, bootstrap=5000, compare=())  # a long aggregation
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "wd" / "image_scores"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        names = {p.name.split("-")[0] for p in folder.rglob("rank*.parquet")} if folder.is_dir() else set()
        if names == {"rank0", "rank1"}:
            break
        time.sleep(0.01)
    for pid in [*_descendants(proc.pid), proc.pid]:  # both ranks (torchrun starts them in their own sessions), then it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    store = tmp_path / "wd" / "atelier.duckdb"
    killed_before_write = _image_score_rows(store) == 0
    print("killed before the store write:", killed_before_write)
    left = pd.concat([read_parts(d) for d in {p.parent for p in folder.rglob("rank*.parquet")}])
    print("parts left:", sorted(p.name for p in folder.rglob("*.parquet")), "rows", len(left))

    rerun = score(tmp_path / "wd", ScoreConfig(model=str(clip), catalog_path=catalog, bootstrap=100, batch_size=1,
                                               num_workers=0, progress=False))
    if killed_before_write:  # both ranks' parts were on disk: the rerun computed no image metric again
        assert rerun.n_from_parts == left["image_id"].nunique() == len(records) == rerun.n_scored
        assert rerun.n_embedded == 0
    assert _image_score_rows(store) > 0
    scores = _table(store, "image_scores")
    assert not scores.duplicated(["image_id", "metric"]).any()
    assert set(scores["image_id"]) == {int(r["image_id"]) for r in records}
    assert not any(folder.rglob("*.parquet"))
