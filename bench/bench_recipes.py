"""Benchmark: a prompt in A1111 syntax (weights, a prompt edit, an alternation) against the
same prompt as plain text, through the same diffusers pipeline, in the same process.

Pipeline: ``evaluator.testing.tiny`` size "bench" (SD's block layout). Plain: ``pipe(prompt=...)``,
the path every prompt without syntax takes. Recipe: ``pipe(**weighted_call_arguments(...))``
(each distinct prompt of the schedule encoded once, A1111 weighting, embeddings switched per
step by ``callback_on_step_end``). Runs alternate so drift hits both; the figure is the median
of per-pair ratios recipe/plain (the extra text encodes and the callback; expected ~1.0).

Also: the runner's up-front prompt check over a plan of ``--units`` units (``--distinct``
distinct prompts with syntax, each repeated as seeds and checkpoints repeat them), per unit.

    python bench/bench_recipes.py [--quick]

Writes bench/results/recipes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PLAIN = "a knight in red armor, cat ears, by Claude Monet"
RECIPE = "a knight in [red:blue:0.5] armor, [cat|fox] ears, by (Claude Monet:1.2)"


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def generation_ratio(size: int, steps: int, batch: int, pairs: int) -> dict:
    import torch
    from diffusers import DiffusionPipeline

    from evaluator.generation.weighting import weighted_call_arguments
    from evaluator.testing.tiny import build_tiny_pipeline

    folder = build_tiny_pipeline(Path(tempfile.mkdtemp(prefix="bench-recipes-")) / "pipe", size="bench")
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)

    def run(**prompts):
        with torch.inference_mode():
            pipe(num_inference_steps=steps, guidance_scale=7.5, width=size, height=size, output_type="np",
                 generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)], **prompts)

    def recipe():
        with torch.inference_mode():
            arguments = weighted_call_arguments(pipe, [RECIPE] * batch, "", steps)
        run(**arguments)

    run(prompt=[PLAIN] * batch)  # warm-up
    plain_s, recipe_s = [], []
    for _ in range(pairs):
        plain_s.append(_timed(lambda: run(prompt=[PLAIN] * batch)))
        recipe_s.append(_timed(recipe))
    ratios = [r / p for r, p in zip(recipe_s, plain_s, strict=True)]
    return {"size": size, "steps": steps, "batch": batch, "pairs": pairs,
            "plain_s_median": statistics.median(plain_s), "recipe_s_median": statistics.median(recipe_s),
            "ratio_recipe_vs_plain": statistics.median(ratios)}


def check_cost(units: int, distinct: int) -> dict:
    from catalog.recipes import grammar
    from evaluator.generation.weighting import prompt_nodes

    grammar._parse_once.cache_clear()
    prompts = [f"{RECIPE}, style {i % distinct}" for i in range(units)]
    syntax = _timed(lambda: [prompt_nodes(p) for p in prompts])
    plain = _timed(lambda: [prompt_nodes(f"{PLAIN}, style {i % distinct}") for i in range(units)])
    return {"units": units, "distinct_prompts": distinct, "us_per_unit_syntax": syntax / units * 1e6,
            "us_per_unit_plain": plain / units * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer pairs (~1 min)")
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recipes.json")
    args = parser.parse_args()
    size, steps, pairs = (64, 6, 3) if args.quick else (128, 10, 5)
    result = {"generation": generation_ratio(size, steps, 2, pairs), "prompt_check": check_cost(args.units, args.distinct)}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
