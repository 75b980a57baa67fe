"""The denoising objective, shared by the training step and the validation loss.

Reads and writes nothing: functions of tensors and modules. The loss is the one of
diffusers' training examples and kohya's scripts: latents (VAE mean/sample x
``scaling_factor``) noised by the scheduler's ``add_noise`` at uniform timesteps, the
UNet's prediction compared (MSE) with the noise (``epsilon``) or the velocity
(``v_prediction``), optionally weighted by min-SNR (Hang et al. 2023, section 3.4).

Every random draw is made per image from a generator seeded by (seed, step, image index
in the global batch), on the CPU: the same image at the same step gets the same noise
whatever the batch size, the number of processes or the device, which is what makes a
resumed run equal an uninterrupted one and two processes reproduce one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Salts that keep the streams of one (seed, step, index) apart.
TRAIN_STREAM = 1
VALIDATION_STREAM = 2
CAPTION_STREAM = 3  # caption dropout: its own draws, so turning it on changes no noise


@dataclass
class Conditioning:
    """What the UNet is conditioned on: text states (+ SDXL's pooled text and time ids)."""

    encoder_hidden_states: Any
    added_cond_kwargs: dict[str, Any] | None = None

    def take(self, index) -> Conditioning:
        """The rows ``index`` of every tensor (for the prior-preservation halves of a batch)."""
        extra = None if self.added_cond_kwargs is None else {k: v[index] for k, v in self.added_cond_kwargs.items()}
        return Conditioning(self.encoder_hidden_states[index], extra)


@dataclass
class NoiseDraw:
    """The random part of one batch: noise, timesteps, and the VAE's sampling noise."""

    noise: Any
    timesteps: Any
    generators: list = field(default_factory=list)


def sample_generator(seed: int, stream: int, step: int, index: int):
    """A CPU generator for one image of one step; independent of batch layout and device."""
    import torch

    # A fixed mixing of the four integers (Python's hash() of ints would do, but this reads as what it is).
    mixed = (seed * 1_000_003 + stream * 7_919 + step * 104_729 + index * 15_485_863) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(mixed)


def draw_noise(shape, generators: list, num_train_timesteps: int, noise_offset: float, device, dtype) -> NoiseDraw:
    """Noise (+ offset noise, per channel) and one uniform timestep per image, from ``generators``."""
    import torch

    channels, height, width = shape
    noises, steps = [], []
    for generator in generators:
        noise = torch.randn((channels, height, width), generator=generator)
        if noise_offset:
            # Offset noise (crosslabs, 2023): a per-channel constant lets the model change mean brightness.
            noise = noise + noise_offset * torch.randn((channels, 1, 1), generator=generator)
        noises.append(noise)
        steps.append(torch.randint(0, num_train_timesteps, (1,), generator=generator))
    return NoiseDraw(
        torch.stack(noises).to(device=device, dtype=dtype), torch.cat(steps).to(device=device).long(), generators
    )


def encode_latents(vae, pixels, generators: list | None):
    """Latents x scaling_factor; sampled with the per-image generators, or the mean when None."""
    import torch

    posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    if generators is None:
        latents = posterior.mean
    else:
        eps = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g) for g in generators])
        latents = posterior.mean + posterior.std * eps.to(device=posterior.mean.device, dtype=posterior.mean.dtype)
    return latents * vae.config.scaling_factor


def prediction_target(scheduler, latents, noise, timesteps, prediction_type: str):
    """What the UNet must predict: the noise (epsilon) or the velocity (v_prediction)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction' but is {prediction_type!r}")


def snr(scheduler, timesteps):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weights(scheduler, timesteps, gamma: float, prediction_type: str):
    """min(SNR, gamma) / SNR for epsilon (/(SNR + 1) for v): min-SNR's loss weight per image."""
    import torch

    ratio = snr(scheduler, timesteps)
    clipped = torch.minimum(ratio, torch.full_like(ratio, gamma))
    return clipped / (ratio + 1.0) if prediction_type == "v_prediction" else clipped / ratio


@dataclass(frozen=True)
class LossSettings:
    """The parts of the config the loss depends on."""

    prediction_type: str = "epsilon"
    min_snr_gamma: float | None = None


def per_image_loss(unet, scheduler, latents, draw: NoiseDraw, cond: Conditioning, settings: LossSettings):
    """MSE of the UNet's prediction per image (min-SNR weighted when asked), as a [batch] tensor.

    The one loss of training and validation: both call this with their own draws.
    """
    import torch.nn.functional as F  # noqa: N812 - the usual name

    noisy = scheduler.add_noise(latents, draw.noise, draw.timesteps)
    target = prediction_target(scheduler, latents, draw.noise, draw.timesteps, settings.prediction_type)
    kwargs = {"added_cond_kwargs": cond.added_cond_kwargs} if cond.added_cond_kwargs is not None else {}
    prediction = unet(noisy, draw.timesteps, cond.encoder_hidden_states, return_dict=False, **kwargs)[0]
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if settings.min_snr_gamma is not None:
        loss = loss * min_snr_weights(scheduler, draw.timesteps, settings.min_snr_gamma, settings.prediction_type)
    return loss


def validation_timesteps(num_train_timesteps: int, count: int) -> list[int]:
    """``count`` evenly spaced timesteps, each the middle of its share: 125, 375, 625, 875 of 1000."""
    return [int((k + 0.5) * num_train_timesteps / count) for k in range(count)]


def validation_draw(shape, seed: int, image_index: int, timestep: int, position: int, device, dtype) -> NoiseDraw:
    """The fixed noise of one validation image at one timestep: the same at every saved step."""
    import torch

    generator = sample_generator(seed, VALIDATION_STREAM, position, image_index)
    noise = torch.randn(shape, generator=generator)[None]
    return NoiseDraw(noise.to(device=device, dtype=dtype), torch.tensor([timestep], device=device).long(), [generator])
