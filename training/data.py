"""MNIST as tensors, the seeded validation split, and batch augmentation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.mnist import load_split

VALIDATION_SIZE = 5_000


@dataclass
class Tensors:
    x: torch.Tensor  # (n, 1, 28, 28) float32 in [0, 1]
    y: torch.Tensor  # (n,) int64


def to_tensors(images: np.ndarray, labels: np.ndarray) -> Tensors:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Tensors(x=x, y=torch.from_numpy(labels.astype(np.int64)))


def train_val_split(data_dir, seed: int = 0, val_size: int = VALIDATION_SIZE,
                    limit: int | None = None) -> tuple[Tensors, Tensors]:
    """The 60,000 training digits split, seeded, into train and validation parts.

    The test digits never appear here: they are only for reporting."""
    train = load_split(data_dir, "train")
    order = np.random.default_rng(seed).permutation(len(train.labels))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if limit is not None:
        train_idx = train_idx[:limit]
        val_idx = val_idx[: max(1, min(val_size, limit // 5))]
    return (to_tensors(train.images[train_idx], train.labels[train_idx]),
            to_tensors(train.images[val_idx], train.labels[val_idx]))


def test_tensors(data_dir) -> Tensors:
    test = load_split(data_dir, "test")
    return to_tensors(test.images, test.labels)


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 8.0,
                  scale: float = 0.1, shift_px: float = 2.0) -> torch.Tensor:
    """Rotate, scale and shift a whole batch at once (one affine_grid + grid_sample call),
    far cheaper on a CPU than per-image transforms."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-degrees, degrees) * math.pi / 180
    factor = uniform(1 - scale, 1 + scale)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2/28.
    tx, ty = (uniform(-shift_px, shift_px) * 2 / 28 for _ in range(2))
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
