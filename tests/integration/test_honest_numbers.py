"""Issue 11 through `atelier import` + `atelier score`: an imported set without seeds gives
no silent "kept", seeds and baselines can be imported, and the stored intervals match a
naive numpy bootstrap over the images."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support.scoring import ARTISTS, write_catalog

from evaluator.cli.main import main
from evaluator.errors import InputError
from evaluator.generation.pngmeta import InfotextParams, encode_png
from evaluator.ingest.importer import import_images
from evaluator.testing.tiny_clip import build_tiny_clip
from evaluator.workspace.store import MIGRATIONS, migrate


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


def _picture(seed: int, tint: tuple[int, int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 40, size=(48, 48, 3))
    return Image.fromarray(np.clip(np.array(tint)[None, None, :] + noise, 0, 255).astype(np.uint8))


def write_set(src: Path, *, per_artist: int, baselines: int, seeds: bool = False, name_seeds: bool = False) -> Path:
    """PNGs without metadata for checkpoints base and ft, and their labels CSV."""
    src.mkdir(parents=True, exist_ok=True)
    rows = []
    for c_i, ckpt in enumerate(("base", "ft")):
        cells = [(a, name) for a, name, _ in ARTISTS] + [("", "")] * (1 if baselines else 0)
        for a_i, (artist, name) in enumerate(cells):
            count = baselines if not artist else per_artist
            for i in range(count):
                file = f"{ckpt}-{artist or 'baseline'}-{i}" + (f"-s{i}" if name_seeds else "") + ".png"
                tint = ((37 * a_i) % 256, (91 * a_i + 60 * c_i) % 256, (53 * a_i) % 256)
                _picture(zlib.crc32(f"{ckpt}/{artist}/{i}".encode()), tint).save(src / file)
                row = {"file": file, "artist": name, "checkpoint": ckpt, "template": "" if artist else "null"}
                if seeds:
                    row["seed"] = str(i)
                rows.append(row)
    with (src / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return src


def run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


def score_cli(workdir: Path, clip_dir: Path, catalog: Path, n_boot: int = 2000) -> str:
    return run(["score", "-w", str(workdir), "--model", str(clip_dir), "--catalog", str(catalog), "--compare",
                "base:ft", "--bootstrap", str(n_boot), "--num-workers", "0", "-q"])


def query(workdir: Path, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_imported_set_without_seeds_is_bootstrapped_over_images_never_silently_kept(clip_dir, tmp_path):
    catalog = write_catalog(tmp_path / "styles.csv")
    src = write_set(tmp_path / "src", per_artist=5, baselines=4)
    wd = tmp_path / "wd"
    out = run(["import", str(src), "-w", str(wd), "--catalog", str(catalog), "-q"])
    assert "have no seed" in out
    out = score_cli(wd, clip_dir, catalog)
    rows = query(wd, "SELECT verdict, ci_over, paired, n_base, n_finetune, ci_low, ci_high, verdict_reason, n "
                     "FROM comparisons")
    assert rows
    for verdict, ci_over, paired, _n_base, _n_ft, lo, hi, reason, n in rows:
        # before issue 11: 'kept', n = 1, no CI, for every row
        assert ci_over == "images" and paired is False and n == 0
        assert lo is not None and hi is not None and reason is None and verdict in ("gained", "lost", "kept")
    assert {r[3] for r in rows} == {5} and {r[4] for r in rows} == {5}
    assert "bootstrap over images" in out

    # the stored interval against a naive numpy two-sample bootstrap over the images
    def values(ckpt: str) -> np.ndarray:
        return np.array([v for (v,) in query(wd, "SELECT s.value FROM image_scores s JOIN images i USING (image_id) "
                                                 "WHERE s.metric = 'artist_similarity' AND i.checkpoint = ? "
                                                 "AND i.artist_id = 'claude-monet' ORDER BY i.image_id", [ckpt])])
    base, ft = values("base"), values("ft")
    rng = np.random.default_rng(123)
    boot = [ft[rng.integers(0, 5, 5)].mean() - base[rng.integers(0, 5, 5)].mean() for _ in range(8000)]
    want = np.percentile(boot, [2.5, 97.5])
    delta, lo, hi = query(wd, "SELECT delta, ci_low, ci_high FROM comparisons WHERE artist_id = 'claude-monet' "
                              "AND metric = 'artist_similarity'")[0]
    assert delta == pytest.approx(ft.mean() - base.mean(), rel=1e-6)
    width = want[1] - want[0]
    assert abs(lo - want[0]) < 0.08 * width and abs(hi - want[1]) < 0.08 * width

    # baselines imported from `template = null` rows: recognition metrics exist, over images
    assert query(wd, "SELECT DISTINCT template FROM images WHERE artist_id = '_baseline'") == [("null",)]
    margins = query(wd, "SELECT DISTINCT ci_over FROM artist_scores WHERE metric = 'recognition_margin'")
    assert margins == [("images",)]
    # no prompt, no clip_score (it was computed against the empty prompt)
    assert query(wd, "SELECT count(*) FROM image_scores WHERE metric = 'clip_score'") == [(0,)]
    # 2 Yes / 2 No labels in the catalog: the AUC is NULL, with the counts and why
    auc = query(wd, "SELECT value, n_pos, n_neg, reason FROM checkpoint_scores WHERE metric = 'recognized_auc_sdxl'")
    assert auc and all(v is None and (p, n) == (2, 2) and "fewer than 5" in r for v, p, n, r in auc)
    assert "recognized_auc_sdxl is NULL for base" in out


@pytest.mark.slow
def test_one_image_per_artist_without_seeds_is_undecided_with_the_reason(clip_dir, tmp_path):
    catalog = write_catalog(tmp_path / "styles.csv")
    src = write_set(tmp_path / "src", per_artist=1, baselines=0)
    wd = tmp_path / "wd"
    run(["import", str(src), "-w", str(wd), "--catalog", str(catalog), "-q"])
    out = score_cli(wd, clip_dir, catalog, n_boot=200)
    rows = query(wd, "SELECT DISTINCT verdict, verdict_reason, ci_low FROM comparisons")
    assert rows == [("undecided", "no seeds and n_images < 2", None)]
    total = query(wd, "SELECT count(*) FROM comparisons")[0][0]
    assert f"warning: {total} of {total} comparisons are undecided" in out
    # no baselines: the recognition metrics are missing, and score says which checkpoints and what to run
    assert query(wd, "SELECT count(*) FROM artist_scores WHERE metric LIKE 'recogni%'") == [(0,)]
    assert "no baseline (no-artist, `null` template) images for 2 checkpoint(s): base, ft" in out
    assert "template = null" in out


@pytest.mark.slow
def test_seeds_from_labels_or_file_names_are_paired_over_seeds(clip_dir, tmp_path):
    catalog = write_catalog(tmp_path / "styles.csv")
    for how in ("labels", "filename"):
        src = write_set(tmp_path / how, per_artist=3, baselines=3, seeds=how == "labels", name_seeds=how == "filename")
        wd = tmp_path / f"wd-{how}"
        extra = ["--seed-from-filename", r"-s(\d+)\.png$"] if how == "filename" else []
        run(["import", str(src), "-w", str(wd), "--catalog", str(catalog), "-q", *extra])
        assert query(wd, "SELECT DISTINCT seed FROM images ORDER BY seed") == [(0,), (1,), (2,)]
        score_cli(wd, clip_dir, catalog, n_boot=200)
        assert query(wd, "SELECT DISTINCT ci_over, paired, n FROM comparisons") == [("seeds", True, 3)]


def test_a_files_own_parameters_win_over_the_labels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image = _picture(1, (120, 40, 200))
    text = InfotextParams("a painting in the style of Claude Monet", "blurry", 20, "Euler a", 7.0, 42, 48, 48).text()
    (src / "a.png").write_bytes(encode_png(image, text))
    image.save(src / "b.png")
    (src / "labels.csv").write_text("file,artist,seed,prompt,negative_prompt,checkpoint\n"
                                    "a.png,Claude Monet,5,label prompt,label negative,m\n"
                                    "b.png,Claude Monet,7,label prompt,label negative,m\n")
    catalog = write_catalog(tmp_path / "styles.csv")
    import_images(src, tmp_path / "wd", labels_csv=src / "labels.csv", catalog_path=catalog, progress=False)
    got = dict((Path(p).name.split("-")[0], (s, pr, neg)) for p, s, pr, neg in query(
        tmp_path / "wd", "SELECT path, seed, prompt, negative_prompt FROM images"))
    assert got["a"] == (42, "a painting in the style of Claude Monet", "blurry")
    assert got["b"] == (7, "label prompt", "label negative")


@pytest.mark.parametrize(("header", "row", "message"), [
    ("file,artist,seed", "a.png,Claude Monet,-3", "line 2: seed must be a non-negative integer"),
    ("file,artist,seed", "a.png,Claude Monet,1e3", "line 2: seed must be a non-negative integer"),
    ("file,artist,template", "a.png,Claude Monet,null", "line 2: template 'null' is the no-artist baseline"),
])
def test_bad_labels_rows_name_the_line(tmp_path, header, row, message):
    src = tmp_path / "src"
    src.mkdir()
    _picture(0, (1, 2, 3)).save(src / "a.png")
    (src / "labels.csv").write_text(f"{header}\n{row}\n")
    with pytest.raises(InputError, match=message):
        import_images(src, tmp_path / "wd", labels_csv=src / "labels.csv", progress=False)


@pytest.mark.parametrize("regex", ["-s\\d+", "(a)(b)", "(["])
def test_seed_from_filename_needs_one_capture_group(tmp_path, regex):
    src = tmp_path / "src"
    src.mkdir()
    _picture(0, (1, 2, 3)).save(src / "a.png")
    with pytest.raises(InputError, match="--seed-from-filename"):
        import_images(src, tmp_path / "wd", seed_from_filename=regex, progress=False)


def test_migration_3_turns_an_old_kept_without_interval_into_undecided(tmp_path):
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    try:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR, "
                    "applied_at TIMESTAMP DEFAULT current_timestamp)")
        for version, description, statements in MIGRATIONS[:2]:
            for statement in statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations (version, description) VALUES (?, ?)", [version, description])
        con.execute("INSERT INTO comparisons (base, finetune, artist_id, model, metric, delta, ci_low, ci_high, n, "
                    "verdict) VALUES ('b', 'f', 'a', 'm', 'top1', -0.9, NULL, NULL, 1, 'kept'), "
                    "('b', 'f', 'c', 'm', 'top1', 0.1, -0.2, 0.3, 4, 'kept')")
        assert migrate(con) == [v for v, _, _ in MIGRATIONS[2:]]
        got = con.execute("SELECT artist_id, verdict, verdict_reason IS NOT NULL FROM comparisons ORDER BY 1").fetchall()
        assert got == [("a", "undecided", True), ("c", "kept", False)]
    finally:
        con.close()
