"""Textual inversion on a tiny SD 1.x: only the new token's embedding rows are trained, and the
token changes a pipeline's output only in prompts that use it (diffusers' and A1111's files alike)."""

from __future__ import annotations

import pytest

from tests.support.gen import tiny_pipeline
from tests.support.training import planted_style_dataset, training_config

pytestmark = pytest.mark.slow

TOKEN, INIT = "<stripy>", "art"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from evaluator.training.loop import train

    root = tmp_path_factory.mktemp("train-ti")
    pipe = tiny_pipeline(tmp_path_factory, "sd1")
    config = training_config(pipe, planted_style_dataset(root / "data", count=8), method="textual_inversion",
                             placeholder_token=TOKEN, initializer_token=INIT, num_vectors=2, learning_rate=5e-2,
                             max_train_steps=4, save_every=4)
    result = train(config, root / "wd", progress=False)
    return {"pipe": pipe, "step": result.saved[-1].step_dir, "result": result}


def test_only_the_placeholder_rows_moved(trained):
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from evaluator.generation.checkpoints import quiet_hf_libraries

    quiet_hf_libraries()
    base = CLIPTextModel.from_pretrained(str(trained["pipe"] / "text_encoder")).get_input_embeddings().weight
    table = load_file(str(trained["step"] / "state" / "trainable.safetensors"))["text_encoder.token_embedding"]
    assert table.shape[0] == base.shape[0] + 2  # two vectors added
    assert (table[: base.shape[0]] == base.detach()).all()  # no other row changed (weight decay included)
    learned = load_file(str(trained["step"] / "learned_embeds.safetensors"))[TOKEN]
    assert learned.shape == (2, base.shape[1])
    assert (learned == table[base.shape[0]:]).all()
    from transformers import CLIPTokenizer

    init_id = CLIPTokenizer.from_pretrained(str(trained["pipe"] / "tokenizer")).convert_tokens_to_ids(INIT + "</w>")
    assert (learned - base[init_id].detach()).abs().max() > 1e-3  # it learned, from the initializer


def test_token_changes_output_only_where_used(trained):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    def image(pipe, prompt):
        return pipe(prompt, num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    def loaded(path, token=None):
        pipe = StableDiffusionPipeline.from_pretrained(str(trained["pipe"]), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        if path is not None:
            pipe.load_textual_inversion(str(path), token=token)
        return pipe

    plain, with_token = "stripes, painting", f"{TOKEN} stripes, painting"
    base = loaded(None)
    diffusers_pipe = loaded(trained["step"] / "learned_embeds.safetensors")
    a1111_pipe = loaded(trained["step"] / "stripes.safetensors", token=TOKEN)
    np.testing.assert_array_equal(image(diffusers_pipe, plain), image(base, plain))
    np.testing.assert_array_equal(image(a1111_pipe, plain), image(base, plain))
    # base sees the token as plain text "<stripy>"; with the embedding it reads the learned vectors
    learned = image(diffusers_pipe, with_token)
    assert np.abs(learned - image(base, with_token)).max() > 1e-3
    np.testing.assert_allclose(image(a1111_pipe, with_token), learned, atol=1e-6)


def test_a1111_file_carries_its_metadata(trained):
    from safetensors import safe_open

    with safe_open(str(trained["step"] / "stripes.safetensors"), "pt") as handle:
        assert set(handle.keys()) == {"emb_params"}
        meta = handle.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/textual-inversion"
    assert meta["modelspec.trigger_phrase"] == TOKEN and meta["step"] == "4"


def test_sdxl_embedding_has_both_encoders_and_acts_only_with_its_token(tmp_path, tmp_path_factory):
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from evaluator.training.loop import train

    pipe_dir = tiny_pipeline(tmp_path_factory, "sdxl")
    config = training_config(pipe_dir, planted_style_dataset(tmp_path / "data", count=6),
                             method="textual_inversion", placeholder_token=TOKEN, initializer_token=INIT,
                             learning_rate=5e-2, max_train_steps=2, save_every=2)
    step = train(config, tmp_path / "wd", progress=False).saved[-1].step_dir
    a1111 = load_file(str(step / "stripes.safetensors"))
    assert set(a1111) == {"clip_l", "clip_g"}
    assert (a1111["clip_l"] == load_file(str(step / "learned_embeds.safetensors"))[TOKEN]).all()
    assert (a1111["clip_g"] == load_file(str(step / "learned_embeds_2.safetensors"))[TOKEN]).all()

    def pipeline(with_embedding: bool):
        pipe = StableDiffusionXLPipeline.from_pretrained(str(pipe_dir), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        if with_embedding:
            pipe.load_textual_inversion(a1111["clip_l"], token=TOKEN, text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(a1111["clip_g"], token=TOKEN, text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
        return pipe

    def image(pipe, prompt):
        return pipe(prompt, num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    base, tuned = pipeline(False), pipeline(True)
    np.testing.assert_array_equal(image(tuned, "stripes"), image(base, "stripes"))
    assert np.abs(image(tuned, f"{TOKEN} stripes") - image(base, f"{TOKEN} stripes")).max() > 1e-3
