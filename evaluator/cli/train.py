"""`atelier train CONFIG.toml --workdir DIR`: fine-tune a base checkpoint (LoRA, TI, full).

Reads the TrainingConfig TOML; every field is also a flag (``--max-train-steps 500``)
that overrides the file. Thin over ``evaluator.training.loop.train``: what it reads and
writes is said there. The flags are made from the dataclass's fields and their help is
the comment beside each field, so a new field is a new flag with its reason attached.
Only click and the config module (no torch) load for ``--help``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any

import click

from evaluator.cli.options import quiet_option, workdir_option
from evaluator.training.config import TrainingConfig, field_types

FIELD_COMMENT = re.compile(r"^\s+(\w+): [^#]*#\s*(.+)$")


def field_help() -> dict[str, str]:
    """field name -> the comment written beside it in TrainingConfig."""
    lines = inspect.getsource(TrainingConfig).splitlines()
    return {m.group(1): m.group(2).strip() for m in map(FIELD_COMMENT.match, lines) if m}


def _option_for(name: str, annotation: Any, help_text: str):
    flag = "--" + name.replace("_", "-")
    args = typing.get_args(annotation)
    inner = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        return click.option(flag, name, multiple=True, type=item, default=None, help=f"{help_text} (repeatable)")
    if inner is bool:
        return click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=help_text)
    return click.option(flag, name, type=inner, default=None, help=help_text)


def config_options(function):
    """One option per TrainingConfig field; unset options are None (the file's value stays)."""
    types, helps, defaults = field_types(), field_help(), dataclasses.asdict(TrainingConfig())
    for f in reversed(dataclasses.fields(TrainingConfig)):
        default = defaults[f.name]
        shown = f" [default: {default}]" if default not in ("", None, []) else ""
        function = _option_for(f.name, types[f.name], helps.get(f.name, "") + shown)(function)
    return function


@click.command("train")
@click.argument("config_file", metavar="CONFIG.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@workdir_option(help="The workdir (made if missing): outputs go to DIR/training/<output_name>/step-NNNNNN/.", create=True)
@click.option("--resume", is_flag=True, help="Continue from the last saved step (after a crash or a kill).")
@quiet_option(help="No progress bar (logs, CI).")
@config_options
def train_cmd(config_file: Path, workdir: Path, resume: bool, quiet: bool, **fields: Any) -> None:
    """Fine-tune a base checkpoint (LoRA, textual inversion, full) with validation at every saved step.

    \b
    Example:
      atelier train style.toml -w runs/a --max-train-steps 500
      torchrun --nproc_per_node 2 -m evaluator.cli.main train style.toml -w runs/a
    """
    from evaluator.training.config import load_config
    from evaluator.training.loop import train

    overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()
                 if v is not None and v != ()}
    config = load_config(config_file, overrides)
    result = train(config, workdir, resume=resume, progress=not quiet)
    if not result.saved and result.final_step == result.start_step:
        click.echo(f"{config.output_name}: already trained to step {result.final_step} (raise --max-train-steps to go on)")
        return
    for saved in result.saved:
        val = "n/a" if saved.val_loss is None else f"{saved.val_loss:.4f}"
        click.echo(f"step {saved.step:6d}  train_loss {saved.train_loss:.4f}  val_loss {val}  {saved.step_dir}")
        if saved.report:
            click.echo(f"  {saved.report}")
    click.echo(f"{config.output_name}: steps {result.start_step}..{result.final_step} "
               f"({result.steps_per_s:.2f} steps/s; {result.seconds:.0f} s in all) run {result.run_id}")
