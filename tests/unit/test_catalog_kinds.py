"""Catalog kinds (issue 15): the kind/tag/post_count/franchise columns, their checks,
{tag} prompts, selection by kind and posts, the store's columns, and the ids of the
catalog before kinds existed, every one of which must still be there."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog.model import Artist, catalog_frame, load_catalog, write_catalog
from catalog.plan import PlanError, make_plan
from catalog.schema import escape_tag
from catalog.select import select_artists
from catalog.templates import Template, TemplateError, load_templates
from catalog.validate import validate_text
from evaluator.cli.main import main
from evaluator.workspace.store import open_store

REPO = Path(__file__).resolve().parents[2]
OLD_IDS = REPO / "tests" / "corpus" / "catalog_ids_before_issue15.txt"

ROWS = [
    Artist("claude-monet", "Claude Monet", movements=("Impressionism",)),
    Artist("ilya-kuvshinov", "Ilya Kuvshinov", tag="ilya_kuvshinov", post_count=1508, sources=("danbooru",),
           tag_aliases=("kr0npr1nz", "madartist")),
    Artist("akira-coffee-curry", "Akira (coffee curry)", tag="akira_(coffee_curry)", post_count=418),
    Artist("hakurei-reimu", "Hakurei Reimu", kind="character", tag="hakurei_reimu", post_count=90000,
           franchise="touhou"),
    Artist("admiral-kancolle", "Admiral (kancolle)", kind="character", tag="admiral_(kancolle)", post_count=37876,
           franchise="kantai_collection"),
    Artist("my-hero", "My Hero", kind="character", sources=("recipe",)),  # a recipe: no tag
]


def test_every_id_of_the_catalog_before_kinds_is_still_there():
    old = [line.strip() for line in OLD_IDS.read_text(encoding="utf-8").splitlines()
           if line.strip() and not line.startswith("#")]
    assert len(old) == 9672
    ids = {a.artist_id for a in load_catalog(REPO / "styles.csv")}
    missing = [i for i in old if i not in ids]
    assert not missing, f"{len(missing)} artist_id(s) of the old catalog are gone: {missing[:10]}"


def test_committed_catalog_holds_both_kinds_with_their_tags():
    rows = {a.artist_id: a for a in load_catalog(REPO / "styles.csv")}
    kinds = {k: sum(a.kind == k for a in rows.values()) for k in ("artist", "character")}
    assert kinds["artist"] > 20000 and kinds["character"] > 15000
    assert rows["ilya-kuvshinov"].tag == "ilya_kuvshinov" and rows["artgerm"].tag == "stanley_lau"
    assert rows["masamune-shirow"].tag == "shirow_masamune" and rows["akira-toriyama"].tag == "toriyama_akira"
    assert rows["alphonse-mucha"].tag == "" and rows["mucha-muchakai"].tag == "mucha_(muchakai)"
    assert rows["akira-coffee-curry"].tag == "akira_(coffee_curry)"
    assert rows["hatsune-miku"].kind == "character" and rows["hatsune-miku"].post_count > 100000
    assert rows["admiral-kancolle"].franchise == "kantai_collection"
    tagged = [a for a in rows.values() if a.tag]
    assert all(a.post_count is not None and a.post_count >= 100 for a in tagged)
    assert not any(a.franchise for a in rows.values() if a.kind == "artist")


def test_kind_columns_round_trip(tmp_path):
    write_catalog(ROWS, tmp_path / "c.csv")
    assert load_catalog(tmp_path / "c.csv") == sorted(ROWS, key=lambda a: a.artist_id)
    header = (tmp_path / "c.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header.endswith(",notes,kind,tag,post_count,franchise,tag_aliases")


def test_committed_catalog_keeps_danbooru_aliases_of_its_tags():
    rows = {a.artist_id: a for a in load_catalog(REPO / "styles.csv")}
    assert "jonathan_hamilton" in rows["jonathan-hamilton"].tag_aliases  # tsuaii: Danbooru's own alias
    assert rows["hatsune-miku"].tag_aliases  # characters keep theirs too
    assert not any(a.tag_aliases for a in rows.values() if not a.tag)
    assert all(";" not in alias and "," not in alias for a in rows.values() for alias in a.tag_aliases)


@pytest.mark.parametrize(("cells", "message"), [
    ("x,X,,,,,,,,,,,,,artist,,,,old_x", "tag_aliases are given but the row has no tag"),
    ("x,X,,,,,,,,,,,,,artist,x_tag,,,Old X", "alias 'Old X' is not a Danbooru tag"),
])
def test_bad_tag_aliases_are_named(cells, message):
    header = "artist_id,name,aliases,born,died,living,nationality,movements,mediums,tags,recognized_sdxl," \
             "recognized_sd1,sources,notes,kind,tag,post_count,franchise,tag_aliases"
    report = validate_text(f"{header}\n{cells}\n".encode(), path="c.csv")
    assert any("tag_aliases" in str(e) and message in str(e) for e in report.errors), report.errors


def test_a_catalog_without_kinds_is_artists():
    report = validate_text(b"artist_id,name\nclaude-monet,Claude Monet\n")
    assert report.ok
    from catalog.model import artist_from_row

    assert artist_from_row(report.rows[0][1]).kind == "artist"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a,A,charcter,,,", "3: error [kind]: kind must be one of artist, character or blank but is 'charcter'; did you mean 'character'?"),
        ("a,A,artist,,many,", "5: error [post_count]: post_count must be a non-negative integer"),
        ("a,A,artist,,-3,", "5: error [post_count]"),
        ("a,A,artist,Has Space,,", "4: error [tag]: tag 'Has Space' is not a Danbooru tag"),
        ("a,A,artist,a_tag,,touhou", "6: error [franchise]: franchise 'touhou' is for characters"),
        ("a,A,character,,,Touhou Project", "6: error [franchise]: franchise 'Touhou Project' is not a Danbooru copyright tag"),
    ],
)
def test_bad_kind_cells_are_named(row, message):
    data = f"artist_id,name,kind,tag,post_count,franchise\n{row}\n".encode()
    report = validate_text(data, path="c.csv")
    assert not report.ok and f"c.csv:2:{message}" in report.format(), report.format()


def test_one_tag_names_one_row_of_a_kind():
    data = b"artist_id,name,kind,tag\na,A,artist,x_y\nb,B,artist,x_y\nc,C,character,x_y\n"
    errors = validate_text(data, path="c.csv").format(only_errors=True)
    assert "c.csv:3:4: error [tag]: duplicate artist tag 'x_y' (first on line 2)" in errors
    assert "c.csv:4:" not in errors  # a character may share an artist's tag text


def test_selection_by_kind_franchise_and_posts():
    ids = lambda rows: [a.artist_id for a in rows]  # noqa: E731
    assert ids(select_artists(ROWS, kind="character")) == ["admiral-kancolle", "hakurei-reimu", "my-hero"]
    assert ids(select_artists(ROWS, kind="character", franchise="Touhou")) == ["hakurei-reimu"]
    assert ids(select_artists(ROWS, min_posts=1000)) == ["admiral-kancolle", "hakurei-reimu", "ilya-kuvshinov"]
    assert ids(select_artists(ROWS, kind="artist", min_posts=0)) == ["akira-coffee-curry", "ilya-kuvshinov"]
    with pytest.raises(ValueError, match="kind must be one of artist, character"):
        select_artists(ROWS, kind="person")


def test_tag_is_escaped_for_a1111_and_comfyui():
    assert escape_tag("akira_(coffee_curry)") == r"akira_\(coffee_curry\)"
    assert escape_tag("ilya_kuvshinov") == "ilya_kuvshinov"
    assert escape_tag(r"a\b_[c]") == r"a\\b_\[c\]"
    template = Template("t", "{tag}, solo")
    assert template.needs_tag and template.render(tag="akira_(coffee_curry)") == r"akira_\(coffee_curry\), solo"
    assert Template("n", "art by {name}").render("Akira (coffee curry)") == "art by Akira (coffee curry)"


def test_a_tag_template_refuses_a_row_without_one_naming_it():
    with pytest.raises(TemplateError, match=r"catalog row 'claude-monet' \(Claude Monet\) has no Danbooru tag"):
        load_templates()["booru-artist"].render_row(ROWS[0])
    with pytest.raises(PlanError, match=r"needs \{tag\} but catalog row 'claude-monet' \(Claude Monet\)"):
        make_plan(ROWS, load_templates(), ["booru-artist"], [0], ["base"])
    with pytest.raises(PlanError, match=r"catalog row 'my-hero' \(My Hero\) has no Danbooru tag"):
        make_plan(ROWS, load_templates(), ["character"], [0], ["base"])


def test_plan_pairs_each_template_with_rows_of_its_kinds():
    templates = load_templates()
    tagged = select_artists(ROWS, min_posts=0)
    units = make_plan(tagged, templates, ["booru-artist", "character", "null"], [0], ["base"])
    prompts = {(u.template, u.artist_id): u.prompt for u in units}
    assert prompts[("character", "admiral-kancolle")] == r"admiral_\(kancolle\), solo, full body, simple background"
    assert prompts[("booru-artist", "akira-coffee-curry")].startswith(r"akira_\(coffee_curry\), ")
    assert {a for t, a in prompts if t == "booru-artist"} == {"akira-coffee-curry", "ilya-kuvshinov"}
    assert {a for t, a in prompts if t == "character"} == {"admiral-kancolle", "hakurei-reimu"}
    with pytest.raises(PlanError, match="template 'style' is for artist rows, but the selection has only character"):
        make_plan(select_artists(ROWS, kind="character"), templates, ["style"], [0], ["base"])
    named = make_plan(select_artists(ROWS, kind="character"), templates, ["character-name"], [0], ["base"])
    assert [u.prompt for u in named][-1] == "My Hero, solo, full body, simple background"


def test_template_kinds_in_a_user_file(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[pose]\ntext = "{name}, dynamic pose"\nkinds = ["character"]\n', encoding="utf-8")
    assert load_templates(path)["pose"].kinds == ("character",)
    path.write_text('[pose]\ntext = "{name}"\nkinds = ["person"]\n', encoding="utf-8")
    with pytest.raises(TemplateError, match="kinds must be a non-empty list of artist, character"):
        load_templates(path)


def test_list_and_plan_from_the_cli(tmp_path):
    catalog = tmp_path / "styles.csv"
    write_catalog(ROWS, catalog)
    runner = CliRunner()
    result = runner.invoke(main, ["catalog", "list", "--catalog", str(catalog), "--kind", "character",
                                  "--franchise", "touhou", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("hakurei-reimu,") and len(result.stdout.splitlines()) == 2
    out = tmp_path / "plan.jsonl"
    result = runner.invoke(main, ["plan", "--catalog", str(catalog), "--kind", "character", "--min-posts", "100",
                                  "--templates", "character", "--checkpoints", "base", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "over 2 row(s) (character 2)" in result.output and out.read_text().count("\n") == 2
    result = runner.invoke(main, ["plan", "--catalog", str(catalog), "--templates", "booru-artist",
                                  "--checkpoints", "base", "--out", str(out)])
    assert result.exit_code == 1 and "catalog row 'claude-monet' (Claude Monet) has no Danbooru tag" in result.output


def test_store_artists_table_has_the_kind_columns(tmp_path):
    frame = catalog_frame(ROWS)
    with open_store(tmp_path / "atelier.duckdb") as con:
        columns = [r[0] for r in con.execute("DESCRIBE artists").fetchall()]
        assert list(frame.columns) == columns
        con.register("frame", frame)
        con.execute("INSERT INTO artists SELECT * FROM frame")
        got = con.execute("SELECT kind, tag, post_count, franchise FROM artists ORDER BY artist_id").fetchall()
    assert got[0] == ("character", "admiral_(kancolle)", 37876, "kantai_collection")
    assert ("artist", None, None, None) in got  # Claude Monet: blank cells are NULL


def test_identification_compares_like_with_like():
    """Each image ranks among its own kind's rows (tagged rows under a {tag} template);
    checked against a naive loop, with each image's class count N."""
    import numpy as np

    from evaluator.scoring.metrics import EvalInputs, identification_ranks

    rng = np.random.default_rng(0)
    kinds = np.array(["artist"] * 6 + ["character"] * 4, dtype=object)
    tagged = np.array([True, True, False, False, False, False, True, True, True, False])
    classes = rng.standard_normal((10, 16)).astype(np.float32)
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    true = np.array([0, 1, 2, 5, 6, 9, 0, 7, 3])
    template = np.array(["style"] * 6 + ["booru-artist", "character", "booru-artist"], dtype=object)
    vecs = classes[true] + 0.9 * rng.standard_normal((len(true), 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"r{i}" for i in range(10)]
    inputs = EvalInputs(
        image_ids=np.arange(len(true)), vecs=vecs, checkpoint=np.full(len(true), "base", dtype=object),
        artist_id=np.array(ids, dtype=object)[true], template=template, seed=np.zeros(len(true), np.int64),
        prompt_vecs=None, catalog_ids=ids, artist_text_vecs=classes, catalog_kinds=kinds, catalog_tagged=tagged,
        tag_templates=frozenset({"booru-artist", "character"}))
    ranks, counts = inputs.ranks(), inputs.class_counts()
    for i, t in enumerate(true):
        members = [c for c in range(10) if kinds[c] == kinds[t] and (tagged[c] or template[i] == "style")]
        sims = classes[members] @ vecs[i]
        if t not in members:  # a {tag} template on a row without a tag: no class to rank
            assert np.isnan(ranks[i])
            continue
        assert ranks[i] == 1 + int((sims > sims[members.index(t)]).sum())
        assert counts[i] == len(members)
    assert list(counts[:6]) == [6, 6, 6, 6, 4, 4] and counts[6] == 2 and counts[7] == 3
    # without kinds every row is a class, as before
    plain = EvalInputs(image_ids=inputs.image_ids, vecs=vecs, checkpoint=inputs.checkpoint, artist_id=inputs.artist_id,
                       template=template, seed=inputs.seed, prompt_vecs=None, catalog_ids=ids, artist_text_vecs=classes)
    np.testing.assert_array_equal(plain.ranks(), identification_ranks(vecs, classes, true))


def test_class_count_beside_each_figure_is_null_when_class_sets_mix():
    import numpy as np
    import pandas as pd

    from evaluator.scoring.aggregate import _with_class_counts
    from evaluator.scoring.metrics import EvalInputs

    ids = ["a1", "a2", "a3", "c1"]
    n = 4
    inputs = EvalInputs(
        image_ids=np.arange(n), vecs=np.eye(n, 4, dtype=np.float32), checkpoint=np.array(["base", "base", "ft", "ft"], dtype=object),
        artist_id=np.array(["a1", "a2", "a1", "c1"], dtype=object), template=np.full(n, "style", dtype=object),
        seed=np.zeros(n, np.int64), prompt_vecs=None, catalog_ids=ids, artist_text_vecs=np.eye(4, 4, dtype=np.float32),
        catalog_kinds=np.array(["artist", "artist", "artist", "character"], dtype=object))
    artist_rows = pd.DataFrame({"checkpoint": ["base", "ft", "ft", "ft"], "artist_id": ["a1", "a1", "c1", "c1"],
                                "metric": ["top1", "top1", "top1", "clip_score"]})
    got = _with_class_counts(artist_rows, inputs)["n_classes"].tolist()
    assert got[:3] == [3.0, 3.0, 1.0] and np.isnan(got[3])
    checkpoint_rows = pd.DataFrame({"checkpoint": ["base", "ft"], "metric": ["top1", "top1"]})
    got = _with_class_counts(checkpoint_rows, inputs)["n_classes"].tolist()
    assert got[0] == 3.0 and np.isnan(got[1])  # ft mixes artists (N 3) and characters (N 1)


def test_every_tag_merge_of_the_committed_catalog_was_reviewed():
    """A merge says two sources name one person: each was checked by hand (the CSV gives the
    evidence), so a rebuild that merges a new pair fails here until someone reviews it."""
    import csv

    reviewed_file = REPO / "tests" / "corpus" / "reviewed_tag_merges.csv"
    lines = [line for line in reviewed_file.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    reviewed = {(r["tag"], r["artist_id"]) for r in csv.DictReader(lines) if r["same_person"] == "yes"}
    merged = {(a.tag, a.artist_id) for a in load_catalog(REPO / "styles.csv")
              if a.tag and any(source != "danbooru" for source in a.sources)}
    assert merged == reviewed, {"not reviewed": sorted(merged - reviewed), "no longer merged": sorted(reviewed - merged)}
    assert len(reviewed) == 37
