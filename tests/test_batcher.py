"""The interactive dynamic batcher on the shipped model: concurrent requests share
forward passes and each gets exactly its own answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.mnist import load_split
from worker.batcher import DynamicBatcher
from worker.inference import Predictor


@pytest.fixture(scope="module")
def predictor(shipped_model):
    return Predictor(shipped_model, "cpu", max_batch_size=64, threads=2)


@pytest.fixture(scope="module")
def digits(data_dir):
    test = load_split(data_dir, "test")
    return test.images[:64].astype(np.float32) / 255, test.labels[:64]


def test_concurrent_requests_share_batches_and_get_their_own_rows(predictor, digits):
    pixels, labels = digits
    batcher = DynamicBatcher(predictor.probabilities, max_batch_size=16, max_wait_s=0.05)
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda i: batcher.submit(pixels[i : i + 1], timeout=60),
                                range(64)))
    alone = predictor.probabilities(pixels)
    for i, probs in enumerate(answers):
        assert probs.shape == (1, 10)
        np.testing.assert_allclose(probs[0], alone[i], atol=1e-4)
    assert (np.argmax(alone, 1) == labels).mean() > 0.95
    assert max(batcher.batch_sizes) > 1, "concurrent requests should have shared a pass"
    assert max(batcher.batch_sizes) <= 16  # the cap, for one-image requests
    assert sum(batcher.batch_sizes) == 64


def test_a_failure_reaches_every_caller_and_the_batcher_goes_on(predictor, digits):
    batcher = DynamicBatcher(predictor.probabilities, max_batch_size=8, max_wait_s=0.01)
    with pytest.raises(RuntimeError):
        batcher.submit(np.zeros((1, 5, 5), np.float32), timeout=60)  # not 28x28
    pixels, _ = digits
    assert batcher.submit(pixels[:2], timeout=60).shape == (2, 10)
