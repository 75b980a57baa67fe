"""The generation runner on tiny random-weight SD 1.x / SDXL pipelines (CPU, offline)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.gen import (
    REPO,
    tiny_finetune,
    tiny_lora,
    tiny_pipeline,
    tiny_single_file,
    units_for,
    write_toml,
)

from evaluator.generation.runner import GenerateConfig, GenerateError, generate
from evaluator.workspace.records import load_checkpoint_records, load_run_records


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    sd1 = tiny_pipeline(tmp_path_factory, "sd1")
    broken = tmp_path_factory.mktemp("nan") / "nan-sd1"
    shutil.copytree(sd1, broken)
    from safetensors.torch import load_file, save_file

    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_out.bias"].fill_(float("nan"))
    save_file(state, str(weights))
    return {
        "sd1": sd1,
        "sdxl": tiny_pipeline(tmp_path_factory, "sdxl"),
        "lora": tiny_lora(tmp_path_factory, "sd1"),
        "ft": tiny_finetune(tmp_path_factory, "sd1"),
        "single": tiny_single_file(tmp_path_factory, "sd1"),
        "nan": broken,
    }


@pytest.fixture(scope="module")
def checkpoints(models, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpts")
    shutil.copy(models["lora"], folder / "lora.safetensors")
    return write_toml(folder / "checkpoints.toml", f"""
[[checkpoint]]
name = "base"
source = "{models['sd1']}"

[[checkpoint]]
name = "ft-lora"
base = "base"
lora = [{{ path = "lora.safetensors", scale = 1.0 }}]

[[checkpoint]]
name = "ft-weights"
source = "{models['ft']}"
base = "base"

[[checkpoint]]
name = "single"
source = "{models['single']}"
config = "{models['sd1']}"

[[checkpoint]]
name = "xl"
source = "{models['sdxl']}"

