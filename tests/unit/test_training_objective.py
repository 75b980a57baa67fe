"""The denoising objective against naive formulas: targets, min-SNR weights, fixed draws."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from evaluator.training.objective import (
    Conditioning,
    LossSettings,
    NoiseDraw,
    draw_noise,
    min_snr_weights,
    per_image_loss,
    prediction_target,
    sample_generator,
    validation_timesteps,
)


@pytest.fixture
def scheduler():
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_velocity_target_is_the_textbook_formula(scheduler):
    latents, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([0, 500, 999])
    ab = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = ab.sqrt() * noise - (1 - ab).sqrt() * latents
    torch.testing.assert_close(prediction_target(scheduler, latents, noise, timesteps, "v_prediction"), expected)
    assert prediction_target(scheduler, latents, noise, timesteps, "epsilon") is noise
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_target(scheduler, latents, noise, timesteps, "sample")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_match_a_loop_over_timesteps(scheduler, prediction_type):
    timesteps = torch.tensor([1, 10, 100, 400, 999])
    weights = min_snr_weights(scheduler, timesteps, 5.0, prediction_type)
    for t, w in zip(timesteps.tolist(), weights.tolist(), strict=True):
        ab = float(scheduler.alphas_cumprod[t])
        snr = ab / (1 - ab)
        naive = min(snr, 5.0) / (snr + 1 if prediction_type == "v_prediction" else snr)
        assert w == pytest.approx(naive, rel=1e-5)
    if prediction_type == "epsilon":  # low noise is down-weighted, high noise (SNR < gamma) kept at 1
        assert weights[0] < 0.01 and weights[-1] == pytest.approx(1.0, rel=1e-5)


def test_draws_depend_on_the_image_not_on_the_batch():
    """Image 3 of step 7 gets the same noise alone or in a batch: what makes DDP and resume exact."""
    alone = draw_noise((4, 8, 8), [sample_generator(0, 1, 7, 3)], 1000, 0.1, "cpu", torch.float32)
    batch = draw_noise((4, 8, 8), [sample_generator(0, 1, 7, i) for i in range(5)], 1000, 0.1, "cpu", torch.float32)
    torch.testing.assert_close(batch.noise[3], alone.noise[0], rtol=0, atol=0)
    assert int(batch.timesteps[3]) == int(alone.timesteps[0])
    other = draw_noise((4, 8, 8), [sample_generator(0, 1, 8, 3)], 1000, 0.1, "cpu", torch.float32)
    assert not torch.equal(other.noise, alone.noise)  # another step, another draw


def test_validation_timesteps_are_evenly_spaced_midpoints():
    assert validation_timesteps(1000, 4) == [125, 375, 625, 875]
    assert validation_timesteps(1000, 1) == [500]


def test_per_image_loss_is_the_mean_squared_error_of_the_prediction(scheduler):
    """A stand-in UNet that predicts zeros: the loss is then the mean square of the target."""

    def zero_unet(noisy, timesteps, states, return_dict=False):
        return (torch.zeros_like(noisy),)

    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    draw = NoiseDraw(noise, torch.tensor([100, 900]))
    loss = per_image_loss(zero_unet, scheduler, latents, draw, Conditioning(None), LossSettings("epsilon"))
    torch.testing.assert_close(loss, noise.pow(2).mean(dim=(1, 2, 3)))
    weighted = per_image_loss(zero_unet, scheduler, latents, draw, Conditioning(None), LossSettings("epsilon", 5.0))
    torch.testing.assert_close(weighted, loss * min_snr_weights(scheduler, draw.timesteps, 5.0, "epsilon"))
