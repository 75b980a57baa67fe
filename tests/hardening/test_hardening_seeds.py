"""Seeds of [2**63, 2**64) (ComfyUI draws seeds up to 2**64 - 1; issue 12, item 3).

They raised a pyarrow OverflowError, then were refused; now every seed of [0, 2**64)
is kept exactly (``seed_text``; ``seed`` is NULL past int64, never -1 = unknown), and
scoring pairs base and fine-tune images on them as it pairs small seeds: a twin whose
seeds are 0, 1, 2 and one whose seeds are 2**64 - 3 .. 2**64 - 1 give the same scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.hardening import assert_same_tables, connect_ro, run_atelier, write_catalog

from evaluator.workspace.records import image_record, seed_columns, seed_pairing_keys

BIG = 2**64 - 1


def test_seed_columns_keep_every_seed_exactly_and_map_none_onto_unknown():
    assert seed_columns(None) == seed_columns(-1) == {"seed": -1, "seed_text": None}
    assert seed_columns(0) == {"seed": 0, "seed_text": "0"}
    assert seed_columns(2**63 - 1) == {"seed": 2**63 - 1, "seed_text": str(2**63 - 1)}
    for seed in (2**63, BIG):
        assert seed_columns(seed) == {"seed": None, "seed_text": str(seed)}


def test_pairing_keys_are_the_seeds_when_they_fit_and_an_order_keeping_code_when_not():
    small = pd.DataFrame({"seed": [5, -1, 7, 5], "seed_text": ["5", None, "7", "5"]})
    assert seed_pairing_keys(small).tolist() == [5, -1, 7, 5]  # unchanged for every generated set
    mixed = pd.DataFrame({"seed": pd.array([None, 3, -1, None, 2**62], dtype="Int64"),
                          "seed_text": [str(BIG), "3", None, str(2**63), str(2**62)]})
    keys = seed_pairing_keys(mixed)
    assert keys.dtype == np.int64 and keys.tolist() == [3, 0, -1, 2, 1]  # ranks of 3 < 2**62 < 2**63 < 2**64-1
    # a store or shard from before seed_text: the seed column alone
    assert seed_pairing_keys(pd.DataFrame({"seed": [1, -1]})).tolist() == [1, -1]


def test_a_shard_with_big_seeds_reads_back_exact_and_an_old_shard_gains_seed_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.units import WorkUnit
    from evaluator.workspace.manifest import read_manifests, write_shard

    def unit(seed):
        return WorkUnit("ck", "claude-monet", "import", "p", "", seed, 8, 8, 0, 0.0, "")

    # 2**53 + 1 is where float64 would round: a NULL seed beside it must not turn the column into floats
    write_shard([image_record(unit(s), "r1") for s in (2**53 + 1, BIG, -1)], tmp_path / "m" / "r1" / "a.parquet")
    old = pa.table({"image_id": [7], "seed": [2**60 + 1]})  # written before seed_text existed
    pq.write_table(old, tmp_path / "m" / "r0.parquet")
    frame = read_manifests(tmp_path / "m").set_index("image_id")
    by_text = dict(zip(frame["seed_text"], frame["seed"], strict=True))
    assert by_text[str(2**53 + 1)] == 2**53 + 1 and pd.isna(by_text[str(BIG)])
    assert frame.loc[7, "seed_text"] == str(2**60 + 1) and frame.loc[7, "seed"] == 2**60 + 1
    assert frame["seed_text"].isna().sum() == 1  # the unknown one


def _noise(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


@pytest.mark.slow
def test_scores_pair_base_and_finetune_on_seeds_past_int64_as_on_small_ones(tmp_path):
    """Two twins, pixel for pixel the same, one with seeds 0..2 and one with 2**64-3..2**64-1:
    every comparison is paired over the 3 seeds and every score table is the same."""
    from evaluator.testing.tiny_clip import build_tiny_clip

    catalog = write_catalog(tmp_path / "styles.csv")
    clip = build_tiny_clip(tmp_path / "clip", seed=0)
    stores = {}
    for name, seeds in {"small": [0, 1, 2], "big": [BIG - 2, BIG - 1, BIG]}.items():
        src, wd = tmp_path / f"src-{name}", tmp_path / f"wd-{name}"
        rows = ["file,artist,checkpoint,seed"]
        for k, (artist, label) in enumerate([("claude-monet", "Claude Monet"), ("frida-kahlo", "Frida Kahlo")]):
            for ck_index, ck in enumerate(("base", "ft")):
                for i, seed in enumerate(seeds):
                    _noise(src / ck / f"{artist}-{i}.png", 100 * k + 10 * ck_index + i)
                    rows.append(f"{ck}/{artist}-{i}.png,{label},{ck},{seed}")
        (src / "labels.csv").write_text("\n".join(rows) + "\n")
        (wd / "checkpoints").mkdir(parents=True)
        # the fine-tune's record names its base, so score compares them
        for ck in ("base", "ft"):
            record = {"name": ck, "source": "imported", "kind": None, "base": "base" if ck == "ft" else None,
                      "adapters": json.dumps({"lora": [], "textual_inversion": []}), "fingerprint": None,
                      "dtype": None, "scheduler": None, "notes": None, "added_at": "2026-01-01T00:00:00"}
            (wd / "checkpoints" / f"{ck}.json").write_text(json.dumps(record))
        imported = run_atelier("import", str(src), "-w", str(wd), "--catalog", str(catalog), "-q")
        assert imported.returncode == 0 and "12 imported" in imported.stdout, imported.stdout + imported.stderr
        scored = run_atelier("score", "-w", str(wd), "--model", str(clip), "--catalog", str(catalog), "--bootstrap", "50",
                             "--batch-size", "4", "--num-workers", "0", "-q")
        assert scored.returncode == 0, scored.stdout + scored.stderr
        stores[name] = wd / "atelier.duckdb"

    con = connect_ro(stores["big"])
    try:
        texts = sorted({r[0] for r in con.execute("SELECT seed_text FROM images").fetchall()})
        assert texts == [str(s) for s in (BIG - 2, BIG - 1, BIG)]
        assert con.execute("SELECT count(*) FROM images WHERE seed IS NOT NULL").fetchone()[0] == 0
        paired = con.execute("SELECT DISTINCT paired, n FROM comparisons WHERE artist_id <> '_baseline'").fetchall()
        assert paired == [(True, 3)], paired
        n_seeds = con.execute("SELECT DISTINCT n_seeds FROM artist_scores WHERE n_seeds IS NOT NULL").fetchall()
        assert n_seeds == [(3,)], n_seeds
    finally:
        con.close()
    assert_same_tables(stores["big"], stores["small"], tables=["comparisons", "artist_scores", "checkpoint_scores"])
