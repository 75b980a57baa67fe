"""The training loop: from a TrainingConfig to saved, validated steps in the workdir.

Reads the dataset, the base checkpoint and (on ``resume``) the last saved step; writes
``DIR/training/<output_name>/`` (step folders, ``losses.jsonl``) and ``DIR/runs/<run_id>.json``,
and hands every saved step to ``steps.on_saved_step`` (records, checkpoint, images).

The procedure, as diffusers' ``train_text_to_image_lora.py`` and kohya's ``train_network.py``:

1. Under torchrun (``WORLD_SIZE`` > 1) join the process group (gloo on CPU, nccl on CUDA).
2. Read the dataset, split it by content hash, batch it by aspect-ratio bucket. One
   *global* micro-batch holds ``train_batch_size x world_size`` images; rank r trains on
   its images r, r + world, ... so one process at batch 2 and two at batch 1 see the same
   images at the same step.
3. Load the base, add what the method trains, build AdamW and the lr schedule
   (``diffusers.optimization.get_scheduler``); on ``resume`` restore the last saved state.
4. Each optimizer step: ``gradient_accumulation_steps`` micro-batches, loss = the mean over
   every image of the window (objective.per_image_loss); gradients summed over ranks
   (all_reduce, what DDP does), clipped, stepped.
5. Every ``save_every`` steps and at the end (rank 0): weights in the method's formats,
   the resume state, the validation loss, all in a temporary folder renamed whole to
   ``step-NNNNNN``; then ``on_saved_step``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from evaluator.errors import StateError
from evaluator.training.config import TrainingConfig, config_dict
from evaluator.training.objective import LossSettings
from evaluator.training.state import Progress
from evaluator.workspace.workdir import Workdir

LOSSES_NAME = "losses.jsonl"
STEP_SUMMARY = "step.json"
RECORDED_MARK = "recorded"  # in state/: on_saved_step finished for this step


def step_dir_name(step: int) -> str:
    """``step-000250``: six digits, so folders sort by step."""
    return f"step-{step:06d}"


def training_dir(workdir: str | Path, output_name: str) -> Path:
    return Workdir.at(workdir, create=False).root / "training" / output_name


@dataclass
class TrainingData:
    """The dataset as trained on: both sides of the split, and the training batches."""

    dataset: Any  # dataset.TrainingDataset
    split: Any  # split.Split
    batches: Any  # buckets.BucketBatches over split.train
    class_items: list = field(default_factory=list)


@dataclass
class SavedStepInfo:
    step: int
    step_dir: Path
    train_loss: float
    val_loss: float | None
    lr: float
    weights: list[Path]
    report: str | None = None  # steps.StepReport.line(): what validation made or why it could not


@dataclass
class TrainResult:
    """What a call to ``train`` did (on rank 0: the steps it saved)."""

    run_id: str
    output_dir: Path
    start_step: int
    final_step: int
    losses: list[float] = field(default_factory=list)  # train loss of each step this call made
    saved: list[SavedStepInfo] = field(default_factory=list)
    seconds: float = 0.0  # the whole call, loading included
    step_seconds: float = 0.0  # in optimizer steps only (saving and validation excluded)

    @property
    def steps_per_s(self) -> float:
        done = self.final_step - self.start_step
        return done / self.step_seconds if self.step_seconds > 0 else 0.0


@dataclass
class _Session:
    config: TrainingConfig
    env: Any  # generation.distributed.DistEnv
    wd: Workdir
    run_dir: Path
    data: TrainingData
    models: Any  # models.TrainingModels
    optimizer: Any
    lr_scheduler: Any
    progress: Progress
    result: TrainResult
    loss_settings: LossSettings
    started: Any  # datetime
    t_start: float
    autocast: Any
    scaler: Any = None  # torch.amp.GradScaler for fp16 (bf16 and fp32 need none)
    last_save_losses: list[float] = field(default_factory=list)


# ------------------------------------------------------------------ setup


def start_distributed(env, device: str) -> bool:
    """Join the launcher's process group (gloo on CPU, nccl on CUDA) when world_size > 1;
    whether a group is in use."""
    from evaluator.generation.distributed import join_process_group

    # Rank 0 validates (and generates images) at every saved step while the others wait at
    # a barrier: give that the time a real model's validation takes, not the 30-min default.
    return join_process_group(env, device, timeout=timedelta(hours=4))


def prepare_data(config: TrainingConfig, wd: Workdir, world_size: int) -> TrainingData:
    """Dataset -> split (curation groups and earlier runs' sides kept) -> bucketed batches."""
    from evaluator.training.buckets import BucketBatches
    from evaluator.training.dataset import load_dataset
    from evaluator.training.split import split_for_run

    dataset = load_dataset(config.dataset, caption_extension=config.caption_extension, labels=config.labels)
    _, split = split_for_run(dataset.items, config.validation_fraction, config.seed, wd.store, config.output_name)
    batches = BucketBatches(
        split.train, config.resolution, config.train_batch_size * world_size, config.seed,
        min_side=config.min_bucket_reso, max_side=config.max_bucket_reso, step=config.bucket_reso_steps,
    )
    class_items = []
    if config.class_data_dir:
        class_items = class_images(config)
    return TrainingData(dataset, split, batches, class_items)


def class_images(config: TrainingConfig) -> list:
    """Prior preservation's class images: every image of ``class_data_dir``, captioned ``class_prompt``."""
    from evaluator.training.dataset import image_items

    return image_items(config.class_data_dir, config.class_prompt or "", "class")


def build_optimizer(config: TrainingConfig, models):
    """AdamW over the trained parameters, and the lr schedule over ``max_train_steps``."""
    import torch
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(list(models.trainable.values()), lr=config.learning_rate,
                                  weight_decay=config.adam_weight_decay)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_train_steps)
    return optimizer, lr_scheduler


