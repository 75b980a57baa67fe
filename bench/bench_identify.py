"""Identification of 100k image embeddings against every catalog artist (~9,000).

atelier: ``evaluator.scoring.metrics.identification_ranks``, one float32 matmul per chunk of
images against all artist text embeddings. Baseline: a naive per-image loop (one
mat-vec and one comparison per image), timed on a subsample and extrapolated.
Embeddings are synthetic unit vectors (dim 512, CLIP ViT-B size) with planted artist
clusters, so the ranks are also checked against the loop.

    python bench/bench_identify.py [--images 100000] [--artists 9000] [--sample 2000]

Writes bench/results/identify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def naive_ranks(images, classes, true_idx):
    import numpy as np

    out = np.empty(len(images))
    for i in range(len(images)):
        sims = classes @ images[i]
        out[i] = 1 + int((sims > sims[true_idx[i]]).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--artists", type=int, default=9_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--sample", type=int, default=2_000, help="images timed with the naive loop")
    parser.add_argument("--chunk", type=int, default=2048)
    args = parser.parse_args()

    import numpy as np

    from evaluator.scoring.metrics import identification_ranks

    rng = np.random.default_rng(0)
    classes = rng.standard_normal((args.artists, args.dim), dtype=np.float32)
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    true_idx = rng.integers(0, args.artists, size=args.images)
    images = classes[true_idx] + 1.5 * rng.standard_normal((args.images, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    images /= np.linalg.norm(images, axis=1, keepdims=True)

    start = time.perf_counter()
    ranks = identification_ranks(images, classes, true_idx, chunk=args.chunk)
    batched = time.perf_counter() - start

    sample = min(args.sample, args.images)
    start = time.perf_counter()
    naive = naive_ranks(images[:sample], classes, true_idx[:sample])
    naive_sample = time.perf_counter() - start
    assert np.array_equal(naive, ranks[:sample]), "batched ranks differ from the naive loop"
    naive_full = naive_sample * args.images / sample

    result = {
        "name": "identify",
        "images": args.images,
        "artists": args.artists,
        "dim": args.dim,
        "chunk": args.chunk,
        "batched_seconds": round(batched, 3),
        "naive_sample_images": sample,
        "naive_sample_seconds": round(naive_sample, 3),
        "naive_extrapolated_seconds": round(naive_full, 3),
        "speedup": round(naive_full / batched, 2),
        "top1": float((ranks == 1).mean()),
        "chance_top1": 1 / args.artists,
        "cpu_count": os.cpu_count(),
        "note": "synthetic planted-cluster embeddings; naive loop timed on a subsample and extrapolated linearly",
    }
    out = REPO / "bench" / "results" / "identify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
