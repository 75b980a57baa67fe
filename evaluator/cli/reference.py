"""Write docs/cli.md, the CLI reference, from the ``--help`` of every command.

Reads only the commands themselves (it imports every command module); writes
docs/cli.md. ``python -m evaluator.cli.reference`` regenerates the file; ``--check``
writes nothing and exits 1 when the file is out of date (tests/test_cli_reference.py
runs the same comparison, so CI catches a help text changed without the docs). The
terminal width is fixed, so the output is the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

WIDTH = 100
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
REGENERATE = "python -m evaluator.cli.reference"

HEADER = f"""\
# atelier command-line reference

Generated from the `--help` of every command by `{REGENERATE}`;
do not edit by hand (tests/test_cli_reference.py fails when this file and the commands
disagree). Every command that works on a workdir takes `--workdir DIR` (or `-w DIR`);
commands with progress bars take `--quiet` (`-q`).
"""


def root_context() -> click.Context:
    """The context of `atelier` itself, at the fixed width."""
    from evaluator.cli.main import main

    settings = {**main.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return click.Context(main, info_name="atelier", **settings)


def walk(ctx: click.Context) -> Iterator[click.Context]:
    """``ctx`` and the context of every sub-command below it, depth first, sorted by name."""
    yield ctx
    command = ctx.command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(click.Context(sub, info_name=name, parent=ctx))


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


def render_reference() -> str:
    """The whole of docs/cli.md: a list of the commands, then each one's help."""
    contexts = list(walk(root_context()))
    lines = [HEADER, "## Commands", ""]
    lines += [f"- [`{ctx.command_path}`](#{_anchor(ctx.command_path)})" for ctx in contexts]
    for ctx in contexts:
        lines += ["", f"## {ctx.command_path}", "", "```text", ctx.command.get_help(ctx).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date; write nothing")
    parser.add_argument("--out", type=Path, default=DOC_PATH, help=f"default: {DOC_PATH}")
    args = parser.parse_args(argv)
    text = render_reference()
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            print(f"{args.out} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
