"""The MNIST loader on the real files, and its refusals of broken ones."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shared.mnist import MnistError, load_split
from tests.conftest import ROOT

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_counts_and_first_labels(data_dir):
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10_000, 28, 28)
    assert np.bincount(train.labels).tolist() == TRAIN_COUNTS
    assert np.bincount(test.labels).tolist() == TEST_COUNTS
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_uncompressed_files_load_the_same(data_dir, tmp_path):
    for path in data_dir.glob("t10k-*.gz"):
        (tmp_path / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    plain, zipped = load_split(tmp_path, "test"), load_split(data_dir, "test")
    assert np.array_equal(plain.images, zipped.images)
    assert np.array_equal(plain.labels, zipped.labels)


def _copy_test_split(data_dir, tmp_path):
    for path in data_dir.glob("t10k-*.gz"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "t10k-images-idx3-ubyte.gz"


def test_truncated_file_is_refused_with_its_name(data_dir, tmp_path):
    images = _copy_test_split(data_dir, tmp_path)
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[: len(raw) - 784]))
    pattern = r"t10k-images-idx3-ubyte\.gz is truncated.*DIGITS_DATA_DIR"
    with pytest.raises(MnistError, match=pattern):
        load_split(tmp_path, "test")


def test_wrong_magic_is_refused(data_dir, tmp_path):
    images = _copy_test_split(data_dir, tmp_path)
    raw = bytearray(gzip.decompress(images.read_bytes()))
    raw[3] = 0x01  # 2051 -> 2049: a label file's magic number
    images.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(MnistError, match="magic number 2049, expected 2051"):
        load_split(tmp_path, "test")


def test_broken_gzip_is_refused(data_dir, tmp_path):
    images = _copy_test_split(data_dir, tmp_path)
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(MnistError, match="unreadable or corrupt"):
        load_split(tmp_path, "test")


def test_cli_gives_one_line_and_status_2_for_missing_data(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "evaluate", "--data", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "DIGITS_ALLOW_DOWNLOAD": "false"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "-ubyte[.gz] not found" in lines[0] and "DIGITS_DATA_DIR" in lines[0]
