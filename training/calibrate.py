"""`digits calibrate`: fit the no-digit and needs-review thresholds, never on test digits.

The digits are the validation part of the *training* digits (the split training used),
drawn as scans by training/scans.py with a seed of their own; the non-digits are
generated blank pages, noise and photo-like textures. The thresholds go into the model
metadata JSON beside the weights, where `shared.verdict.judge` reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shared.artifact import metadata_path
from training.scans import generate_and_prepare, generate_non_digits, predict, prepare_all

CALIBRATION_SEED = 7_301
DIGITS = 3_000  # scan-like validation digits: enough for a 0.1% quantile, under a minute
NON_DIGITS = 600
TARGET_UNFLAGGED_ERROR = 0.002  # review flag: at most this error rate among unflagged results
DIGIT_LOSS = 0.002  # no_digit may wrongly refuse at most this share of real digits


def _upper(values: np.ndarray, share: float) -> float:
    """A bound that lets through all but `share` of `values`, with a little headroom."""
    return float(np.quantile(values, 1 - share)) * 1.2


def review_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest confidence threshold whose unflagged results have an error rate <= target."""
    order = np.argsort(-confidence)
    errors = np.cumsum(~correct[order])
    rate = errors / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(rate <= target)
    if ok.size == 0:
        return 1.0
    return float(confidence[order][ok[-1]])


def fit(model, meta: dict, data_dir) -> dict:
    """The thresholds and the figures measured while fitting them."""
    from training.data import train_val_split

    seed = int(meta.get("recipe", {}).get("seed", 0))
    _, val = train_val_split(data_dir, seed=seed)
    images = np.round(val.x[:DIGITS, 0].numpy() * 255).astype(np.uint8)
    labels = val.y[:DIGITS].numpy()
    temperature = float(meta.get("temperature", 1.0))

    _, prepared, _ = generate_and_prepare(images, labels, CALIBRATION_SEED)
    probs = predict(model, prepared, temperature)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    kinds, blobs = zip(*generate_non_digits(NON_DIGITS, CALIBRATION_SEED + 1), strict=True)
    others, _ = prepare_all(blobs)
    other_conf = predict(model, others, temperature).max(1)

    inked = np.array([p is not None and p.has_ink for p in prepared])
    clutter = np.array([p.clutter for p, i in zip(prepared, inked, strict=True) if i])
    ink_fraction = np.array([p.ink_fraction for p, i in zip(prepared, inked, strict=True) if i])
    pen = np.array([p.pen for p, i in zip(prepared, inked, strict=True) if i])
    thresholds = {
        # Each of the four tests may refuse a quarter of the DIGIT_LOSS budget.
        "no_digit_max_clutter": min(0.9, _upper(clutter, DIGIT_LOSS / 4)),
        "no_digit_max_ink_fraction": min(0.9, _upper(ink_fraction, DIGIT_LOSS / 4)),
        "no_digit_max_pen": _upper(pen, DIGIT_LOSS / 4),
        "no_digit_threshold": float(np.quantile(confidence[inked], DIGIT_LOSS / 4)),
    }
    thresholds["review_threshold"] = max(
        thresholds["no_digit_threshold"],
        review_threshold(confidence[inked], correct[inked], TARGET_UNFLAGGED_ERROR))
    return {**thresholds, "report": _report(thresholds, prepared, confidence, correct,
                                            others, other_conf, kinds)}


def _report(t: dict, prepared, confidence, correct, others, other_conf, kinds) -> dict:
    from shared.verdict import looks_like_no_digit

    def refused(items, conf):
        return np.array([p is None or looks_like_no_digit(p, t) or c < t["no_digit_threshold"]
                         for p, c in zip(items, conf, strict=True)])

    digit_refused = refused(prepared, confidence)
    blank = np.array([p is None or not p.has_ink for p in prepared])
    other_refused = refused(others, other_conf)
    unflagged = ~digit_refused & (confidence >= t["review_threshold"])
    per_kind = {k: float(other_refused[np.array(kinds) == k].mean()) for k in sorted(set(kinds))}
    return {
        "digits": len(prepared), "non_digits": len(others), "seed": CALIBRATION_SEED,
        "digits_refused_as_no_digit": float(digit_refused.mean()),
        "digits_seen_as_blank": float(blank.mean()),
        "non_digits_refused": float(other_refused.mean()),
        "non_digits_refused_by_kind": per_kind,
        "flagged_share": float((~digit_refused & ~unflagged).mean()),
        "unflagged_error_rate": float((~correct[unflagged]).mean()) if unflagged.any() else 0.0,
        "target_unflagged_error_rate": TARGET_UNFLAGGED_ERROR,
    }


def write(weights: Path, fitted: dict) -> dict:
    """Add the thresholds to the metadata JSON; the weights and their digest are untouched."""
    path = metadata_path(weights)
    meta = json.loads(path.read_text())
    report = fitted.pop("report")
    meta.update({k: round(v, 6) for k, v in fitted.items()})
    meta["calibration"] = report
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta
