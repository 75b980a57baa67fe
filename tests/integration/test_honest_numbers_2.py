"""Issue 11's "Done when", through the CLI only: on a planted-style set (procedural
artists, reference and test images, labels with seeds) a random-weight ViT-B-32 gives
prototype_top1 and retrieval_map@1 >= 0.9; with shuffled labels both sit at chance;
an imported set without seeds gives no silent "kept". Plus the friction items:
`atelier models random`, `references add` over per-artist folders and names."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from support.planted import planted_id, planted_name, planted_work
from support.scoring import write_catalog

from evaluator.cli.main import main

N_ARTISTS = 5  # chance 1/5; a Latin-square shuffle needs as many works per artist
N_REFS = 3


def run(args: list[str], code: int = 0) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    return result.output


def query(workdir: Path, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def planted_catalog(path: Path) -> Path:
    return write_catalog(path, [(planted_id(a), planted_name(a), "") for a in range(N_ARTISTS)])


def write_references(root: Path) -> Path:
    """refs/<artist name>/work-k.png: folders named by name, not id (resolved through the catalog)."""
    for a in range(N_ARTISTS):
        folder = root / planted_name(a)
        folder.mkdir(parents=True)
        for k in range(N_REFS):
            planted_work(a, N_ARTISTS, f"ref-{k}").save(folder / f"work-{k}.png")
    return root


def write_test_set(src: Path) -> Path:
    """Works j = 0..4 of each artist under three checkpoints: `planted` (true labels, seed j),
    `shuffled` (artist a's j-th work labelled artist (a + j) mod N: every label as often,
    each true artist spread evenly over all labels, so identification is at chance exactly)
    and `noseed` (true labels, no seed)."""
    src.mkdir(parents=True)
    rows = []
    for ckpt in ("planted", "shuffled", "noseed"):
        (src / ckpt).mkdir()
        for a in range(N_ARTISTS):
            for j in range(N_ARTISTS):
                file = f"{ckpt}/a{a}-w{j}.png"
                planted_work(a, N_ARTISTS, f"test-{j}").save(src / file)
                label = (a + j) % N_ARTISTS if ckpt == "shuffled" else a
                rows.append({"file": file, "artist": planted_name(label), "checkpoint": ckpt,
                             "seed": "" if ckpt == "noseed" else str(j), "template": "style"})
    with (src / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return src


def checkpoint_values(wd: Path, metric: str) -> dict[str, tuple]:
    return {c: (v, n_classes) for c, v, n_classes in query(
        wd, "SELECT checkpoint, value, n_classes FROM checkpoint_scores WHERE metric = ?", [metric])}


@pytest.mark.slow
def test_planted_styles_identified_by_a_random_vit_b_32_and_shuffled_labels_at_chance(tmp_path):
    catalog = planted_catalog(tmp_path / "styles.csv")
    wd = tmp_path / "wd"
    out = run(["references", "add", str(write_references(tmp_path / "refs")), "-w", str(wd), "--catalog", str(catalog),
               "-q"])
    assert f"{N_ARTISTS} artist(s)" in out and f"{planted_id(0)}: {N_REFS} reference images" in out
    run(["import", str(write_test_set(tmp_path / "src")), "-w", str(wd), "--catalog", str(catalog), "-q"])
    score = ["score", "-w", str(wd), "--model", "ViT-B-32", "--pretrained", "random", "--catalog", str(catalog),
             "--compare", "planted:shuffled", "--compare", "planted:noseed", "--bootstrap", "200",
             "--num-workers", "0", "-q"]
    out = run(score)
    chance = 1 / N_ARTISTS
    for readout in ("cosine", "csls"):
        top1, map1 = checkpoint_values(wd, "prototype_top1"), checkpoint_values(wd, "retrieval_map@1")
        assert top1["planted"][0] >= 0.9 and map1["planted"][0] >= 0.9, (readout, top1, map1)
        assert abs(top1["shuffled"][0] - chance) <= 0.1 and abs(map1["shuffled"][0] - chance) <= 0.1
        assert top1["planted"][1] == N_ARTISTS  # N is stored beside the value
        if readout == "cosine":
            out_cosine = out
            out = run([*score, "--readout", "csls"])
    # every comparison has an interval (seeds paired, or images where none is known) or says why not
    rows = query(wd, "SELECT finetune, verdict, ci_over, ci_low, verdict_reason, n_seeds FROM comparisons")
    assert rows and not [r for r in rows if r[1] == "kept" and r[3] is None]
    assert {r[2] for r in rows if r[0] == "shuffled"} == {"seeds"}
    # the seedless side's images are its units, the base's its seeds: a two-sample bootstrap
    assert {r[2] for r in rows if r[0] == "noseed"} == {"seeds+images"}
    assert all(r[5] == 0 for r in rows if r[0] == "noseed")
    lost = query(wd, "SELECT count(*) FROM comparisons WHERE finetune = 'shuffled' AND metric = 'prototype_top1' "
                     "AND verdict = 'lost'")[0][0]
    assert lost == N_ARTISTS  # every artist lost its identification under the shuffle
    # the discrimination gap of each artist's references: a planted style is told apart
    gaps = query(wd, "SELECT DISTINCT artist_id, value, ci_low, ci_over FROM artist_scores "
                     "WHERE metric = 'discrimination_gap'")
    assert len(gaps) == N_ARTISTS and all(v > 0 and over == "references" for _, v, _, over in gaps)
    assert "has RANDOM weights: its scores are only structural" in out_cosine  # loud, on stderr


def test_references_add_resolves_names_and_refuses_unknown_artists_before_writing(tmp_path):
    catalog = planted_catalog(tmp_path / "styles.csv")
    refs = write_references(tmp_path / "refs")
    wd = tmp_path / "wd"
    # one artist by its name, one folder
    out = run(["references", "add", planted_name(1), str(refs / planted_name(1)), "-w", str(wd), "--catalog",
               str(catalog), "-q"])
    assert f"{planted_id(1)}: {N_REFS} reference images" in out
    # a typo: refused with the close name, nothing imported
    (refs / "Planted Paintr C").mkdir()
    planted_work(2, N_ARTISTS, "extra").save(refs / "Planted Paintr C" / "x.png")
    before = query(wd, "SELECT count(*) FROM images")[0][0]
    out = run(["references", "add", str(refs), "-w", str(wd), "--catalog", str(catalog), "-q"], code=1)
    assert "'Planted Paintr C' is not in the catalog" in out and "did you mean" in out and planted_id(2) in out
    assert query(wd, "SELECT count(*) FROM images")[0][0] == before
    # a labels CSV, as for `atelier import`
    (tmp_path / "refs.csv").write_text(f"file,artist\n{planted_name(3)}/work-0.png,{planted_id(3)}\n"
                                       f"{planted_name(3)}/work-1.png,{planted_name(3)}\n")
    only = tmp_path / "only"
    (only / planted_name(3)).mkdir(parents=True)
    for k in (0, 1):
        planted_work(3, N_ARTISTS, f"ref-{k}").save(only / planted_name(3) / f"work-{k}.png")
    out = run(["references", "add", str(only), "--labels", str(tmp_path / "refs.csv"), "-w", str(wd),
               "--catalog", str(catalog), "-q"])
    assert f"{planted_id(3)}: 2 reference images" in out
    assert query(wd, "SELECT artist_id, count(*) FROM reference_images GROUP BY 1 ORDER BY 1") == [
        (planted_id(1), N_REFS), (planted_id(3), 2)]
    # `import --reference` follows the same rule: an unknown artist refuses the import
    (tmp_path / "bad.csv").write_text(f"file,artist\n{planted_name(3)}/work-0.png,Planted Paintr D\n")
    out = run(["import", str(only), "--reference", "--labels", str(tmp_path / "bad.csv"), "-w", str(wd),
               "--catalog", str(catalog), "-q"], code=1)
    assert "line 2: artist 'Planted Paintr D' is not in the catalog; did you mean" in out and planted_id(3) in out


def test_models_random_writes_a_loadable_small_folder_and_refuses_a_used_one(tmp_path):
    out = run(["models", "random", "--out", str(tmp_path / "m"), "--seed", "3"])
    assert "wrote random-weight tiny (seed 3" in out
    again = run(["models", "random", "--out", str(tmp_path / "m2"), "--seed", "3"])
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["open_clip_config.json", "open_clip_model.safetensors"]
    assert (tmp_path / "m" / files[1]).read_bytes() == (tmp_path / "m2" / files[1]).read_bytes()
    assert sum(p.stat().st_size for p in (tmp_path / "m").iterdir()) < 10e6 and "score with --model" in again
    refused = run(["models", "random", "--out", str(tmp_path / "m")], code=1)
    assert "not an empty folder" in refused
    unknown = run(["models", "random", "ViT-B-23", "--out", str(tmp_path / "m3")], code=1)
    assert "did you mean" in unknown and "ViT-B-32" in unknown
    assert not (tmp_path / "m3").exists() or not any((tmp_path / "m3").iterdir())
    # the folder scores like any model (the tiny default embeds in a blink)
    from evaluator.embedding.embed import load_clip

    clip = load_clip(str(tmp_path / "m"))
    assert clip.info["random_weights"] and clip.key.startswith("tiny-clip@")


@pytest.mark.slow
def test_text_embeddings_are_cached_across_workdirs(tmp_path, monkeypatch):
    from support.scoring import make_workdir

    from evaluator.testing.tiny_clip import build_tiny_clip
    from evaluator.workspace.settings import text_cache_root

    assert text_cache_root({"ATELIER_CACHE": "/c"}) == Path("/c/text-embeddings")
    assert text_cache_root({"ATELIER_TEXT_CACHE": "workdir"}) is None
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("ATELIER_TEXT_CACHE", str(shared))
    clip = build_tiny_clip(tmp_path / "clip")
    catalog = write_catalog(tmp_path / "styles.csv")
    parts = []
    for name in ("one", "two"):
        make_workdir(tmp_path / name, seeds=(0, 1))
        run(["score", "-w", str(tmp_path / name), "--model", str(clip), "--catalog", str(catalog), "--bootstrap", "50",
             "--num-workers", "0", "-q"])
        parts.append(sorted(p.name for p in shared.rglob("texts-*.parquet")))
        assert not list((tmp_path / name / "embeddings").rglob("texts-*.parquet"))  # nothing in the workdir
    assert parts[0] and parts[1] == parts[0]  # the second workdir embedded no text again
    assert query(tmp_path / "one", "SELECT count(*) FROM image_scores WHERE metric = 'artist_similarity'") == \
        query(tmp_path / "two", "SELECT count(*) FROM image_scores WHERE metric = 'artist_similarity'")


def test_imported_images_record_their_source_file_and_its_hash(tmp_path):
    import hashlib

    from evaluator.ingest.importer import import_images

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    planted_work(0, N_ARTISTS, "a").save(src / "sub" / "one.png")
    planted_work(1, N_ARTISTS, "b").save(src / "two.png")
    catalog = planted_catalog(tmp_path / "styles.csv")
    (src / "labels.csv").write_text(f"file,artist\nsub/one.png,{planted_name(0)}\ntwo.png,{planted_name(1)}\n")
    import_images(src, tmp_path / "wd", labels_csv=src / "labels.csv", catalog_path=catalog, progress=False)
    got = query(tmp_path / "wd", "SELECT source_path, source_sha256, path FROM images ORDER BY source_path")
    assert [r[0] for r in got] == ["sub/one.png", "two.png"]
    for source_path, digest, copy in got:
        assert digest == hashlib.sha256((src / source_path).read_bytes()).hexdigest()
        # a whole 8-bit RGB PNG is kept byte for byte: the copy is the source file itself
        assert digest == hashlib.sha256((tmp_path / "wd" / copy).read_bytes()).hexdigest()


def test_migration_6_names_what_n_counts_in_an_older_store(tmp_path):
    from evaluator.workspace.store import MIGRATIONS, migrate

    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    try:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR, "
                    "applied_at TIMESTAMP DEFAULT current_timestamp)")
        for version, description, statements in MIGRATIONS:
            if version < 6:
                for statement in statements:
                    con.execute(statement)
                con.execute("INSERT INTO schema_migrations (version, description) VALUES (?, ?)", [version, description])
        con.execute("INSERT INTO artist_scores (checkpoint, artist_id, model, metric, value, n) VALUES "
                    "('c', 'a', 'm', 'top1', 1, 12)")
        con.execute("INSERT INTO checkpoint_scores (checkpoint, model, metric, value, n, ci_over) VALUES "
                    "('c', 'm', 'top1', 1, 40, 'seeds'), ('c', 'm', 'diversity', 0.3, 7, 'artists')")
        con.execute("INSERT INTO comparisons (base, finetune, artist_id, model, metric, n, verdict) VALUES "
                    "('b', 'f', 'a', 'm', 'top1', 3, 'kept')")
        con.execute("INSERT INTO images (image_id, unit_id, source, sha256) VALUES (1, 'u', 'imported', 'abc'), "
                    "(2, 'v', 'generated', 'def')")
        assert 6 in migrate(con)
        assert con.execute("SELECT n_images FROM artist_scores").fetchall() == [(12,)]
        assert con.execute("SELECT metric, n_images, n_artists FROM checkpoint_scores ORDER BY metric").fetchall() == [
            ("diversity", None, 7), ("top1", 40, None)]
        assert con.execute("SELECT n_seeds FROM comparisons").fetchall() == [(3,)]
        assert con.execute("SELECT image_id, source_sha256 FROM images ORDER BY 1").fetchall() == [(1, "abc"), (2, None)]
    finally:
        con.close()


@pytest.mark.slow
def test_a_rescore_leaves_no_stale_rows_of_metrics_that_no_longer_apply(tmp_path):
    from support.scoring import ARTISTS, make_workdir

    from evaluator.testing.tiny_clip import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    catalog = write_catalog(tmp_path / "styles.csv")
    wd = tmp_path / "wd"
    make_workdir(wd, seeds=(0, 1))
    for a_i, (artist_id, _, _) in enumerate(ARTISTS[:2]):
        folder = tmp_path / "refs" / artist_id
        folder.mkdir(parents=True)
        for k in range(3):
            planted_work(a_i, 2, f"r{k}").save(folder / f"{k}.png")
    run(["references", "add", str(tmp_path / "refs"), "-w", str(wd), "--catalog", str(catalog), "-q"])
    score = ["score", "-w", str(wd), "--model", str(clip), "--catalog", str(catalog), "--bootstrap", "50",
             "--compare", "base:ft", "--num-workers", "0", "-q"]
    run(score)
    tables = ("image_scores", "artist_scores", "checkpoint_scores", "comparisons")

    def maps() -> dict[str, set]:
        return {t: {m for (m,) in query(wd, f"SELECT DISTINCT metric FROM {t} WHERE metric LIKE 'retrieval_map@%'")}
                for t in tables}
    assert maps()["checkpoint_scores"] == {"retrieval_map@1", "retrieval_map@5", "retrieval_map@10"}
    assert maps()["comparisons"] == {"retrieval_map@1", "retrieval_map@5", "retrieval_map@10"}
    con = duckdb.connect(str(wd / "atelier.duckdb"))  # a row of the retired single-k metric, as older stores hold
    try:
        model = con.execute("SELECT DISTINCT model FROM artist_scores").fetchone()[0]
        con.execute("INSERT INTO artist_scores (checkpoint, artist_id, model, metric, value, n) VALUES "
                    "('base', 'hokusai', ?, 'retrieval_map@k', 0.5, 3)", [model])
    finally:
        con.close()
    run([*score, "--retrieval-k", "1"])
    assert all(found == {"retrieval_map@1"} for found in maps().values()), maps()

