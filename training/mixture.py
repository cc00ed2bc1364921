"""What the shipped model trains on beyond the 55,000 MNIST training digits.

MNIST digits are centred on clean black; users send digits cut tight from forms,
stretched, binarised, tiny, on cheque paper, from other writers. So the training set
also holds, each passed through `shared.imaging.prepare_many` exactly as a worker
would see it:

- `RENDERED` MNIST training digits drawn in the form and cheque families of
  `training/forms.py` (never a validation or test digit);
- the training parts of the real sets (`training/labelled.py`), repeated
  (`REAL_REPEAT`), since they are few: the cheque digits, the hardest, most;
- `NEGATIVES` images that hold no digit (blank pages with specks, noise, textures, ruled
  lines, empty form boxes, empty cheque boxes), labelled -1: training pushes the model
  towards a uniform answer on them ("outlier exposure", Hendrycks et al. 2019), so the
  calibrated confidence itself says "no digit".
"""

from __future__ import annotations

import os

import numpy as np
import torch

from training.data import Tensors
from training.labelled import TRAIN, real_parts
from training.pools import spawned_pool

RENDERED = 20_000
REAL_REPEAT = {"optdigits": 3, "orand-car-a-digits": 5}
NEGATIVES = 6_000
SEED = 4_242
TRAINING_FAMILIES = ("tight", "stretched", "res16", "res32", "binarised", "cheque",
                     "low_contrast", "res8")
_FAMILY_WEIGHTS = np.array([3, 2, 2, 1, 2, 4, 1, 0.5])
NEGATIVE_KINDS = ("blank", "noise", "texture", "ruled_line", "box_border", "empty_box")


def _prepared(blobs: list[bytes], labels: np.ndarray, keep_blank: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs for `blobs`, prepared as a worker prepares them, with their
    labels; images that fail (and blank ones, unless `keep_blank`) are left out of both."""
    from training.scans import prepare_all

    prepared, _ = prepare_all(blobs)
    keep = [i for i, p in enumerate(prepared) if p is not None and (keep_blank or p.has_ink)]
    if not keep:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
    return np.stack([prepared[i].pixels for i in keep]), np.asarray(labels)[keep]


def _render_digits(job) -> tuple[np.ndarray, np.ndarray]:
    from training.forms import render_crop

    images, labels, start = job
    rng = np.random.default_rng((SEED, start))
    p = _FAMILY_WEIGHTS / _FAMILY_WEIGHTS.sum()
    blobs = [render_crop(digit, TRAINING_FAMILIES[rng.choice(len(p), p=p)], rng)
             for digit in images]
    return _prepared(blobs, labels, keep_blank=False)


def _render_negatives(job) -> np.ndarray:
    from training.forms import NON_DIGIT_KINDS, render_empty
    from training.scans import render_non_digit

    count, start = job
    rng = np.random.default_rng((SEED + 1, start))
    kinds = NEGATIVE_KINDS
    blobs = []
    for i in range(count):
        kind = kinds[(start + i) % len(kinds)]
        blobs.append(render_empty(kind, rng) if kind in NON_DIGIT_KINDS
                     else render_non_digit(kind, rng))
    return _prepared(blobs, np.full(len(blobs), -1), keep_blank=False)[0]


def extra_training(train_set: Tensors, real_dir, rendered: int = RENDERED,
                   negatives: int = NEGATIVES) -> tuple[Tensors, dict]:
    """The rendered digits, real training parts and negatives as one tensor set (label -1
    for a negative), and a summary of what is in it."""
    workers = os.cpu_count() or 1
    rng = np.random.default_rng(SEED)
    pick = rng.choice(len(train_set.x), size=min(rendered, len(train_set.x)), replace=False)
    images = np.round(train_set.x[pick, 0].numpy() * 255).astype(np.uint8)
    labels = train_set.y[pick].numpy()
    step = max(1, -(-len(pick) // (workers * 4)))
    digit_jobs = [(images[i : i + step], labels[i : i + step], i)
                  for i in range(0, len(pick), step)]
    neg_step = max(1, -(-negatives // (workers * 4)))
    neg_jobs = [(min(neg_step, negatives - i), i) for i in range(0, negatives, neg_step)]
    xs, ys = [], []
    with spawned_pool(workers) as pool:
        for x, y in pool.map(_render_digits, digit_jobs):
            xs.append(x)
            ys.append(y)
        neg = np.concatenate(list(pool.map(_render_negatives, neg_jobs)))
    summary = {"rendered_digits": int(sum(len(y) for y in ys)),
               "rendered_families": list(TRAINING_FAMILIES), "negatives": len(neg),
               "real": {}, "real_repeat": REAL_REPEAT}
    for data in real_parts(real_dir, TRAIN):
        x, y = _prepared(data.blobs, data.digits(), keep_blank=True)
        repeat = REAL_REPEAT.get(data.name, 3)
        xs += [x] * repeat
        ys += [y] * repeat
        summary["real"][data.name] = len(data.files)
    xs.append(neg)
    ys.append(np.full(len(neg), -1, np.int64))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32)).unsqueeze(1)
    return Tensors(x=x, y=torch.from_numpy(np.concatenate(ys))), summary
