"""A one-hidden-layer perceptron in PyTorch, the family of LeCun's "784-800-10" entry.

Each candidate (hidden width x dropout) is trained on the whole training part and scored on
the validation part; the best one is the final model, so nothing is retrained. No
augmentation: the published 1.6% for this family is without distortions too.
"""

from __future__ import annotations

import itertools
import time

import torch
import torch.nn.functional as F
from torch import nn

from shared.network import MNIST_MEAN, MNIST_STD
from training.compare.models import TorchClassifier, Trained
from training.compare.stopwatch import Stopwatch
from training.data import Tensors
from training.train import History, predict_logits

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4


class MLP(nn.Module):
    """784 -> hidden (ReLU, dropout) -> 10, on the same standardised input as the CNN."""

    def __init__(self, hidden: int = 800, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - MNIST_MEAN) / MNIST_STD)


@torch.no_grad()
def _loss_and_accuracy(model: nn.Module, data: Tensors) -> tuple[float, float]:
    logits = predict_logits(model, data.x)
    return (F.cross_entropy(logits, data.y).item(),
            (logits.argmax(1) == data.y).float().mean().item())


def train_mlp(train_set: Tensors, val_set: Tensors, hidden: int, dropout: float, epochs: int,
              seed: int = 0) -> tuple[MLP, History]:
    """AdamW with a one-cycle schedule, the CNN recipe's optimiser without its augmentation."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MLP(hidden, dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps = (len(train_set.x) + BATCH_SIZE - 1) // BATCH_SIZE
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE,
                                                total_steps=epochs * steps)
    history = History()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_set.x), generator=gen)
        total_loss, correct = 0.0, 0
        for step in range(steps):
            idx = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            logits = model(train_set.x[idx])
            loss = F.cross_entropy(logits, train_set.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == train_set.y[idx]).sum().item()
        val_loss, val_acc = _loss_and_accuracy(model, val_set)
        history.train_loss.append(total_loss / len(train_set.x))
        history.train_acc.append(correct / len(train_set.x))
        history.val_loss.append(val_loss)
        history.val_acc.append(val_acc)
    history.seconds = time.perf_counter() - start
    return model.eval(), history


def fit_mlp(train_set: Tensors, val_set: Tensors, hidden: tuple[int, ...],
            dropout: tuple[float, ...], epochs: int, seed: int = 0, log=print) -> Trained:
    start = time.perf_counter()
    candidates, best = [], None
    for h, p in itertools.product(hidden, dropout):
        with Stopwatch() as clock:
            model, history = train_mlp(train_set, val_set, h, p, epochs, seed)
        val_acc = history.val_acc[-1]
        candidates.append({"hidden": h, "dropout": p, "val_accuracy": val_acc,
                           "fit_seconds": round(clock.wall, 2)})
        log(f"  MLP 784-{h}-10 dropout {p}: validation accuracy {val_acc:.4f} "
            f"({clock.wall:.0f} s)")
        # Ties go to the earlier, smaller candidate: the grid lists narrow widths first.
        if best is None or val_acc > best[0]:
            best = (val_acc, h, p, model, history, clock)
    _, h, p, model, history, clock = best
    return Trained(
        name="MLP",
        description=f"784-{h}-10, ReLU, dropout {p}",
        classifier=TorchClassifier(model),
        train_size=len(train_set.x),
        train_seconds=clock.wall,
        train_cpu_seconds=clock.cpu,
        selection_seconds=time.perf_counter() - start,
        chosen={"hidden": h, "dropout": p, "epochs": epochs, "batch_size": BATCH_SIZE,
                "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY, "augmentation": False},
        candidates=candidates,
        notes=[
            f"Hidden width and dropout chosen by validation accuracy over {len(candidates)} "
            f"candidates, each trained for {epochs} epochs on all {len(train_set.x):,} "
            "training digits; the best candidate is the final model (no retraining), so its "
            "training time is that candidate's own.",
            "AdamW with a one-cycle schedule, plain cross-entropy, no augmentation.",
        ],
        history=history,
    )
