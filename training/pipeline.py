"""`digits train` as a plain function: split, train, calibrate, evaluate, save the artifact."""

from __future__ import annotations

import copy
from dataclasses import asdict, replace
from pathlib import Path

import torch

from shared import artifact
from shared.mnist import data_digest
from shared.settings import get_settings
from training.data import Tensors, test_tensors, train_val_split
from training.evaluate import evaluate
from training.mixture import RENDERED, extra_training
from training.train import History, Recipe, fit_temperature, train

ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def interpolate(start: torch.nn.Module, tuned: torch.nn.Module, alpha: float):
    """The weights (1 - alpha) * start + alpha * tuned (batch-norm statistics too)."""
    model = copy.deepcopy(tuned)
    ends = start.state_dict()
    model.load_state_dict({k: torch.lerp(ends[k].float(), v.float(), alpha).to(v.dtype)
                           if v.dtype.is_floating_point else v
                           for k, v in tuned.state_dict().items()})
    return model.eval()


def keep_mnist(start, tuned, val_set: Tensors) -> tuple[float, torch.nn.Module]:
    """Fine-tuning on the mixture costs a little MNIST accuracy. Weight-space ensembling
    (WiSE-FT, Wortsman et al. 2022) walks back from the tuned weights towards the MNIST
    model: the largest step alpha whose MNIST validation accuracy is at least the MNIST
    model's. Chosen on validation digits only, never on test digits."""
    floor = evaluate(start, val_set).accuracy
    for alpha in ALPHAS:
        model = interpolate(start, tuned, alpha)
        if evaluate(model, val_set).accuracy >= floor:
            return alpha, model
    return 0.0, start


def train_and_save(data_dir: Path, weights: Path, recipe: Recipe, limit: int | None = None,
                   progress: bool = True, real_dir: Path | None = None,
                   init: Path | None = None) -> dict:
    """Train on the training digits (less a validation part), report on the test digits,
    and write the artifact. Returns its metadata."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_set, val_set = train_val_split(data_dir, seed=recipe.seed, limit=limit)
    trained_on = {"mnist_train_digits": len(train_set.x)}
    if init is None:  # stage 1: MNIST alone
        model, history = train(train_set, val_set, recipe, progress=progress)
    else:  # stage 1 done already: fine-tune that artifact
        model, init_meta = artifact.load(init)
        history = History()
        trained_on["stage_1"] = f"{init_meta['name']} {init_meta['version']}"
    if recipe.extra:  # stage 2: fine-tuned on MNIST plus the mixture
        extra, summary = extra_training(train_set, real_dir or get_settings().real_data_dir,
                                        rendered=min(RENDERED, len(train_set.x)))
        mixture = Tensors(torch.cat([train_set.x] * recipe.mnist_repeat + [extra.x]),
                          torch.cat([train_set.y] * recipe.mnist_repeat + [extra.y]))
        trained_on.update(summary, stage_2_images=len(mixture.x))
        stage_2 = replace(recipe, epochs=recipe.finetune_epochs, lr=recipe.finetune_lr)
        stage_1 = model
        model, tuned = train(mixture, val_set, stage_2, progress=progress, start=stage_1)
        alpha, model = keep_mnist(stage_1, model, val_set)
        trained_on["stage_2_alpha"] = alpha
        for key, values in asdict(tuned).items():
            if isinstance(values, list):
                getattr(history, key).extend(values)
        history.seconds += tuned.seconds
    temperature = fit_temperature(model, val_set)
    result = evaluate(model, test_tensors(data_dir))
    return artifact.save(
        model,
        weights,
        recipe=asdict(recipe),
        train_size=len(train_set.x),
        trained_on=trained_on,
        validation_size=len(val_set.x),
        validation_accuracy=evaluate(model, val_set).accuracy,
        temperature=temperature,
        test_accuracy=result.accuracy,
        test_errors=result.errors,
        test_n=result.n,
        training_seconds=round(history.seconds, 1),
        history=asdict(history),
        data_sha256=data_digest(data_dir),
    )
