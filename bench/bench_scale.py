"""Scale curves: how each stage's time grows with the number of images (and of artists).

For 1k / 10k / 100k images (``--sizes``) it times, on one workdir per size:

- embedding (``evaluator.embedding.embed.embed_images``, DataLoader workers, tiny CLIP),
- indexing (``evaluator.embedding.index.update_index``),
- scoring (``evaluator.scoring.run.score``: ingest, every metric, bootstraps, one transaction),
- dashboard queries (``bench_dashboard.time_queries`` on a store of that many images),

and identification of 100k images against 500 / 2,000 / 5,000 / 9,000 artists
(``evaluator.scoring.metrics.identification_ranks``, dim 512).

Each curve is reported with its baseline in the same run: the per-item time at the
smallest size. A ratio near 1 means the stage scales linearly; above 1, worse.
Images are a pool of 512 distinct 64 px PNGs referenced many times (decoding and the
model are real; the disk cost of 100k distinct files is not what is measured).

    python bench/bench_scale.py [--sizes 1000,10000,100000] [--artists 500,2000,5000,9000]

Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOL = 512


def _make_pool(root: Path) -> list[str]:
    """512 distinct small PNGs (seeded noise over gradients) under root/images/pool."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "images" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(POOL):
        base = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 1)) % 256, (xx + yy + i) % 256], -1)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        rel = f"images/pool/{i:04d}.png"
        Image.fromarray(pixels).save(root / rel)
        paths.append(rel)
    return paths


