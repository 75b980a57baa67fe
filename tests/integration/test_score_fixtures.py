"""The scoring tests' workdir builder (support.scoring) makes what it says."""

from __future__ import annotations

from support.scoring import ARTISTS, make_workdir


def test_fixture_builds_a_workdir(tmp_path):
    records = make_workdir(tmp_path, checkpoints=("base",), seeds=(0,))
    assert len(records) == len(ARTISTS) * 2 + 1
    assert all((tmp_path / r["path"]).is_file() for r in records)
