"""The model inside a worker process: loaded once, on first use, after the fork.

CUDA is touched only here, lazily, so a prefork parent never initialises it
("Cannot re-initialize CUDA in forked subprocess"). Batches are capped at
`max_batch_size`, measured as the fastest size on the target device (bench/).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch

from shared import artifact, metrics
from shared.artifact_meta import version_label
from shared.runtime import OnnxModel, choose, recheck_file
from shared.settings import get_settings
from shared.verdict import DEFAULT_REVIEW_THRESHOLD, softmax

log = logging.getLogger(__name__)


# An int8 confidence this far above the review threshold is re-scored in fp32 too: on
# MNIST and the real sets' test parts no image that torch puts under the threshold has
# an int8 confidence above it plus this margin (4 % of MNIST digits re-scored, 25 % of
# the cheque digits).
RECHECK_MARGIN = 0.02


class Predictor:
    def __init__(self, weights, device: str = "auto", max_batch_size: int = 64,
                 threads: int = 0, runtime: str = "auto") -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.threads = threads
        self._use_threads()
        self.device = torch.device(device)
        self.model, self.meta = artifact.load(weights, map_location=str(self.device))
        # channels_last runs the convolutions through oneDNN's faster kernels on the CPU
        # (1.3x here, bench/throughput.py) with identical float32 results.
        self.model.to(memory_format=torch.channels_last)
        self.runtime, onnx_path = choose(runtime, self.device.type, Path(weights), self.meta)
        self.onnx = OnnxModel(onnx_path, threads) if onnx_path is not None else None
        # The int8 model's unsure images are scored again in fp32: by ONNX Runtime where
        # the fp32 form was exported (the same logits within 1e-6, 2.6x faster than torch
        # on the dozen images of a chunk), else by torch.
        fp32_path = recheck_file(Path(weights), self.meta) if self.onnx is not None else None
        self.fp32 = OnnxModel(fp32_path, threads) if fp32_path is not None else None
        self.temperature = float(self.meta.get("temperature", 1.0))
        # Unsure under int8 means within RECHECK_MARGIN of the review threshold.
        self.recheck_below = min(1.0, float(self.meta.get("review_threshold",
                                                          DEFAULT_REVIEW_THRESHOLD))
                                 + RECHECK_MARGIN)
        self.max_batch_size = max_batch_size
        # Results name the runtime too: the int8 model is a form of these weights.
        self.version = f"{version_label(self.meta)}+{self.runtime}"
        log.info("model %s loaded on %s (%d threads)", self.version, self.device,
                 threads or torch.get_num_threads())

    def _use_threads(self) -> None:
        # OpenMP's thread count is per calling thread: set it in whichever thread runs the
        # model (a task thread, a lane process), or it falls back to every core and two
        # worker processes fight over them.
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray, counted: bool = True) -> np.ndarray:
        """(n, 28, 28) float32 in [0, 1] -> (n, 10) calibrated probabilities. Each forward
        pass's size goes to the batch-size histogram unless `counted` is false (warm-up)."""
        self._use_threads()
        out = []
        for start in range(0, len(pixels), self.max_batch_size):
            part = pixels[start : start + self.max_batch_size]
            out.append(self._logits(part) if self.onnx is None else self.int8_logits(part))
            if counted:
                metrics.WORKER_BATCH.observe(len(part))
        if not out:
            return np.zeros((0, 10), np.float32)
        return softmax(np.concatenate(out), self.temperature)

    def _logits(self, part: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(part)).unsqueeze(1)
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model(batch).float().cpu().numpy()

    def int8_logits(self, part: np.ndarray) -> np.ndarray:
        """The int8 model's logits, with the unsure images scored again in fp32: where the
        verdict's thresholds cut (no digit, needs review), the answer is torch's, so the
        runtime moves none of the rates those thresholds were calibrated for; a confident
        image keeps its int8 answer."""
        logits = self.onnx.logits(part)
        confidence = softmax(logits, self.temperature).max(1)
        unsure = confidence < self.recheck_below
        if unsure.any():
            again = part[unsure]
            logits[unsure] = (self.fp32.logits(again) if self.fp32 is not None
                              else self._logits(again))
        return logits


_predictor: Predictor | None = None
_lock = threading.Lock()


def get_predictor() -> Predictor:
    """The process's predictor, built on first call (not in worker_process_init, whose
    handlers Celery kills after about 4 s)."""
    global _predictor
    with _lock:
        if _predictor is None:
            s = get_settings()
            _predictor = Predictor(s.model_path, s.device, s.max_batch_size, s.torch_threads,
                                   s.runtime)
        return _predictor


def loaded_version() -> str | None:
    """The digit model's version with its runtime, once this process has loaded it."""
    return _predictor.version if _predictor is not None else None


def warm_up(predictor: Predictor) -> None:
    """What a first batch would otherwise wait for: the model's kernels for a full batch,
    the decoders and resampling weights."""
    import io

    from PIL import Image

    from shared.imaging import prepare_many

    predictor.probabilities(np.zeros((predictor.max_batch_size, 28, 28), np.float32),
                            counted=False)
    page = np.full((28, 28), 255, np.uint8)
    page[6:22, 12:16] = 0  # a "1"
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="PNG")
    prepare_many([buffer.getvalue()])
