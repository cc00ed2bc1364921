"""Which runtime runs the CNN in a worker: ONNX Runtime on the int8 model the training
side exported beside the weights (`digits export-onnx`), or torch fp32. The string
model likewise runs its fp32 ONNX form (1.7x torch on one thread on generated fields,
bench/strings.py; the same log-probabilities within 2e-5), under the same setting.

Chosen by measurement (README, Throughput): on one CPU thread, the int8 model runs
about three times as fast as torch fp32 at its best batch, with the same digit for
every MNIST test image; `digits export-onnx --check` holds it to the acceptance rules
on the scan families and the real sets before it is shipped. DIGITS_RUNTIME picks:
`auto` (int8 on the CPU when the file is there, intact, and onnxruntime imports;
otherwise torch), `onnx-int8`, or `torch`. A worker that cannot have what was asked
for falls back to torch and says why in a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared import artifact
from shared.artifact import ONNX_INT8

log = logging.getLogger(__name__)

TORCH = "torch"


def onnx_file(weights: Path, meta: dict, form: str = ONNX_INT8) -> tuple[Path | None, str]:
    """The ONNX form's path (int8 for the digit model, fp32 for the string model) when
    the metadata names it and its checksum holds, else (None, why not)."""
    entry = (meta.get("runtimes") or {}).get(form)
    if not entry:
        return None, f"the model's metadata names no {form} file (digits export-onnx)"
    path, why = _verified(Path(weights).parent, entry)
    if path is None:
        return None, why
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, "onnxruntime is not installed"
    return path, ""


def recheck_file(weights: Path, meta: dict) -> Path | None:
    """The fp32 ONNX form that re-scores the int8 model's unsure images, when the
    metadata names it and its checksum holds (else torch re-scores them)."""
    entry = ((meta.get("runtimes") or {}).get(ONNX_INT8) or {}).get("recheck")
    path, why = _verified(Path(weights).parent, entry) if entry else (None, "not exported")
    if path is None:
        log.warning("the fp32 ONNX form for re-checks is not usable (%s): torch re-checks",
                    why)
    return path


def _verified(folder: Path, entry: dict) -> tuple[Path | None, str]:
    path = folder / entry["file"]
    if not path.is_file():
        return None, f"{path} is missing"
    if artifact.sha256_file(path) != entry.get("sha256"):
        return None, f"{path} fails its checksum (modified, or not this model's)"
    return path, ""


def choose(asked: str, device_type: str, weights: Path, meta: dict,
           form: str = ONNX_INT8) -> tuple[str, Path | None]:
    """(the runtime, the ONNX file or None) for a model on `device_type` (cpu, cuda):
    its ONNX `form` unless DIGITS_RUNTIME says torch. Builds nothing, so a worker's main
    process can announce it before forking."""
    if asked == TORCH:
        return TORCH, None
    if device_type != "cpu":
        path, why = None, f"the {form} model is a CPU form and the device is {device_type}"
    else:
        path, why = onnx_file(weights, meta, form)
    if path is None:
        level = logging.WARNING if asked != "auto" else logging.INFO
        log.log(level, "DIGITS_RUNTIME=%s: %s; running the model with torch fp32 instead",
                asked, why)
        return TORCH, None
    return form, path


def announced(settings) -> str:
    """The runtime a worker with these settings runs, for its announcement in Redis,
    decided without touching CUDA (a prefork parent must not): with DIGITS_DEVICE=auto
    on a GPU host the children run torch on CUDA whatever this says."""
    weights = Path(settings.model_path)
    try:
        meta = artifact.read_metadata(weights)
    except artifact.ArtifactError:
        return TORCH
    device_type = "cpu" if settings.device in ("auto", "cpu") else "cuda"
    return choose(settings.runtime, device_type, weights, meta)[0]


def session(path: Path, threads: int = 0):
    """An ONNX Runtime session on the CPU as a worker runs one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One worker process, one thread, as torch runs in a prefork child (0: all cores).
    options.intra_op_num_threads = threads
    # Idle pool threads sleep instead of spinning, so that with more than one thread a
    # waiting one does not hold a core the API or another worker needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """Logits for (n, 28, 28) float32 pixels in [0, 1], as the torch network gives."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        self.session = session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(pixels, dtype=np.float32)[:, None]
        return self.session.run(None, {self.input: batch})[0]
