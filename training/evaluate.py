"""Accuracy, error count and confusion matrix of a model on the MNIST test digits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.data import Tensors
from training.train import predict_logits


@dataclass
class Evaluation:
    n: int
    errors: int
    accuracy: float
    confusion: np.ndarray  # (10, 10): rows true digit, columns predicted
    predictions: np.ndarray

    def as_dict(self) -> dict:
        return {"n": self.n, "errors": self.errors, "accuracy": self.accuracy,
                "confusion": self.confusion.tolist()}


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def evaluate(model: torch.nn.Module, data: Tensors) -> Evaluation:
    predicted = predict_logits(model, data.x).argmax(1).numpy()
    truth = data.y.numpy()
    errors = int((predicted != truth).sum())
    return Evaluation(n=len(truth), errors=errors, accuracy=1 - errors / len(truth),
                      confusion=confusion_matrix(truth, predicted), predictions=predicted)


def format_confusion(matrix: np.ndarray) -> str:
    lines = ["true\\pred " + " ".join(f"{d:>5}" for d in range(10))]
    lines += [f"{t:>9} " + " ".join(f"{v:>5}" for v in row) for t, row in enumerate(matrix)]
    return "\n".join(lines)
