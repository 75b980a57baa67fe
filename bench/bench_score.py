"""`atelier score` at scale: the real catalog, N synthetic images, a rerun, a new checkpoint.

Images are manifest rows without pixels and embeddings are written straight into the
embedding store (tiny random-weight CLIP for the texts, so dimensions match), so this
measures what score itself costs: ingest, text embeddings of the whole catalog, FAISS
update (IVF past 200k vectors, recall measured), every metric with bootstrap CIs over
seeds, comparisons, and the one-transaction write to DuckDB.

    python bench/bench_score.py [--artists 9000] [--checkpoints 4] [--seeds 4]

Writes bench/results/score.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = (("style", "a painting in the style of {name}"), ("portrait", "a portrait of a character in a scenic environment by {name}"))


def add_checkpoint(wd, clip, name: str, artists, seeds: int, seed: int) -> int:
    import numpy as np

    from catalog.units import BASELINE_ARTIST_ID, WorkUnit
    from evaluator.embedding.images import _write_part
    from evaluator.workspace.manifest import write_shard

    rows = []
    now = datetime(2026, 1, 1)
    cells = [(a.artist_id, t, text.format(name=a.name)) for a in artists for t, text in TEMPLATES]
    cells.append((BASELINE_ARTIST_ID, "null", "a painting"))
    for artist_id, template, prompt in cells:
        for s in range(seeds):
            unit = WorkUnit(name, artist_id, template, prompt, "", s, 1024, 1024, 30, 7.0, "euler")
            rows.append({**unit.to_dict(), "source": "generated", "path": f"images/{unit.relpath()}",
                         "run_id": f"gen-{name}", "created_at": now})
    write_shard(rows, wd.manifests / f"gen-{name}" / "rank0-part0.parquet")
    vecs = np.random.default_rng(seed).standard_normal((len(rows), clip.embed_dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    _write_part(wd.embeddings(clip.key), [r["image_id"] for r in rows], vecs, clip.key)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artists", type=int, default=9000)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    from catalog.model import load_catalog
    from evaluator.embedding.embed import load_clip
    from evaluator.scoring.run import ScoreConfig, score
    from evaluator.testing.tiny_clip import build_tiny_clip
    from evaluator.workspace.workdir import Workdir

    tmp = Path(tempfile.mkdtemp(prefix="bench-score-"))
    try:
        wd = Workdir.at(tmp / "wd")
        clip_dir = build_tiny_clip(tmp / "clip")
        clip = load_clip(str(clip_dir))
        catalog = load_catalog(None)
        artists = catalog[: args.artists]
        names = [f"ck{i}" for i in range(args.checkpoints)]
        n_images = sum(add_checkpoint(wd, clip, n, artists, args.seeds, i) for i, n in enumerate(names))
        cfg = ScoreConfig(model=str(clip_dir), bootstrap=args.bootstrap, progress=False,
                          base_pairs=[(names[0], n) for n in names[1:]])
        t0 = time.perf_counter()
        first = score(wd.root, cfg)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rerun = score(wd.root, cfg)
        rerun_s = time.perf_counter() - t0
        added = add_checkpoint(wd, clip, "new", artists, args.seeds, 99)
        t0 = time.perf_counter()
        third = score(wd.root, cfg)
        new_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "name": "score",
        "catalog_artists": len(catalog),
        "scored_artists": len(artists),
        "checkpoints": args.checkpoints,
        "seeds": args.seeds,
        "images": n_images,
        "first_run_seconds": round(first_s, 1),
        "first_run_stages": first.seconds,
        "rows_written": sum(first.rows.values()),
        "index": {k: first.index.get(k) for k in ("kind", "ntotal", "nlist", "nprobe", "recall_at_10")},
        "rerun_seconds": round(rerun_s, 1),
        "rerun_noop": rerun.noop,
        "new_checkpoint_images": added,
        "new_checkpoint_seconds": round(new_s, 1),
        "new_checkpoint_scored": third.n_scored,
        "new_checkpoint_skipped": third.n_skipped,
        "note": "synthetic embeddings (dim of the tiny CLIP); text encoding is the tiny model's",
    }
    out = REPO / "bench" / "results" / "score.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
