"""The CNN: the one definition that training builds and the worker loads.

Four 3x3 convolutions (32, 32, 64, 64 channels) with batch norm, two max-pools,
a 128-unit dense layer with dropout: about 468k parameters, which keeps a CPU
worker fast while reaching 99.65%+ on MNIST with augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

# Inputs are 28x28, ink bright on black, scaled to [0, 1], then standardised with
# the MNIST training set's mean and standard deviation.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class DigitCNN(nn.Module):
    """Maps a (N, 1, 28, 28) float batch in [0, 1] to (N, 10) logits."""

    def __init__(self, channels: tuple[int, ...] = (32, 32, 64, 64), hidden: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.features = nn.Sequential(
            *_block(1, c1), *_block(c1, c2), nn.MaxPool2d(2),
            *_block(c2, c3), *_block(c3, c4), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c4 * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )
        self.config = {"channels": list(channels), "hidden": hidden, "dropout": dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - MNIST_MEAN) / MNIST_STD
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
