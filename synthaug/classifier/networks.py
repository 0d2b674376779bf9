"""The downstream classifiers: a small CNN and a CIFAR-style ResNet-18."""

from __future__ import annotations

import torch
from torch import nn

from synthaug.recipe.sections import EvaluateConfig


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


def classifier_head(model: nn.Module) -> nn.Linear:
    """The last linear layer of a `build_classifier` network, on its `features`: what decoupled re-training (cRT) re-trains."""
    return model.head


def build_classifier(cfg: EvaluateConfig, channels: int, num_classes: int) -> nn.Module:
    """The recipe's downstream classifier (`evaluate.classifier`; `small_cnn` honours `evaluate.width`)."""
    if cfg.classifier == "small_cnn":
        return SmallCNN(channels, num_classes, width=cfg.width)
    return ResNet18(channels, num_classes)
