"""The split: by content hash, stable when images are added, near-duplicates together."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from evaluator.errors import InputError
from evaluator.training.dataset import load_dataset
from evaluator.training.split import TRAIN, VALIDATION, curation_groups, draw, split_items


def flat(root: Path, sources: list[Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["file,artist"]
    for src in sources:
        shutil.copy(src, root / src.name)
        lines.append(f"{src.name},style")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def generated(shared_data) -> list[Path]:
    return sorted((shared_data / "images" / "generated-sd15").glob("*.webp"))


def sides(split) -> dict[str, str]:
    return {row["sha256"]: row["side"] for row in split.rows()}


def test_split_is_stable_when_images_are_added(tmp_path, generated):
    small = load_dataset(flat(tmp_path / "ds", generated[:20]))
    before = sides(split_items(small.items, 0.25, seed=7))
    grown = load_dataset(flat(tmp_path / "ds", generated[:60]))  # same folder, 40 more images
    after = sides(split_items(grown.items, 0.25, seed=7))
    assert len(after) == 60
    assert {sha: after[sha] for sha in before} == before
    held = sum(side == VALIDATION for side in after.values())
    assert 0.1 * 60 < held < 0.45 * 60  # the fraction, roughly: each image draws alone
    assert sides(split_items(list(reversed(grown.items)), 0.25, seed=7)) == after  # order plays no part
    assert sides(split_items(grown.items, 0.25, seed=8)) != after  # the seed does


def test_rule_matches_a_naive_reference(tmp_path, generated):
    data = load_dataset(flat(tmp_path / "ds", generated[:30]))
    import hashlib

    def naive(sha: str) -> str:
        value = int(hashlib.sha256(f"3:{sha}".encode()).hexdigest()[:16], 16) / 2**64
        return VALIDATION if value < 0.3 else TRAIN

    expected = {i.sha256: naive(i.sha256) for i in data.items}
    assert VALIDATION in expected.values()
    assert sides(split_items(data.items, 0.3, seed=3)) == expected


def test_at_least_one_validation_image(tmp_path, generated):
    data = load_dataset(flat(tmp_path / "ds", generated[:5]))
    split = split_items(data.items, 0.001, seed=0)
    assert len(split.validation) == 1 and len(split.train) == 4
    lowest = min(data.items, key=lambda i: draw(0, i.sha256))
    assert split.validation[0].sha256 == lowest.sha256


def test_at_least_one_training_image(tmp_path, generated):
    data = load_dataset(flat(tmp_path / "ds", generated[:2]))
    split = split_items(data.items, 0.999, seed=0)
    assert len(split.validation) == 1 and len(split.train) == 1
    assert split.train[0].sha256 == max(data.items, key=lambda i: draw(0, i.sha256)).sha256


def test_split_for_run_uses_the_curation_duplicate_groups(tmp_path, generated):
    """The curation stage's own table (migration 5): a duplicate group is one unit of the split."""
    from evaluator.training.split import split_for_run
    from evaluator.workspace.store import open_store

    data = load_dataset(flat(tmp_path / "ds", generated[:24]))
    shas = [i.sha256 for i in data.items]
    store = tmp_path / "wd" / "atelier.duckdb"
    store.parent.mkdir()
    with open_store(store) as con:  # 3 groups of 8 near-duplicates, as curation records them
        for k, sha in enumerate(shas):
            con.execute("INSERT INTO curation (sha256, duplicate_group) VALUES (?, ?)", [sha, shas[k % 3]])
    grouped, split = split_for_run(data.items, 0.3, 0, store, "mystyle")
    assert {i.group_key for i in grouped} == {f"curation:{s}" for s in shas[:3]}
    sides_of_group: dict[str, set] = {}
    for side, items in ((TRAIN, split.train), (VALIDATION, split.validation)):
        for item in items:
            sides_of_group.setdefault(item.group_key, set()).add(side)
    assert all(len(s) == 1 for s in sides_of_group.values()) and len(split.validation) % 8 == 0


def test_near_duplicate_groups_never_straddle(tmp_path, generated):
    data = load_dataset(flat(tmp_path / "ds", generated[:30]))
    items = [replace(i, group=f"g{k % 7}") for k, i in enumerate(data.items)]  # 7 groups
    split = split_items(items, 0.3, seed=1)
    train_groups = {i.group_key for i in split.train}
    val_groups = {i.group_key for i in split.validation}
    assert val_groups and train_groups and not (train_groups & val_groups)


def test_previous_sides_are_kept(tmp_path, generated):
    data = load_dataset(flat(tmp_path / "ds", generated[:20]))
    first = sides(split_items(data.items, 0.3, seed=0))
    flipped = {sha: (TRAIN if side == VALIDATION else VALIDATION) for sha, side in list(first.items())[:3]}
    again = sides(split_items(data.items, 0.3, seed=0, previous=flipped))
    assert all(again[sha] == side for sha, side in flipped.items())


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.1"])
def test_bad_fraction_is_refused(tmp_path, generated, fraction):
    data = load_dataset(flat(tmp_path / "ds", generated[:3]))
    with pytest.raises(InputError, match="validation_fraction"):
        split_items(data.items, fraction)


def test_one_image_cannot_be_split(tmp_path, generated):
    data = load_dataset(flat(tmp_path / "ds", generated[:1]))
    with pytest.raises(InputError, match="at least 2 distinct images"):
        split_items(data.items, 0.2)


def test_curation_groups_read_defensively(tmp_path):
    import duckdb

    assert curation_groups(tmp_path / "missing.duckdb") == {}
    store = tmp_path / "atelier.duckdb"
    con = duckdb.connect(str(store))
    con.execute("CREATE TABLE unrelated (x INTEGER)")
    con.close()
    assert curation_groups(store) == {}  # no curation table yet
    con = duckdb.connect(str(store))
    con.execute('CREATE TABLE curation (sha256 VARCHAR, "group" INTEGER, keep BOOLEAN)')
    con.execute("INSERT INTO curation VALUES ('aa', 1, true), ('bb', 1, true), ('cc', NULL, true)")
    con.close()
    assert curation_groups(store) == {"aa": "curation:1", "bb": "curation:1"}


def test_split_for_run_keeps_the_sides_an_earlier_run_recorded(tmp_path, generated):
    from evaluator.training.split import split_for_run
    from evaluator.workspace.store import open_store

    data = load_dataset(flat(tmp_path / "ds", generated[:12]))
    store = tmp_path / "wd" / "atelier.duckdb"
    store.parent.mkdir()
    fresh = sides(split_for_run(data.items, 0.3, 0, store, "mystyle")[1])  # no store yet: the hash rule
    assert fresh == sides(split_items(data.items, 0.3, seed=0))
    moved = next(sha for sha, side in fresh.items() if side == TRAIN)
    with open_store(store) as con:
        con.execute("INSERT INTO training_runs (run, output_name) VALUES ('r1', 'mystyle'), ('r2', 'other')")
        con.execute("INSERT INTO training_split (run, sha256, side) VALUES ('r1', ?, 'validation')", [moved])
    assert sides(split_for_run(data.items, 0.3, 0, store, "mystyle")[1])[moved] == VALIDATION
    assert sides(split_for_run(data.items, 0.3, 0, store, "other")[1]) == fresh  # another fine-tune's record
