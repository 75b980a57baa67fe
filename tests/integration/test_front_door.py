"""Wrong order, wrong names: each gets an error that says the fix, or works from what exists."""

from __future__ import annotations

import shutil

import duckdb
import pytest
from click.testing import CliRunner

from evaluator.cli.main import main


@pytest.fixture(scope="module")
def unscored_workdir(pipeline_workdir, tmp_path_factory):
    """The demo's generated images and manifests, before any `score` (no store, no embeddings)."""
    workdir = tmp_path_factory.mktemp("unscored")
    for part in ("images", "manifests", "thumbs", "models"):
        shutil.copytree(pipeline_workdir / part, workdir / part)
    return workdir


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_index_build_before_embed_says_to_embed_and_writes_no_index(unscored_workdir):
    clip = unscored_workdir / "models" / "clip"
    result = _run("index", "build", "-w", unscored_workdir, "--model", clip)
    assert result.exit_code == 1
    assert "no embeddings" in result.output and "atelier embed" in result.output
    assert not (unscored_workdir / "index").exists() or not any((unscored_workdir / "index").iterdir())


def test_search_before_score_describes_hits_from_the_manifests(unscored_workdir):
    clip = unscored_workdir / "models" / "clip"
    assert _run("embed", "-w", unscored_workdir, "--model", clip).exit_code == 0
    assert _run("index", "build", "-w", unscored_workdir, "--model", clip).exit_code == 0
    con = duckdb.connect(str(unscored_workdir / "atelier.duckdb"), read_only=True)  # made by index's run record
    try:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 0  # nothing scored yet
    finally:
        con.close()
    result = _run("search", "-w", unscored_workdir, "--model", clip, "--text", "a portrait", "-k", "5")
    assert result.exit_code == 0, result.output
    hits = [line for line in result.output.splitlines()[2:] if line.strip()]
    assert len(hits) == 5
    for line in hits:
        assert "?" not in line
        checkpoint = line.split()[3]
        assert checkpoint in {"base", "ft-lora", "ft-weights"}


def test_a_misspelled_clip_folder_is_named_with_the_close_folder(unscored_workdir):
    typo = unscored_workdir / "models" / "clp"
    result = _run("index", "build", "-w", unscored_workdir, "--model", typo)
    assert result.exit_code == 1
    assert f"CLIP folder {typo} does not exist" in result.output
    assert f"did you mean {unscored_workdir / 'models' / 'clip'}" in result.output
    assert "unknown open_clip model" not in result.output


def _atelier(*args, env=None, timeout=600):
    import os
    import subprocess
    import sys
    from pathlib import Path

    atelier = str(Path(sys.executable).with_name("atelier"))
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([atelier, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.mark.slow
def test_an_unreachable_hub_is_said_once_and_fails_in_one_line(pipeline_workdir):
    # A closed port on loopback: the hub "cannot be reached" here whatever the machine's network.
    done = _atelier("search", "-w", pipeline_workdir, "--model", "ViT-B-32", "--pretrained", "openai",
                    "--text", "a portrait", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": ""})
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "model hub (127.0.0.1) is unreachable" in lines[0]
    assert lines[1].startswith("Error: cannot load weights for ViT-B-32/openai") and "--pretrained PATH" in lines[1]


@pytest.mark.slow
def test_report_prints_only_what_it_wrote(pipeline_workdir, tmp_path):
    done = _atelier("report", "--workdir", pipeline_workdir, "--out", tmp_path / "report.html")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [f"wrote {tmp_path / 'report.html'}", f"wrote {tmp_path / 'report.md'}"]


def test_report_on_an_older_store_says_to_migrate(pipeline_workdir, tmp_path):
    from evaluator.workspace.store import SCHEMA_VERSION

    shutil.copy(pipeline_workdir / "atelier.duckdb", tmp_path / "atelier.duckdb")
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"))
    con.execute("DELETE FROM schema_migrations WHERE version = ?", [SCHEMA_VERSION])  # as a store of the last release
    con.close()
    result = _run("report", "--workdir", tmp_path, "--out", tmp_path / "r.html")
    assert result.exit_code == 1
    assert f"atelier migrate --workdir {tmp_path}" in result.output
    assert not (tmp_path / "r.html").exists()
