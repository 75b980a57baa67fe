"""Commands of the catalog area: ``atelier catalog build|validate|list|search``,
``atelier templates`` and ``atelier plan``.

Reads the catalog CSV, the templates TOML and the public artist lists (``catalog build``);
writes a catalog (``build``) or a plan file (``plan``). Only click is imported at module
level (``atelier --help`` stays instant); the library modules load inside the commands.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

FORMATS = ("table", "csv", "json")


def _selection_options(function):
    """Filters shared by list, search and plan."""
    options = [
        click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False), default=None,
                     help="Catalog CSV [default: $ATELIER_CATALOG or the packaged styles.csv]."),
        click.option("--recipes", "recipes_path", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Recipes TOML: add each recipe as a character row (see `atelier recipes show`)."),
        click.option("--kind", type=click.Choice(["artist", "character"]), default=None,
                     help="Keep rows of this kind [default: every kind]."),
        click.option("--franchise", default=None,
                     help="Keep characters of this franchise (a Danbooru copyright tag, e.g. touhou)."),
        click.option("--min-posts", type=click.IntRange(min=0), default=None,
                     help="Keep rows whose Danbooru tag has at least N posts (rows without a tag go)."),
        click.option("--tag", default=None, help="Keep artists with this tag (exact, case-insensitive)."),
        click.option("--movement", default=None, help="Keep artists of this movement, e.g. Impressionism."),
        click.option("--medium", default=None, help="Keep artists with this medium, e.g. watercolor."),
        click.option("--recognized", default=None,
                     help="yes|no|unsure|blank for either model, or sdxl=yes / sd1=no for one."),
        click.option("--living/--dead", "living", default=None, help="Keep living (or dead) artists only."),
        click.option("--sample", type=click.IntRange(min=0), default=None,
                     help="Keep N artists, stratified over movements."),
        click.option("--seed", "sample_seed", type=int, default=0, show_default=True,
                     help="Seed of --sample (same seed, same artists)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _load(catalog_path: str | None):
    from catalog.model import CatalogError, default_catalog_path, load_catalog

    path = Path(catalog_path) if catalog_path else default_catalog_path()
    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise click.ClickException(f"invalid catalog {path}:\n{exc}") from None
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None


@dataclass(frozen=True)
class Selection:
    """The artist filters of list, search and plan (``_selection_options`` plus --text)."""

    catalog_path: str | None = None
    recipes_path: str | None = None
    kind: str | None = None
    franchise: str | None = None
    min_posts: int | None = None
    tag: str | None = None
    movement: str | None = None
    medium: str | None = None
    recognized: str | None = None
    living: bool | None = None
    sample: int | None = None
    sample_seed: int = 0
    text: str | None = None


def _select(selection: Selection):
    from catalog.select import select_artists

    artists = _load(selection.catalog_path)
    if selection.recipes_path:
        from catalog.recipes.file import RecipeError, with_recipes

        try:
            artists = with_recipes(artists, selection.recipes_path)
        except RecipeError as exc:
            raise click.ClickException(str(exc)) from None
    filters = asdict(selection)
    del filters["catalog_path"], filters["recipes_path"]
    filters["seed"] = filters.pop("sample_seed")
    try:
        return select_artists(artists, **filters)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _emit(artists, output_format: str) -> None:
    if output_format == "json":
        import json

        rows = []
        for artist in artists:
            row = artist.to_row()
            row.update(
                aliases=list(artist.aliases), movements=list(artist.movements),
                mediums=list(artist.mediums), tags=list(artist.tags),
                sources=list(artist.sources), born=artist.born, died=artist.died,
                living=artist.living, post_count=artist.post_count,
            )
            rows.append(row)
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
    elif output_format == "csv":
        from catalog.model import catalog_to_csv

        click.echo(catalog_to_csv(artists), nl=False)
    else:
        header = ("artist_id", "name", "kind", "tag", "posts", "years", "movements", "sdxl", "sd1")
        rows = []
        for artist in artists:
            years = ""
            if artist.born or artist.died:
                years = f"{artist.born or '?'}-{artist.died or ''}"
            movements = ", ".join(artist.movements[:2]) or artist.franchise
            rows.append((artist.artist_id, artist.name, artist.kind, artist.tag,
                         "" if artist.post_count is None else str(artist.post_count), years, movements[:40],
                         artist.recognized_sdxl, artist.recognized_sd1))
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
        widths = [min(w, 48) for w in widths]
        click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        for row in rows:
            click.echo("  ".join(c[:w].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        click.echo(f"{len(rows)} row(s)", err=True)


@click.group("catalog")
def catalog_group() -> None:
    """The catalog of artists and characters (styles.csv): build, validate, list, search."""


@catalog_group.command("build")
@click.option("--sources", type=click.Path(file_okay=False), default=None,
              help="Folder of source lists [default: ../shared/data/artist-sources beside the repo].")
@click.option("--out", type=click.Path(dir_okay=False), default="styles.csv", show_default=True,
              help="Catalog file to write (atomically).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the full report (drops, every heuristic and tag merge, every refused tag merge) to this file.")
@click.option("--min-posts", type=click.IntRange(min=0), default=100, show_default=True,
              help="Keep Danbooru artist and character tags with at least this many posts.")
@click.option("--previous", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A catalog built before whose Danbooru rows keep their ids [default: --out, when it exists].")
def build_command(sources: str | None, out: str, report_path: str | None, min_posts: int, previous: str | None) -> None:
    """Merge the public artist lists and Danbooru's tags into one catalog; print what was dropped and merged."""
    from catalog.build import SourceError, build_styles_csv, default_sources_dir
    from catalog.model import CatalogError

    folder = Path(sources) if sources else default_sources_dir()
    if previous is None and Path(out).is_file():
        previous = _readable_previous(out)
    try:
        report = build_styles_csv(folder, out, report_path, min_posts=min_posts, previous=previous)
    except CatalogError as exc:
        raise click.ClickException(f"--previous {previous} cannot be read: {exc}") from None
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.summary())
    click.echo(f"wrote {out}")


