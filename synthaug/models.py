"""Networks: the diffusers UNet2DModel and its noise scheduler, built from the recipe, and the downstream classifiers."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from synthaug.config import DiffusionConfig, EvaluateConfig, ModelConfig


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


# Downstream classifiers (evaluate, audit features). Plain torch.nn: torchvision is not installed.


class SmallCNN(nn.Module):
    """Five 3x3 convolutions with batch norm, for CPU runs; `features` is the penultimate layer."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.body = nn.Sequential(
            *block(channels, width, False),
            *block(width, width, True),
            *block(width, 2 * width, False),
            *block(2 * width, 2 * width, True),
            *block(2 * width, 4 * width, False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 28 px inputs as in the MedMNIST v2 benchmark: 3x3 stem, stride 1, no max-pool."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(512, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(cfg: EvaluateConfig, channels: int, num_classes: int) -> nn.Module:
    """The recipe's downstream classifier (`evaluate.classifier`; `small_cnn` honours `evaluate.width`)."""
    if cfg.classifier == "small_cnn":
        return SmallCNN(channels, num_classes, width=cfg.width)
    return ResNet18(channels, num_classes)
