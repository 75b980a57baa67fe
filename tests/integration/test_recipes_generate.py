"""Recipes in diffusers on tiny random-weight pipelines: weights, schedules, alternation, PNGs.

The reference for an unweighted prompt is diffusers' own ``encode_prompt``; the reference
for A1111's weighting is a naive re-computation here (per-token multiply, mean restored).
The UNet's inputs are read with a forward hook on the real UNet, step by step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.gen import tiny_pipeline, write_toml

from catalog.recipes.grammar import parse
from catalog.recipes.schedule import step_schedule
from catalog.units import WorkUnit
from evaluator.generation.pngmeta import read_generation_info
from evaluator.generation.runner import GenerateConfig, generate, images_to_uint8
from evaluator.generation.weighting import encode_chunks, weighted_call_arguments

pytestmark = pytest.mark.slow
SIZE, STEPS = 64, 5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe-ckpts")
    sd1, sdxl = tiny_pipeline(tmp_path_factory, "sd1"), tiny_pipeline(tmp_path_factory, "sdxl")
    return write_toml(folder / "checkpoints.toml", f"""
[[checkpoint]]
name = "base"
source = "{sd1}"

[[checkpoint]]
name = "xl"
source = "{sdxl}"
""")


def _pipe(checkpoints, name: str):
    from evaluator.generation.checkpoints import load_checkpoints, load_pipeline

    specs = load_checkpoints(checkpoints)
    return load_pipeline(specs[name], specs)


@pytest.fixture(scope="module")
def sd1(checkpoints):
    return _pipe(checkpoints, "base")


class UnetInputs:
    """What the UNet is given at every call: (text embeddings, SDXL pooled embeddings)."""

    def __init__(self, pipe) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.handle = pipe.unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        added = kwargs.get("added_cond_kwargs") or {}
        pooled = added.get("text_embeds")
        self.calls.append((kwargs["encoder_hidden_states"].clone(), None if pooled is None else pooled.clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _run(pipe, seed: int = 0, steps: int = STEPS, **prompt_arguments):
    with torch.inference_mode():
        out = pipe(num_inference_steps=steps, guidance_scale=5.0, width=SIZE, height=SIZE,
                   generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", **prompt_arguments)
    return out.images[0]


def _reference(pipe, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return pipe.encode_prompt(text, "cpu", 1, False)[0]


def test_a_schedule_switches_the_embeddings_at_the_a1111_step(sd1):
    with torch.inference_mode():
        arguments = weighted_call_arguments(sd1, ["a red cat [sitting:running:2]"], "", STEPS)
    with UnetInputs(sd1) as seen:
        _run(sd1, **arguments)
    sitting, running = _reference(sd1, "a red cat sitting"), _reference(sd1, "a red cat running")
    positive = [hidden[1:] for hidden, _ in seen.calls]  # [negative; positive] under guidance
    assert len(positive) == STEPS
    # A1111: [a:b:2] is a while the step k <= 2, b from step 3
    assert [torch.equal(p, sitting) for p in positive] == [True, True, True, False, False]
    assert [torch.equal(p, running) for p in positive] == [False, False, False, True, True]


def test_alternation_switches_every_step(sd1):
    with torch.inference_mode():
        arguments = weighted_call_arguments(sd1, ["a [cat|dog]"], "", 4)
    with UnetInputs(sd1) as seen:
        _run(sd1, steps=4, **arguments)
    cat, dog = _reference(sd1, "a cat"), _reference(sd1, "a dog")
    picked = ["cat" if torch.equal(h[1:], cat) else "dog" if torch.equal(h[1:], dog) else "?" for h, _ in seen.calls]
    assert picked == ["cat", "cat", "dog", "cat"]  # A1111's (t - 1) % 2 with t = max(k, 1)


def _naive_a1111(pipe, chunks, rescale: bool = True) -> torch.Tensor:
    """A1111's emphasis written out plainly: tokens per chunk, multiply, restore the mean."""
    tokenizer = pipe.tokenizer
    ids, weights = [tokenizer.bos_token_id], [1.0]
    for text, weight in chunks:
        for token in tokenizer(text, add_special_tokens=False).input_ids:
            ids.append(token)
            weights.append(weight)
    ids.append(tokenizer.eos_token_id)
    weights.append(1.0)
    pad = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length).input_ids[-1]
    while len(ids) < tokenizer.model_max_length:
        ids.append(pad)
        weights.append(1.0)
    with torch.inference_mode():
        hidden = pipe.text_encoder(torch.tensor([ids]))[0][0]
    before = hidden.mean()
    weighted = torch.stack([hidden[i] * weights[i] for i in range(len(ids))])
    return (weighted * (before / weighted.mean()) if rescale else weighted)[None]


CHUNKS = (("a ", 1.0), ("red", 1.5), (" cat, ", 1.0), ("blurry", 0.909091))


def test_weights_follow_a1111_arithmetic(checkpoints):
    pipe = _pipe(checkpoints, "base")
    # a real CLIP's final layer norm has a bias, so its embeddings have a clear mean; give the
    # tiny one a bias too, so the rescale to the mean is exercised
    pipe.text_encoder.get_submodule("final_layer_norm").bias.data.fill_(0.3)
    assert step_schedule(parse("a (red:1.5) cat, [blurry]"), STEPS).prompts[0] == CHUNKS
    with torch.inference_mode():
        embeds, pooled = encode_chunks(pipe, CHUNKS)
    assert pooled is None
    expected = _naive_a1111(pipe, CHUNKS)
    torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-6)
    assert abs(float(embeds.mean()) - float(_reference(pipe, "a red cat, blurry").mean())) < 1e-5
    assert not torch.allclose(embeds, _reference(pipe, "a red cat, blurry"))