def _readable_previous(path: str) -> str | None:
    """The file about to be replaced, as the previous catalog, if it loads (else say so)."""
    from catalog.model import CatalogError, load_catalog

    try:
        load_catalog(path)
    except CatalogError as exc:
        first = str(exc).splitlines()[0]
        click.echo(f"warning: {path} is not a valid catalog ({first}); new rows' ids are not pinned to it", err=True)
        return None
    return path


@catalog_group.command("validate")
@click.argument("path", type=click.Path(dir_okay=False), required=False)
@click.option("--quiet", is_flag=True, help="Print only the summary line.")
def validate_command(path: str | None, quiet: bool) -> None:
    """List every problem of a catalog file (default: the one atelier uses) with its line and column.

    Exits 1 when there are errors; warnings (a byte-order mark, extra columns, a formula
    character in a note) are printed but do not fail.
    """
    from catalog.model import default_catalog_path
    from catalog.validate import validate_catalog

    report = validate_catalog(path or default_catalog_path())
    text = report.format()
    if quiet:
        text = text.splitlines()[-1]
    click.echo(text)
    if report.errors:
        sys.exit(1)


@catalog_group.command("list")
@_selection_options
@click.option("--text", default=None, help="Keep names, aliases or ids containing this text.")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show the first N artists only.")
def list_command(output_format: str, limit: int | None, **selection: Any) -> None:
    """List artists, filtered and optionally sampled."""
    _emit(_select(Selection(**selection))[:limit], output_format)


@catalog_group.command("search")
@click.argument("text")
@_selection_options
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show the first N artists only.")
def search_command(output_format: str, limit: int | None, **selection: Any) -> None:
    """Find artists whose name, alias or id contains TEXT (accents and case ignored)."""
    _emit(_select(Selection(**selection))[:limit], output_format)


@click.command("templates")
@click.option("--file", "--templates-file", "templates_file", type=click.Path(dir_okay=False), default=None,
              help="Your TOML file of templates, merged over the defaults.")
@click.option("--only-file", is_flag=True, help="Use only the templates of --file.")
def templates_command(templates_file: str | None, only_file: bool) -> None:
    """List the prompt templates (name, baseline or the kinds it is for, text)."""
    from catalog.templates import TemplateError, load_templates

    try:
        templates = load_templates(templates_file, merge=not only_file)
    except TemplateError as exc:
        raise click.ClickException(str(exc)) from None
    width = max(len(n) for n in templates)
    for name, template in templates.items():
        kind = "baseline" if template.is_baseline else "+".join(template.kinds)
        click.echo(f"{name.ljust(width)}  {kind:16}  {template.text}")


def _parse_csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("plan")
@_selection_options
@click.option("--text", default=None, help="Keep names, aliases or ids containing this text.")
@click.option("--templates", "template_names", default="style,null", show_default=True,
              help="Comma-separated template names.")
@click.option("--templates-file", type=click.Path(dir_okay=False), default=None,
              help="Your TOML file of templates, merged over the defaults.")
@click.option("--seeds", default="0", show_default=True, help="Seeds: 0,1,2 or 0-3 or 0-3,10.")
@click.option("--checkpoints", required=True, help="Comma-separated checkpoint names, e.g. base,ft.")
@click.option("--checkpoints-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The checkpoints TOML `generate` will use: names not in it are refused now, not then.")
@click.option("--width", type=int, default=512, show_default=True)
@click.option("--height", type=int, default=512, show_default=True)
@click.option("--steps", type=int, default=25, show_default=True)
@click.option("--guidance", type=float, default=7.5, show_default=True)
@click.option("--scheduler", default="default", show_default=True,
              help="'default' keeps each checkpoint's own scheduler.")
@click.option("--negative-prompt", default="", help="Negative prompt for every unit.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Plan file to write: .parquet or .jsonl.")
@click.option("--rank", type=int, default=None, help="Write only this rank's share of the units.")
@click.option("--world-size", type=int, default=None, help="Number of ranks sharing the plan.")
@click.option("--max-units", type=click.IntRange(min=1), default=None,
              help="Refuse a plan of more units than this unless --yes (default: 1,000,000).")
