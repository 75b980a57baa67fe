"""`atelier train` LoRA on a tiny random-weight SD 1.x: loss falls on a planted style, and both
files (diffusers' and kohya's) load into a diffusers pipeline, change its output the same way,
and carry the keys and metadata other tools read."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from tests.support.gen import tiny_pipeline
from tests.support.training import TINY_TRAINING, planted_style_dataset, toml_text

pytestmark = pytest.mark.slow

STEPS = 30
RANK, ALPHA = 4, 2.0  # alpha != rank: both files must carry the scale


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One CLI run: LoRA on the UNet and the text encoder, 30 steps, saved at 15 and 30."""
    from evaluator.cli.main import main

    root = tmp_path_factory.mktemp("train-lora")
    pipe = tiny_pipeline(tmp_path_factory, "sd1")
    planted_style_dataset(root / "data")
    config = root / "lora.toml"
    config.write_text(toml_text({
        **TINY_TRAINING, "method": "lora", "base": str(pipe), "dataset": "data", "output_name": "stripes",
        "rank": RANK, "alpha": ALPHA, "train_text_encoder": True, "train_batch_size": 4,
        "max_train_steps": 10, "save_every": 15, "validation_timesteps": 16,
    }))
    result = CliRunner().invoke(main, ["train", str(config), "-w", str(root / "wd"), "-q",
                                       "--max-train-steps", str(STEPS)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {"root": root, "pipe": pipe, "config": config, "output": result.output,
            "run": root / "wd" / "training" / "stripes"}


def test_cli_run_writes_steps_losses_and_a_run_record(trained):
    run = trained["run"]
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000015", "step-000030"]  # the flag won
    assert not list(run.glob(".*partial"))
    lines = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines] == list(range(1, STEPS + 1))
    summary = json.loads((run / "step-000030" / "step.json").read_text())
    assert summary["step"] == STEPS and summary["val_loss"] > 0
    assert summary["weights"] == ["pytorch_lora_weights.safetensors", "stripes.safetensors"]
    records = [json.loads(p.read_text()) for p in (trained["root"] / "wd" / "runs").glob("train-*.json")]
    assert len(records) == 1 and records[0]["kind"] == "train" and records[0]["n_done"] == STEPS
    assert json.loads(records[0]["config"])["dataset_fingerprint"].startswith("sha256:")
    assert "step     30" in trained["output"]


def test_validation_loss_falls_on_held_out_images_of_the_planted_style(trained):
    """Paired over (held-out image, timestep) with the same noise: base (LoRA B = 0) vs trained."""
    from safetensors.torch import load_file

    from evaluator.training.config import load_config
    from evaluator.training.loop import prepare_data, validation_losses
    from evaluator.training.models import load_models
    from evaluator.workspace.workdir import Workdir

    config = load_config(trained["config"])
    data = prepare_data(config, Workdir.at(trained["root"] / "wd"), 1)
    assert len(data.split.validation) >= 2
    models = load_models(config)
    before = validation_losses(models, data.split.validation, config, data.batches.sizes)
    state = load_file(str(trained["run"] / "step-000030" / "state" / "trainable.safetensors"))
    for name, param in models.trainable.items():
        param.data.copy_(state[name])
    after = validation_losses(models, data.split.validation, config, data.batches.sizes)
    gains = [b - a for b, a in zip(before, after, strict=True)]
    mean = sum(gains) / len(gains)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1))
    t = mean / (sd / math.sqrt(len(gains)))
    assert mean > 0 and t > 3, (mean, t, before[:4], after[:4])
    # the figure the loop saved is the same function's mean over the same pairs
    saved = json.loads((trained["run"] / "step-000030" / "step.json").read_text())["val_loss"]
    assert saved == pytest.approx(sum(after) / len(after), rel=1e-5)


def test_kohya_file_has_exact_keys_alpha_and_metadata(trained):
    from safetensors import safe_open

    with safe_open(str(trained["run"] / "step-000030" / "stripes.safetensors"), "pt") as handle:
        keys = set(handle.keys())
        meta = handle.metadata()
        alphas = {k: float(handle.get_tensor(k)) for k in keys if k.endswith(".alpha")}
        down = handle.get_tensor("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight")
    module = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= keys
    assert down.shape[0] == RANK
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in keys
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.alpha" in keys
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    assert len(alphas) == len(modules) and set(alphas.values()) == {ALPHA}
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert meta["ss_network_dim"] == str(RANK) and meta["ss_network_alpha"] == str(ALPHA)
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_steps"] == "30" and meta["ss_seed"] == "0" and meta["ss_resolution"] == "(32, 32)"
    assert meta["ss_sd_model_name"] == trained["pipe"].name
    frequency = json.loads(meta["ss_tag_frequency"])
    (folder,) = frequency
    assert folder == "1_stripes" and frequency[folder]["stripes"] == frequency[folder]["painting"] >= 6
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.resolution"] == "32x32"
    with safe_open(str(trained["run"] / "step-000030" / "pytorch_lora_weights.safetensors"), "pt") as handle:
        diffusers_keys = set(handle.keys())
    assert any(k.startswith("unet.down_blocks.1.attentions.0.") for k in diffusers_keys)
    assert any(k.startswith("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.") for k in diffusers_keys)


def test_both_lora_files_load_into_a_pipeline_and_change_it_alike(trained):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(trained["pipe"]), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def image():
        return pipe("stripes, painting", num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    base = image()
    step = trained["run"] / "step-000030"
    images = {}
    for name in ("pytorch_lora_weights.safetensors", "stripes.safetensors"):
        pipe.load_lora_weights(str(step / name), adapter_name=name.split(".")[0])
        images[name] = image()
        pipe.unload_lora_weights()
    diffusers_image, kohya_image = images.values()
    assert np.abs(diffusers_image - base).max() > 1e-3
    np.testing.assert_allclose(kohya_image, diffusers_image, atol=1e-5)
    np.testing.assert_array_equal(image(), base)  # unloaded: the base again


def test_sdxl_lora_uses_both_text_encoders_and_both_files_load(tmp_path, tmp_path_factory):
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    from evaluator.training.loop import train
    from tests.support.training import training_config

    pipe_dir = tiny_pipeline(tmp_path_factory, "sdxl")
    config = training_config(pipe_dir, planted_style_dataset(tmp_path / "data", count=6), method="lora",
                             train_text_encoder=True, max_train_steps=2, save_every=2)
    step = train(config, tmp_path / "wd", progress=False).saved[-1].step_dir
    with safe_open(str(step / "stripes.safetensors"), "pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert any(k.startswith("lora_unet_down_blocks_1_attentions_0_") for k in keys)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"

    pipe = StableDiffusionXLPipeline.from_pretrained(str(pipe_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def image():
        return pipe("stripes", num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    base, images = image(), []
    for name in ("pytorch_lora_weights.safetensors", "stripes.safetensors"):
        pipe.load_lora_weights(str(step / name), adapter_name=name.split(".")[0])
        images.append(image())
        pipe.unload_lora_weights()
    assert np.abs(images[0] - base).max() > 1e-3
    np.testing.assert_allclose(images[1], images[0], atol=1e-5)