def _write_manifest(root: Path, n: int, pool: list[str], artist_ids: list[str]) -> None:
    """N images over 2 checkpoints (base, ft), 2 templates + the null baseline, 4 seeds."""
    from catalog.units import BASELINE_ARTIST_ID
    from evaluator.workspace.manifest import write_shard

    now = dt.datetime.now()
    records = []
    per_artist = 2 * 2 * 4  # checkpoints x templates x seeds
    n_artists = max(1, n // per_artist)
    artists = [artist_ids[i % len(artist_ids)] for i in range(n_artists)]
    i = 0
    while len(records) < n:
        a = artists[(i // per_artist) % len(artists)] if i < n_artists * per_artist else BASELINE_ARTIST_ID
        k = i % per_artist
        checkpoint = ("base", "ft")[k // 8]
        template = ("style", "portrait")[(k // 4) % 2] if a != BASELINE_ARTIST_ID else "null"
        seed = k % 4 + 4 * (i // (n_artists * per_artist)) if a == BASELINE_ARTIST_ID else k % 4
        records.append({
            "image_id": i + 1, "unit_id": f"{i + 1:016x}", "source": "generated",
            "checkpoint": checkpoint, "artist_id": a, "template": template,
            "prompt": f"{template} {a}", "negative_prompt": "", "seed": seed,
            "width": 64, "height": 64, "steps": 4, "guidance": 5.0, "scheduler": "default",
            "path": pool[i % len(pool)], "thumb_path": pool[i % len(pool)],
            "seconds": 0.0, "error": None, "run_id": "bench", "created_at": now,
        })
        i += 1
    write_shard(records, root / "manifests" / "bench" / "rank000-part00000.parquet")


def _curve(points: dict[int, float]) -> dict:
    sizes = sorted(points)
    base = points[sizes[0]] / sizes[0]
    return {
        "seconds": {str(n): round(points[n], 3) for n in sizes},
        "per_item_ms": {str(n): round(1000 * points[n] / n, 4) for n in sizes},
        "ratio_per_item_vs_smallest": {str(n): round((points[n] / n) / base, 3) for n in sizes},
    }


def scale_pipeline(sizes: list[int], clip_dir: Path, keep: bool) -> dict:
    from catalog.model import load_catalog
    from evaluator.embedding.embed import embed_images, load_clip
    from evaluator.embedding.index import update_index
    from evaluator.scoring.run import ScoreConfig, score
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.workdir import Workdir

    clip = load_clip(str(clip_dir))
    artist_ids = [a.artist_id for a in load_catalog(None)]
    times: dict[str, dict[int, float]] = {"embed": {}, "index": {}, "score": {}}
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix=f"bench-scale-{n}-"))
        try:
            pool = _make_pool(root)
            _write_manifest(root, n, pool, artist_ids)
            wd = Workdir.at(root)
            rows = read_manifests(wd.manifests)[["image_id", "path"]]
            t0 = time.perf_counter()
            embed_images(wd, clip, rows, batch_size=64, num_workers=2, progress=False)
            times["embed"][n] = time.perf_counter() - t0
            t0 = time.perf_counter()
            update_index(wd, clip.key)
            times["index"][n] = time.perf_counter() - t0
            t0 = time.perf_counter()
            score(wd.root, ScoreConfig(model=str(clip_dir), bootstrap=200, base_pairs=[("base", "ft")], progress=False))
            times["score"][n] = time.perf_counter() - t0
            print(f"{n:>7} images: embed {times['embed'][n]:.1f}s  index {times['index'][n]:.2f}s  "
                  f"score {times['score'][n]:.1f}s", flush=True)
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    return {stage: _curve(points) for stage, points in times.items()}


def scale_dashboard(sizes: list[int], repeats: int) -> dict:
    # bench/ is on sys.path: these scripts run as `python bench/<name>.py`.
    import bench_dashboard

    from evaluator.testing import synthetic_store as make_store
    per_page: dict[str, dict[int, float]] = {}
    for n in sizes:
        # 4 templates x 4 seeds x 7 checkpoints per artist, as in the 1M target store.
        n_artists = max(2, round(n / (4 * 4 * 7)))
        root = Path(tempfile.mkdtemp(prefix=f"bench-dash-{n}-"))
        try:
            make_store.build_store(root / "wd", make_store.SyntheticStoreSpec(n_artists, 4, 4, 7, with_images=False))
            timings = bench_dashboard.time_queries(root / "wd", repeats)
            for page, stats in timings.items():
                per_page.setdefault(page, {})[n] = stats["median_ms"] / 1000
        finally:
            shutil.rmtree(root, ignore_errors=True)
    out = {}
    for page, points in per_page.items():
        sizes_sorted = sorted(points)
        out[page] = {
            "median_ms": {str(n): round(1000 * points[n], 1) for n in sizes_sorted},
            "ratio_vs_smallest": {str(n): round(points[n] / points[sizes_sorted[0]], 2) for n in sizes_sorted},
        }
    return out


def scale_identification(n_images: int, artist_counts: list[int], dim: int = 512) -> dict:
    import numpy as np

    from evaluator.scoring.metrics import identification_ranks

    rng = np.random.default_rng(0)
    out = {}
    base_rate = None
    for n_artists in artist_counts:
        classes = rng.standard_normal((n_artists, dim)).astype(np.float32)
        classes /= np.linalg.norm(classes, axis=1, keepdims=True)
        truth = rng.integers(0, n_artists, n_images)
        images = classes[truth] + 0.8 * rng.standard_normal((n_images, dim)).astype(np.float32) / np.sqrt(dim) * 8
        images /= np.linalg.norm(images, axis=1, keepdims=True)
        t0 = time.perf_counter()
        ranks = identification_ranks(images.astype(np.float32), classes, truth)
        seconds = time.perf_counter() - t0
        per_pair = seconds / (n_images * n_artists)
        base_rate = base_rate or per_pair
        out[str(n_artists)] = {
            "seconds": round(seconds, 3),
            "top1": round(float(np.mean(ranks == 1)), 4),
            "ratio_per_pair_vs_smallest": round(per_pair / base_rate, 3),
        }
        print(f"identify {n_images} images x {n_artists} artists: {seconds:.2f}s", flush=True)
    return {"images": n_images, "dim": dim, "by_artists": out}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="image counts")
    parser.add_argument("--artists", default="500,2000,5000,9000", help="artist counts for identification")
    parser.add_argument("--identify-images", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="dashboard query repeats (median kept)")
    parser.add_argument("--skip", default="", help="comma list of: pipeline,dashboard,identify")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdirs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}

    result: dict = {
        "name": "scale",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "sizes": sizes,
    }
    if "pipeline" not in skip:
        from evaluator.testing.tiny_clip import build_tiny_clip

        clip_root = Path(tempfile.mkdtemp(prefix="bench-scale-clip-"))
        try:
            clip_dir = build_tiny_clip(clip_root / "clip", seed=0)
            result["pipeline"] = scale_pipeline(sizes, clip_dir, args.keep)
        finally:
            shutil.rmtree(clip_root, ignore_errors=True)
    if "dashboard" not in skip:
        result["dashboard"] = scale_dashboard(sizes, args.repeats)
    if "identify" not in skip:
        result["identification"] = scale_identification(
            args.identify_images, [int(a) for a in args.artists.split(",") if a]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