def _broadcast_trainable(models, env) -> None:
    """Start every rank from rank 0's parameters (as DDP does when it wraps a model)."""
    if env.world_size == 1:
        return
    import torch.distributed as dist

    for param in models.trainable.values():
        dist.broadcast(param.data, src=0)


def _autocast(config: TrainingConfig):
    import contextlib

    import torch

    if config.mixed_precision == "no":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
    device_type = "cuda" if config.device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def _grad_scaler(config: TrainingConfig):
    """fp16 gradients underflow without loss scaling (config refuses fp16 off CUDA)."""
    if config.mixed_precision != "fp16":
        return None
    import torch

    return torch.amp.GradScaler("cuda")


def _open_session(config: TrainingConfig, workdir, resume: bool, env) -> _Session:
    from evaluator.generation.distributed import device_for
    from evaluator.training.models import base_spec, load_models
    from evaluator.workspace.records import utcnow

    started, t_start = utcnow(), time.perf_counter()
    wd = Workdir.at(workdir)
    run_dir = wd.root / "training" / config.output_name
    latest = _check_start(run_dir, resume)
    config.device = device_for(config.device, env)
    base = base_spec(config)  # a wrong base is refused before any image or weight is read
    data = prepare_data(config, wd, env.world_size)
    models = load_models(config, base)
    optimizer, lr_scheduler = build_optimizer(config, models)
    _broadcast_trainable(models, env)
    scaler = _grad_scaler(config)
    progress = Progress(0, 0, env.world_size)
    if latest is not None:
        progress = _resume(latest, models, optimizer, lr_scheduler, config, env, scaler)
    run_id = f"train-{config.output_name}-{started.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    result = TrainResult(run_id, run_dir, progress.step, progress.step)
    settings = LossSettings(models.prediction_type, config.min_snr_gamma)
    session = _Session(config, env, wd, run_dir, data, models, optimizer, lr_scheduler, progress, result, settings,
                       started, t_start, _autocast(config), scaler)
    if latest is not None and env.is_main:
        _truncate_losses(run_dir, progress.step)
        if not (latest / "state" / RECORDED_MARK).is_file():
            _record_step(session, _read_summary(latest))  # killed between saving and recording
    return session


def _check_start(run_dir: Path, resume: bool) -> Path | None:
    from evaluator.training.state import latest_step_dir

    latest = latest_step_dir(run_dir)
    if latest is not None and not resume:
        raise StateError(f"{run_dir} already holds saved steps (last: {latest.name}); pass --resume to continue "
                         "that run, or choose another output_name")
    return latest


