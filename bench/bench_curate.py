"""Curation throughput, and near-duplicate search at 100k hashes (issue 14).

1. ``curate`` on the real SD 1.5 images (``../shared/data/images/generated-sd15``, WebP
   1024^2): the process pool (``--workers``) against a naive one-at-a-time loop over the
   same worker function (``signals.file_signals``, the same signals: decode, size, two
   perceptual hashes, both SD watermark messages), in the same process; images/s each and
   the ratio. The signals of both are checked equal.
2. Near-duplicate search: ``duplicates.hash_pairs`` (a FAISS IndexBinaryFlat range search
   over full + centre hashes) on ``--hashes`` synthetic 64-bit hashes with planted near
   pairs, against the all-pairs Python loop (``hash_pairs_naive``) timed on ``--naive-sample``
   hashes and scaled by n^2 (it is quadratic); the pairs found are checked equal at the
   sample size.

    python bench/bench_curate.py [--images 40] [--workers 2] [--hashes 100000] [--naive-sample 1500]

Writes bench/results/curate.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "data" / "images" / "generated-sd15"


def _signals_key(s) -> tuple:
    return (s.sha256, s.width, s.height, s.phash, s.phash_centre, s.sd_mark, s.sd_mark_agreement)


def bench_throughput(args) -> dict:
    import imwatermark  # noqa: F401 - imports torch (~10 s): paid before either timing, not by one of them

    from evaluator.curation.models import ModelOptions
    from evaluator.curation.runner import CurateOptions, curate
    from evaluator.curation.signals import WorkerOptions, file_signals
    from evaluator.workspace.store import connect_read_only

    files = sorted(IMAGES.glob("*.webp"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f)
        start = time.perf_counter()
        naive = [file_signals(f, f.name, WorkerOptions()) for f in files]
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        curate(src, Path(tmp) / "wd", options=CurateOptions(models=ModelOptions(), workers=args.workers, progress=False))
        pool_s = time.perf_counter() - start
        con = connect_read_only(Path(tmp) / "wd" / "atelier.duckdb")
        stored = {r[0]: r for r in con.execute(
            "SELECT sha256, width, height, phash, phash_centre, sd_mark, sd_mark_agreement FROM curation").fetchall()}
        con.close()
    same = all(stored[s.sha256] == _signals_key(s) for s in naive)
    return {"images": len(files), "workers": args.workers, "naive_seconds": round(naive_s, 2),
            "curate_seconds": round(pool_s, 2), "naive_images_per_s": round(len(files) / naive_s, 3),
            "curate_images_per_s": round(len(files) / pool_s, 3), "speedup": round(naive_s / pool_s, 2),
            "signals_equal": same}


def planted_hashes(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    full = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64)
    centre = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64)
    for i in range(0, n - 1, 50):  # a near pair every 50 hashes, 0..12 bits apart
        flips = rng.choice(64, size=int(rng.integers(0, 13)), replace=False)
        full[i + 1] = full[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    return full, centre


def bench_search(args) -> dict:
    from evaluator.curation.duplicates import hash_pairs, hash_pairs_naive, hex_codes

    full, centre = planted_hashes(args.hashes)
    as_hex = lambda values: [f"{int(v):016x}" for v in values]  # noqa: E731
    codes_full, codes_centre = hex_codes(as_hex(full)), hex_codes(as_hex(centre))
    start = time.perf_counter()
    pairs = hash_pairs(codes_full, codes_centre, args.radius)
    index_s = time.perf_counter() - start
    m = args.naive_sample
    start = time.perf_counter()
    naive = hash_pairs_naive([int(v) for v in full[:m]], [int(v) for v in centre[:m]], args.radius)
    naive_m_s = time.perf_counter() - start
    small = hash_pairs(codes_full[:m], codes_centre[:m], args.radius)
    estimate = naive_m_s * (args.hashes / m) ** 2
    return {"hashes": args.hashes, "radius": args.radius, "index_seconds": round(index_s, 2),
            "pairs_found": len(pairs), "planted_pairs": len(range(0, args.hashes - 1, 50)),
            "naive_sample": m, "naive_sample_seconds": round(naive_m_s, 2),
            "naive_estimated_seconds_at_n": round(estimate, 1), "speedup_vs_naive": round(estimate / index_s, 1),
            "equal_at_sample": small == naive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hashes", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=1500)
    parser.add_argument("--radius", type=int, default=10)
    args = parser.parse_args()
    result = {"throughput": bench_throughput(args), "near_duplicate_search": bench_search(args)}
    out = REPO / "bench" / "results" / "curate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
