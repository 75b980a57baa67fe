"""The `atelier` command: a root group that loads each sub-command only when it is used.

Reads nothing itself. ``COMMANDS`` names every sub-command by import path with its
one-line summary, so `atelier --help` lists them without importing a single command
module, and `atelier sql` imports the sql module only. The dashboard's commands are
reached through this table as strings: the evaluator never imports ``dashboard``
(the dashboard imports the evaluator).

An ``AtelierError`` (or an ``OSError`` such as a missing file, a full disk, a refused
permission) raised by any command becomes a one-line ``Error: ...`` and exit status 1;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import click

from evaluator.cli.options import fail
from evaluator.errors import AtelierError
from evaluator.workspace.threads import prefer_sleeping_threads

# Before any command imports torch (evaluator/workspace/threads.py says why).
prefer_sleeping_threads()


@dataclass(frozen=True)
class CommandEntry:
    """Where a sub-command lives ("module:attribute") and its summary for `atelier --help`."""

    target: str
    summary: str


# Name -> command. The summary must equal the first line of the command's docstring
# (tests/test_cli_reference.py checks it), so the listing is what click would print.
COMMANDS: dict[str, CommandEntry] = {
    "catalog": CommandEntry("evaluator.cli.catalog:catalog_group",
                            "The catalog of artists and characters (styles.csv): build, validate, list, search."),
    "templates": CommandEntry("evaluator.cli.catalog:templates_command",
                              "List the prompt templates (name, baseline or the kinds it is for, text)."),
    "plan": CommandEntry("evaluator.cli.catalog:plan_command",
                         "Write the work units (one image each) for a selection, templates, seeds, checkpoints."),
    "generate": CommandEntry("evaluator.cli.generate:generate_cmd",
                             "Generate the images of a plan (resumable; run under torchrun/accelerate for N processes)."),
    "import": CommandEntry("evaluator.cli.ingest:import_cmd",
                           "Import images made elsewhere (A1111/ComfyUI PNGs, labelled folders, references)."),
    "checkpoints": CommandEntry("evaluator.cli.generate:checkpoints_group",
                                "Inspect a checkpoints TOML: validate, list, fingerprint."),
    "embed": CommandEntry("evaluator.cli.embed:embed_cmd",
                          "Embed every image of the manifests not yet embedded by MODEL (resumable)."),
    "index": CommandEntry("evaluator.cli.index:index_group",
                          "The FAISS index of image embeddings: build/update it, search it."),
    "score": CommandEntry("evaluator.cli.score:score_cmd",
                          "Ingest manifests, embed, index and score every image into DIR/atelier.duckdb."),
    "metrics": CommandEntry("evaluator.cli.score:metrics_group", "The metrics registry."),
    "models": CommandEntry("evaluator.cli.models:models_group",
                           "CLIP models for offline use: a random-weight folder to score with."),
    "references": CommandEntry("evaluator.cli.references:references_group",
                               "Reference works of an artist (real paintings) for reference_similarity, mAP@k, fd_clip."),
    "search": CommandEntry("evaluator.cli.query:search_cmd",
                           "Nearest images (or artists) to a text, an image file, or an indexed image."),
    "sql": CommandEntry("evaluator.cli.query:sql_cmd",
                        "Run a read-only SQL query on DIR/atelier.duckdb (waits briefly while a writer holds it)."),
    "serve": CommandEntry("evaluator.cli.serve:serve_cmd",
                          "Serve a read-only HTTP API (JSON) over DIR: scores, comparisons, images, search, SQL."),
    "train": CommandEntry("evaluator.cli.train:train_cmd",
                          "Fine-tune a base checkpoint (LoRA, textual inversion, full) with validation at every saved step."),
    "curate": CommandEntry("evaluator.cli.curate:curate_cmd",
                           "Flag an image set by resolution, duplicates, watermarks, aesthetic score and outliers."),
    "migrate": CommandEntry("evaluator.cli.store:migrate_cmd",
                            "Update the store's schema in place (keeps every row; safe to rerun)."),
    "recipes": CommandEntry("evaluator.cli.recipes:recipes_group",
                            "Character recipes: parse A1111 prompts, show and validate recipe files, train a token."),
    "dashboard": CommandEntry("dashboard.cli:dashboard_command",
                              "Serve the Streamlit dashboard (read-only) for a workdir."),
    "report": CommandEntry("dashboard.cli:report_command",
                           "Write a self-contained HTML (and Markdown) report: leaderboard, gains, losses, plots."),
    "world": CommandEntry("evaluator.cli.world:world_group",
                          "A procedural world whose truth is known: its artists, its base model, measurements."),
    "demo": CommandEntry("evaluator.cli.demo:demo_command",
                         "Run train -> plan -> generate -> embed -> score on a world whose truth is known."),
}


def load_command(name: str) -> click.Command:
    """Import the module of one sub-command and return the command object."""
    module_name, _, attribute = COMMANDS[name].target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use, from ``COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table's summaries, shortened as click would."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (AtelierError, OSError) as exc:
            fail(exc)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="atelier")
def main() -> None:
    """atelier: an artist-style catalog and evaluation service for text-to-image models.

    \b
    Pipeline:  catalog -> plan -> generate -> embed -> index -> score -> dashboard
    Quick look: atelier demo --workdir demo   (a world whose truth is known, ~3 minutes on 2 CPU cores)
    """


if __name__ == "__main__":  # pragma: no cover
    main()
