"""Read the four MNIST IDX files (gzipped or not), checking magic numbers and counts.

Numpy only, so anything can use it. A missing or corrupt file raises `MnistError`
whose message is one line naming the file and the setting that points at it.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
SETTING = "DIGITS_DATA_DIR"


class MnistError(Exception):
    """A missing or corrupt MNIST file; the message is meant for the user as it is."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 28, 28) uint8, ink bright on black
    labels: np.ndarray  # (n,) uint8


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise MnistError(
        f"MNIST file {stem}[.gz] not found in {data_dir} (set {SETTING} to the folder that has it)"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise MnistError(
            f"MNIST file {path} is unreadable or corrupt ({exc}); check {SETTING}"
        ) from exc


def read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    """One IDX file as a uint8 array, after checking its magic number, shape and length."""
    raw = _read_bytes(path)
    dims = 3 if magic == IMAGE_MAGIC else 1
    header = 4 + 4 * dims
    if len(raw) < header:
        raise MnistError(f"MNIST file {path} is truncated (only {len(raw)} bytes); check {SETTING}")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise MnistError(
            f"MNIST file {path} has magic number {found}, expected {magic}; check {SETTING}"
        )
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if shape[0] != count or (dims == 3 and shape[1:] != (28, 28)):
        raise MnistError(
            f"MNIST file {path} holds shape {shape}, expected {count} items of 28x28; "
            f"check {SETTING}"
        )
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise MnistError(
            f"MNIST file {path} is truncated or padded: {len(raw) - header} data bytes, "
            f"expected {expected}; check {SETTING}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_split(data_dir: Path | str, split: str) -> Split:
    """The `train` (60,000) or `test` (10,000) split from `data_dir`."""
    data_dir = Path(data_dir)
    images_stem, labels_stem, count = FILES[split]
    images = read_idx(_find(data_dir, images_stem), IMAGE_MAGIC, count)
    labels = read_idx(_find(data_dir, labels_stem), LABEL_MAGIC, count)
    if labels.max() > 9:
        raise MnistError(f"MNIST labels in {data_dir} go beyond 9; check {SETTING}")
    return Split(images=images, labels=labels)


def ensure_data(data_dir: Path | str, allow_download: bool) -> Path:
    """`data_dir`, downloading MNIST there through torchvision first if allowed and absent."""
    data_dir = Path(data_dir)
    try:
        for images_stem, labels_stem, _ in FILES.values():
            _find(data_dir, images_stem)
            _find(data_dir, labels_stem)
        return data_dir
    except MnistError:
        if not allow_download:
            raise
    from torchvision.datasets import MNIST

    MNIST(str(data_dir.parent / "_torchvision"), download=True)
    raw = data_dir.parent / "_torchvision" / "MNIST" / "raw"
    data_dir.mkdir(parents=True, exist_ok=True)
    for path in raw.glob("*-ubyte.gz"):
        (data_dir / path.name).write_bytes(path.read_bytes())
    return data_dir


def data_digest(data_dir: Path | str) -> str:
    """sha256 over the decoded pixel and label bytes: the same data gives the same digest
    whether the files are gzipped or not."""
    import hashlib

    digest = hashlib.sha256()
    for split in ("train", "test"):
        s = load_split(data_dir, split)
        digest.update(s.images.tobytes())
        digest.update(s.labels.tobytes())
    return digest.hexdigest()
