"""The CNN exactly as `digits train` builds it: the shipped network and `Recipe()`, retrained
here so that its training time is measured in the same run as the others."""

from __future__ import annotations

from dataclasses import asdict

from training.compare.models import TorchClassifier, Trained
from training.compare.stopwatch import Stopwatch
from training.data import Tensors
from training.train import Recipe, train


def fit_cnn(train_set: Tensors, val_set: Tensors, epochs: int | None = None, seed: int = 0,
            progress: bool = False) -> Trained:
    recipe = Recipe(seed=seed)
    if epochs is not None:
        recipe.epochs = epochs
    with Stopwatch() as clock:
        model, history = train(train_set, val_set, recipe, progress=progress)
    notes = [
        "The shipped architecture and training recipe (`training.train.Recipe()`), not tuned "
        "again here: random affine augmentation, AdamW with a one-cycle schedule, label "
        "smoothing. The validation part is used only to draw the training curves.",
    ]
    if epochs is not None:
        notes.append(f"Epochs cut to {epochs} for this run (the recipe has {Recipe().epochs}).")
    return Trained(
        name="CNN",
        description="4 conv layers (32-32-64-64, batch norm) + 128-unit dense, augmented",
        classifier=TorchClassifier(model),
        train_size=len(train_set.x),
        train_seconds=clock.wall,
        train_cpu_seconds=clock.cpu,
        chosen=asdict(recipe),
        notes=notes,
        history=history,
    )
