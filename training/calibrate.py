"""`digits calibrate`: fit the no-digit and needs-review thresholds, never on test digits.

The digits come in groups, and every threshold must hold for each group, not just on
average (a real set of a few hundred would vanish in the MNIST-drawn thousands):

- `mnist_scans`: validation digits (the part of the *training* digits that training
  held out) drawn as scans by training/scans.py, with a seed of their own;
- `mnist_forms`: the same digits cut as forms and cheques cut them (training/forms.py);
- the calibration part of each real set (training/labelled.py), when present.

The non-digits are generated blank pages, noise, textures, ruled lines, empty form
boxes and empty cheque boxes. One global set of thresholds comes out, with the no-digit
probe (training/nodigit.py), stored in the model metadata beside the weights, where
`shared.verdict.judge` reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.artifact import read_metadata, write_metadata
from training.scans import generate_and_prepare, generate_non_digits, predict, prepare_all

CALIBRATION_SEED = 7_301
DIGITS = 3_000  # scan-like validation digits: enough for a 0.1% quantile, under a minute
FORM_DIGITS = 2_000  # validation digits cut as forms and cheques cut them
NON_DIGITS = 600  # of each generator: training/scans.py's and training/forms.py's
TARGET_UNFLAGGED_ERROR = 0.003  # review flag: at most this error rate among unflagged results
MAX_FLAGGED = 0.10  # ... unless that flags more than this share of a group's digits
DIGIT_LOSS = 0.004  # no_digit may wrongly refuse at most this share of any group's digits


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


def _form_digits(images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[list, np.ndarray]:
    from training.forms import DIGIT_FAMILIES, REPORT_ONLY, render_crop

    families = [f for f in DIGIT_FAMILIES if f not in REPORT_ONLY]
    rng = np.random.default_rng(seed)
    blobs = [render_crop(d, families[i % len(families)], rng) for i, d in enumerate(images)]
    prepared, _ = prepare_all(blobs)
    return prepared, labels


def _groups(meta: dict, data_dir, real_dir) -> dict[str, tuple[list, np.ndarray]]:
    """Each group of calibration digits: (prepared images, labels)."""
    from training.data import train_val_split
    from training.labelled import CALIBRATION, real_parts

    seed = int(meta.get("recipe", {}).get("seed", 0))
    _, val = train_val_split(data_dir, seed=seed)
    images = np.round(val.x[:, 0].numpy() * 255).astype(np.uint8)
    labels = val.y.numpy()
    _, scans, _ = generate_and_prepare(images[:DIGITS], labels[:DIGITS], CALIBRATION_SEED)
    groups = {"mnist_scans": (scans, labels[:DIGITS]),
              "mnist_forms": _form_digits(images[-FORM_DIGITS:], labels[-FORM_DIGITS:],
                                          CALIBRATION_SEED + 2)}
    for data in real_parts(real_dir, CALIBRATION) if real_dir else []:
        groups[data.name] = (prepare_all(data.blobs)[0], data.digits())
    return groups


def _non_digits(seed: int) -> tuple[list[str], list]:
    from training.forms import NON_DIGIT_KINDS, render_empty

    kinds, blobs = map(list, zip(*generate_non_digits(NON_DIGITS, seed), strict=True))
    rng = np.random.default_rng(seed + 1)
    for i in range(NON_DIGITS):
        kind = NON_DIGIT_KINDS[i % len(NON_DIGIT_KINDS)]
        kinds.append(kind)
        blobs.append(render_empty(kind, rng))
    return kinds, prepare_all(blobs)[0]


def fit(model, meta: dict, data_dir, real_dir=None) -> dict:
    """The thresholds and the figures measured while fitting them."""
    from training.nodigit import fit_probe

    temperature = float(meta.get("temperature", 1.0))
    scored = {}
    for name, (prepared, labels) in _groups(meta, data_dir, real_dir).items():
        probs = predict(model, prepared, temperature)
        inked = np.array([p is not None and p.has_ink for p in prepared])
        scored[name] = (prepared, probs, probs.argmax(1) == labels, inked)
    kinds, others = _non_digits(CALIBRATION_SEED + 1)
    other_probs = predict(model, others, temperature)

    def each(attr: str) -> list[np.ndarray]:
        return [np.array([getattr(p, attr) for p, i in zip(prep, inked, strict=True) if i])
                for prep, _, _, inked in scored.values()]

    # Each image test may refuse a share of every group's digits; the loosest bound wins.
    share = DIGIT_LOSS / 4
    thresholds = {
        "no_digit_max_clutter": min(0.95, max(_upper(v, share) for v in each("clutter"))),
        "no_digit_max_ink_fraction": min(0.95, max(_upper(v, share)
                                                   for v in each("ink_fraction"))),
        "no_digit_max_pen": max(_upper(v, share) for v in each("pen")),
        # A stroke is at least 2 px wide (shared.digitbox._pen_widths), so a digit's pen is
        # at least half MNIST's; 0 when no pixel reaches half the ink level.
        "no_digit_min_pen": min(float(np.quantile(v, share)) for v in each("pen")) / 1.2,
        "no_digit_max_block": min(1.0, max(_upper(v, share) for v in each("block"))),
        "no_digit_min_contrast": min(float(np.quantile(v, share)) for v in each("contrast"))
        / 1.2,
        # Whole pieces: the most any group's digits keep, but for `share` of them.
        "no_digit_max_pieces": max(int(np.ceil(np.quantile(v, 1 - share)))
                                   for v in each("pieces")),
        "no_digit_threshold": min(float(np.quantile(probs.max(1)[inked], share))
                                  for _, probs, _, inked in scored.values()),
    }
    # The probe learns on what those let through. Its threshold lets through all but
    # `share` of the digits they let through, in each calibration group and in each of
    # the probe's own training groups: real cheque digits score higher than any MNIST
    # drawing, and the calibration fold alone is too few to see their tail.
    probe, trained = fit_probe(model, meta, thresholds, data_dir, real_dir)
    kept = [_probe_scores(probe, prepared, probs)[inked & ~refused(thresholds, prepared, probs)]
            for prepared, probs, _, inked in scored.values()]
    probe["threshold"] = round(max(float(np.quantile(s, 1 - share))
                                   for s in [*kept, *trained.values()]), 6)
    thresholds["no_digit_probe"] = probe
    # The lowest threshold that meets the target in every group; a group that cannot meet
    # it without flagging more than MAX_FLAGGED of its digits gets that share flagged.
    thresholds["review_threshold"] = max(
        thresholds["no_digit_threshold"],
        *(min(review_threshold(probs.max(1)[inked], correct[inked], TARGET_UNFLAGGED_ERROR),
              float(np.quantile(probs.max(1)[inked], MAX_FLAGGED)))
          for _, probs, correct, inked in scored.values()))
    report = {name: _digit_report(thresholds, *values) for name, values in scored.items()}
    return {**thresholds, "report": {
        "seed": CALIBRATION_SEED, "digits": report,
        "non_digits": _non_digit_report(thresholds, others, other_probs, kinds),
        "target_unflagged_error_rate": TARGET_UNFLAGGED_ERROR,
        "digit_loss_budget": DIGIT_LOSS}}


def _probe_scores(probe: dict, items, probs) -> np.ndarray:
    from shared.verdict import probe_score

    return np.array([probe_score(probe, p, q) if p is not None and p.has_ink else -np.inf
                     for p, q in zip(items, probs, strict=True)])


def refused(t: dict, items, probs) -> np.ndarray:
    """Which of `items` (prepared, or None) the thresholds `t` call no digit."""
    from shared.verdict import looks_like_no_digit, probe_says_no_digit

    return np.array([p is None or looks_like_no_digit(p, t)
                     or q.max() < t["no_digit_threshold"] or probe_says_no_digit(p, q, t)
                     for p, q in zip(items, probs, strict=True)])


def _digit_report(t: dict, prepared, probs, correct, inked) -> dict:
    confidence = probs.max(1)
    no = refused(t, prepared, probs)
    several = np.array([p is not None and p.several for p in prepared])
    unflagged = ~no & (confidence >= t["review_threshold"]) & ~several
    return {
        "n": len(prepared),
        "refused_as_no_digit": round(float(no.mean()), 5),
        "seen_as_blank": round(float((~inked).mean()), 5),
        "flagged_share": round(float((~no & ~unflagged).mean()), 5),
        "unflagged_error_rate": round(float((~correct[unflagged]).mean()), 5)
        if unflagged.any() else 0.0,
    }


def _non_digit_report(t: dict, others, other_probs, kinds) -> dict:
    no = refused(t, others, other_probs)
    kinds = np.array(kinds)
    return {"n": len(others), "refused": round(float(no.mean()), 5),
            "refused_by_kind": {k: round(float(no[kinds == k].mean()), 4)
                                for k in sorted(set(kinds))}}


def write(weights: Path, fitted: dict) -> dict:
    """Add the thresholds to the metadata JSON; the weights and their digest are untouched."""
    meta = read_metadata(weights)
    report = fitted.pop("report")
    meta.update({k: round(v, 6) if isinstance(v, float) else v for k, v in fitted.items()})
    meta["calibration"] = report
    write_metadata(weights, meta)
    return meta