def _resume(latest: Path, models, optimizer, lr_scheduler, config: TrainingConfig, env, scaler) -> Progress:
    from evaluator.training.state import load_state

    progress = load_state(latest, models, optimizer, lr_scheduler, config, scaler)
    if progress.world_size != env.world_size:
        raise StateError(f"cannot resume from {latest}: it was trained by {progress.world_size} processes, this run "
                         f"has {env.world_size}; the batches would differ (same global batch needs the same count)")
    return progress


# ------------------------------------------------------------------ one step


def _micro_loss(session: _Session, entries: list[tuple[int, Any, tuple[int, int]]], step: int):
    """Sum of the per-image losses of this rank's images of one micro-batch (``entries``:
    (index in the global window, item, bucket size)); prior-preservation images added."""
    import torch

    from evaluator.training.buckets import load_pixels
    from evaluator.training.models import dropped_caption, encode_text, training_caption
    from evaluator.training.objective import (
        TRAIN_STREAM,
        draw_noise,
        encode_latents,
        per_image_loss,
        sample_generator,
    )

    config, models = session.config, session.models
    images = [(index, item, size, 1.0) for index, item, size in entries]
    if session.data.class_items:
        classes = session.data.class_items
        images += [(index + 1_000_000, classes[(step * 4096 + index) % len(classes)], size, config.prior_loss_weight)
                   for index, _, size in entries]
    pixels = torch.stack([load_pixels(item, size) for _, item, size, _ in images])
    generators = [sample_generator(config.seed, TRAIN_STREAM, step, index) for index, *_ in images]
    with torch.no_grad():
        latents = encode_latents(models.vae, pixels, generators)
    latents = latents.to(dtype=models.unet.dtype)
    draw = draw_noise(latents.shape[1:], generators, models.noise_scheduler.config.num_train_timesteps,
                      config.noise_offset, latents.device, latents.dtype)
    with session.autocast():
        captions = [dropped_caption(config, training_caption(config, item.caption), step, index)
                    for index, item, _, _ in images]
        cond = encode_text(models, captions, [size for *_, size, _ in images])
        loss = per_image_loss(models.unet, models.noise_scheduler, latents, draw, cond, session.loss_settings)
    weights = torch.tensor([w for *_, w in images], device=loss.device)
    return (loss * weights).sum()


def _window(session: _Session) -> tuple[list[list[tuple[int, Any, tuple[int, int]]]], int]:
    """This rank's (global index, item, size) entries of each micro-batch of the next step, and
    the number of training images in the whole window (every rank's)."""
    config, env = session.config, session.env
    window, total = [], 0
    width = config.train_batch_size * env.world_size
    for k in range(config.gradient_accumulation_steps):
        batch = session.data.batches.batch(session.progress.micro_batches + k)
        total += len(batch)
        window.append([(k * width + j, item, size) for j, (item, size) in enumerate(batch) if j % env.world_size == env.rank])
    return window, total


def optimizer_step(session: _Session) -> float:
    """One optimizer step (accumulation window, ranks' gradients summed); returns its mean loss."""
    import torch

    models, step = session.models, session.progress.step
    window, total = _window(session)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for entries in window:
        if not entries:
            continue
        loss = _micro_loss(session, entries, step)
        scaled = loss / total
        (session.scaler.scale(scaled) if session.scaler is not None else scaled).backward()
        loss_sum += loss.detach().double().cpu()
    params = list(models.trainable.values())
    loss_sum = _sum_over_ranks(params, loss_sum, session.env)
    if session.scaler is not None:
        session.scaler.unscale_(session.optimizer)  # clip the true gradients
    torch.nn.utils.clip_grad_norm_(params, session.config.max_grad_norm)
    if session.scaler is not None:
        session.scaler.step(session.optimizer)  # skips a step whose gradients overflowed
        session.scaler.update()
    else:
        session.optimizer.step()
    session.lr_scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    if models.placeholder_ids:
        from evaluator.training.models import restore_other_embeddings

        restore_other_embeddings(models)
    session.progress.step += 1
    session.progress.micro_batches += session.config.gradient_accumulation_steps
    return float(loss_sum) / total


