"""From the model's calibrated probabilities to an item's status and review flag."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.imaging import Prepared

# Defaults used when the model metadata carries no fitted thresholds.
DEFAULT_REVIEW_THRESHOLD = 0.9
DEFAULT_NO_DIGIT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Verdict:
    status: str  # "done" or "no_digit"
    digit: int | None
    confidence: float
    needs_review: bool


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def judge(prepared: Prepared, probabilities: np.ndarray, meta: dict) -> Verdict:
    review = float(meta.get("review_threshold", DEFAULT_REVIEW_THRESHOLD))
    no_digit = float(meta.get("no_digit_threshold", DEFAULT_NO_DIGIT_THRESHOLD))
    digit = int(np.argmax(probabilities))
    confidence = float(probabilities[digit])
    if not prepared.has_ink or confidence < no_digit:
        return Verdict("no_digit", None, confidence, needs_review=False)
    return Verdict("done", digit, confidence, needs_review=confidence < review)
