"""`atelier migrate`: bring a workdir's store up to this atelier's schema, in place.

Reads and writes ``DIR/atelier.duckdb`` only. Each missing migration runs in its own
transaction and keeps every row; a store already current is left untouched. Readers
(the dashboard, `atelier serve`) never migrate: they open the store read-only.
"""

from __future__ import annotations

import click

from evaluator.cli.options import workdir_option


@click.command("migrate")
@workdir_option()
def migrate_cmd(workdir) -> None:
    """Update the store's schema in place (keeps every row; safe to rerun)."""
    from evaluator.errors import StateError
    from evaluator.workspace.store import SCHEMA_VERSION, migrate, open_store, schema_version
    from evaluator.workspace.workdir import Workdir

    path = Workdir.at(workdir, create=False).store
    if not path.is_file():
        raise StateError(f"no store at {path}; run `atelier score` or `atelier demo` first")
    with open_store(path, migrate_schema=False) as con:
        before = schema_version(con)
        applied = migrate(con)
    if applied:
        click.echo(f"{path}: schema {before} -> {SCHEMA_VERSION} (applied {', '.join(map(str, applied))})")
    else:
        click.echo(f"{path}: schema {before}, already current")
