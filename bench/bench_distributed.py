"""`atelier embed` / `atelier score` in one process against two under torchrun, same images.

A workdir of ``--images`` seeded images (one manifest shard, as `generate` writes) is
copied twice; each run embeds (or scores, with ``--score``) one copy with a plain
process and the other with ``torchrun --nproc_per_node 2``, alternating which goes
first, with a random-weight ViT-B-32 (real compute, no hub) and one torch thread a
process (OMP_NUM_THREADS=1: a process per core, as a launcher would). The figure is the
wall time of the whole command, start-up included, one process / two processes, per
run: ~2 on two free cores, less when the machine is shared (the load averages before and
after each run are written next to it).

    python bench/bench_distributed.py [--images 256] [--runs 2] [--score]

Writes bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def make_workdir(root: Path, n_images: int) -> Path:
    """``n_images`` seeded 64 px images of 8 artists x 2 checkpoints, and their manifest shard."""
    import numpy as np
    from PIL import Image

    from catalog.units import WorkUnit
    from evaluator.workspace.manifest import write_shard

    rows = []
    for i in range(n_images):
        ckpt, artist, seed = ("base", "ft")[i % 2], f"artist-{i // 2 % 8}", i // 16
        unit = WorkUnit(ckpt, artist, "style", f"a painting in the style of Artist {artist}", "", seed, 64, 64, 4, 5.0, "ddim")
        rel = f"images/{unit.relpath()}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / rel)
        rows.append({**unit.to_dict(), "source": "generated", "path": rel, "thumb_path": None, "sha256": None,
                     "seconds": 0.1, "error": None, "run_id": "bench", "created_at": datetime(2026, 1, 1)})
    write_shard(rows, root / "manifests" / "bench" / "rank0-part0.parquet")
    return root


def write_catalog(path: Path) -> Path:
    from catalog.model import Artist
    from catalog.model import write_catalog as write

    write([Artist(artist_id=f"artist-{i}", name=f"Artist artist-{i}") for i in range(8)], path)
    return path


def timed(workdir: Path, nproc: int, command: str, catalog: Path) -> float:
    """Wall seconds of one `atelier <command>` with ``nproc`` processes (1: no launcher)."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else [sys.executable]
    cmd = [*launch, "-m", "evaluator.cli.main", command, "-w", str(workdir), "--model", "ViT-B-32", "--pretrained",
           "random", "--batch-size", "16", "--num-workers", "0"]
    if command == "score":
        cmd += ["--catalog", str(catalog), "--bootstrap", "200", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env |= {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--score", action="store_true", help="time `score` (embed + metrics + store) instead of `embed`")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "distributed.json")
    args = parser.parse_args()
    command = "score" if args.score else "embed"
    tmp = Path(tempfile.mkdtemp(prefix="atelier-bench-dist-"))
    try:
        base = make_workdir(tmp / "base", args.images)
        catalog = write_catalog(tmp / "styles.csv")
        runs = []
        for run in range(args.runs):
            walls, load_before = {}, [round(x, 2) for x in os.getloadavg()]
            for nproc in ((1, 2) if run % 2 == 0 else (2, 1)):  # alternate: neither always goes first
                workdir = tmp / f"run{run}-n{nproc}"
                shutil.copytree(base, workdir)
                walls[nproc] = timed(workdir, nproc, command, catalog)
            runs.append({"one_process_s": round(walls[1], 1), "two_processes_s": round(walls[2], 1),
                         "ratio": round(walls[1] / walls[2], 2), "load_before": load_before,
                         "load_after": [round(x, 2) for x in os.getloadavg()]})
            print(json.dumps(runs[-1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"command": command, "images": args.images, "cpus": os.cpu_count(), "runs": runs,
              "note": "wall time of the whole command, start-up included; OMP_NUM_THREADS=1 a process"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
