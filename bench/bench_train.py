"""Benchmark: atelier's training step against a bare diffusers + peft loop, and steps/s vs batch.

Both sides train the same LoRA (peft, rank R on the UNet's to_q/to_k/to_v/to_out.0, AdamW,
gradient clipping at 1.0) on the same random-weight pipeline (``evaluator.testing.tiny``),
the same images read from disk every step, the same resolution, batch size and torch
thread count, in this process:

- bare: what a hand-written loop does (diffusers' ``train_text_to_image_lora.py`` without
  accelerate): PIL -> tensor per image, tokenize, ``vae.encode(...).latent_dist.sample()``
  x scaling_factor, ``randn_like`` noise, ``randint`` timesteps, ``add_noise``, UNet, MSE,
  backward, clip, step;
- atelier: ``evaluator.training.loop.optimizer_step`` on a session opened as ``atelier
  train`` opens it (bucketed batches, per-image seeded noise, the shared objective).

Runs alternate (bare, atelier, ...) so drift on a shared machine hits both; the ratio is
the median of per-pair ratios atelier/bare (target <= 1.05). Then atelier's steps/s at
batch 1, 2 and 4. Saving and validation happen every ``save_every`` steps and are not
part of a step (they are not timed here).

    .venv/bin/python bench/bench_train.py            # ~5 min on 2 busy CPU cores
    .venv/bin/python bench/bench_train.py --quick    # ~2 min
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_dataset(root: Path, count: int, size: int) -> Path:
    from tests.support.training import planted_style_dataset

    return planted_style_dataset(root, count=count, size=size)


class BareLoop:
    """A LoRA training loop written directly against diffusers and peft."""

    def __init__(self, pipeline_dir: Path, images: list[Path], size: int, rank: int, batch_size: int, seed: int = 0):
        import torch
        from diffusers import DDPMScheduler, StableDiffusionPipeline
        from peft import LoraConfig

        pipe = StableDiffusionPipeline.from_pretrained(str(pipeline_dir), local_files_only=True)
        self.unet, self.vae, self.text_encoder, self.tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
        torch.manual_seed(seed)
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=1e-2)
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.images, self.size, self.batch_size, self.position = images, size, batch_size, 0

    def _pixels(self, path: Path):
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB").resize((self.size, self.size), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)

    def step(self) -> float:
        import torch
        import torch.nn.functional as F  # noqa: N812

        paths = [self.images[(self.position + i) % len(self.images)] for i in range(self.batch_size)]
        self.position += self.batch_size
        pixels = torch.stack([self._pixels(p) for p in paths])
        captions = [p.with_suffix(".txt").read_text().strip() for p in paths]
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
            states = self.text_encoder(ids, return_dict=False)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, states, return_dict=False)[0]
        loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def atelier_session(pipeline_dir: Path, dataset: Path, workdir: Path, size: int, rank: int, batch_size: int):
    from evaluator.generation.distributed import dist_env
    from evaluator.training.config import from_mapping
    from evaluator.training.loop import _open_session

    config = from_mapping(dict(
        method="lora", base=str(pipeline_dir), dataset=str(dataset), output_name="bench", resolution=size,
        min_bucket_reso=size, max_bucket_reso=size * 2, bucket_reso_steps=size, train_batch_size=batch_size,
        rank=rank, max_train_steps=10_000, save_every=10_000, validation_fraction=0.1,
    ))
    return _open_session(config, workdir, False, dist_env(0, 1))


def timed(step, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in px")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2, help="batch of the overhead comparison")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    parser.add_argument("--pairs", type=int, default=5, help="alternating bare/atelier pairs")
    parser.add_argument("--batch-sizes", default="1,2,4")
    parser.add_argument("--model", choices=("tiny", "bench"), default="tiny", help="evaluator.testing.tiny size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="8 steps, 3 pairs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.pairs = 8, 3
    import torch

    from evaluator.generation.checkpoints import quiet_hf_libraries
    from evaluator.testing.tiny import build_tiny_pipeline

    quiet_hf_libraries()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipe_dir = build_tiny_pipeline(root / "pipe", "sd1", size=args.model)
        dataset = make_dataset(root / "data", 24, args.size)
        images = sorted((dataset / "1_stripes").glob("*.png"))
        bare = BareLoop(pipe_dir, images, args.size, args.rank, args.batch_size)
        session = atelier_session(pipe_dir, dataset, root / "wd", args.size, args.rank, args.batch_size)
        from evaluator.training.loop import optimizer_step

        timed(bare.step, 2)
        timed(lambda: optimizer_step(session), 2)  # warm-up: allocator, lazy imports
        ratios, bare_times, atelier_times = [], [], []
        for _ in range(args.pairs):
            b = timed(bare.step, args.steps)
            a = timed(lambda: optimizer_step(session), args.steps)
            bare_times.append(b)
            atelier_times.append(a)
            ratios.append(a / b)
        curve = {}
        for batch in [int(x) for x in args.batch_sizes.split(",")]:
            s = atelier_session(pipe_dir, dataset, root / f"wd{batch}", args.size, args.rank, batch)
            timed(lambda s=s: optimizer_step(s), 2)
            seconds = timed(lambda s=s: optimizer_step(s), args.steps)
            curve[batch] = {"steps_per_s": args.steps / seconds, "images_per_s": args.steps * batch / seconds}
    result = {
        "what": "atelier optimizer_step vs a bare diffusers+peft LoRA loop (same process)",
        "model": args.model, "size": args.size, "rank": args.rank, "batch_size": args.batch_size,
        "steps_per_run": args.steps, "pairs": args.pairs, "threads": args.threads,
        "ratio_median": statistics.median(ratios), "ratios": ratios,
        "bare_steps_per_s": args.steps / statistics.median(bare_times),
        "atelier_steps_per_s": args.steps / statistics.median(atelier_times),
        "by_batch": curve, "machine": platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(f"atelier/bare step time: median ratio {result['ratio_median']:.3f} "
          f"(target <= 1.05) over {args.pairs} pairs of {args.steps} steps, batch {args.batch_size}, {args.size}px")
    for batch, row in curve.items():
        print(f"  batch {batch}: {row['steps_per_s']:.2f} steps/s, {row['images_per_s']:.2f} images/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
