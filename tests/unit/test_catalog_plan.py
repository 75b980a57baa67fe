"""The plan: stable unit ids, deterministic order, sharding, files, settings checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from catalog.model import Artist
from catalog.plan import PlanError, make_plan, parse_seeds, read_plan, write_plan
from catalog.templates import load_templates
from catalog.units import BASELINE_ARTIST_ID, shard

ARTISTS = [
    Artist(artist_id="claude-monet", name="Claude Monet"),
    Artist(artist_id="katsushika-hokusai", name="Katsushika Hokusai"),
    Artist(artist_id="salvador-dali", name="Salvador Dalí"),
]


def plan(**overrides):
    kwargs = dict(template_names=["style", "portrait", "null"], seeds=[0, 1], checkpoints=["base", "ft"])
    kwargs.update(overrides)
    return make_plan(ARTISTS, load_templates(), **kwargs)


def test_plan_shape_and_order():
    units = plan()
    # 2 checkpoints x (2 artist templates x 3 artists x 2 seeds + 1 baseline x 2 seeds)
    assert len(units) == 2 * (2 * 3 * 2 + 2)
    assert len({u.unit_id for u in units}) == len(units)
    assert [u.checkpoint for u in units[:14]] == ["base"] * 14
    first = units[0]
    assert (first.artist_id, first.template, first.seed) == ("claude-monet", "style", 0)
    assert first.prompt == "a painting in the style of Claude Monet"
    baseline = [u for u in units if u.template == "null"]
    assert len(baseline) == 4 and {u.artist_id for u in baseline} == {BASELINE_ARTIST_ID}
    assert {u.prompt for u in baseline} == {"a painting"}
    assert plan() == units  # deterministic


# a golden id: if this changes, every existing image in every workdir is orphaned
def test_unit_id_is_stable_golden():
    unit = plan()[0]
    assert unit.unit_id == "913aa7ea9bbbae63"
    assert unit.image_id == int("913aa7ea9bbbae63", 16) >> 1


def test_unit_ids_stable_across_processes():
    code = (
        "import json;from catalog.model import Artist;from catalog.plan import make_plan;"
        "from catalog.templates import load_templates;"
        "a=[Artist('claude-monet','Claude Monet'),Artist('katsushika-hokusai','Katsushika Hokusai'),"
        "Artist('salvador-dali','Salvador Dalí')];"
        "u=make_plan(a,load_templates(),['style','portrait','null'],[0,1],['base','ft']);"
        "print(json.dumps([x.unit_id for x in u]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert json.loads(out.stdout) == [u.unit_id for u in plan()]


def test_any_field_changes_the_id():
    base = plan()[0].unit_id
    assert plan(width=768)[0].unit_id != base
    assert plan(steps=30)[0].unit_id != base
    assert plan(guidance=5)[0].unit_id != base
    assert plan(negative_prompt="blurry")[0].unit_id != base
    assert plan(scheduler="euler")[0].unit_id != base
    assert plan(guidance=7.5)[0].unit_id == base
    assert make_plan(ARTISTS, load_templates(), ["style"], [0], ["base"], guidance=7)[0].unit_id == \
        make_plan(ARTISTS, load_templates(), ["style"], [0], ["base"], guidance=7.0)[0].unit_id


@pytest.mark.parametrize("world_size", range(1, 8))
def test_shards_cover_every_unit_once(world_size):
    units = plan(seeds=[0, 1, 2])
    pieces = [shard(units, rank, world_size) for rank in range(world_size)]
    ids = [u.unit_id for piece in pieces for u in piece]
    assert sorted(ids) == sorted(u.unit_id for u in units)
    assert len(ids) == len(set(ids))
    sizes = [len(p) for p in pieces]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_write_read_round_trip(tmp_path, suffix):
    units = plan()
    path = write_plan(units, tmp_path / f"plan{suffix}")
    assert read_plan(path) == units
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tampered_plan_is_refused(tmp_path):
    path = write_plan(plan(), tmp_path / "plan.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[3])
    record["seed"] = 99
    lines[3] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PlanError, match=r"plan\.jsonl:line 4: stored unit_id"):
        read_plan(path)


def test_tampered_parquet_is_refused(tmp_path):
    import pyarrow.parquet as pq

    path = write_plan(plan(), tmp_path / "plan.parquet")
    table = pq.read_table(path).to_pylist()
    table[0]["prompt"] = "something else"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table), path)
    with pytest.raises(PlanError, match="row 1"):
        read_plan(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(width=500), "width must be divisible by 8 but is 500"),
        (dict(height=0), "height must be a positive integer but is 0"),
        (dict(steps=0), "steps must be an integer >= 1 but is 0"),
        (dict(guidance=-1.0), "guidance must be a finite number >= 0 but is -1.0"),
        (dict(scheduler="my scheduler"), "scheduler must be a name"),
        (dict(checkpoints=[]), "at least one checkpoint"),
        (dict(checkpoints=["base", "base"]), "checkpoint names repeat"),
        (dict(checkpoints=["my/ckpt"]), "checkpoint name must match"),
        (dict(seeds=[]), "at least one seed"),
        (dict(seeds=[0, 0]), "seeds repeat"),
        (dict(seeds=[-1]), "seed must be an integer in"),
        (dict(template_names=["stlye"]), "Did you mean 'style'"),
    ],
)
def test_settings_are_checked_up_front(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(**overrides)


def test_bad_suffix_and_missing_file(tmp_path):
    with pytest.raises(PlanError, match="must end in .parquet or .jsonl"):
        write_plan(plan(), tmp_path / "plan.csv")
    with pytest.raises(PlanError, match="not found"):
        read_plan(tmp_path / "nope.parquet")


def test_parse_seeds():
    assert parse_seeds("0,1") == [0, 1]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0-2, 10") == [0, 1, 2, 10]
    with pytest.raises(PlanError, match="backwards"):
        parse_seeds("3-1")
    with pytest.raises(PlanError, match="'x'"):
        parse_seeds("1,x")


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_checkpoint_name_with_a_leading_dot_is_refused(name):
    from catalog.model import Artist
    from catalog.plan import PlanError, make_plan
    from catalog.templates import load_templates

    with pytest.raises(PlanError, match="not start with"):
        make_plan([Artist("claude-monet", "Claude Monet")], load_templates(), ["style"], [0], [name])
