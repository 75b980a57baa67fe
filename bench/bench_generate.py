"""Benchmark: the generation runner against a bare diffusers loop, and images/s vs batch size.

Both sides use the same random-weight pipeline (``evaluator.testing.tiny`` size "bench": SD's
block layout, 4 levels, cross attention in three, ~25 M UNet parameters), the same
prompts, seeds, steps, size, batch size and torch thread count, and both write PNGs:

- bare: ``DiffusionPipeline.from_pretrained`` then, per batch, ``pipe(...)`` with one
  CPU generator per image and ``image.save(path, compress_level=4)`` (what a
  hand-written script does, at the runner's PNG level); also timed without saving at
  all (``ratio_vs_nosave``: the whole cost of writing, metadata and bookkeeping);
- runner: ``evaluator.generation.runner.generate`` on the same units into a fresh workdir
  (fingerprints, validation, PNG metadata, thumbnails, atomic writes, manifests, run
  record, progress bar off).

Runs alternate (bare, runner, bare, runner, ...) so drift on a shared machine hits
both; the reported ratio is the median of per-pair ratios runner/bare (target <= 1.03).

    /work/venv/bin/python bench/bench_generate.py            # ~5 min on 2 CPU cores
    /work/venv/bin/python bench/bench_generate.py --quick    # smaller, ~1 min
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bare_loop(pipeline_dir: Path, units, out_dir: Path | None, batch_size: int) -> float:
    """The baseline: load, call the pipeline per batch, save each image (PNG, zlib level 4
    like the runner; ``out_dir=None``: do not save). Returns seconds."""
    import torch
    from diffusers import DiffusionPipeline

    start = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(str(pipeline_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for first in range(0, len(units), batch_size):
        batch = units[first : first + batch_size]
        generators = [torch.Generator("cpu").manual_seed(u.seed) for u in batch]
        images = pipe(
            prompt=[u.prompt for u in batch],
            num_inference_steps=batch[0].steps,
            guidance_scale=batch[0].guidance,
            width=batch[0].width,
            height=batch[0].height,
            generator=generators,
        ).images
        if out_dir is None:
            continue
        for unit, image in zip(batch, images, strict=True):
            image.save(out_dir / f"{unit.unit_id}.png", compress_level=4)
    return time.perf_counter() - start


def runner(toml: Path, units, workdir: Path, batch_size: int, threads: int) -> float:
    from evaluator.generation.runner import GenerateConfig, generate

    start = time.perf_counter()
    summary = generate(units, toml, workdir, GenerateConfig(batch_size=batch_size, progress=False, threads=threads))
    elapsed = time.perf_counter() - start
    if summary.done != len(units):
        raise RuntimeError(f"runner made {summary.done} of {len(units)} images: {summary.errors}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images per timed run")
    parser.add_argument("--size", type=int, default=128, help="image side in px")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=4, help="alternating bare/runner pairs")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on both sides (1: stable on a busy 2-core machine)")
    parser.add_argument("--quick", action="store_true", help="12 images, 64 px, 2 pairs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "generate.json")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.pairs, args.batch_sizes = 12, 64, 2, "1,4"

    import torch

    from catalog.units import WorkUnit
    from evaluator.testing.tiny import build_tiny_pipeline, count_parameters

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        pipeline_dir = build_tiny_pipeline(tmp / "bench-sd1", kind="sd1", seed=0, size="bench")
        params = count_parameters(pipeline_dir)
        toml = tmp / "checkpoints.toml"
        toml.write_text(f'[[checkpoint]]\nname = "bench"\nsource = "{pipeline_dir}"\n')
        units = [
            WorkUnit("bench", f"artist-{i}", "style", f"a painting in the style of artist {i}", "", i,
                     args.size, args.size, args.steps, 7.5, "default")
            for i in range(args.images)
        ]
        # warm-up (imports, allocator, tokenizer caches) on both paths
        bare_loop(pipeline_dir, units[: args.batch_size], tmp / "warm-bare", args.batch_size)
        runner(toml, units[: args.batch_size], tmp / "warm-runner", args.batch_size, args.threads)

        pairs = []
        for index in range(args.pairs):
            bare = bare_loop(pipeline_dir, units, tmp / f"bare-{index}", args.batch_size)
            ours = runner(toml, units, tmp / f"runner-{index}", args.batch_size, args.threads)
            nosave = bare_loop(pipeline_dir, units, None, args.batch_size)
            pairs.append({"bare_s": round(bare, 3), "runner_s": round(ours, 3), "bare_nosave_s": round(nosave, 3),
                          "ratio": round(ours / bare, 4), "ratio_vs_nosave": round(ours / nosave, 4)})
            print(f"pair {index}: bare {bare:.2f}s  runner {ours:.2f}s  bare-no-save {nosave:.2f}s  "
                  f"ratio {ours / bare:.3f}  vs no-save {ours / nosave:.3f}", flush=True)
        ratio = statistics.median(p["ratio"] for p in pairs)
        ratio_nosave = statistics.median(p["ratio_vs_nosave"] for p in pairs)

        by_batch = []
        for size in [int(s) for s in args.batch_sizes.split(",")]:
            seconds = runner(toml, units, tmp / f"batch-{size}", size, args.threads)
            by_batch.append({"batch_size": size, "seconds": round(seconds, 3), "images_per_s": round(len(units) / seconds, 3)})
            print(f"batch {size}: {len(units) / seconds:.2f} images/s", flush=True)

        result = {
            "what": "runner (evaluator.generation.runner) vs bare diffusers loop, same pipeline/settings/batch size",
            "ratio_runner_over_bare_median": round(ratio, 4),
            "target": 1.03,
            "ratio_runner_over_bare_without_saving_median": round(ratio_nosave, 4),
            "pairs": pairs,
            "images_per_s_by_batch_size": by_batch,
            "settings": {"images": args.images, "size": args.size, "steps": args.steps, "batch_size": args.batch_size,
                         "threads": args.threads, "device": "cpu", "dtype": "float32", "guidance": 7.5},
            "parameters": params,
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": torch.get_num_threads()},
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"median ratio runner/bare = {ratio:.3f} (target <= 1.03); wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