[[checkpoint]]
name = "broken"
source = "{models['nan']}"
""")


def pixels(workdir: Path, unit) -> np.ndarray:
    with Image.open(workdir / "images" / unit.relpath()) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


# One torch thread: on a busy 2-core machine two spinning OpenMP threads run ~10x slower.
CFG = dict(progress=False, batch_size=4, threads=1)


def test_generate_writes_images_metadata_thumbs_and_records(tmp_path, checkpoints):
    from evaluator.generation.pngmeta import parse_parameters
    from evaluator.workspace.manifest import MANIFEST_COLUMNS, read_manifests
    from evaluator.workspace.store import open_store

    units = units_for(["base", "xl"], negative="blurry")
    summary = generate(units, checkpoints, tmp_path, GenerateConfig(**CFG))
    assert (summary.done, summary.failed, summary.skipped) == (8, 0, 0)
    for unit in units:
        path = tmp_path / "images" / unit.relpath()
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.format == "PNG"
            params = parse_parameters(image.text["parameters"])
            chunk = json.loads(image.text["atelier"])
        assert params["prompt"] == unit.prompt and params["negative_prompt"] == "blurry"
        assert (params["seed"], params["steps"], params["guidance"]) == (unit.seed, unit.steps, unit.guidance)
        assert (params["width"], params["height"], params["model"]) == (64, 64, unit.checkpoint)
        assert params["sampler"] == "Euler" and len(params["model_hash"]) == 10
        assert chunk["unit_id"] == unit.unit_id
        with Image.open(tmp_path / "thumbs" / unit.relpath(".jpg")) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 192
    frame = read_manifests(tmp_path / "manifests")
    assert list(frame.columns) == list(MANIFEST_COLUMNS)
    assert sorted(frame["unit_id"]) == sorted(u.unit_id for u in units)
    assert frame["error"].isna().all() and frame["path"].str.startswith("images/").all()
    # run and checkpoint records carry exactly the store's columns
    with open_store(tmp_path / "probe.duckdb") as con:
        run_cols = [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
        ckpt_cols = [r[0] for r in con.execute("DESCRIBE checkpoints").fetchall()]
    (run,) = load_run_records(tmp_path)
    assert set(run) == set(run_cols)
    assert run["n_done"] == 8 and run["device"] == "cpu" and run["dtype"] == "float32"
    assert json.loads(run["versions"])["diffusers"] and json.loads(run["config"])["batch_size"] == 4
    records = {r["name"]: r for r in load_checkpoint_records(tmp_path)}
    assert set(records) == {"base", "xl"} and set(records["base"]) == set(ckpt_cols)
    assert records["xl"]["kind"] == "sdxl" and records["base"]["fingerprint"].startswith("quick:")


def test_same_unit_is_bit_identical_and_close_across_batch_sizes(tmp_path, checkpoints):
    units = units_for(["base"], artists=("monet", "hokusai", "klimt", "turner"), seeds=(7,))
    generate(units, checkpoints, tmp_path / "a", GenerateConfig(**CFG))
    generate(units, checkpoints, tmp_path / "b", GenerateConfig(**CFG))
    generate(units, checkpoints, tmp_path / "c", GenerateConfig(progress=False, batch_size=1, threads=1))
    for unit in units:
        a, b, c = pixels(tmp_path / "a", unit), pixels(tmp_path / "b", unit), pixels(tmp_path / "c", unit)
        assert np.array_equal(a, b)  # same batch composition: bit-identical
        assert np.abs(a - c).max() <= 1  # alone vs in a batch of 4: within 1/255
    # different prompts differ: the comparison above is not vacuous
    assert not np.array_equal(pixels(tmp_path / "a", units[0]), pixels(tmp_path / "a", units[1]))


def test_lora_finetune_and_single_file_versus_base(tmp_path, checkpoints):
    names = ["base", "ft-lora", "ft-weights", "single"]
    units = units_for(names, artists=("monet",), seeds=(3,))
    summary = generate(units, checkpoints, tmp_path, GenerateConfig(**CFG))
    assert summary.done == 4
    by_name = {u.checkpoint: pixels(tmp_path, u) for u in units}
    assert np.array_equal(by_name["single"], by_name["base"])  # single file == its folder
    assert np.abs(by_name["ft-lora"] - by_name["base"]).max() > 0  # the LoRA changes the image
    assert np.abs(by_name["ft-weights"] - by_name["base"]).max() > 0
    fingerprints = {r["name"]: r["fingerprint"] for r in load_checkpoint_records(tmp_path)}
    assert len(set(fingerprints.values())) == 4  # LoRA is part of the fingerprint


def test_textual_inversion_token_changes_the_image(tmp_path, models):
    from catalog.units import WorkUnit
    from evaluator.testing.tiny import build_textual_inversion

    build_textual_inversion(models["sd1"], tmp_path / "wc.safetensors", token="<wc>")
    toml = write_toml(tmp_path / "ck.toml", f"""
[[checkpoint]]
name = "base"
source = "{models['sd1']}"

