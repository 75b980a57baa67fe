"""`atelier generate` and `atelier checkpoints list | fingerprint`.

``generate`` reads a plan and a checkpoints TOML and writes images, thumbnails and
manifests into the workdir (evaluator.generation.runner); ``checkpoints`` reads the TOML
and the weights it names and writes nothing. Only click is imported at module level;
torch, diffusers and the rest load inside the commands, so `atelier --help` stays instant.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click

from evaluator.cli.options import batch_size_option, dtype_option, quiet_option, workdir_option

ERRORS_SHOWN = 10


@click.command("generate")
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Plan file from `atelier plan` (.parquet or .jsonl).")
@click.option("--checkpoints", "checkpoints_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Checkpoints TOML ([[checkpoint]] tables; see `atelier checkpoints list`).")
@workdir_option(help="The workdir (images, thumbs, manifests, runs; DIR/atelier.duckdb).", create=True)
@batch_size_option(default=4, help="Images per pipeline call; halved automatically on out-of-memory.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda (each rank takes cuda:LOCAL_RANK), cuda:1, mps.")
@dtype_option(default=None, help="Default: float32 on CPU, float16 on CUDA.")
@click.option("--compile", "compile", is_flag=True, help="torch.compile the UNet (pays off on long GPU runs).")
@click.option("--retry-failed", is_flag=True, help="Make again the units recorded as failed.")
@click.option("--allow-pickle", is_flag=True,
              help="Read .ckpt/.pt weights with torch.load(weights_only=True); refused otherwise.")
@click.option("--full-hash", is_flag=True, help="Fingerprint every byte of the weights (default: size + first/last MiB).")
@click.option("--allow-changed", is_flag=True, help="Add images under a checkpoint name whose weights changed.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Make at most N new images (this rank).")
@click.option("--run-id", default=None, help="Name the run (default: time-based; shared by the ranks of one launch).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: all cores).")
@quiet_option(help="No progress bar (logs, CI).")
def generate_cmd(plan_path: Path, checkpoints_file: Path, workdir: Path, quiet: bool, **settings: Any) -> None:
    """Generate the images of a plan (resumable; run under torchrun/accelerate for N processes).

    \b
    Example:
      atelier generate --plan plan.parquet --checkpoints checkpoints.toml -w runs/a
      torchrun --nproc_per_node 4 -m evaluator.cli.main generate --plan ... --device cuda
    """
    from catalog.plan import read_plan
    from evaluator.generation.runner import GenerateConfig, generate

    summary = generate(read_plan(plan_path), checkpoints_file, workdir, GenerateConfig(progress=not quiet, **settings))
    click.echo(summary.line())
    for unit_id, error in list(summary.errors.items())[:ERRORS_SHOWN]:
        click.echo(f"  failed {unit_id}: {error}", err=True)
    if len(summary.errors) > ERRORS_SHOWN:
        click.echo(f"  ... and {len(summary.errors) - ERRORS_SHOWN} more (see the manifests' error column)", err=True)
    click.echo(score_hint(workdir))


def score_hint(workdir: Path) -> str:
    """The next command; runnable as printed when ATELIER_CLIP_MODEL names the CLIP model."""
    from evaluator.workspace.settings import clip_model

    model = clip_model()
    where = shlex.quote(str(workdir))
    if model:
        return f"next: atelier score -w {where}  (scores with ATELIER_CLIP_MODEL={model})"
    return (f"next: atelier score -w {where} --model MODEL  (MODEL: an open_clip architecture with "
            "--pretrained, hf-hub:<id>, or a local model folder; or set ATELIER_CLIP_MODEL)")


@click.group("checkpoints")
def checkpoints_group() -> None:
    """Inspect a checkpoints TOML: validate, list, fingerprint."""


def _describe(spec, specs: dict, allow_pickle: bool) -> dict[str, Any]:
    """What `checkpoints list` shows of one checkpoint (its kind detected when not given)."""
    from evaluator.generation.checkpoints import CheckpointError, detect_kind

    try:
        kind = detect_kind(spec, specs, allow_pickle)
    except CheckpointError as exc:
        kind = f"? ({exc})"
    adapters = [f"lora {a.path.name} x{a.scale:g}" for a in spec.lora] + [
        f"ti {t.path.name} as {t.token}" for t in spec.textual_inversion
    ]
    return {
        "name": spec.name, "source": spec.source or None, "source_type": spec.source_type, "kind": kind,
        "base": spec.base, "adapters": adapters, "dtype": spec.dtype, "scheduler": spec.scheduler, "notes": spec.notes,
    }


@checkpoints_group.command("list")
@click.argument("toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--allow-pickle", is_flag=True, help="Accept .ckpt/.pt sources (loaded with weights_only=True).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def checkpoints_list(toml: Path, allow_pickle: bool, as_json: bool) -> None:
    """Validate TOML and list its checkpoints (kind detected from the files when left out)."""
    from evaluator.generation.checkpoints import load_checkpoints

    specs = load_checkpoints(toml, allow_pickle=allow_pickle)
    for spec in specs.values():
        row = _describe(spec, specs, allow_pickle)
        if as_json:
            click.echo(json.dumps(row))
            continue
        origin = spec.source or f"(weights of {spec.base})"
        extra = f"  + {', '.join(row['adapters'])}" if row["adapters"] else ""
        base = f"  base={spec.base}" if spec.base else ""
        click.echo(f"{spec.name:24s} {row['kind']:5s} {spec.source_type:7s} {origin}{base}{extra}")


@checkpoints_group.command("fingerprint")
@click.argument("toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--full-hash", is_flag=True, help="Hash every byte (slow for multi-GB files).")
@click.option("--allow-pickle", is_flag=True)
@click.option("--name", "names", multiple=True, help="Only these checkpoints (repeatable).")
@click.option("--files", "show_files", is_flag=True, help="Also list each file's size and digest.")
def checkpoints_fingerprint(toml: Path, full_hash: bool, allow_pickle: bool, names: tuple[str, ...],
                            show_files: bool) -> None:
    """Print each checkpoint's weight fingerprint (what a run records to detect changes)."""
    import difflib

    from evaluator.generation.checkpoints import CheckpointError, fingerprint, load_checkpoints

    specs = load_checkpoints(toml, allow_pickle=allow_pickle)
    for name in names:
        if name not in specs:
            close = difflib.get_close_matches(name, list(specs), n=1)
            raise CheckpointError(f"{toml}: no checkpoint {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    for name, spec in specs.items():
        if names and name not in names:
            continue
        result = fingerprint(spec, specs, full=full_hash)
        click.echo(f"{name:24s} {result['fingerprint']}")
        if show_files:
            for key, info in result["files"].items():
                click.echo(f"    {key}  {info.get('size')} bytes  {info.get('sha256', '')[:16]}")