def _sum_over_ranks(params: list, loss_sum, env):
    """All-reduce (sum) every gradient and the loss: each rank's loss is already divided by
    the global image count, so the sum is the global mean's gradient."""
    if env.world_size == 1:
        return loss_sum
    import torch
    import torch.distributed as dist

    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
    dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
    return loss_sum


# ------------------------------------------------------------------ validation


def validation_loss(session: _Session) -> float | None:
    """Mean loss over the validation images at fixed timesteps and fixed noise: comparable
    from step to step (the same draws every time). None when nothing is held out."""
    losses = validation_losses(session.models, session.data.split.validation, session.config,
                               session.data.batches.sizes, session.autocast)
    return sum(losses) / len(losses) if losses else None


def validation_losses(models, items: list, config: TrainingConfig, bucket_sizes: list, autocast=None) -> list[float]:
    """The loss of each (validation image, fixed timestep) pair, image by image: each image
    at its bucket's size, with its own noise (seeded by its content hash, so adding images
    to the split changes no other image's draws)."""
    import contextlib

    import torch

    from evaluator.training.buckets import load_pixels, nearest_bucket
    from evaluator.training.models import encode_text, training_caption
    from evaluator.training.objective import (
        encode_latents,
        per_image_loss,
        validation_draw,
        validation_timesteps,
    )

    settings = LossSettings(models.prediction_type, config.min_snr_gamma)
    timesteps = validation_timesteps(models.noise_scheduler.config.num_train_timesteps, config.validation_timesteps)
    losses = []
    with torch.no_grad(), (autocast or contextlib.nullcontext)():
        for item in items:
            size = nearest_bucket(item.width, item.height, bucket_sizes)
            latents = encode_latents(models.vae, load_pixels(item, size)[None], None).to(models.unet.dtype)
            cond = encode_text(models, [training_caption(config, item.caption)], [size])
            image_key = int(item.sha256[:12], 16)
            for position, timestep in enumerate(timesteps):
                draw = validation_draw(latents.shape[1:], config.seed, image_key, timestep, position,
                                       latents.device, latents.dtype)
                losses.append(float(per_image_loss(models.unet, models.noise_scheduler, latents, draw, cond,
                                                   settings)[0]))
    return losses


# ------------------------------------------------------------------ saving


def _facts(session: _Session):
    from evaluator.training.formats import RunFacts

    data, models = session.data, session.models
    return RunFacts(
        step=session.progress.step, started_at=session.started.timestamp(), session_id=abs(hash(session.result.run_id)) % 2**31,
        base_name=models.base_name, base_fingerprint=None, train_items=list(data.split.train),
        num_validation_images=len(data.split.validation), batches_per_epoch=data.batches.batches_per_epoch,
        world_size=session.env.world_size,
    )


def save_step(session: _Session, train_loss: float) -> None:
    """Rank 0 writes ``step-NNNNNN/`` (weights, state, summary) whole, then records it; all ranks wait."""
    from evaluator.training.formats import save_weights
    from evaluator.training.state import save_state

    if session.env.is_main:
        step = session.progress.step
        final = session.run_dir / step_dir_name(step)
        partial = session.run_dir / f".{final.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        t0 = time.perf_counter()
        weights = save_weights(partial, session.config, session.models, _facts(session))
        save_state(partial, session.models, session.optimizer, session.lr_scheduler, session.progress, session.config,
                   session.scaler)
        val_loss = validation_loss(session)
        summary = {
            "step": step, "train_loss": train_loss, "val_loss": val_loss,
            "lr": session.lr_scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - session.t_start, 3),
            "weights": [p.name for p in weights], "run_id": session.result.run_id, "save_seconds": None,
        }
        summary["save_seconds"] = round(time.perf_counter() - t0, 3)
        (partial / STEP_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        partial.rename(final)
        _record_step(session, summary | {"step_dir": final})
    _barrier(session.env)


def _read_summary(step_dir: Path) -> dict:
    return json.loads((step_dir / STEP_SUMMARY).read_text()) | {"step_dir": step_dir}


def _record_step(session: _Session, summary: dict) -> None:
    """Hand a saved step to ``steps.on_saved_step``, then mark it recorded."""
    from evaluator.training import steps

    step_dir = Path(summary["step_dir"])
    info = SavedStepInfo(int(summary["step"]), step_dir, float(summary["train_loss"]), summary["val_loss"],
                         float(summary["lr"]), [step_dir / name for name in summary["weights"]])
    report = steps.on_saved_step(steps.SavedStep(
        workdir=session.wd.root, config=session.config, output_name=session.config.output_name, step=info.step,
        step_dir=step_dir, train_loss=info.train_loss, val_loss=info.val_loss, lr=info.lr,
        seconds=float(summary["seconds"]), split=session.data.split, method=session.config.method,
        weights=info.weights, run_id=session.result.run_id, base=session.models.base_spec,
        dataset=session.data.dataset,
    ))
    (step_dir / "state" / RECORDED_MARK).write_text("ok\n")
    info.report = report.line() if hasattr(report, "line") else None
    session.result.saved.append(info)


def _barrier(env) -> None:
    if env.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _truncate_losses(run_dir: Path, step: int) -> None:
    """Keep the loss lines up to the step resumed from (a killed run may have written more)."""
    path = run_dir / LOSSES_NAME
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written last line of a killed run
        if row.get("step", step + 1) <= step:
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept))


