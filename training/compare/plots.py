"""The report's figures, drawn with matplotlib's file-only Agg backend (no display needed).

Each function draws one figure from the plain numbers `measure.summarise` produced, writes
one PNG, and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # file output only; chosen before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, NullFormatter

COLOURS = {"SVM": "#4c72b0", "MLP": "#dd8452", "CNN": "#55a868"}
DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _bars(ax, names, values, labels, log=False):
    bars = ax.bar(names, values, color=[COLOURS.get(n, "grey") for n in names])
    if log:
        ax.set_yscale("log")
    for bar, label in zip(bars, labels, strict=True):
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9, xytext=(0, 2),
                    textcoords="offset points")
    return bars


def accuracy_bars(models: list[dict], path: Path) -> Path:
    """Test accuracy (zoomed axis, labelled) and error count (axis from zero)."""
    names = [m["name"] for m in models]
    acc = [100 * m["accuracy"] for m in models]
    errors = [m["errors"] for m in models]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    _bars(left, names, acc, [f"{a:.2f}%" for a in acc])
    # Zoomed, or 98% and 99.6% look the same; the title says so.
    low = max(0.0, min(acc) - 2 * (100 - min(acc)) - 0.5)
    left.set_ylim(low, 100)
    left.set_title(f"Test accuracy (axis starts at {low:.1f}%)")
    left.set_ylabel("% of test digits")
    _bars(right, names, errors, [str(e) for e in errors])
    right.set_ylim(0, max(errors) * 1.15 + 1)
    right.set_title(f"Errors on {models[0]['n_test']:,} test digits")
    right.set_ylabel("misclassified digits")
    return _save(fig, path)


def timing_bars(models: list[dict], path: Path) -> Path:
    """Training time, time to predict the whole test set, and single-image latency, on log
    axes: the models differ by orders of magnitude."""
    names = [m["name"] for m in models]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    _wall_and_cpu(axes[0], models, "train")
    axes[0].set_title("Training (final fit), log scale")
    _wall_and_cpu(axes[1], models, "test")
    axes[1].set_title(f"Predicting all {models[0]['n_test']:,} test digits, log")
    median = np.array([m["latency_ms"]["median"] for m in models])
    p95 = np.array([m["latency_ms"]["p95"] for m in models])
    _bars(axes[2], names, median, [f"{v:.2f} ms" for v in median], log=True)
    axes[2].errorbar(names, median, yerr=[np.zeros_like(median), p95 - median], fmt="none",
                     ecolor="black", capsize=4, label="p95")
    axes[2].set_title("One digit per call: median, bar to p95, log")
    axes[2].set_ylabel("milliseconds")
    axes[2].legend(loc="upper left", fontsize=8)
    for ax in axes:  # room above the tallest bar for its label; plain tick labels
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    return _save(fig, path)


def _wall_and_cpu(ax, models: list[dict], key: str) -> None:
    """Side-by-side bars: wall-clock (solid) and CPU time (hatched) of each model."""
    x = np.arange(len(models))
    wall = [m[f"{key}_seconds"] for m in models]
    cpu = [m[f"{key}_cpu_seconds"] for m in models]
    colours = [COLOURS.get(m["name"], "grey") for m in models]
    for offset, values, hatch, label in ((-0.2, wall, None, "wall"), (0.2, cpu, "//", "CPU")):
        bars = ax.bar(x + offset, values, width=0.4, color=colours, hatch=hatch,
                      edgecolor="white" if hatch else None, label=label)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(_duration(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(x, [m["name"] for m in models])
    ax.set_ylabel("seconds")
    ax.legend(loc="upper left", fontsize=8)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def confusion(model: dict, path: Path) -> Path:
    """Counts, rows the true digit and columns the prediction; a log colour scale, so that
    the few errors off the diagonal show beside the thousand-odd hits on it."""
    matrix = np.array(model["confusion"])
    fig, ax = plt.subplots(figsize=(5.6, 5))
    image = ax.imshow(np.maximum(matrix, 0.5), cmap="Blues", norm=LogNorm(vmin=0.5))
    for (t, p), count in np.ndenumerate(matrix):
        if count:
            ax.text(p, t, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max() / 10 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"{model['name']}: {model['errors']} errors in {model['n_test']:,}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count (log scale)")
    return _save(fig, path)


def misclassified(model: dict, images: np.ndarray, path: Path, limit: int) -> Path:
    """The first `limit` misclassified test digits, in test-set order, each titled
    'true→predicted'."""
    wrong = model["misclassified"][:limit]
    cols = 10
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.15 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (index, true, pred) in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{true}→{pred}", fontsize=9, color="firebrick")
    shown = f"first {len(wrong)} of {model['errors']}" if model["errors"] > limit else "all"
    fig.suptitle(f"{model['name']}: misclassified test digits ({shown}), true→predicted",
                 fontsize=10)
    return _save(fig, path)


def training_curves(model: dict, path: Path) -> Path:
    """Loss and accuracy per epoch on the training and validation parts."""
    history = model["history"]
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(epochs, history["train_loss"], "o-", label="train")
    left.plot(epochs, history["val_loss"], "s-", label="validation")
    left.set_title(f"{model['name']} loss per epoch")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    right.plot(epochs, [100 * a for a in history["train_acc"]], "o-", label="train")
    right.plot(epochs, [100 * a for a in history["val_acc"]], "s-", label="validation")
    right.set_title(f"{model['name']} accuracy per epoch")
    right.set_xlabel("epoch")
    right.set_ylabel("%")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs)
    return _save(fig, path)
