"""The model artifact: weights as safetensors plus a JSON metadata file beside them.

`save` writes both and records the weights' sha256 in the metadata; `load` checks
that digest and the architecture before it builds the network, so a tampered or
mismatched file is refused with `ArtifactError` instead of serving wrong answers.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shared.network import MNIST_MEAN, MNIST_STD, DigitCNN, count_parameters

ARCHITECTURE = "DigitCNN"
# The int8 ONNX form of the weights (training/export.py), listed under "runtimes".
ONNX_INT8 = "onnx-int8"
ONNX_FP32 = "onnx-fp32"  # the string model's ONNX form (worker/strings.py)


class ArtifactError(Exception):
    """A missing, tampered or mismatched model artifact; the message is for the user."""


def metadata_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(model: DigitCNN, weights: Path, **info: Any) -> dict[str, Any]:
    """Write the weights and metadata; `info` adds fields such as accuracy and timings."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    meta = {
        "name": info.pop("name", "digits-cnn"),
        "version": info.pop("version", datetime.now(UTC).strftime("%Y%m%d.%H%M%S")),
        "architecture": {"class": ARCHITECTURE, **model.config},
        "parameters": count_parameters(model),
        "input": {
            "shape": [1, 28, 28],
            "range": [0.0, 1.0],
            "polarity": "ink bright on black",
            "mean": MNIST_MEAN,
            "std": MNIST_STD,
            "preprocessing": "MNIST-style: ink cropped, fitted in 20x20, centred by mass in 28x28",
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        **info,
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
    }
    write_metadata(weights, meta)
    return meta


def write_metadata(weights: Path, meta: dict[str, Any]) -> None:
    """The JSON beside the weights (save, calibration and exports all write it so)."""
    metadata_path(Path(weights)).write_text(json.dumps(meta, indent=2) + "\n")


def read_metadata(weights: Path) -> dict[str, Any]:
    meta_file = metadata_path(weights)
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"model metadata {meta_file} not found (DIGITS_MODEL_PATH)") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"model metadata {meta_file} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or "weights_sha256" not in meta or "architecture" not in meta:
        raise ArtifactError(f"model metadata {meta_file} lacks weights_sha256 or architecture")
    return meta


def verify(weights: Path | str) -> dict[str, Any]:
    """The metadata, once the weights exist and match its checksum. Builds no tensors, so
    a Celery parent can call it before forking (torch's thread pools are not fork-safe)."""
    weights = Path(weights)
    if not weights.is_file():
        raise ArtifactError(f"model weights {weights} not found (DIGITS_MODEL_PATH)")
    meta = read_metadata(weights)
    actual = sha256_file(weights)
    if actual != meta["weights_sha256"]:
        raise ArtifactError(
            f"model weights {weights} fail their checksum (sha256 {actual[:12]}..., metadata says "
            f"{meta['weights_sha256'][:12]}...): the file was modified or does not belong to "
            f"{metadata_path(weights).name}"
        )
    return meta


def load(weights: Path | str, map_location: str = "cpu") -> tuple[DigitCNN, dict[str, Any]]:
    """The network in eval mode and its metadata, after verifying checksum and shape."""
    weights = Path(weights)
    meta = verify(weights)
    arch = dict(meta["architecture"])
    if arch.pop("class", None) != ARCHITECTURE:
        raise ArtifactError(f"model {weights} is not a {ARCHITECTURE} artifact")
    try:
        model = DigitCNN(channels=tuple(arch["channels"]), hidden=arch["hidden"],
                         dropout=arch["dropout"])
        model.load_state_dict(load_file(str(weights), device=map_location), strict=True)
    except (KeyError, RuntimeError, SafetensorError) as exc:
        raise ArtifactError(f"model weights {weights} do not match their metadata: {exc}") from exc
    model.to(map_location).eval()
    return model, meta
