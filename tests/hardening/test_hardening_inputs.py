"""Bad inputs of issue 7 that no other test covered, each with its expected outcome.

The full table (every case -> outcome -> test) is in docs/HARDENING.md. Covered
elsewhere: the catalog corpus (tests/corpus/catalogs, test_catalog_validate), the image
corpus through `import` (tests/corpus/images, test_import_images), bad weight files
and pickles at library level (tests/corpus/checkpoints, test_checkpoints_toml).
Here: WebP (truncated, animated), truncated JPEG, grayscale/LA/RGBA/16-bit through
`import` *and* `score` (every imported image embeds), every invalid catalog of the corpus
refused by the commands that consume a catalog (not only `validate`), and the
checkpoint cases through the CLI.
"""

from __future__ import annotations

import io
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support.hardening import REPO, run_atelier, tiny_models, write_catalog

from evaluator.cli.main import main

# Real subprocesses, kills, full disks: minutes in all, so outside the quick subset.
pytestmark = pytest.mark.slow

CORPUS = REPO / "tests" / "corpus"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory)


def _noise(size=(24, 24), seed=0, channels=3) -> np.ndarray:
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _odd_images(folder: Path) -> dict[str, str | None]:
    """Write the files; return file -> expected failure text (None: imported)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}
    Image.fromarray(_noise(seed=1)).save(folder / "still.webp", quality=90)
    expected["still.webp"] = None
    frames = [Image.fromarray(_noise(seed=s)) for s in (2, 3, 4)]
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], duration=80, loop=0)
    expected["animated.webp"] = None
    buffer = io.BytesIO()
    Image.fromarray(_noise((64, 64), seed=5)).save(buffer, format="WEBP", quality=90)
    (folder / "truncated.webp").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expected["truncated.webp"] = "corrupt"
    buffer = io.BytesIO()
    Image.fromarray(_noise((64, 64), seed=6)).save(buffer, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expected["truncated.jpg"] = "truncated"
    Image.fromarray(_noise(seed=7, channels=1), mode="L").save(folder / "gray.png")
    expected["gray.png"] = None
    Image.fromarray(_noise(seed=8, channels=2), mode="LA").save(folder / "gray-alpha.png")
    expected["gray-alpha.png"] = None
    Image.fromarray(_noise(seed=9, channels=4), mode="RGBA").save(folder / "rgba.webp", lossless=True)
    expected["rgba.webp"] = None
    (folder / "zero.webp").write_bytes(b"")
    expected["zero.webp"] = "empty file (0 bytes)"
    (folder / "text.jpg").write_text("just some words, not a JPEG\n")
    expected["text.jpg"] = "not an image"
    return expected


def test_more_image_formats_import_or_fail_with_their_reason_and_every_import_embeds(models, tmp_path):
    from evaluator.ingest.importer import import_images
    from evaluator.scoring.run import ScoreConfig, score

    src = tmp_path / "odd"
    expected = _odd_images(src)
    wd = tmp_path / "wd"
    summary = import_images(src, wd, checkpoint="ext", progress=False)
    failed = dict(summary.failed)
    assert set(failed) == {f for f, e in expected.items() if e}, failed
    for name, text in expected.items():
        if text:
            assert text in failed[name], (name, failed[name])
    notes = dict(summary.notes)
    assert notes["animated.webp"] == "animated (3 frames): first frame kept"
    assert notes["gray.png"] == "L converted to RGB"
    assert notes["gray-alpha.png"] == "LA with alpha composited on white"
    assert notes["rgba.webp"] == "RGBA with alpha composited on white"
    # nothing lost: one row per image file, failures carry their reason
    import duckdb

    con = duckdb.connect(str(wd / "atelier.duckdb"), read_only=True)
    try:
        total, distinct, errors = con.execute("SELECT count(*), count(DISTINCT image_id), count(error) FROM images").fetchone()
    finally:
        con.close()
    assert (total, distinct, errors) == (len(expected), len(expected), len(failed))
    # every imported image is a plain RGB PNG that the scorer can embed
    catalog = write_catalog(tmp_path / "styles.csv")
    result = score(wd, ScoreConfig(model=str(models.clip), catalog_path=catalog, bootstrap=10, num_workers=0, progress=False))
    assert result.n_failed == 0
    assert result.n_images + len(failed) == len(expected)


# ------------------------------------------------------------------ catalogs, through the commands that use them


def _invalid_catalogs() -> list[tuple[str, int]]:
    cases = tomllib.loads((CORPUS / "catalogs" / "cases.toml").read_text())["case"]
    out = []
    for case in cases:
        if not case["valid"]:
            errors = [p for p in case["problems"] if p[0] == "error"]
            out.append((case["file"], errors[0][1]))
    return out


@pytest.mark.parametrize("name, line", _invalid_catalogs())
def test_every_invalid_catalog_is_refused_by_plan_and_list_naming_file_and_line(tmp_path, name, line):
    path = CORPUS / "catalogs" / name
    runner = CliRunner()
    for args in (["plan", "--catalog", str(path), "--templates", "style", "--seeds", "0", "--checkpoints", "base",
                  "--out", str(tmp_path / "plan.parquet")],
                 ["catalog", "list", "--catalog", str(path)]):
        result = runner.invoke(main, args)
        assert result.exit_code != 0, (args, result.output)
        assert name in result.output, result.output
        assert f"{line}" in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "plan.parquet").exists()  # nothing half-written


def test_an_invalid_catalog_given_to_score_is_refused_and_the_store_is_untouched(models, tmp_path):
    from support.scoring import make_workdir

    make_workdir(tmp_path / "wd", checkpoints=("base",), seeds=(0,))
    bad = CORPUS / "catalogs" / "duplicate_id.csv"
    result = run_atelier("score", "-w", str(tmp_path / "wd"), "--model", str(models.clip), "--catalog", str(bad),
                         "--num-workers", "0", "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "duplicate_id.csv" in result.stderr and "duplicate artist_id 'claude-monet'" in result.stderr
    assert not (tmp_path / "wd" / "atelier.duckdb").exists()


# ------------------------------------------------------------------ checkpoints, through the CLI


def _plan(root: Path, checkpoint: str) -> Path:
    from catalog.plan import write_plan
    from catalog.units import WorkUnit

    unit = WorkUnit(checkpoint, "claude-monet", "style", "a painting by Claude Monet", "", 0, 64, 64, 2, 5.0, "default")
    return write_plan([unit], root / "plan.jsonl")


# refused: `generate` stops before any work (exit 1). recorded: the file passes the
# up-front checks and fails at load; the run goes on, each unit of that checkpoint is
# recorded failed with the reason (exit 0, "1 failed"; --retry-failed makes them again).
@pytest.mark.parametrize(
    "source, setup, outcome, expected",
    [
        ("missing/model.safetensors", None, "refused", "does not exist"),
        ("not-a-model", "folder", "refused", "is not a diffusers pipeline (no model_index.json)"),
        ("empty.safetensors", "empty.safetensors", "refused", "is empty (0 bytes)"),
        ("model.ckpt", "tensors.ckpt", "refused", "--allow-pickle"),
        ("corrupt.safetensors", "truncated.safetensors", "recorded", "not a readable .safetensors file"),
        ("text.safetensors", "text.safetensors", "recorded", "not a readable .safetensors file"),
        ("vae-only.safetensors", "not-sd.safetensors", "recorded", "cannot tell SD 1.x / 2.x / SDXL"),
    ],
)
def test_bad_checkpoints_through_generate_name_file_and_reason(tmp_path, source, setup, outcome, expected):
    from evaluator.workspace.manifest import read_manifests

    if setup == "folder":
        (tmp_path / source).mkdir()
        (tmp_path / source / "weights.bin").write_bytes(b"\0" * 64)
    elif setup:
        shutil.copy(CORPUS / "checkpoints" / setup, tmp_path / source)
    toml = tmp_path / "ck.toml"
    toml.write_text(f'[[checkpoint]]\nname = "bad"\nsource = "{source}"\n')
    wd = tmp_path / "wd"
    result = run_atelier("generate", "--plan", str(_plan(tmp_path, "bad")), "--checkpoints", str(toml), "-w", str(wd),
                         "--no-progress")
    assert "Traceback" not in result.stderr
    assert expected in result.stderr and "ck.toml" in result.stderr, result.stderr
    assert not (wd / "images").exists() or not list((wd / "images").rglob("*.png"))
    if outcome == "refused":
        assert result.returncode == 1, result.stdout + result.stderr
        assert not (wd / "manifests").exists()
    else:
        assert result.returncode == 0 and "0 made" in result.stdout and "1 failed" in result.stdout
        frame = read_manifests(wd / "manifests")
        assert len(frame) == 1 and expected in frame["error"].iloc[0] and "checkpoint 'bad'" in frame["error"].iloc[0]
