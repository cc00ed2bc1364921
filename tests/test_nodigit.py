"""The no-digit probe's fit (training/nodigit.py), small: the folded-back weights score
as the fitted regression does, and the probe tells its digits from its non-digits."""

from __future__ import annotations

import numpy as np

from shared import artifact
from training import nodigit


def test_the_probe_learns_digits_from_non_digits(data_dir, shipped_model, monkeypatch):
    monkeypatch.setattr(nodigit, "RENDERED", 150)
    monkeypatch.setattr(nodigit, "SCANS", 150)
    monkeypatch.setattr(nodigit, "NON_DIGITS", 600)
    model, meta = artifact.load(shipped_model)
    rules = {k: v for k, v in meta.items() if k.startswith("no_digit_") and k != "no_digit_probe"}
    probe, scores = nodigit.fit_probe(model, meta, rules, data_dir)
    assert set(scores) == {"mnist"}  # no real set given
    assert probe["trained_on"]["digits"] == len(scores["mnist"]) > 250
    assert probe["trained_on"]["non_digits"] > 10  # what the rules let through
    # Nearly every digit it learnt on scores below zero, the regression's own boundary.
    assert np.mean(scores["mnist"] < 0) > 0.95
