"""The no-digit probe that `digits calibrate` fits (shared.verdict.probe_says_no_digit).

The image rules (ink, clutter, pen, contrast, pieces, filled boxes) and the confidence
floor refuse blank pages, noise, ruled lines and box sides; but half of the textures
and a few patterned cheque backgrounds pass them and get a digit, often a confident one.
What gives them away is how the model answers, not only how sure it is: a logistic
regression over the ten calibrated log-probabilities and the image's measures tells
them from digits where the top probability alone cannot.

It learns on what the rules let through, from images no threshold is fitted or tested
on: MNIST *training* digits (never the validation part the calibration draws, never a
test digit) drawn as scans and as form and cheque cuts, the real sets' training parts,
and non-digits of a seed of their own. Its threshold is fitted afterwards on the
calibration groups, as every other threshold is (training/calibrate.py).
"""

from __future__ import annotations

import numpy as np

from shared.verdict import probe_features

PROBE_SEED = 5_151
RENDERED = 5_000  # training digits cut as forms and cheques cut them
SCANS = 3_000  # training digits drawn as scans
NON_DIGITS = 12_000  # of the six kinds in turn; the rules refuse nine in ten


def _digits(meta: dict, data_dir, real_dir) -> dict[str, list]:
    """Training digits, by group: "mnist" and each real set's training part."""
    from training.data import train_val_split
    from training.forms import render_crop
    from training.labelled import TRAIN, real_parts
    from training.mixture import _FAMILY_WEIGHTS, TRAINING_FAMILIES
    from training.scans import generate_and_prepare, prepare_all

    train, _ = train_val_split(data_dir, seed=int(meta.get("recipe", {}).get("seed", 0)))
    images = np.round(train.x[:, 0].numpy() * 255).astype(np.uint8)
    labels = train.y.numpy()
    rng = np.random.default_rng(PROBE_SEED)
    pick = rng.choice(len(labels), RENDERED + SCANS, replace=False)
    weights = _FAMILY_WEIGHTS / _FAMILY_WEIGHTS.sum()
    cuts = [render_crop(d, TRAINING_FAMILIES[rng.choice(len(weights), p=weights)], rng)
            for d in images[pick[:RENDERED]]]
    prepared = prepare_all(cuts)[0]
    prepared += generate_and_prepare(images[pick[RENDERED:]], labels[pick[RENDERED:]],
                                     PROBE_SEED)[1]
    groups = {"mnist": prepared}
    for data in real_parts(real_dir, TRAIN) if real_dir else []:
        groups[data.name] = prepare_all(data.blobs)[0]
    return groups


def _non_digits() -> list:
    from training.forms import NON_DIGIT_KINDS, render_empty
    from training.mixture import NEGATIVE_KINDS
    from training.scans import prepare_all, render_non_digit

    rng = np.random.default_rng(PROBE_SEED + 1)
    blobs = []
    for i in range(NON_DIGITS):
        kind = NEGATIVE_KINDS[i % len(NEGATIVE_KINDS)]
        blobs.append(render_empty(kind, rng) if kind in NON_DIGIT_KINDS
                     else render_non_digit(kind, rng))
    return prepare_all(blobs)[0]


def fit_probe(model, meta: dict, rules: dict, data_dir, real_dir=None
              ) -> tuple[dict, dict[str, np.ndarray]]:
    """The probe, {"weights", "bias"} (score > threshold means no digit), and the scores
    of its training digits by group. `rules` are the thresholds fitted so far; images
    they refuse are left out."""
    from sklearn.linear_model import LogisticRegression

    from training.calibrate import refused
    from training.scans import predict

    temperature = float(meta.get("temperature", 1.0))
    groups = {**_digits(meta, data_dir, real_dir), "non_digits": _non_digits()}
    features = {}
    for name, prepared in groups.items():
        probs = predict(model, prepared, temperature)
        keep = ~refused(rules, prepared, probs)
        features[name] = np.array([probe_features(p, q) for p, q, k
                                   in zip(prepared, probs, keep, strict=True) if k])
    x = np.concatenate(list(features.values()))
    y = np.concatenate([np.full(len(f), name == "non_digits") for name, f in features.items()])
    # Standardised for the fit, then folded back so the worker needs one dot product.
    mean, scale = x.mean(0), x.std(0) + 1e-9
    fitted = LogisticRegression(C=1.0, max_iter=5_000, class_weight="balanced").fit(
        (x - mean) / scale, y)
    weights = fitted.coef_[0] / scale
    bias = float(fitted.intercept_[0] - np.dot(weights, mean))
    probe = {"weights": [round(float(w), 6) for w in weights], "bias": round(bias, 6),
             "trained_on": {"digits": int((~y).sum()), "non_digits": int(y.sum()),
                            "seed": PROBE_SEED}}
    scores = {name: f @ np.asarray(probe["weights"]) + probe["bias"]
              for name, f in features.items() if name != "non_digits"}
    return probe, scores