[[checkpoint]]
name = "ti"
base = "base"
textual_inversion = [{{ path = "wc.safetensors", token = "<wc>" }}]
""")
    units = [WorkUnit(c, "wc", "style", "a harbour, <wc> style", "", 5, 64, 64, 3, 5.0, "default") for c in ("base", "ti")]
    summary = generate(units, toml, tmp_path / "wd", GenerateConfig(**CFG))
    assert summary.done == 2
    assert np.abs(pixels(tmp_path / "wd", units[0]) - pixels(tmp_path / "wd", units[1])).max() > 0


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, checkpoints):
    from evaluator.workspace.manifest import read_manifests

    units = units_for(["broken", "base"], artists=("monet",))
    summary = generate(units, checkpoints, tmp_path, GenerateConfig(**CFG))
    assert (summary.done, summary.failed) == (2, 2)
    frame = read_manifests(tmp_path / "manifests").set_index("checkpoint")
    assert frame.loc["broken", "error"].str.contains("NaN").all()
    assert frame.loc["base", "error"].isna().all()
    assert not (tmp_path / "images" / "broken").exists()
    # a rerun skips failed units; --retry-failed tries them again
    again = generate(units, checkpoints, tmp_path, GenerateConfig(**CFG))
    assert (again.done, again.failed, again.skipped) == (0, 0, 4)
    retry = generate(units, checkpoints, tmp_path, GenerateConfig(retry_failed=True, **CFG))
    assert (retry.done, retry.failed, retry.skipped) == (0, 2, 2)
    assert load_run_records(tmp_path)[0]["status"] == "failed-units"


def test_oom_halves_the_batch():
    from evaluator.generation.runner import run_with_backoff

    calls, sizes = [], []

    def run(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in batch]

    results = run_with_backoff(list(range(8)), run, on_oom=sizes.append)
    assert [out for _, out, _ in results] == [x * 10 for x in range(8)]
    assert calls[0] == 8 and max(calls[1:]) <= 4 and sizes[0] == 4 and min(sizes) == 2

    def bad(batch):  # a non-OOM error is isolated to the unit that causes it
        if 3 in batch:
            raise ValueError("boom")
        return batch

    results = run_with_backoff([1, 2, 3, 4], bad)
    assert [err for _, _, err in results] == [None, None, "ValueError: boom", None]


def test_unknown_checkpoint_and_bad_units_fail_up_front(tmp_path, checkpoints):
    with pytest.raises(GenerateError, match="'bsae' is not in the checkpoints file; did you mean 'base'"):
        generate(units_for(["bsae"]), checkpoints, tmp_path, GenerateConfig(**CFG))
    with pytest.raises(GenerateError, match="width must be a positive multiple of 8 but is 60"):
        generate(units_for(["base"], size=60), checkpoints, tmp_path, GenerateConfig(**CFG))
    with pytest.raises(GenerateError, match="unknown scheduler 'eular'; did you mean 'euler'"):
        generate(units_for(["base"], scheduler="eular"), checkpoints, tmp_path, GenerateConfig(**CFG))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1 but is 0"):
        generate(units_for(["base"]), checkpoints, tmp_path, GenerateConfig(batch_size=0, threads=1))
    assert not (tmp_path / "images").exists()


def test_pickle_checkpoint_refused_then_loaded_with_allow_pickle(tmp_path, models):
    import torch
    from safetensors.torch import load_file

    from evaluator.generation.checkpoints import PickleRefusedError

    torch.save({"state_dict": load_file(str(models["single"]))}, str(tmp_path / "model.ckpt"))
    toml = write_toml(tmp_path / "ck.toml", f'[[checkpoint]]\nname = "pk"\nsource = "model.ckpt"\nconfig = "{models["sd1"]}"\n')
    units = units_for(["pk"], artists=("monet",), seeds=(0,))
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        generate(units, toml, tmp_path / "wd", GenerateConfig(**CFG))
    summary = generate(units, toml, tmp_path / "wd", GenerateConfig(allow_pickle=True, **CFG))
    assert summary.done == 1


def test_changed_weights_under_the_same_name_are_refused(tmp_path, models):
    from evaluator.generation.checkpoints import CheckpointChangedError
    from evaluator.testing.tiny import build_tiny_lora

    shutil.copy(models["lora"], tmp_path / "style.safetensors")
    toml = write_toml(tmp_path / "ck.toml", f"""
