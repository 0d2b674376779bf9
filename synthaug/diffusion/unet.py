"""The diffusion network and its noise schedule: diffusers' UNet2DModel and DDPMScheduler, built from the recipe."""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DModel

from synthaug.recipe.sections import DiffusionConfig, ModelConfig


def build_unet(cfg: ModelConfig, channels: int, num_classes: int) -> UNet2DModel:
    """A UNet2DModel; class-conditional models get one extra embedding, the null class used for guidance."""
    down = tuple("AttnDownBlock2D" if attn else "DownBlock2D" for attn in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(cfg.attention_levels))
    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        num_class_embeds=num_classes + 1 if cfg.conditioning == "class_conditional" else None,
    )


def null_class(unet: UNet2DModel) -> int | None:
    """The label meaning 'no class' of a class-conditional UNet (its last embedding), else None."""
    n = unet.config.num_class_embeds
    return None if n is None else n - 1


def build_noise_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
    )
