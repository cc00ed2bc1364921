"""Labelled image collections from outside MNIST: a folder or zip with `labels.csv`.

`labels.csv` has `file,label` (single digits) or `file,text` (digit strings). The real
sets in `DIGITS_REAL_DATA_DIR` are split into parts for training, calibration and test,
so that nothing is tested on what it was trained or calibrated on:

- `optdigits.zip`: its own `tra-*` part is split, seeded, into training (80 %) and
  calibration (20 %); its `cv-*` part is the test part.
- `orand-car-a-digits.zip`: by field (`NNNNN-K.png` is digit K of field NNNNN, never
  split at random, or a field's digits land on both sides): fold = NNNNN mod 5; folds
  0-2 train, fold 3 calibrates, fold 4 tests. The string fields use the same folds.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN, CALIBRATION, TEST = "train", "calibration", "test"
REAL_SETS = ("optdigits", "orand-car-a-digits")
FOLDS = 5
_FIELD = re.compile(r"(\d+)(?:-\d+)?\.\w+$")


class DataSetError(ValueError):
    """A data set that cannot be read; the message is for the user."""


@dataclass
class Labelled:
    name: str
    files: list[str]
    blobs: list[bytes]
    labels: list[str]  # a digit, or a string of digits

    def digits(self) -> np.ndarray:
        return np.array([int(v) for v in self.labels], np.int64)

    def subset(self, keep: np.ndarray) -> Labelled:
        idx = np.flatnonzero(keep)
        return Labelled(self.name, [self.files[i] for i in idx], [self.blobs[i] for i in idx],
                        [self.labels[i] for i in idx])


def _reader(path: Path):
    """A function reading a member by name, for a zip or a folder."""
    if path.is_dir():
        return lambda name: (path / name).read_bytes()
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        return archive.read
    raise DataSetError(f"{path} is neither a folder nor a zip")


def load(path: Path | str) -> Labelled:
    """Every image listed in `labels.csv` of a folder or zip, in its order."""
    path = Path(path)
    if not path.exists():
        raise DataSetError(f"{path} does not exist")
    read = _reader(path)
    try:
        table = read("labels.csv").decode("utf-8-sig")
    except (KeyError, FileNotFoundError) as exc:
        raise DataSetError(f"{path} has no labels.csv (columns file,label or file,text)") from exc
    rows = list(csv.DictReader(io.StringIO(table)))
    column = "label" if rows and "label" in rows[0] else "text"
    if not rows or "file" not in rows[0] or column not in rows[0]:
        raise DataSetError(f"{path}/labels.csv needs the columns file,label or file,text")
    bad = [r[column] for r in rows if not str(r[column]).isdigit()]
    if bad:
        raise DataSetError(f"{path}/labels.csv: labels must be digits, e.g. not {bad[0]!r}")
    try:
        blobs = [read(r["file"]) for r in rows]
    except (KeyError, FileNotFoundError) as exc:
        raise DataSetError(f"{path}: a file named in labels.csv is missing: {exc}") from exc
    name = path.stem if path.is_file() else path.name
    return Labelled(name, [r["file"] for r in rows], blobs, [r[column] for r in rows])


def field_fold(filename: str) -> int:
    """The fold of a cheque digit or field, from its field number."""
    match = _FIELD.search(filename)
    if not match:
        raise DataSetError(f"{filename!r} is not named NNNNN.png or NNNNN-K.png")
    return int(match.group(1)) % FOLDS


def part_of(data: Labelled) -> np.ndarray:
    """Each image's part (TRAIN, CALIBRATION or TEST) for the known real sets."""
    if data.name.startswith("optdigits"):
        tra = np.array([f.startswith("tra") for f in data.files])
        draw = np.random.default_rng(20_261_201).random(len(data.files))
        return np.where(~tra, TEST, np.where(draw < 0.8, TRAIN, CALIBRATION))
    if data.name.startswith("orand"):
        folds = np.array([field_fold(f) for f in data.files])
        return np.where(folds <= 2, TRAIN, np.where(folds == 3, CALIBRATION, TEST))
    raise DataSetError(f"no split is defined for {data.name}")


def real_parts(real_dir: Path | str, part: str) -> list[Labelled]:
    """The `part` of each real set found in `real_dir` (none when the folder is absent)."""
    out = []
    for name in REAL_SETS:
        path = Path(real_dir) / f"{name}.zip"
        if path.is_file():
            data = load(path)
            out.append(data.subset(part_of(data) == part))
    return out
