"""The `atelier` command: a thin layer over the library functions of each stage.

Each area keeps its commands in its own module (``catalog.cli``, ``evaluator.generate_cli``,
``evaluator.eval_cli``, ``dashboard.cli``, ``evaluator.demo_cli``). Those modules import
only click at the top; torch, diffusers, open_clip, faiss and duckdb are imported inside
the commands, so `atelier --help` answers instantly.
"""

from __future__ import annotations

import click

from catalog.cli import COMMANDS as CATALOG_COMMANDS
from dashboard.cli import COMMANDS as DASHBOARD_COMMANDS
from evaluator.demo_cli import COMMANDS as DEMO_COMMANDS
from evaluator.eval_cli import COMMANDS as EVAL_COMMANDS
from evaluator.generate_cli import COMMANDS as GENERATE_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="atelier")
def main() -> None:
    """atelier: an artist-style catalog and evaluation service for text-to-image models.

    \b
    Pipeline:  catalog -> plan -> generate -> embed -> index -> score -> dashboard
    Quick look: atelier demo --workdir demo   (tiny random-weight models, ~3 minutes on CPU)
    """


for command in [
    *CATALOG_COMMANDS,
    *GENERATE_COMMANDS,
    *EVAL_COMMANDS,
    *DASHBOARD_COMMANDS,
    *DEMO_COMMANDS,
]:
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