def test_a_mean_of_zero_is_not_rescaled_to(sd1):
    # the tiny encoder's layer norm has no bias: its mean is ~1e-8, A1111's rescale would blow up
    with torch.inference_mode():
        embeds, _ = encode_chunks(sd1, CHUNKS)
    assert torch.isfinite(embeds).all()
    torch.testing.assert_close(embeds, _naive_a1111(sd1, CHUNKS, rescale=False), rtol=1e-5, atol=1e-6)


def test_weights_change_the_image(sd1):
    with torch.inference_mode():
        weighted = _run(sd1, **weighted_call_arguments(sd1, ["a (red:1.5) cat"], "", STEPS))
    plain = _run(sd1, prompt=["a red cat"])
    assert np.isfinite(weighted).all() and np.abs(weighted - plain).max() > 1e-3


def _units(prompts, checkpoint="base", negative="") -> list[WorkUnit]:
    return [WorkUnit(checkpoint, f"a{i}", "style", p, negative, i, SIZE, SIZE, 3, 5.0, "default")
            for i, p in enumerate(prompts)]


def _pixels(workdir, unit) -> np.ndarray:
    return np.asarray(Image.open(workdir / "images" / unit.relpath()).convert("RGB"))


def test_plain_prompts_are_bit_identical_to_the_text_path(sd1, checkpoints, tmp_path):
    prompts = ["a painting in the style of Claude Monet", "masterpiece: a cat | a dog"]
    units = _units(prompts)
    generate(units, checkpoints, tmp_path, GenerateConfig(batch_size=2, progress=False))
    with torch.inference_mode():  # the call the runner has always made, at the same batch
        out = sd1(prompt=prompts, negative_prompt=None, num_inference_steps=3, guidance_scale=5.0,
                  width=SIZE, height=SIZE, generator=[torch.Generator("cpu").manual_seed(u.seed) for u in units],
                  output_type="np")
    for unit, expected in zip(units, images_to_uint8(out.images), strict=True):
        assert np.array_equal(_pixels(tmp_path, unit), expected)


def test_escapes_alone_give_the_literal_text(sd1):
    escaped = _run(sd1, **_prompt_arguments(sd1, r"akira_\(coffee_curry\), solo"))
    literal = _run(sd1, prompt=["akira_(coffee_curry), solo"])
    assert np.array_equal(escaped, literal)


def _prompt_arguments(pipe, prompt: str) -> dict:
    from evaluator.generation.runner import _prompt_arguments

    return _prompt_arguments(pipe, _units([prompt]))


def test_png_parameters_carry_the_a1111_form(checkpoints, tmp_path):
    recipe = "(hatsune_miku:1.2), [red armor::0.5], [cat ears|fox ears]"
    units = _units([recipe, "a plain prompt"], negative="(blurry:1.3)")
    summary = generate(units, checkpoints, tmp_path, GenerateConfig(batch_size=2, progress=False))
    assert summary.done == 2 and summary.failed == 0
    info = read_generation_info(Image.open(tmp_path / "images" / units[0].relpath()))
    assert info["prompt"] == recipe and info["negative_prompt"] == "(blurry:1.3)"
    assert parse(info["prompt"]) == parse(recipe)


def test_a_prompt_that_does_not_parse_stops_the_run_before_any_image(checkpoints, tmp_path):
    from evaluator.generation.runner import GenerateError

    with pytest.raises(GenerateError, match=r"unit #0 .*prompt: column 15: the prompt ends inside the '\[' of column 13"):
        generate(_units(["a (red cat, [x"]), checkpoints, tmp_path, GenerateConfig(progress=False))
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.png"))


def test_sdxl_switches_the_pooled_embeddings_too(checkpoints):
    xl = _pipe(checkpoints, "xl")
    with torch.inference_mode():
        arguments = weighted_call_arguments(xl, ["a [cat:dog:1]"], "", 3)
        cat = xl.encode_prompt("a cat", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
        dog = xl.encode_prompt("a dog", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    with UnetInputs(xl) as seen:
        _run(xl, steps=3, **arguments)
    assert [torch.equal(h[1:], cat[0]) for h, _ in seen.calls] == [True, True, False]
    assert [torch.equal(h[1:], dog[0]) for h, _ in seen.calls] == [False, False, True]
    assert [torch.equal(p[1:], dog[2]) for _, p in seen.calls] == [False, False, True]


def test_a_negative_prompt_with_syntax_is_weighted_too(sd1):
    with torch.inference_mode():
        weighted = weighted_call_arguments(sd1, ["a (cat:1.2)", "a dog"], "(blurry:1.3)", 3)
        plain = weighted_call_arguments(sd1, ["a (cat:1.2)", "a dog"], r"blurry \(lowres\)", 3)
        expected, _ = encode_chunks(sd1, (("blurry", 1.3),))
    assert weighted["negative_prompt_embeds"].shape[0] == 2
    assert all(torch.equal(row[None], expected) for row in weighted["negative_prompt_embeds"])
    assert plain["negative_prompt"] == ["blurry (lowres)"] * 2 and "negative_prompt_embeds" not in plain
