"""The world model's parts: a random-initialised tiny SD 1.x pipeline, and its VAE's pre-training.

The classes are Stable Diffusion 1.x's (UNet2DConditionModel, AutoencoderKL, a CLIP text
encoder with the CLIP BPE tokenizer of :mod:`evaluator.generation.tokenizer`), with a
handful of channels, so every stage of atelier loads and runs the world model exactly as
it would a real checkpoint.

The VAE is trained first, by a short loop of its own (reconstruction + a small KL term),
because the product's trainer trains UNets and adapters, not autoencoders; its
``scaling_factor`` is then set so that latents have unit variance, as SD's 0.18215 does.

Reads nothing; ``pretrain_vae`` trains a module in place.
"""

from __future__ import annotations

from typing import Any


def build_components(config: Any) -> dict:
    """Random-initialised pipeline parts for ``config`` (a WorldConfig), from ``config.seed``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from evaluator.generation.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer(n_merges=config.tokenizer_merges)
    vocab = len(tokenizer)
    torch.manual_seed(config.seed)
    levels = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=config.resolution // config.vae_factor, in_channels=config.latent_channels,
        out_channels=config.latent_channels, cross_attention_dim=config.text_hidden,
        block_out_channels=tuple(config.unet_channels), layers_per_block=config.unet_layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        norm_num_groups=8, attention_head_dim=config.attention_head_dim,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1, hidden_size=config.text_hidden,
        intermediate_size=config.text_hidden * 2, num_attention_heads=2, num_hidden_layers=config.text_layers,
        vocab_size=vocab, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=config.text_hidden,
        layer_norm_eps=1e-5,
    ))
    vae_levels = len(config.vae_channels)
    vae = AutoencoderKL(
        block_out_channels=tuple(config.vae_channels), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_levels, up_block_types=("UpDecoderBlock2D",) * vae_levels,
        latent_channels=config.latent_channels, norm_num_groups=8, layers_per_block=1, sample_size=config.resolution,
        mid_block_add_attention=config.vae_attention,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def pretrain_vae(vae, images, config: Any, progress: bool = True) -> list[float]:
    """Train ``vae`` on ``images`` (a float tensor [N, 3, H, W] in [-1, 1]); return the loss per step.

    Loss: mean squared reconstruction error of a sampled latent + ``vae_kl_weight`` x KL,
    Adam at ``vae_learning_rate`` with a cosine decay. Afterwards ``scaling_factor`` is
    1 / std of the latents' means, so the UNet sees unit-variance latents.
    """
    import torch
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.vae_learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.vae_steps)
    vae.train()
    losses = []
    for _ in tqdm(range(config.vae_steps), desc="world vae", unit="step", disable=not progress, dynamic_ncols=True):
        batch = images[torch.randint(0, len(images), (config.vae_batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(latents).sample
        loss = torch.nn.functional.mse_loss(reconstruction, batch) + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    return losses


def reconstruction_error(vae, images) -> float:
    """Mean absolute error (in [0, 1] pixel units) of encoding + decoding ``images`` with the latent means."""
    import torch

    with torch.no_grad():
        decoded = vae.decode(vae.encode(images).latent_dist.mean).sample
    return float((decoded.clamp(-1, 1) - images).abs().mean() / 2)
