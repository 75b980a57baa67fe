"""`atelier train --resume` after a SIGKILL ends with the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.gen import REPO, tiny_pipeline
from tests.support.training import TINY_TRAINING, planted_style_dataset, toml_text

pytestmark = pytest.mark.slow

STEPS = 8


def _command(config, workdir, *extra):
    return [sys.executable, "-m", "evaluator.cli.main", "train", str(config), "-w", str(workdir), "-q", *extra]


def _env():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def _final_state(workdir):
    from safetensors.torch import load_file

    step = workdir / "training" / "stripes" / f"step-{STEPS:06d}"
    return load_file(str(step / "state" / "trainable.safetensors")), json.loads((step / "step.json").read_text())


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, tmp_path_factory):
    import torch

    pipe = tiny_pipeline(tmp_path_factory, "sd1")
    planted_style_dataset(tmp_path / "data", count=8)
    config = tmp_path / "train.toml"
    config.write_text(toml_text({
        **TINY_TRAINING, "base": str(pipe), "dataset": "data", "output_name": "stripes", "method": "lora",
        "train_text_encoder": True, "max_train_steps": STEPS, "save_every": 2, "lr_scheduler": "cosine",
        "lr_warmup_steps": 2, "gradient_accumulation_steps": 2, "noise_offset": 0.05,
    }))
    straight = subprocess.run(_command(config, tmp_path / "straight"), env=_env(), cwd=REPO,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(config, killed), env=_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = killed / "training" / "stripes" / "step-000002" / "state" / "recorded"
    deadline = time.monotonic() + 600
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-3000:]
    assert not (killed / "training" / "stripes" / f"step-{STEPS:06d}").exists()

    refused = subprocess.run(_command(config, killed), env=_env(), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = subprocess.run(_command(config, killed, "--resume"), env=_env(), cwd=REPO,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want, want_summary = _final_state(tmp_path / "straight")
    got, got_summary = _final_state(killed)
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert got_summary["val_loss"] == want_summary["val_loss"]
    straight_losses = (tmp_path / "straight" / "training" / "stripes" / "losses.jsonl").read_text()
    resumed_losses = (killed / "training" / "stripes" / "losses.jsonl").read_text()
    assert [json.loads(x)["loss"] for x in resumed_losses.splitlines()] == \
        [json.loads(x)["loss"] for x in straight_losses.splitlines()]
