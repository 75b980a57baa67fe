"""The store digest sees every stored value and nothing that differs between identical runs."""

from __future__ import annotations

import duckdb

from evaluator.testing.store_digest import store_digest
from evaluator.testing.synthetic_store import SyntheticStoreSpec, build_store


def _digests(store) -> dict[str, str]:
    return {t.table: t.digest for t in store_digest(store)}


def test_same_content_same_digest_and_one_changed_value_shows(tmp_path):
    spec = SyntheticStoreSpec(12, 2, 2, 2, with_images=False)
    first = build_store(tmp_path / "a", spec)
    second = build_store(tmp_path / "b", spec)
    assert _digests(first) == _digests(second)  # other workdir path, other clock: same digest
    con = duckdb.connect(str(second))
    con.execute("UPDATE artist_scores SET value = value + 1e-3 WHERE rowid = (SELECT min(rowid) FROM artist_scores)")
    con.close()
    changed = {t for t, d in _digests(second).items() if _digests(first)[t] != d}
    assert changed == {"artist_scores"}
