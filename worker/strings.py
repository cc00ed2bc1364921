"""The string network inside a worker process, and reading fields with it.

Loaded once per process on first use, after the fork, on the device and with the
threads of the digit model (settings: DIGITS_DEVICE, DIGITS_TORCH_THREADS), and on the
same runtime setting (DIGITS_RUNTIME): its fp32 ONNX form on ONNX Runtime where
`digits export-onnx` made it, else torch (shared/runtime.py). Strips of similar width go
through it together, at most DIGITS_MAX_BATCH_SIZE at a time, as single digits do.

`read_strings(images)` is the plain function for one request or one chunk: bytes in,
result dicts out (what /predict answers with mode=string).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch

from shared import metrics
from shared.artifact import ONNX_FP32
from shared.runtime import choose, session
from shared.settings import get_settings
from shared.stringnet import STRIDE, load, path_beside
from shared.strings import DEFAULT_REVIEW_THRESHOLD, Reading, read_fields

log = logging.getLogger(__name__)

# Strips are batched up to this many pixels too: one long field must not make a batch of
# 128 short ones as wide as itself.
MAX_BATCH_PIXELS = 128 * 32 * 160


class StringModel:
    def __init__(self, weights, device: str = "auto", max_batch_size: int = 64,
                 threads: int = 0, runtime: str = "auto") -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.threads = threads
        self._use_threads()
        self.device = torch.device(device)
        self.model, self.meta = load(weights, map_location=str(self.device))
        self.runtime, onnx_path = choose(runtime, self.device.type, Path(weights), self.meta,
                                         ONNX_FP32)
        self.onnx = session(onnx_path, threads) if onnx_path is not None else None
        self.max_batch_size = max_batch_size
        self.review = float(self.meta.get("review_threshold", DEFAULT_REVIEW_THRESHOLD))
        self.version = (f"{self.meta.get('name', 'digits-strings')} {self.meta.get('version')}"
                        f"+{self.runtime}")
        log.info("string model %s loaded on %s", self.version, self.device)

    def _use_threads(self) -> None:
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _batches(self, widths: list[int]) -> list[list[int]]:
        order = sorted(range(len(widths)), key=widths.__getitem__)
        batches: list[list[int]] = [[]]
        for i in order:
            wide = max([widths[j] for j in batches[-1]] + [widths[i]])
            if batches[-1] and (len(batches[-1]) >= self.max_batch_size
                                or wide * 32 * (len(batches[-1]) + 1) > MAX_BATCH_PIXELS):
                batches.append([])
            batches[-1].append(i)
        return batches

    @torch.inference_mode()
    def log_probs(self, strips: list[np.ndarray]) -> list[np.ndarray]:
        """(32, W) strips -> each one's (W / 4, 11) log-probabilities."""
        self._use_threads()
        out: list[np.ndarray | None] = [None] * len(strips)
        for batch in self._batches([s.shape[1] for s in strips]):
            width = max(strips[i].shape[1] for i in batch)
            x = np.zeros((len(batch), 1, strips[batch[0]].shape[0], width), np.float32)
            for k, i in enumerate(batch):
                x[k, 0, :, : strips[i].shape[1]] = strips[i]
            widths = np.array([strips[i].shape[1] for i in batch], np.int64)
            if self.onnx is not None:
                result = self.onnx.run(None, {"x": x, "widths": widths})[0]
            else:
                result = self.model(torch.from_numpy(x).to(self.device),
                                    torch.from_numpy(widths).to(self.device)
                                    ).float().cpu().numpy()
            metrics.WORKER_BATCH.observe(len(batch))
            for k, i in enumerate(batch):
                out[i] = result[: strips[i].shape[1] // STRIDE, k]
        return out  # type: ignore[return-value]

    def read(self, images: list[bytes]) -> list[Reading]:
        settings = get_settings()
        return read_fields(images, self.log_probs, self.review, settings.max_image_pixels,
                           settings.string_looks)


_model: StringModel | None = None
_lock = threading.Lock()


def get_string_model() -> StringModel:
    """The process's string model, built on first call, beside the digit model."""
    global _model
    with _lock:
        if _model is None:
            s = get_settings()
            _model = StringModel(path_beside(s.model_path), s.device, s.max_batch_size,
                                 s.torch_threads, s.runtime)
        return _model


def as_result(r: Reading, version: str | None = None) -> dict:
    """A reading as the API's item result: `digit` and `probabilities` stay null."""
    out = {"status": r.status, "digit": None, "confidence": (
               None if r.confidence is None else round(r.confidence, 6)),
           "probabilities": None, "needs_review": r.needs_review, "error": r.error,
           "text": r.text, "digits": [d.as_dict() for d in r.digits] if r.digits else None}
    if version is not None:
        out["model_version"] = version
    return out


def read_strings(images: list[bytes], model: StringModel | None = None) -> list[dict]:
    """Bytes of field images -> their results, in order, as /predict with mode=string
    answers them (a bad image fails alone)."""
    model = model or get_string_model()
    return [as_result(r, model.version) for r in model.read(images)]
