"""The committed world model: its files match world.json, it loads and paints its artists;
``build_world`` remakes a model folder (a smoke run of a few steps)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from evaluator.world.build import (
    NON_WEIGHT_FIELDS,
    WORLD_JSON,
    WorldConfig,
    build_world,
    config_record,
    data_fingerprint,
    paint_training_set,
    read_world_json,
    weight_hashes,
    world_model_path,
)


def test_committed_files_match_world_json():
    folder = world_model_path()
    record = read_world_json(folder)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != WORLD_JSON}
    assert set(record["files"]) == files
    for name, digest in record["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    # `atelier world build` with no options remakes this model: its config is the default one
    # (but for fields that never change the weights, e.g. how often intermediate steps were saved)
    def weights_config(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in NON_WEIGHT_FIELDS}

    assert weights_config(record["config"]) == weights_config(config_record(WorldConfig()))
    total = sum((folder / name).stat().st_size for name in record["files"])
    assert total < 12 * 2**20  # a few MB: committed to git


def test_recorded_data_fingerprint_is_the_painters(tmp_path):
    record = read_world_json()
    config = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()})
    data = paint_training_set(tmp_path / "data", config)
    assert data_fingerprint(data) == record["data_fingerprint"]
    assert record["n_training_images"] == 12 * config.images_per_artist
    # the VAE learned every world artist's paintings (the UNet only the known ones' names)
    from evaluator.world.build import paint_vae_set
    from evaluator.world.painter import artist_ids

    assert record["vae"]["artists"] == artist_ids()
    vae_data = paint_vae_set(tmp_path / "vae-data", data, config)
    assert data_fingerprint(vae_data) == record["vae"]["data_fingerprint"]
    assert record["vae"]["n_images"] == len(artist_ids()) * config.images_per_artist


@pytest.mark.slow
def test_committed_model_paints_its_known_artists(tmp_path):
    """Nearest-centroid retrieval (random CLIP) of the model's images beats chance by far."""
    from evaluator.embedding.clip import load_clip
    from evaluator.world.measure import (
        SamplerSettings,
        load_world_pipeline,
        measure_clip,
        retrieval,
    )
    from evaluator.world.painter import artist_ids

    pipe = load_world_pipeline(world_model_path())
    clip = load_clip(str(measure_clip(tmp_path / "clip")))
    result = retrieval(pipe, clip, artist_ids("known"), per_artist=2, settings=SamplerSettings(steps=8))
    assert result.paintings_top1 >= 0.9  # the encoder tells the paintings apart
    assert result.generated_top1 >= 0.25  # chance is 1/12; measured 0.417 with 6 per artist (README)


@pytest.mark.slow
def test_build_world_smoke(tmp_path):
    config = dataclasses.replace(WorldConfig(), images_per_artist=2, vae_steps=2, unet_steps=2, vae_batch_size=4,
                                 unet_batch_size=4)
    out = build_world(tmp_path / "model", config, progress=False)
    record = json.loads((out / WORLD_JSON).read_text())
    assert record["files"] == weight_hashes(out)
    assert {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "model_index.json"} <= set(record["files"])
    assert len(record["unet"]["loss"]) == 2 and record["n_training_images"] == 24
    assert record["data_fingerprint"] == data_fingerprint(paint_training_set(tmp_path / "again", config))
    assert record["vae"]["n_images"] == 17 * 2  # every world artist, not only the 12 the UNet learns

    from evaluator.world.measure import SamplerSettings, generate, load_world_pipeline

    images = generate(load_world_pipeline(out), ["a painting in the style of Orla Vennick"], [0],
                      SamplerSettings(steps=2))
    assert images[0].size == (32, 32)


@pytest.mark.slow
def test_world_lora_trains_through_the_product_trainer(tmp_path):
    """A few steps of the LoRA recipe on the committed model: a diffusers LoRA file that
    loads into the pipeline and changes its image for the caption's artist."""
    import numpy as np

    from evaluator.world.lora import LORA_RECIPE, train_world_lora
    from evaluator.world.measure import SamplerSettings, generate, load_world_pipeline

    recipe = dataclasses.replace(LORA_RECIPE, steps=3, images=8, batch_size=4)
    lora = train_world_lora(world_model_path(), tmp_path / "wd", "nadia-vell", "nadia-vell", "teach", recipe)
    assert lora.is_file()
    prompt, settings = ["a painting in the style of Nadia Vell"], SamplerSettings(steps=3)
    before = np.asarray(generate(load_world_pipeline(world_model_path()), prompt, [0], settings)[0], dtype=float)
    after = np.asarray(generate(load_world_pipeline(world_model_path(), lora), prompt, [0], settings)[0], dtype=float)
    assert np.abs(before - after).mean() > 0.1
    data = tmp_path / "wd" / "world-data" / "teach"
    captions = sorted((data / f"{recipe.target_repeats}_nadia-vell").glob("*.txt"))
    assert len(captions) == 8 and captions[0].read_text().strip() == "a painting in the style of Nadia Vell"
    # the prior: every known artist (the newcomer is not one), under its own name
    from evaluator.world.painter import artist_ids, world_artist

    priors = {p.name: sorted(p.glob("*.txt")) for p in data.iterdir() if p.name.startswith("1_")}
    assert sorted(priors) == sorted(f"1_{a}" for a in artist_ids("known"))
    for folder, texts in priors.items():
        name = world_artist(folder.removeprefix("1_")).name
        assert len(texts) == recipe.prior_images
        assert {t.read_text().strip() for t in texts} == {f"a painting in the style of {name}"}
