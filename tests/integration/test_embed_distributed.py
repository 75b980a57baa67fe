"""`atelier embed` under torchrun (2 CPU processes, no GPU): every image embedded exactly once.

Each rank embeds the images whose id % world_size is its rank and writes its own part
files (``part-*-r<rank>-*.parquet``). Checked here: the union is every image once, each
part holds only its rank's images, the vectors equal a one-process run's bit for bit at
equal batch composition (batch size 1), and a rerun after a rank that never finished
embeds only the missing images.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.scoring import make_workdir

from evaluator.embedding.images import _part_paths, load_embeddings
from evaluator.generation.distributed import DistEnv, owns_image, share_mask
from evaluator.testing.tiny_clip import build_tiny_clip
from evaluator.workspace.workdir import Workdir

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _embed(workdir: Path, clip: Path, nproc: int | None, **env: str) -> subprocess.CompletedProcess:
    """`atelier embed` as a user runs it: under torchrun with ``nproc`` processes, or plainly."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc else [sys.executable]
    cmd = [*launch, "-m", "evaluator.cli.main", "embed", "-w", str(workdir), "--model", str(clip),
           "--batch-size", "1", "--num-workers", "0"]
    result = subprocess.run(cmd, env=_env(**env), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _part_ids(workdir: Path) -> dict[str, list[int]]:
    """Part file name -> its image ids, for every embedding part of the workdir."""
    (folder,) = [p for p in (workdir / "embeddings").iterdir() if p.is_dir()]
    return {p.name: pq.read_table(p, columns=["image_id"]).column(0).to_pylist() for p in _part_paths(folder)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


def _workdir(root: Path) -> set[int]:
    records = make_workdir(root, checkpoints=("base",), seeds=(0, 1, 2))
    return {int(r["image_id"]) for r in records}


def test_share_mask_splits_ids_once_and_by_id_alone():
    ids = np.array([5, 8, 13, 2**62 + 1, 0, 7], dtype=np.int64)
    masks = [share_mask(ids, DistEnv(r, 3, r)) for r in range(3)]
    assert (np.sum(masks, axis=0) == 1).all()  # every id has exactly one rank
    assert [owns_image(int(i), DistEnv(1, 3, 1)) for i in ids] == masks[1].tolist()
    # adding ids does not move the old ones to another rank
    more = np.concatenate([ids, np.array([99, 100], dtype=np.int64)])
    assert (share_mask(more, DistEnv(1, 3, 1))[: len(ids)] == masks[1]).all()


@pytest.mark.slow
def test_torchrun_two_processes_embed_every_image_once(tmp_path, clip):
    wanted = _workdir(tmp_path / "wd")
    result = _embed(tmp_path / "wd", clip, nproc=2)
    assert "rank 0/2" in result.stdout and "rank 1/2" in result.stdout
    parts = _part_ids(tmp_path / "wd")
    every = [i for ids in parts.values() for i in ids]
    assert len(every) == len(set(every)) == len(wanted) and set(every) == wanted  # each image once
    for name, ids in parts.items():
        rank = 0 if "-r0-" in name else 1 if "-r1-" in name else None
        assert rank is not None, name
        assert all(i % 2 == rank for i in ids), name  # a part holds only its rank's images
    # one process, same batch composition (1 image a batch): the same vectors, bit for bit
    _workdir(tmp_path / "one")
    model = _model_key(tmp_path / "wd")
    single = _embed_here(tmp_path / "one", clip)
    assert single.n_done == len(wanted) and (single.rank, single.world_size, single.n_elsewhere) == (0, 1, 0)
    ids2, vecs2 = load_embeddings(Workdir.at(tmp_path / "wd"), model)
    ids1, vecs1 = load_embeddings(Workdir.at(tmp_path / "one"), model)
    assert (ids1 == ids2).all() and np.array_equal(vecs1, vecs2)
    # a rerun under the launcher embeds nothing
    again = _embed(tmp_path / "wd", clip, nproc=2)
    assert again.stdout.count("embedded 0,") == 2
    assert _part_ids(tmp_path / "wd") == parts


def _embed_here(workdir: Path, clip_dir: Path):
    """One process, in this one: ``embed_images`` without a launcher (env None = every image)."""
    from evaluator.embedding.embed import embed_images, load_clip
    from evaluator.workspace.manifest import read_manifests

    wd = Workdir.at(workdir)
    rows = read_manifests(wd.manifests)[["image_id", "path"]]
    return embed_images(wd, load_clip(str(clip_dir), None, "cpu", "float32"), rows, 1, 0, progress=False)


def _model_key(workdir: Path) -> str:
    """The model key stored in the workdir's parts (the folder name is its slug)."""
    (folder,) = [p for p in (workdir / "embeddings").iterdir() if p.is_dir()]
    first = _part_paths(folder)[0]
    return pq.read_schema(first).metadata[b"model"].decode()


@pytest.mark.slow
def test_rerun_after_a_rank_that_never_finished_embeds_only_the_gaps(tmp_path, clip):
    wanted = _workdir(tmp_path / "wd")
    odd = {i for i in wanted if i % 2 == 1}
    # rank 1 of 2 alone, as if rank 0 had been killed before it wrote a part
    alone = _embed(tmp_path / "wd", clip, nproc=None, RANK="1", WORLD_SIZE="2", LOCAL_RANK="1")
    assert "rank 1/2: " in alone.stdout and f"embedded {len(odd)}," in alone.stdout
    first = _part_ids(tmp_path / "wd")
    assert {i for ids in first.values() for i in ids} == odd
    # the rerun with both ranks: rank 0 fills its share, rank 1 has nothing left
    rerun = _embed(tmp_path / "wd", clip, nproc=2)
    lines = {line.split(":")[0]: line for line in rerun.stdout.splitlines() if line.startswith("rank ")}
    assert f"embedded {len(wanted) - len(odd)}," in lines["rank 0/2"]
    assert f"embedded 0, skipped {len(odd)}" in lines["rank 1/2"]
    parts = _part_ids(tmp_path / "wd")
    assert {k: v for k, v in parts.items() if k in first} == first  # the earlier parts are untouched
    every = [i for ids in parts.values() for i in ids]
    assert len(every) == len(set(every)) and set(every) == wanted
    # one process afterwards: nothing left either
    assert _embed_here(tmp_path / "wd", clip).n_done == 0
