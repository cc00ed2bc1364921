"""A worker keeps the memory its forward passes free (worker/malloc.py): without that,
glibc hands the activations' pages back to the kernel between chunks and every chunk
faults them in again, 100+ page faults per image here."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Starts the way a worker does (Celery's worker_init signal), then classifies chunks
# of PNG scans and prints the page faults per image of eight chunks, after three that
# let the heap grow to its working size.
SCRIPT = """
import resource, sys
from celery.signals import worker_init
import worker.celery_app
from shared.settings import get_settings
from tests.conftest import mnist_png_bytes
from worker.inference import Predictor
from worker.processing import classify

if sys.argv[1] == "worker":
    worker_init.send(sender=None)
pngs = [data for _, data, _ in mnist_png_bytes(0, 11 * 128)]
predictor = Predictor(get_settings().model_path, "cpu", 128, 1)
for start in range(0, 3 * 128, 128):
    classify(pngs[start : start + 128], predictor)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for start in range(3 * 128, len(pngs), 128):
    classify(pngs[start : start + 128], predictor)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (8 * 128))
"""


def _faults_per_image(mode: str, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc thresholds are glibc's")
def test_a_started_worker_does_not_fault_its_batches_in_again(shipped_model):
    env = {**os.environ, "DIGITS_MODEL_PATH": str(shipped_model)}
    # Measured (glibc 2.36): 0-1.5 an image once started as a worker, 20-120 without; a
    # step of heap growth, now and then, costs ~5 an image over these eight chunks.
    assert _faults_per_image("worker", env) < 12