@click.option("--yes", "-y", is_flag=True, help="Write a plan larger than --max-units anyway.")
def plan_command(**options: Any) -> None:
    """Write the work units (one image each) for a selection, templates, seeds, checkpoints.

    The unit count is estimated first: a plan above --max-units is refused, before it is
    made, unless --yes.
    """
    yes, max_units = options.pop("yes"), options.pop("max_units")
    checkpoints_file = options.pop("checkpoints_file")
    plan = PlanOptions.from_options(options)
    if checkpoints_file:
        _check_checkpoint_names(_parse_csv_list(plan.checkpoints), checkpoints_file)
    if (plan.rank is None) != (plan.world_size is None):
        raise click.UsageError("--rank and --world-size go together")
    selected = _select(plan.selection)
    _check_size(selected, plan, max_units, yes)
    units, summary, planned = _make_units(selected, plan)
    kind_of = {a.artist_id: a.kind for a in selected}
    kinds = ", ".join(f"{k} {sum(kind_of.get(i) == k for i in planned)}" for k in sorted(set(kind_of.values())))
    click.echo(
        f"plan: {summary['units']} unit(s) = {summary['checkpoints']} checkpoint(s) x "
        f"{summary['templates']} template(s) x {summary['seeds']} seed(s) over "
        f"{summary['artists']} row(s) ({kinds}) + {summary['baseline_units']} baseline unit(s)"
    )
    unplanned = len(selected) - len(planned & set(kind_of))
    if unplanned:
        click.echo(f"note: {unplanned} selected row(s) have no template of their kind (see `atelier templates`)")
    if plan.world_size is not None:
        click.echo(f"rank {plan.rank} of {plan.world_size}: {len(units)} unit(s)")
    click.echo(f"wrote {plan.out}")


@dataclass(frozen=True)
class PlanOptions:
    """What `atelier plan` was asked for: a selection, the grid, the settings, the output."""

    selection: Selection
    template_names: str
    templates_file: str | None
    seeds: str
    checkpoints: str
    settings: dict[str, Any]  # width, height, steps, guidance, scheduler, negative_prompt
    out: str
    rank: int | None
    world_size: int | None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PlanOptions:
        options = dict(options)
        selection = Selection(**{name: options.pop(name) for name in Selection.__dataclass_fields__})
        settings = {name: options.pop(name) for name in
                    ("width", "height", "steps", "guidance", "scheduler", "negative_prompt")}
        return cls(selection=selection, settings=settings, **options)


def _check_checkpoint_names(names: list[str], checkpoints_file: str) -> None:
    """Every planned checkpoint is defined in the file (with the closest names when not)."""
    from evaluator.generation.checkpoints.spec import load_checkpoints, suggest

    defined = list(load_checkpoints(checkpoints_file))
    unknown = [name for name in names if name not in defined]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(repr(n) for n in unknown)} not defined in {checkpoints_file}"
            f"{suggest(unknown[0], defined)} (defined: {', '.join(defined)})", param_hint="--checkpoints")


def _check_size(artists, plan: PlanOptions, max_units: int | None, yes: bool) -> None:
    """Refuse, before making anything, a plan above ``max_units`` units unless ``yes``."""
    from catalog.plan import CONFIRM_UNITS, PlanError, estimate_units
    from catalog.templates import TemplateError, load_templates

    limit = max_units or CONFIRM_UNITS
    try:
        n = estimate_units(artists, load_templates(plan.templates_file), _parse_csv_list(plan.template_names),
                           plan.seeds, _parse_csv_list(plan.checkpoints))
    except (PlanError, TemplateError) as exc:
        raise click.ClickException(str(exc)) from None
    if n > limit and not yes:
        raise click.ClickException(
            f"this plan would have {n:,} units ({len(artists):,} selected rows, --seeds {plan.seeds}, "
            f"--templates {plan.template_names}, --checkpoints {plan.checkpoints}), more than {limit:,}; nothing was "
            "written. Narrow it, or pass --yes to write it anyway (--max-units sets the limit)")


def _make_units(artists, plan: PlanOptions):
    """(units of this rank, summary of the whole plan, its artist ids), written to ``plan.out``."""
    from catalog.plan import PlanError, make_plan, parse_seeds, plan_summary, write_plan
    from catalog.templates import TemplateError, load_templates
    from catalog.units import shard

    try:
        templates = load_templates(plan.templates_file)
        units = make_plan(
            artists, templates, _parse_csv_list(plan.template_names), parse_seeds(plan.seeds),
            _parse_csv_list(plan.checkpoints), **plan.settings,
        )
        summary = plan_summary(units)
        planned = {u.artist_id for u in units}
        if plan.world_size is not None:
            try:
                units = shard(units, plan.rank, plan.world_size)
            except ValueError as exc:
                raise PlanError(str(exc)) from None
        write_plan(units, plan.out)
    except (PlanError, TemplateError) as exc:
        raise click.ClickException(str(exc)) from None
    return units, summary, planned

