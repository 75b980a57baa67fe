"""Two CPU processes under torchrun split a plan by rank: every unit made exactly once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.gen import REPO, tiny_pipeline, units_for, write_toml

from evaluator.generation.distributed import dist_env


def test_dist_env_reads_launcher_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert dist_env() == dist_env(0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = dist_env()
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (3, 4, 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match=r"rank must be in \[0, 4\) but is 4"):
        dist_env()
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer but is 'x'"):
        dist_env()


@pytest.mark.slow
def test_torchrun_two_processes_make_every_unit_once(tmp_path, tmp_path_factory):
    from catalog.plan import write_plan
    from evaluator.workspace.manifest import read_manifests, shard_paths
    from evaluator.workspace.records import load_run_records

    pipe = tiny_pipeline(tmp_path_factory, "sd1")
    toml = write_toml(tmp_path / "ck.toml", f'[[checkpoint]]\nname = "base"\nsource = "{pipe}"\n')
    units = units_for(["base"], artists=("a", "b", "c", "d", "e"), seeds=(0, 1), steps=2)
    plan = write_plan(units, tmp_path / "plan.parquet")
    workdir = tmp_path / "wd"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "evaluator.cli.main", "generate", "--plan", str(plan), "--checkpoints", str(toml), "-w", str(workdir),
        "--batch-size", "2", "--no-progress", "--threads", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "ATELIER_RUN_ID"):
        env.pop(name, None)
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2" in result.stdout and "rank 1/2" in result.stdout

    parts = shard_paths(workdir / "manifests")
    assert sorted(p.name.split("-")[0] for p in parts) == ["rank0", "rank1"]
    assert len({p.parent for p in parts}) == 1  # both ranks agreed on the run id
    import pandas as pd
    import pyarrow.parquet as pq

    rows = pd.concat([pq.read_table(p).to_pandas() for p in parts])
    assert len(rows) == len(units)  # no unit twice across ranks
    assert sorted(rows["unit_id"]) == sorted(u.unit_id for u in units)
    assert rows["error"].isna().all()
    assert len(list((workdir / "images").rglob("*.png"))) == len(units)
    assert len(read_manifests(workdir / "manifests")) == len(units)
    (run,) = load_run_records(workdir)  # one run, the two rank records merged
    assert run["n_done"] == len(units) and run["status"] == "ok"

    # a rerun under the launcher makes nothing
    again = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("0 made") == 2
    assert len(read_manifests(workdir / "manifests")) == len(units)
