"""The options several commands share, defined once, and the one error helper.

Reads nothing and writes nothing: these are click decorators. ``--workdir`` is spelled
``--workdir`` and ``-w`` on every command, and must name an existing workdir unless the
command makes one (``create=True``: generate, import, references add, demo), so
`atelier score -w typo` says so instead of scoring an empty new store; ``--quiet``/``-q`` turns progress bars off
(``--no-progress``, the old spelling of some commands, still works but is not listed).
The CLIP options default to ``ATELIER_CLIP_MODEL`` / ``ATELIER_CLIP_PRETRAINED``, read
when a command runs through ``evaluator.workspace.settings`` (stdlib only), so
`atelier --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DTYPES = ("float32", "float16", "bfloat16")
WORKDIR_HELP = "The workdir (DIR/atelier.duckdb)."


def fail(exc: BaseException) -> NoReturn:
    """Turn an expected failure into click's one-line ``Error: ...`` and exit status 1."""
    raise click.ClickException(str(exc)) from exc


class AliasedOption(click.Option):
    """An option with spellings that work but are left out of ``--help`` (old names)."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def _existing_workdir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """The option callback of a command that reads a workdir: it must exist."""
    from evaluator.workspace.workdir import missing_workdir_message

    if value is not None and not value.expanduser().is_dir():  # one line, exit 1, as every atelier error
        raise click.ClickException(missing_workdir_message(value.expanduser().absolute()))
    return value


def workdir_option(*, help: str = WORKDIR_HELP, default: Path | None = None, create: bool = False) -> Decorator:
    """``--workdir/-w DIR``: required unless the command has a default (``atelier demo``);
    an existing folder unless the command makes one (``create``)."""
    return click.option(
        "--workdir", "-w", required=default is None, default=default, show_default=default is not None,
        type=click.Path(file_okay=False, path_type=Path), help=help,
        callback=None if create else _existing_workdir,
    )


def quiet_option(*, help: str = "No progress bars (logs, CI).") -> Decorator:
    """``--quiet/-q``; ``--no-progress`` is a hidden alias so old scripts keep working."""
    return click.option(
        "--quiet", "-q", "--no-progress", "quiet", is_flag=True, help=help,
        cls=AliasedOption, hidden_aliases=("--no-progress",),
    )


def _from_settings(reader_name: str, variable: str, required: bool) -> Callable[..., Any]:
    """An option callback: the value given, else the environment variable (via settings)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from evaluator.workspace import settings

        value = value or getattr(settings, reader_name)()
        if value is None and required:
            raise click.MissingParameter(f"(or set {variable})", ctx=ctx, param=param)
        return value

    return callback


def model_option(*, required: bool = True, help: str | None = None) -> Decorator:
    """``--model/-m``: the open_clip model (architecture, hf-hub id, or a local folder)."""
    return click.option(
        "--model", "-m", default=None, callback=_from_settings("clip_model", "ATELIER_CLIP_MODEL", required),
        help=(help or "open_clip model: architecture (ViT-B-32) with --pretrained, hf-hub:<id>, or a local folder.")
        + ("  [required, or set ATELIER_CLIP_MODEL]" if required else "  Env: ATELIER_CLIP_MODEL."),
    )


def pretrained_option() -> Decorator:
    """``--pretrained``: a pretrained tag of the architecture, or a local weights file."""
    return click.option(
        "--pretrained", default=None, callback=_from_settings("clip_pretrained", "ATELIER_CLIP_PRETRAINED", False),
        help="Pretrained tag (needs network, e.g. laion2b_s34b_b79k) or a local weights file. Env: ATELIER_CLIP_PRETRAINED.",
    )


def device_option(*, help: str = "torch device: cpu, cuda, cuda:1, mps.") -> Decorator:
    return click.option("--device", default="cpu", show_default=True, help=help)


def dtype_option(*, default: str | None = "float32", help: str | None = None) -> Decorator:
    return click.option("--dtype", default=default, show_default=default is not None,
                        type=click.Choice(DTYPES), help=help)


def batch_size_option(*, default: int = 64, help: str = "Images per model call.") -> Decorator:
    return click.option("--batch-size", default=default, show_default=True,
                        type=click.IntRange(min=1), help=help)


def num_workers_option() -> Decorator:
    return click.option("--num-workers", default=None, type=click.IntRange(min=0),
                        help="DataLoader workers decoding images [default: from the cores: 1 per 4 on CPU, "
                             "all but one with CUDA].")


def clip_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--model``, ``--pretrained``, ``--device``, ``--dtype``, ``--batch-size``, ``--num-workers``."""
    for option in reversed([model_option(), pretrained_option(), device_option(), dtype_option(),
                            batch_size_option(), num_workers_option()]):
        function = option(function)
    return function
