"""`digits compare` as one plain function: split the data, fit the three models, measure
them all the same way, then write the figures, a JSON of every number, and the report."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from shared.mnist import FILES as MNIST_FILES
from shared.mnist import data_digest
from training.compare import plots, report
from training.compare.cnn import fit_cnn
from training.compare.config import CompareConfig
from training.compare.measure import machine, measure, summarise
from training.compare.mlp import fit_mlp
from training.compare.svm import fit_svm
from training.data import Tensors, test_tensors, train_val_split

REPORT_NAME = "comparison.md"
JSON_NAME = "comparison.json"
PREFIX = "compare-"  # every figure's name starts with it: the folder may hold other reports


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_comparison(data_dir: Path, out_dir: Path, config: CompareConfig,
                   command: str = "digits compare", log=print) -> Path:
    """Train, measure and report; returns the Markdown report's path."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    info = machine()
    train_set, val_set = train_val_split(data_dir, seed=config.seed, limit=config.train_limit)
    test = test_tensors(data_dir)
    if config.test_limit is not None:
        test = Tensors(test.x[: config.test_limit], test.y[: config.test_limit])
    log(f"data: {len(train_set.x):,} training, {len(val_set.x):,} validation, "
        f"{len(test.x):,} test digits")

    trained = []
    stage = time.perf_counter()
    trained.append(fit_svm(train_set, val_set, config, log=log))
    log(f"SVM trained ({time.perf_counter() - stage:.0f} s with the search)")
    stage = time.perf_counter()
    log(f"MLP: training {len(config.mlp_hidden) * len(config.mlp_dropout)} candidates")
    trained.append(fit_mlp(train_set, val_set, config.mlp_hidden, config.mlp_dropout,
                           config.mlp_epochs, seed=config.seed, log=log))
    log(f"MLP trained ({time.perf_counter() - stage:.0f} s with the search)")
    log("CNN: training with the shipped recipe")
    trained.append(fit_cnn(train_set, val_set, epochs=config.cnn_epochs, seed=config.seed))
    log(f"CNN trained ({trained[-1].train_seconds:.0f} s)")

    # Measured one after the other, after all training, so none competes with a fit.
    models = []
    for t in trained:
        models.append(summarise(t, measure(t, test, config.latency_samples), test))
        m = models[-1]
        log(f"{m['name']}: accuracy {m['accuracy']:.4f} ({m['errors']} errors), "
            f"{m['throughput_per_s']:,.0f} digits/s, latency {m['latency_ms']['median']:.2f} ms")

    results = {
        "quick": config.quick,
        "command": command,
        "config": asdict(config),
        "started_at": started_at.isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": info,
        "data": {
            "train_total": MNIST_FILES["train"][2],
            "train_size": len(train_set.x),
            "val_size": len(val_set.x),
            "test_size": len(test.x),
            "sha256": data_digest(data_dir),
        },
        "models": models,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(models, test, out_dir, config.error_grid)
    figures["json"] = JSON_NAME
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["seconds"] = time.perf_counter() - started
    (out_dir / JSON_NAME).write_text(json.dumps(results, indent=1) + "\n")
    path = out_dir / REPORT_NAME
    path.write_text(report.build(results, figures))
    log(f"wrote {path} and {len(figures) - 1} figures in {results['seconds'] / 60:.1f} min")
    return path


def draw_figures(models: list[dict], test: Tensors, out_dir: Path,
                 error_grid: int) -> dict[str, str]:
    """Every PNG; returns {figure key: file name relative to out_dir}."""
    images = test.x[:, 0].numpy()
    paths = {
        "accuracy": plots.accuracy_bars(models, out_dir / f"{PREFIX}accuracy.png"),
        "timing": plots.timing_bars(models, out_dir / f"{PREFIX}timing.png"),
    }
    for m in models:
        slug = m["name"].lower()
        paths[f"confusion_{m['name']}"] = plots.confusion(
            m, out_dir / f"{PREFIX}confusion-{slug}.png")
        paths[f"errors_{m['name']}"] = plots.misclassified(
            m, images, out_dir / f"{PREFIX}errors-{slug}.png", error_grid)
        if m["history"] is not None:
            paths[f"curves_{m['name']}"] = plots.training_curves(
                m, out_dir / f"{PREFIX}training-{slug}.png")
    return {key: path.name for key, path in paths.items()}
