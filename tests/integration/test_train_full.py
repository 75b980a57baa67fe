"""Full fine-tune on a tiny SD 1.x: a diffusers folder whose UNet (only) changed, that loads and
makes other images; prior preservation adds the class images' loss."""

from __future__ import annotations

import json

import pytest

from tests.support.gen import tiny_pipeline
from tests.support.training import planted_style_dataset, training_config

pytestmark = pytest.mark.slow


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "losses.jsonl").read_text().splitlines()]


def test_full_fine_tune_saves_a_pipeline_folder_that_differs_in_the_unet_only(tmp_path, tmp_path_factory):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from evaluator.training.loop import train

    pipe_dir = tiny_pipeline(tmp_path_factory, "sd1")
    config = training_config(pipe_dir, planted_style_dataset(tmp_path / "data", count=6), method="full",
                             learning_rate=1e-3, max_train_steps=2, save_every=2)
    result = train(config, tmp_path / "wd", progress=False)
    folder = result.saved[-1].step_dir / "stripes"
    assert result.saved[-1].weights == [folder] and (folder / "model_index.json").is_file()
    for part, changed in (("unet", True), ("text_encoder", False), ("vae", False)):
        (new,) = folder.glob(f"{part}/*.safetensors")
        (old,) = pipe_dir.glob(f"{part}/*.safetensors")
        a, b = load_file(str(new)), load_file(str(old))
        assert set(a) == set(b)
        assert any(not torch.equal(a[k], b[k]) for k in a) is changed, part

    def image(path):
        pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe("stripes", num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    assert np.abs(image(folder) - image(pipe_dir)).max() > 1e-4

    # prior preservation: same seed, same instance draws, plus the class images' (positive) loss
    classes = tmp_path / "classes"
    planted_style_dataset(tmp_path / "class-src", count=2, concept="plain", seed=5)
    (tmp_path / "class-src" / "1_plain").rename(classes)
    for caption in classes.glob("*.txt"):
        caption.unlink()
    prior = training_config(pipe_dir, tmp_path / "data", method="full", learning_rate=1e-3, max_train_steps=1,
                            save_every=1, output_name="stripes-prior", class_data_dir=str(classes),
                            class_prompt="a painting", prior_loss_weight=1.0)
    train(prior, tmp_path / "wd", progress=False)
    plain_first = _losses(tmp_path / "wd" / "training" / "stripes")[0]
    prior_first = _losses(tmp_path / "wd" / "training" / "stripes-prior")[0]
    assert prior_first > plain_first
