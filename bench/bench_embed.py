"""Embedder throughput: atelier's DataLoader embedder vs a naive one-image-at-a-time loop.

Both run the same random-weight ViT-B-32-sized open_clip model (real compute, no hub)
on the real images of ../shared/data/images/ (WebP, JPEG, PNG of many sizes), with the
same torch thread count, on this machine. The ratio is what matters; absolute images/s
depend on the CPU.

    python bench/bench_embed.py [--repeat 2] [--batch-size 32] [--num-workers 2]

Writes bench/results/embed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "data" / "images"
SUFFIXES = (".webp", ".jpg", ".jpeg", ".png")


def naive_loop(clip, paths: list[Path]) -> float:
    """One image at a time: decode, preprocess, encode, normalise: no batching, no overlap."""
    import torch
    from PIL import Image

    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            with Image.open(path) as img:
                tensor = clip.preprocess(img.convert("RGB"))
            feats = clip.model.encode_image(tensor[None])
            torch.nn.functional.normalize(feats, dim=-1).numpy()
    return time.perf_counter() - start


def atelier_embedder(clip, paths: list[Path], batch_size: int, num_workers: int) -> float:
    from evaluator.embedding.embed import embed_images
    from evaluator.workspace.workdir import Workdir

    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-wd-"))
    try:
        wd = Workdir.at(tmp)
        rows = [{"image_id": i, "path": str(p)} for i, p in enumerate(paths)]
        start = time.perf_counter()
        result = embed_images(wd, clip, rows, batch_size=batch_size, num_workers=num_workers, progress=False)
        seconds = time.perf_counter() - start
        assert result.n_done == len(paths) and result.n_failed == 0, result
        return seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best is kept (a shared machine is noisy)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture, random weights")
    args = parser.parse_args()

    import torch

    from evaluator.embedding.embed import load_clip
    from evaluator.testing.tiny_clip import build_random_clip

    paths = sorted(p for p in IMAGES.rglob("*") if p.suffix.lower() in SUFFIXES)
    if not paths:
        raise SystemExit(f"no images under {IMAGES}")
    model_dir = Path(tempfile.mkdtemp(prefix="bench-embed-model-"))
    try:
        build_random_clip(model_dir / "clip", base=args.arch, seed=0)
        clip = load_clip(str(model_dir / "clip"))
        # warm-up: first calls allocate and pick kernels
        naive_loop(clip, paths[:4])
        naive, ours = [], []
        for _ in range(args.repeat):
            naive.append(naive_loop(clip, paths))
            ours.append(atelier_embedder(clip, paths, args.batch_size, args.num_workers))
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    n = len(paths)
    result = {
        "name": "embed",
        "images": n,
        "model": f"{args.arch} (random weights)",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "naive_seconds": round(min(naive), 3),
        "atelier_seconds": round(min(ours), 3),
        "naive_images_per_s": round(n / min(naive), 2),
        "atelier_images_per_s": round(n / min(ours), 2),
        "speedup": round(min(naive) / min(ours), 2),
        "target_speedup": 1.5,
        "all_runs": {"naive": [round(x, 3) for x in naive], "atelier": [round(x, 3) for x in ours]},
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    out = REPO / "bench" / "results" / "embed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
