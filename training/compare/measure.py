"""Measurements taken the same way for every model: accuracy on the test digits, throughput
over the whole test set, single-image latency, size on disk, and the machine itself."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from training.compare.models import Classifier, Trained
from training.compare.stopwatch import Stopwatch
from training.data import Tensors
from training.evaluate import confusion_matrix


@dataclass
class Measured:
    predictions: np.ndarray
    test_seconds: float
    test_cpu_seconds: float
    latency_ms: list[float]
    size_bytes: int
    size_format: str
    load_average: float  # 1-minute load average when the measurement began


def measure(trained: Trained, test: Tensors, latency_samples: int) -> Measured:
    clf = trained.classifier
    # Other work on the machine slows every timing below; the report shows this beside them.
    load = os.getloadavg()[0]
    # Throughput: one call over all the test digits, timed, as a batch job would run it;
    # the predictions it returns are the ones scored.
    clf.predict(test.x[:8])  # warm-up: first-call allocations are not the model's speed
    with Stopwatch() as clock:
        predictions = clf.predict(test.x)
    latency = single_image_latency(clf, test.x, latency_samples)
    with tempfile.TemporaryDirectory() as folder:
        path = clf.save(Path(folder) / trained.name.lower())
        size = path.stat().st_size
    return Measured(predictions, clock.wall, clock.cpu, latency, size, path.suffix.lstrip("."),
                    load)


def single_image_latency(clf: Classifier, x: torch.Tensor, samples: int) -> list[float]:
    """Milliseconds per call with one digit, over `samples` different test digits."""
    for i in range(min(5, len(x))):  # warm-up
        clf.predict(x[i : i + 1])
    times = []
    for i in range(min(samples, len(x))):
        one = x[i : i + 1]
        start = time.perf_counter()
        clf.predict(one)
        times.append((time.perf_counter() - start) * 1000)
    return times


def summarise(trained: Trained, measured: Measured, test: Tensors) -> dict:
    """Everything the report and its JSON need about one model, as plain numbers."""
    truth = test.y.numpy()
    confusion = confusion_matrix(truth, measured.predictions)
    per_class_total = confusion.sum(1)
    per_class_errors = per_class_total - np.diag(confusion)
    wrong = np.flatnonzero(measured.predictions != truth)
    n = len(truth)
    return {
        "name": trained.name,
        "description": trained.description,
        "n_test": n,
        "errors": len(wrong),
        "accuracy": 1 - len(wrong) / n,
        "per_class_errors": per_class_errors.tolist(),
        "per_class_total": per_class_total.tolist(),
        "per_class_error_rate": (per_class_errors / np.maximum(per_class_total, 1)).tolist(),
        "confusion": confusion.tolist(),
        "misclassified": [[int(i), int(truth[i]), int(measured.predictions[i])] for i in wrong],
        "train_size": trained.train_size,
        "train_seconds": trained.train_seconds,
        "train_cpu_seconds": trained.train_cpu_seconds,
        "selection_seconds": trained.selection_seconds,
        "test_seconds": measured.test_seconds,
        "test_cpu_seconds": measured.test_cpu_seconds,
        "throughput_per_s": n / measured.test_seconds,
        "latency_ms": {
            "median": float(np.median(measured.latency_ms)),
            "p95": float(np.percentile(measured.latency_ms, 95)),
            "samples": len(measured.latency_ms),
        },
        "load_average_at_measurement": round(measured.load_average, 2),
        "size_bytes": measured.size_bytes,
        "size_format": measured.size_format,
        "parameters": trained.classifier.n_parameters(),
        "chosen": trained.chosen,
        "candidates": trained.candidates,
        "notes": trained.notes,
        "history": None if trained.history is None else {
            "train_loss": trained.history.train_loss, "train_acc": trained.history.train_acc,
            "val_loss": trained.history.val_loss, "val_acc": trained.history.val_acc,
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    memory_gib = None
    try:
        meminfo = Path("/proc/meminfo").read_text().split()
        memory_gib = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": memory_gib,
        "torch_threads": torch.get_num_threads(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in
                      ("torch", "scikit-learn", "numpy", "matplotlib", "pillow", "safetensors")},
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
