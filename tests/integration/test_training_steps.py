"""on_saved_step end to end on tiny models: records, the step as a checkpoint, validation
images through the runner, figures, idempotence, failures recorded, and generate/score taking it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from support.gen import tiny_lora, tiny_pipeline

from evaluator.generation.checkpoints import load_checkpoints
from evaluator.testing.tiny_clip import build_tiny_clip
from evaluator.training.dataset import load_dataset
from evaluator.training.split import split_items
from evaluator.training.steps import SavedStep, on_saved_step, step_checkpoint_name

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


class Config:
    """The TrainingConfig fields on_saved_step reads (kept small: tiny sizes, 2 sampler steps)."""

    def __init__(self, clip: Path | None, prompts: list[str]) -> None:
        self.method, self.base, self.output_name, self.resolution = "lora", "tiny", "mystyle", 64
        self.validation_prompts, self.validation_seeds = prompts, [0, 1]
        self.validation_inference_steps, self.validation_guidance = 2, 5.0
        self.validation_clip_model = str(clip) if clip else None
        self.device, self.dataset = "cpu", ""


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("train-steps")
    pipe = tiny_pipeline(tmp_path_factory)
    toml = root / "checkpoints.toml"
    toml.write_text(f'[[checkpoint]]\nname = "tiny"\nsource = "{pipe}"\n')
    data = root / "data" / "4_starry"
    data.mkdir(parents=True)
    for src in sorted((shared_data / "images" / "paintings").glob("*.jpg"))[:8]:
        shutil.copy(src, data / src.name)
    dataset = load_dataset(root / "data")
    return {
        "root": root, "toml": toml, "lora": tiny_lora(tmp_path_factory), "dataset": dataset,
        "split": split_items(dataset.items, 0.3, seed=0), "clip": build_tiny_clip(root / "clip", seed=0),
        "base": load_checkpoints(toml)["tiny"],
    }


def saved_step(world, workdir: Path, step: int, weights: list[Path] | None = None, clip=True,
               prompts=("a lighthouse, starry", "a cat, starry")) -> SavedStep:
    step_dir = workdir / "training" / "mystyle" / f"step-{step:06d}"
    step_dir.mkdir(parents=True, exist_ok=True)
    if weights is None:
        weights = [shutil.copy(world["lora"], step_dir / "pytorch_lora_weights.safetensors")]
    return SavedStep(
        workdir=workdir, config=Config(world["clip"] if clip else None, list(prompts)), output_name="mystyle",
        step=step, step_dir=step_dir, train_loss=0.5, val_loss=0.4, lr=1e-4, seconds=3.0, split=world["split"],
        method="lora", weights=[Path(w) for w in weights], run_id="train-test-1", base=world["base"],
        dataset=world["dataset"],
    )


def rows(workdir: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_saved_step_is_recorded_generated_and_scored(world, tmp_path):
    wd = tmp_path / "wd"
    report = on_saved_step(saved_step(world, wd, 10))
    name = step_checkpoint_name("mystyle", 10)
    assert report.errors == [] and report.images == 4, report.line()
    # the step is a checkpoint of the workdir's own file, with the training base as base
    specs = load_checkpoints(wd / "training" / "checkpoints.toml")
    assert specs[name].base == "tiny" and specs[name].lora[0].path.name == "pytorch_lora_weights.safetensors"
    record = json.loads((wd / "checkpoints" / f"{name}.json").read_text())
    assert record["base"] == "tiny" and record["fingerprint"]
    # rows
    assert rows(wd, "SELECT output_name, base, n_train, n_validation FROM training_runs") == [
        ("mystyle", "tiny", len(world["split"].train), len(world["split"].validation))]
    assert rows(wd, "SELECT count(*), count(DISTINCT side) FROM training_split") == [(8, 2)]
    # step 0 is the base's own figures and images, where the curves start
    assert rows(wd, "SELECT step, checkpoint, validation_status FROM training_steps ORDER BY step") == [
        (0, "tiny", "ok"), (10, name, "ok")]
    images = rows(wd, "SELECT path, seed FROM training_images WHERE step = 10 ORDER BY path")
    assert len(images) == 4 and all((wd / p).is_file() for p, _ in images) and {s for _, s in images} == {0, 1}
    assert all(p.startswith("images/tiny/") for (p,) in rows(wd, "SELECT path FROM training_images WHERE step = 0"))
    base_retrieval = rows(wd, "SELECT value, reason FROM training_metrics WHERE step = 0 AND metric LIKE 'retrieval%'")
    assert base_retrieval[0][0] is None and "distractors" in base_retrieval[0][1]
    figures = dict(rows(wd, "SELECT metric, value FROM training_metrics WHERE step = 10"))
    assert {"reference_similarity", "retrieval_map@10", "memorization_max", "memorization_mean",
            "memorization_heldout", "clip_score"} <= set(figures)
    assert all(v is not None for v in figures.values()), figures
    assert -1 <= figures["memorization_mean"] <= figures["memorization_max"] <= 1
    memo = rows(wd, "SELECT nearest_path, similarity FROM training_memorization WHERE step = 10")
    train_paths = {str(i.path) for i in world["split"].train}
    assert len(memo) == 4 and all(p in train_paths for p, _ in memo)
    # the held-out images are the concept's reference works, for `atelier score` too
    held_out = {i.sha256 for i in world["split"].validation}
    refs = rows(wd, "SELECT i.source_sha256 FROM reference_images r JOIN images i USING (image_id) "
                    "WHERE r.artist_id = 'starry'")
    assert {sha for (sha,) in refs} == held_out

    # a second call for the same step (a resume after a kill inside it): same rows, none doubled
    on_saved_step(saved_step(world, wd, 10))
    assert rows(wd, "SELECT count(*) FROM training_images") == [(8,)]
    assert rows(wd, "SELECT count(*) FROM training_steps") == [(2,)]
    assert rows(wd, "SELECT count(*) FROM training_memorization") == [(8,)]

    # atelier score --compare base:<output_name>@step-NNNNNN takes it unchanged
    from click.testing import CliRunner

    from evaluator.cli.main import main

    catalog = tmp_path / "styles.csv"  # 30 artists: the score's text side stays small
    catalog.write_text("".join((REPO / "styles.csv").read_text(encoding="utf-8").splitlines(keepends=True)[:31]))
    result = CliRunner().invoke(main, ["score", "-w", str(wd), "--model", str(world["clip"]), "--bootstrap", "20",
                                      "--num-workers", "0", "--quiet", "--catalog", str(catalog),
                                      "--compare", f"tiny:{name}"])
    assert result.exit_code == 0, result.output
    compared = rows(wd, f"SELECT DISTINCT base, finetune FROM comparisons WHERE finetune = '{name}'")
    assert compared == [("tiny", name)]
    style = rows(wd, f"SELECT base_value, finetune_value FROM comparisons WHERE finetune = '{name}' "
                     "AND artist_id = 'starry' AND metric = 'reference_similarity'")
    assert len(style) == 1 and all(v is not None for v in style[0])


def test_generate_merges_the_workdir_checkpoints(world, tmp_path):
    from catalog.units import WorkUnit
    from evaluator.generation.runner import GenerateConfig, generate

    wd = tmp_path / "wd"
    on_saved_step(saved_step(world, wd, 20, clip=False, prompts=()))
    unit = WorkUnit(step_checkpoint_name("mystyle", 20), "starry", "plain", "a house", "", 3, 64, 64, 2, 5.0, "default")
    summary = generate([unit], world["toml"], wd, GenerateConfig(progress=False))  # the user's file alone
    assert summary.done == 1 and (wd / "images" / unit.relpath()).is_file()


def test_validation_failures_are_recorded_not_raised(world, tmp_path):
    wd = tmp_path / "wd"
    broken = tmp_path / "pytorch_lora_weights.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    report = on_saved_step(saved_step(world, wd, 30, weights=[broken]))
    assert report.errors and report.validation_status == "failed"
    status, error = rows(wd, "SELECT validation_status, validation_error FROM training_steps WHERE step = 30")[0]
    assert status == "failed" and "fail" in error.lower()
    no_clip = on_saved_step(saved_step(world, wd, 40, clip=False))
    assert any("no CLIP model" in e for e in no_clip.errors)
    reasons = rows(wd, "SELECT value, reason FROM training_metrics WHERE step = 40")
    assert reasons and all(v is None and r for v, r in reasons)


@pytest.mark.parametrize("name, ok", [
    ("mystyle@step-000100", True), ("my.style-2@step-999999", True), ("mystyle", True),
    ("mystyle@step-12", False), ("a@b", False), ("@step-000001", False), (".x@step-000001", False),
    ("mystyle@step-000100@step-000200", False),
])
def test_step_names_pass_the_checkpoint_name_rule(tmp_path, name, ok):
    """Only the one '@' form is a checkpoint name: in the TOML and in a plan."""
    from catalog.plan import CHECKPOINT_NAME_PATTERN
    from evaluator.generation.checkpoints import CheckpointError

    toml = tmp_path / "c.toml"
    toml.write_text(f'[[checkpoint]]\nname = "{name}"\nsource = "org/model"\n')
    assert bool(CHECKPOINT_NAME_PATTERN.match(name)) is ok
    if ok:
        assert name in load_checkpoints(toml)
    else:
        with pytest.raises(CheckpointError, match="must match"):
            load_checkpoints(toml)


@pytest.mark.parametrize("method", ["textual_inversion", "full"])
def test_textual_inversion_and_full_steps_are_checkpoints_too(world, tmp_path, tmp_path_factory, method):
    from support.gen import tiny_finetune

    from evaluator.testing.tiny import build_textual_inversion

    wd = tmp_path / "wd"
    step_dir = wd / "training" / "mystyle" / "step-000005"
    step_dir.mkdir(parents=True)
    if method == "textual_inversion":
        weights = [build_textual_inversion(tiny_pipeline(tmp_path_factory), step_dir / "learned_embeds.safetensors",
                                           token="<starry>")]
    else:
        weights = [shutil.copytree(tiny_finetune(tmp_path_factory), step_dir / "mystyle")]
    saved = saved_step(world, wd, 5, weights=weights, clip=False, prompts=("a lighthouse, <starry>",))
    saved.method = method
    saved.config.placeholder_token = "<starry>"
    report = on_saved_step(saved)
    assert report.images == 2 and report.failed_images == 0, report.line()  # 1 prompt x 2 seeds
    spec = load_checkpoints(wd / "training" / "checkpoints.toml")[step_checkpoint_name("mystyle", 5)]
    assert spec.base == "tiny"
    if method == "textual_inversion":
        assert [(t.path, t.token) for t in spec.textual_inversion] == [(weights[0], "<starry>")]
    else:
        assert spec.source_type == "folder" and Path(spec.source) == weights[0]
