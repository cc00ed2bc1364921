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
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from training.data import Tensors
from training.labelled import TRAIN, real_parts

RENDERED = 20_000
REAL_REPEAT = {"optdigits": 3, "orand-car-a-digits": 5}
NEGATIVES = 6_000
SEED = 4_242
TRAINING_FAMILIES = ("tight", "stretched", "res16", "res32", "binarised", "cheque",
                     "low_contrast", "res8")
_FAMILY_WEIGHTS = np.array([3, 2, 2, 1, 2, 4, 1, 0.5])
NEGATIVE_KINDS = ("blank", "noise", "texture", "ruled_line", "box_border", "empty_box")


def _pixels(blobs: list[bytes], keep_blank: bool) -> np.ndarray:
    from shared.imaging import Prepared, prepare_many

    out = []
    for i in range(0, len(blobs), 256):
        for p in prepare_many(blobs[i : i + 256]):
            if isinstance(p, Prepared) and (keep_blank or p.has_ink):
                out.append(p.pixels)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.float32)


def _render_digits(job) -> tuple[np.ndarray, np.ndarray]:
    from training.forms import render_crop

    images, labels, start = job
    rng = np.random.default_rng((SEED, start))
    p = _FAMILY_WEIGHTS / _FAMILY_WEIGHTS.sum()
    blobs, kept = [], []
    for digit, label in zip(images, labels, strict=True):
        blobs.append(render_crop(digit, TRAINING_FAMILIES[rng.choice(len(p), p=p)], rng))
        kept.append(label)
    from shared.imaging import Prepared, prepare_many

    pixels, out = [], []
    for i in range(0, len(blobs), 256):
        for p_, y in zip(prepare_many(blobs[i : i + 256]), kept[i : i + 256], strict=True):
            if isinstance(p_, Prepared) and p_.has_ink:
                pixels.append(p_.pixels)
                out.append(y)
    return np.stack(pixels), np.array(out, np.int64)


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
    return _pixels(blobs, keep_blank=False)


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
    with ProcessPoolExecutor(workers) as pool:
        for x, y in pool.map(_render_digits, digit_jobs):
            xs.append(x)
            ys.append(y)
        neg = np.concatenate(list(pool.map(_render_negatives, neg_jobs)))
    summary = {"rendered_digits": int(sum(len(y) for y in ys)),
               "rendered_families": list(TRAINING_FAMILIES), "negatives": len(neg),
               "real": {}, "real_repeat": REAL_REPEAT}
    for data in real_parts(real_dir, TRAIN):
        x = _pixels(data.blobs, keep_blank=True)
        repeat = REAL_REPEAT.get(data.name, 3)
        xs += [x] * repeat
        ys += [data.digits()] * repeat
        summary["real"][data.name] = len(data.files)
    xs.append(neg)
    ys.append(np.full(len(neg), -1, np.int64))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32)).unsqueeze(1)
    return Tensors(x=x, y=torch.from_numpy(np.concatenate(ys))), summary
