"""ScoreConfig's fingerprint (declared result fields only) and a missing catalog."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pytest
from support.scoring import make_workdir

from evaluator.errors import InputError
from evaluator.scoring.run import ScoreConfig, score
from evaluator.testing.tiny_clip import build_tiny_clip


def test_every_field_declares_whether_it_changes_results():
    undeclared = [f.name for f in fields(ScoreConfig) if "fingerprint" not in f.metadata]
    assert not undeclared


def test_fingerprint_is_the_one_stored_before_fields_were_declared():
    """Stores scored before the declarations keep their fingerprint: no rescoring."""
    operational = ("progress", "lock_timeout", "store_timeout", "num_workers", "batch_size", "part_size")
    for cfg in (ScoreConfig(model="m", bootstrap=200), ScoreConfig(model="m", catalog_path=Path("/x.csv"), base_pairs=[("a", "b")])):
        old = {k: v for k, v in asdict(cfg).items() if k not in operational}
        assert cfg.fingerprint() == hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:16]
    # the demo store's fingerprint of its config, as written by the code before (it changed
    # on purpose three times: issue 11's retrieval_ks/readout/csls_k change stored values,
    # issue 19's index layout fields change the index past the exact threshold, and issue
    # 18's min_effect changes verdicts, with the units of a bootstrap numbered in sorted
    # order so that a rescore reproduces every interval)
    assert ScoreConfig(model="/tmp/demo_before/models/clip", bootstrap=200).fingerprint() == "0e089523598af0c4"


def test_a_new_operational_field_keeps_the_fingerprint_and_a_new_result_field_changes_it():
    @dataclass
    class WithOperational(ScoreConfig):
        log_every: int = field(default=100, metadata={"fingerprint": False})

    @dataclass
    class WithResult(ScoreConfig):
        trim_outliers: float = field(default=0.0, metadata={"fingerprint": True})

    base = ScoreConfig(model="m").fingerprint()
    assert WithOperational(model="m").fingerprint() == base
    assert WithOperational(model="m", log_every=5).fingerprint() == base
    assert WithResult(model="m").fingerprint() != base
    assert ScoreConfig(model="m", progress=False, num_workers=0, store_timeout=1.0).fingerprint() == base
    assert ScoreConfig(model="m", bootstrap=10).fingerprint() != base


def test_a_field_without_a_declaration_is_refused():
    @dataclass
    class Undeclared(ScoreConfig):
        mystery: int = 0

    with pytest.raises(TypeError, match="mystery must be declared"):
        Undeclared(model="m").fingerprint()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


def test_scoring_with_a_missing_catalog_fails_naming_it_and_the_fix(clip_dir, tmp_path):
    make_workdir(tmp_path)
    missing = tmp_path / "no-such-styles.csv"
    cfg = ScoreConfig(model=str(clip_dir), catalog_path=missing, bootstrap=10, num_workers=0, progress=False)
    with pytest.raises(InputError, match="--catalog") as caught:
        score(tmp_path, cfg)
    assert str(missing) in str(caught.value) and "ATELIER_CATALOG" in str(caught.value)
    assert not (tmp_path / "atelier.duckdb").exists()  # stopped before any write


def test_a_missing_default_catalog_is_an_error_not_a_guess(clip_dir, tmp_path, monkeypatch):
    make_workdir(tmp_path)
    missing = tmp_path / "gone.csv"
    monkeypatch.setenv("ATELIER_CATALOG", str(missing))
    cfg = ScoreConfig(model=str(clip_dir), bootstrap=10, num_workers=0, progress=False)
    with pytest.raises(InputError, match="ATELIER_CATALOG") as caught:
        score(tmp_path, cfg)
    assert str(missing) in str(caught.value)
