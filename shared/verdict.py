"""From the model's calibrated probabilities to an item's status and review flag.

`digits calibrate` fits the thresholds on the validation part of the training digits,
drawn as scans, plus generated pages that hold no digit, and stores them in the model
metadata; the defaults below only serve a model that was never calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.imaging import Prepared

# Defaults used when the model metadata carries no fitted thresholds.
DEFAULT_REVIEW_THRESHOLD = 0.9
DEFAULT_NO_DIGIT_THRESHOLD = 0.5
DEFAULT_MAX_CLUTTER = 0.5  # share of the ink lying in specks and shapes away from the digit
DEFAULT_MAX_INK_FRACTION = 0.5  # share of the page covered by ink
DEFAULT_MAX_PEN = 4.0  # pen width over MNIST's: wider is a blob or a photo, not a stroke
DEFAULT_MIN_PEN = 0.0  # under it no stroke at all: no pixel of the shape reaches half the ink
DEFAULT_MAX_PIECES = 8  # separate pieces of ink kept together: a digit has one to three
DEFAULT_MIN_CONTRAST = 0.0  # ink-paper difference (0..1) below which ink is a texture
DEFAULT_MAX_BLOCK = 1.0  # share of its box a digit's ink may fill (1.0: no limit)

# The no-digit probe reads these measures of the image beside the model's answer.
PROBE_MEASURES = ("ink_fraction", "contrast", "clutter", "pieces", "pen", "block")


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


def looks_like_no_digit(prepared: Prepared, meta: dict) -> bool:
    """Blank pages, noise and photos of other things, judged from the image alone."""
    if not prepared.has_ink:
        return True
    if prepared.clutter > float(meta.get("no_digit_max_clutter", DEFAULT_MAX_CLUTTER)):
        return True
    if prepared.pen > float(meta.get("no_digit_max_pen", DEFAULT_MAX_PEN)):
        return True
    if prepared.pen < float(meta.get("no_digit_min_pen", DEFAULT_MIN_PEN)):
        return True  # a smear: no pixel of the fitted shape reaches half the ink level
    if prepared.contrast < float(meta.get("no_digit_min_contrast", DEFAULT_MIN_CONTRAST)):
        return True  # faint all over: a texture or a stain more than a pen stroke
    if prepared.pieces > int(meta.get("no_digit_max_pieces", DEFAULT_MAX_PIECES)):
        return True  # a scatter of blobs: foliage, fabric, a patterned background
    if prepared.block > float(meta.get("no_digit_max_block", DEFAULT_MAX_BLOCK)):
        return True  # a filled rectangle: an empty box read inside out, a patch of paper
    max_ink = float(meta.get("no_digit_max_ink_fraction", DEFAULT_MAX_INK_FRACTION))
    return prepared.ink_fraction > max_ink


def probe_features(prepared: Prepared, probabilities: np.ndarray) -> np.ndarray:
    """The no-digit probe's inputs: the calibrated log-probabilities of the ten digits
    (how the model hesitates, not only how much) and the image's measures."""
    measures = [getattr(prepared, name) for name in PROBE_MEASURES]
    measures[PROBE_MEASURES.index("pieces")] = np.log1p(prepared.pieces)
    logp = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-9, 1.0))
    return np.concatenate([logp, measures])


def probe_score(probe: dict, prepared: Prepared, probabilities: np.ndarray) -> float:
    """The probe's log-odds that the image holds no digit."""
    return float(np.dot(probe["weights"], probe_features(prepared, probabilities))
                 + probe["bias"])


def probe_says_no_digit(prepared: Prepared, probabilities: np.ndarray, meta: dict) -> bool:
    """A logistic probe, fitted by `digits calibrate` on digits and generated non-digits
    that the rules above let through (training/nodigit.py): textures and patterned paper
    that the model reads as a digit, with an answer spread unlike a digit's."""
    probe = meta.get("no_digit_probe")
    return bool(probe) and probe_score(probe, prepared, probabilities) > probe["threshold"]


def judge(prepared: Prepared, probabilities: np.ndarray, meta: dict) -> Verdict:
    """`probabilities` must be softmax(logits / meta["temperature"]): the thresholds were
    fitted on that calibrated confidence."""
    review = float(meta.get("review_threshold", DEFAULT_REVIEW_THRESHOLD))
    no_digit = float(meta.get("no_digit_threshold", DEFAULT_NO_DIGIT_THRESHOLD))
    digit = int(np.argmax(probabilities))
    confidence = float(probabilities[digit])
    if (looks_like_no_digit(prepared, meta) or confidence < no_digit
            or probe_says_no_digit(prepared, probabilities, meta)):
        return Verdict("no_digit", None, confidence, needs_review=False)
    # An image that holds several digits still gets one answer here (digit mode), for a
    # person to check.
    return Verdict("done", digit, confidence,
                   needs_review=confidence < review or prepared.several)