[[checkpoint]]
name = "ft"
source = "{models['sd1']}"
lora = [{{ path = "style.safetensors" }}]
""")
    generate(units_for(["ft"], seeds=(0,)), toml, tmp_path / "wd", GenerateConfig(**CFG))
    build_tiny_lora(models["sd1"], tmp_path / "style.safetensors", seed=99)  # retrained LoRA, same name
    more = units_for(["ft"], seeds=(1,))
    with pytest.raises(CheckpointChangedError) as info:
        generate(more, toml, tmp_path / "wd", GenerateConfig(**CFG))
    assert "checkpoint 'ft'" in str(info.value) and "lora/style.safetensors (content)" in str(info.value)
    summary = generate(more, toml, tmp_path / "wd", GenerateConfig(allow_changed=True, **CFG))
    assert summary.done == 2


@pytest.mark.slow
def test_resume_after_sigkill_makes_each_unit_once(tmp_path, checkpoints):
    """Kill a generating subprocess mid-run, rerun, and find every image exactly once."""
    from catalog.plan import write_plan
    from evaluator.workspace.manifest import ingest_manifests
    from evaluator.workspace.store import open_store, transaction

    units = units_for(["base"], artists=tuple(f"artist-{i}" for i in range(12)), seeds=(0, 1), steps=4)
    plan = write_plan(units, tmp_path / "plan.jsonl")
    workdir = tmp_path / "wd"
    cmd = [sys.executable, "-m", "evaluator.cli.main", "generate", "--plan", str(plan), "--checkpoints", str(checkpoints),
           "-w", str(workdir), "--batch-size", "2", "--no-progress", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        made = list((workdir / "images").rglob("*.png")) if (workdir / "images").exists() else []
        if len(made) >= 5 or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    made_before = {p.name for p in (workdir / "images").rglob("*.png")}
    assert 0 < len(made_before) < len(units), "the kill should land mid-run"
    # rerun: makes only the missing ones, records the ones the killed run never recorded
    summary = generate(units, checkpoints, workdir, GenerateConfig(progress=False, batch_size=2, threads=1))
    assert summary.done + summary.recovered + summary.skipped == len(units)
    assert summary.done == len(units) - len(made_before)
    pngs = sorted((workdir / "images").rglob("*.png"))
    assert sorted(p.name for p in pngs) == sorted(Path(u.relpath()).name for u in units)
    assert not [p for p in workdir.rglob("*.tmp")]  # no partial files left anywhere
    for path in pngs:
        with Image.open(path) as image:
            image.load()  # every image decodes completely
    with open_store(workdir / "atelier.duckdb") as con:
        with transaction(con):
            ingest_manifests(con, workdir / "manifests")
        with transaction(con):
            ingest_manifests(con, workdir / "manifests")  # twice: still no duplicates
        rows = con.execute("SELECT count(*), count(DISTINCT unit_id), count(error) FROM images").fetchone()
    assert rows == (len(units), len(units), 0)


def test_cli_generate_and_checkpoints_commands(tmp_path, checkpoints):
    from click.testing import CliRunner

    from catalog.plan import write_plan
    from evaluator.cli.main import main

    plan = write_plan(units_for(["base"], seeds=(0,)), tmp_path / "plan.parquet")
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "--plan", str(plan), "--checkpoints", str(checkpoints), "-w", str(tmp_path / "wd"),
                                  "--batch-size", "2", "--no-progress", "--limit", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "1 made" in result.output
    result = runner.invoke(main, ["generate", "--plan", str(plan), "--checkpoints", str(checkpoints), "-w", str(tmp_path / "wd"), "--no-progress", "--threads", "1"])
    assert result.exit_code == 0 and "1 made, 1 skipped" in result.output
    listed = runner.invoke(main, ["checkpoints", "list", str(checkpoints)])
    assert listed.exit_code == 0 and "ft-lora" in listed.output and "sdxl" in listed.output
    printed = runner.invoke(main, ["checkpoints", "fingerprint", str(checkpoints), "--name", "base"])
    assert printed.exit_code == 0 and printed.output.startswith("base") and "quick:" in printed.output
    typo = runner.invoke(main, ["checkpoints", "fingerprint", str(checkpoints), "--name", "bas"])
    assert typo.exit_code != 0 and "did you mean 'base'" in typo.output


def test_batches_share_settings_and_keep_each_checkpoint_together():
    from evaluator.generation.runner import make_batches

    units = units_for(["a", "b"], steps=3) + units_for(["a"], steps=4) + units_for(["b"], size=128)
    batches = make_batches(units, 3)
    assert [(b[0].checkpoint, b[0].steps, b[0].width, len(b)) for b in batches] == [
        ("a", 3, 64, 3), ("a", 3, 64, 1), ("a", 4, 64, 3), ("a", 4, 64, 1),
        ("b", 3, 64, 3), ("b", 3, 64, 1), ("b", 3, 128, 3), ("b", 3, 128, 1),
    ]
    for batch in batches:
        assert len({(u.checkpoint, u.steps, u.width, u.negative_prompt) for u in batch}) == 1
    assert sorted(u.unit_id for b in batches for u in b) == sorted(u.unit_id for u in units)
