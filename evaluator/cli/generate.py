"""`atelier generate | import | checkpoints`.

Only click is imported at module level (see evaluator/cli.py); torch, diffusers and the
rest load inside the commands, so `atelier --help` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

WORKDIR = click.option(
    "--workdir", "-w", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The workdir (images, thumbs, manifests, runs; DIR/atelier.duckdb).",
)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


@click.command("generate")
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Plan file from `atelier plan` (.parquet or .jsonl).")
@click.option("--checkpoints", "checkpoints_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Checkpoints TOML ([[checkpoint]] tables; see `atelier checkpoints list`).")
@WORKDIR
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Images per pipeline call; halved automatically on out-of-memory.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda (each rank takes cuda:LOCAL_RANK), cuda:1, mps.")
@click.option("--dtype", default=None, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Default: float32 on CPU, float16 on CUDA.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the UNet (pays off on long GPU runs).")
@click.option("--retry-failed", is_flag=True, help="Make again the units recorded as failed.")
@click.option("--allow-pickle", is_flag=True,
              help="Read .ckpt/.pt weights with torch.load(weights_only=True); refused otherwise.")
@click.option("--full-hash", is_flag=True, help="Fingerprint every byte of the weights (default: size + first/last MiB).")
@click.option("--allow-changed", is_flag=True, help="Add images under a checkpoint name whose weights changed.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Make at most N new images (this rank).")
@click.option("--run-id", default=None, help="Name the run (default: time-based; shared by the ranks of one launch).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: all cores).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs, CI).")
def generate_cmd(plan_path, checkpoints_file, workdir, batch_size, device, dtype, compile_, retry_failed,
                 allow_pickle, full_hash, allow_changed, limit, run_id, threads, no_progress) -> None:
    """Generate the images of a plan (resumable; run under torchrun/accelerate for N processes).

    \b
    Example:
      atelier generate --plan plan.parquet --checkpoints checkpoints.toml -w runs/a
      torchrun --nproc_per_node 4 -m evaluator.cli.main generate --plan ... --device cuda
    """
    from catalog.plan import read_plan
    from evaluator.generation.runner import GenerateConfig, generate

    try:
        units = read_plan(plan_path)
        config = GenerateConfig(
            batch_size=batch_size, device=device, dtype=dtype, compile=compile_, retry_failed=retry_failed,
            allow_pickle=allow_pickle, full_hash=full_hash, allow_changed=allow_changed, limit=limit,
            run_id=run_id, threads=threads, progress=not no_progress,
        )
        summary = generate(units, checkpoints_file, workdir, config)
    except (ValueError, RuntimeError, OSError) as exc:  # OSError: disk full, permissions
        _fail(exc)
    click.echo(summary.line())
    for unit_id, error in list(summary.errors.items())[:10]:
        click.echo(f"  failed {unit_id}: {error}", err=True)
    if len(summary.errors) > 10:
        click.echo(f"  ... and {len(summary.errors) - 10} more (see the manifests' error column)", err=True)
    click.echo(f"next: atelier score -w {workdir} (ingests the manifests into the store)")


@click.group("checkpoints")
def checkpoints_group() -> None:
    """Inspect a checkpoints TOML: validate, list, fingerprint."""


@checkpoints_group.command("list")
@click.argument("toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--allow-pickle", is_flag=True, help="Accept .ckpt/.pt sources (loaded with weights_only=True).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def checkpoints_list(toml, allow_pickle, as_json) -> None:
    """Validate TOML and list its checkpoints (kind detected from the files when left out)."""
    from evaluator.generation.checkpoints import CheckpointError, detect_kind, load_checkpoints

    try:
        specs = load_checkpoints(toml, allow_pickle=allow_pickle)
    except CheckpointError as exc:
        _fail(exc)
    for spec in specs.values():
        try:
            kind = detect_kind(spec, specs, allow_pickle)
        except CheckpointError as exc:
            kind = f"? ({exc})"
        adapters = [f"lora {a.path.name} x{a.scale:g}" for a in spec.lora] + [
            f"ti {t.path.name} as {t.token}" for t in spec.textual_inversion
        ]
        if as_json:
            click.echo(json.dumps({
                "name": spec.name, "source": spec.source or None, "source_type": spec.source_type, "kind": kind,
                "base": spec.base, "adapters": adapters, "dtype": spec.dtype, "scheduler": spec.scheduler, "notes": spec.notes,
            }))
        else:
            origin = spec.source or f"(weights of {spec.base})"
            extra = f"  + {', '.join(adapters)}" if adapters else ""
            base = f"  base={spec.base}" if spec.base else ""
            click.echo(f"{spec.name:24s} {kind:5s} {spec.source_type:7s} {origin}{base}{extra}")


@checkpoints_group.command("fingerprint")
@click.argument("toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--full-hash", is_flag=True, help="Hash every byte (slow for multi-GB files).")
@click.option("--allow-pickle", is_flag=True)
@click.option("--name", "names", multiple=True, help="Only these checkpoints (repeatable).")
@click.option("--files", "show_files", is_flag=True, help="Also list each file's size and digest.")
def checkpoints_fingerprint(toml, full_hash, allow_pickle, names, show_files) -> None:
    """Print each checkpoint's weight fingerprint (what a run records to detect changes)."""
    import difflib

    from evaluator.generation.checkpoints import CheckpointError, fingerprint, load_checkpoints

    try:
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
    except (CheckpointError, OSError) as exc:
        _fail(exc)


@click.command("import")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@WORKDIR
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV with columns file,artist[,checkpoint][,prompt] (default: SRC/labels.csv when present).")
@click.option("--checkpoint", default=None, help="Checkpoint name for every image (overrides labels and PNG metadata).")
@click.option("--reference", "as_reference", is_flag=True, help="These are real artworks (reference images), not generations.")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="styles.csv to map artist names to ids (default: the project's catalog).")
@click.option("--no-progress", is_flag=True)
def import_cmd(src, workdir, labels_csv, checkpoint, as_reference, catalog_path, no_progress) -> None:
    """Import images made elsewhere (A1111/ComfyUI PNGs, labelled folders, references).

    Undecodable files are reported and recorded with their error; the store is updated
    in one transaction; a rerun adds nothing twice.
    """
    from evaluator.ingest.importer import import_images

    if labels_csv is None and (src / "labels.csv").is_file():
        labels_csv = src / "labels.csv"
    try:
        summary = import_images(src, workdir, labels_csv=labels_csv, checkpoint=checkpoint, as_reference=as_reference,
                                catalog_path=catalog_path, progress=not no_progress)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        _fail(exc)
    for line in summary.report_lines():
        click.echo(line)


COMMANDS: list = [generate_cmd, import_cmd, checkpoints_group]