# ------------------------------------------------------------------ the run


def train(config: TrainingConfig, workdir: str | Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``config`` into ``workdir`` (see the module docstring); returns what this call did."""
    from evaluator.generation.distributed import dist_env, leave_process_group

    config.validate()
    env = dist_env()
    joined = start_distributed(env, config.device)
    session = _open_session(config, workdir, resume, env)
    status, message = "ok", None
    try:
        _run_steps(session, progress)
    except BaseException as exc:
        status, message = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        session.result.seconds = time.perf_counter() - session.t_start
        if session.env.is_main and (session.result.final_step > session.result.start_step or status != "ok"):
            _write_run_record(session, status, message)
    if joined:  # after the run record: the other ranks wait for it at the barrier
        leave_process_group()
    return session.result


def _run_steps(session: _Session, show_progress: bool) -> None:
    from tqdm import tqdm

    config = session.config
    bar = tqdm(total=config.max_train_steps, initial=session.progress.step, unit="step",
               desc=f"train {config.output_name}", disable=not show_progress or not session.env.is_main,
               dynamic_ncols=True, smoothing=0.1)
    losses_file = session.run_dir / LOSSES_NAME
    session.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        while session.progress.step < config.max_train_steps:
            t0 = time.perf_counter()
            loss = optimizer_step(session)
            session.result.step_seconds += time.perf_counter() - t0
            step = session.progress.step
            session.result.losses.append(loss)
            session.result.final_step = step
            session.last_save_losses.append(loss)
            lr = session.lr_scheduler.get_last_lr()[0]
            if session.env.is_main:
                with losses_file.open("a") as handle:
                    handle.write(json.dumps({"step": step, "loss": loss, "lr": lr}) + "\n")
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            bar.update(1)
            if step % config.save_every == 0 or step == config.max_train_steps:
                mean = sum(session.last_save_losses) / len(session.last_save_losses)
                session.last_save_losses.clear()
                save_step(session, mean)
    finally:
        bar.close()


def _write_run_record(session: _Session, status: str, message: str | None) -> None:
    from evaluator.workspace.records import Provenance, RunRecord, utcnow

    config, data, result = session.config, session.data, session.result
    record_config = config_dict(config) | {
        "dataset_fingerprint": data.dataset.fingerprint, "base": session.models.base_name,
        "n_train": len(data.split.train), "n_validation": len(data.split.validation),
        "world_size": session.env.world_size, "resumed_from": result.start_step or None,
    }
    RunRecord(
        run_id=result.run_id, kind="train", provenance=Provenance.collect(config.device, "float32"),
        started_at=session.started, finished_at=utcnow(), status=status, config=record_config,
        timings={"total": round(result.seconds, 4), "steps": round(result.step_seconds, 4),
                 "steps_per_s": round(result.steps_per_s, 4)},
        n_done=result.final_step - result.start_step, message=message,
    ).write(session.wd)
