"""`digits train` as a plain function: split, train, calibrate, evaluate, save the artifact."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from shared import artifact
from shared.mnist import data_digest
from training.data import test_tensors, train_val_split
from training.evaluate import evaluate
from training.train import Recipe, fit_temperature, train


def train_and_save(data_dir: Path, weights: Path, recipe: Recipe, limit: int | None = None,
                   progress: bool = True) -> dict:
    """Train on the training digits (less a validation part), report on the test digits,
    and write the artifact. Returns its metadata."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_set, val_set = train_val_split(data_dir, seed=recipe.seed, limit=limit)
    model, history = train(train_set, val_set, recipe, progress=progress)
    temperature = fit_temperature(model, val_set)
    result = evaluate(model, test_tensors(data_dir))
    return artifact.save(
        model,
        weights,
        recipe=asdict(recipe),
        train_size=len(train_set.x),
        validation_size=len(val_set.x),
        validation_accuracy=history.val_acc[-1],
        temperature=temperature,
        test_accuracy=result.accuracy,
        test_errors=result.errors,
        test_n=result.n,
        training_seconds=round(history.seconds, 1),
        history=asdict(history),
        data_sha256=data_digest(data_dir),
    )
