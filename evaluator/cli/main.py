"""The `atelier` command: a thin layer over the library functions of each stage.

Each area keeps its commands in its own module (``evaluator.cli.catalog``, ``evaluator.cli.generate``,
``evaluator.cli.evaluate``, ``dashboard.cli``, ``evaluator.cli.demo``). Those modules import
only click at the top; torch, diffusers, open_clip, faiss and duckdb are imported inside
the commands, so `atelier --help` answers instantly.
"""

from __future__ import annotations

import click

from dashboard.cli import COMMANDS as DASHBOARD_COMMANDS
from evaluator.cli.catalog import COMMANDS as CATALOG_COMMANDS
from evaluator.cli.demo import COMMANDS as DEMO_COMMANDS
from evaluator.cli.evaluate import COMMANDS as EVAL_COMMANDS
from evaluator.cli.generate import COMMANDS as GENERATE_COMMANDS


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
