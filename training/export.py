"""Export the CNN for ONNX Runtime as an int8 model (static quantisation), beside the
weights, with its checksum in the model's metadata (shared/runtime.py loads it).

Static, not dynamic, quantisation: the convolutions are most of the work, and only
static quantisation turns them into integer kernels. Weights per channel (int8),
activations per tensor (uint8), ranges chosen by entropy (KL divergence) over
calibration images drawn from what the model trained on (calibration_pixels), never
from a test part. QDQ
format, which ONNX Runtime fuses into integer convolutions (QOperator measured no
faster here).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from shared import artifact
from shared.artifact import ONNX_FP32, ONNX_INT8
from shared.mnist import load_split

CALIBRATION_DIGITS = 2000
OPSET = 17
# Every layer but the first convolution (one input channel, the pixels themselves):
# quantising it too changed 4 of 1,941 real test digits instead of 2. Keeping the
# dense layers float as well was 27 % slower for no digit fewer changed (9,100 against
# 12,500 images/s on one thread; 2 of 10,000 MNIST test digits either way); the fp32
# re-check of unsure images (worker/inference.py) keeps the verdicts torch's.
QUANTISED = None  # all operator types onnxruntime quantises


def calibration_pixels(data_dir: Path, real_dir: Path | None, n: int = CALIBRATION_DIGITS,
                       seed: int = 11) -> np.ndarray:
    """(about 2n, 28, 28) float32, prepared as a worker prepares them, from what the model
    trained on and nothing it is tested on: clean MNIST training digits, as many drawn in
    the form and cheque families (training/mixture.py), the real sets' training parts
    (at most n/2 each) and a few images with no digit. Ranges taken on clean digits
    alone cost the int8 model 0.1-0.2 point on the pen-width family and the real sets."""
    from training.labelled import TRAIN, real_parts
    from training.mixture import _prepared, _render_digits, _render_negatives

    train = load_split(data_dir, "train")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train.labels), size=2 * n, replace=False)
    parts = [train.images[pick[:n]].astype(np.float32) / 255,
             _render_digits((train.images[pick[n:]], train.labels[pick[n:]], seed))[0],
             _render_negatives((n // 10, seed))]
    for data in real_parts(real_dir, TRAIN) if real_dir else []:
        x, _ = _prepared(data.blobs[: n // 2], data.digits()[: n // 2], keep_blank=True)
        parts.append(x)
    pixels = np.concatenate(parts).astype(np.float32)
    return pixels[rng.permutation(len(pixels))]


def export_fp32(model: torch.nn.Module, weights: Path) -> Path:
    """Write `<weights stem>.fp32.onnx`, the network as it is, batch size free."""
    out = Path(weights).with_name(f"{Path(weights).stem}.fp32.onnx")
    torch.onnx.export(model, torch.zeros(2, 1, 28, 28), str(out),
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                      opset_version=OPSET, dynamo=False)
    return out


def export_strings(weights: Path) -> dict:
    """Write the string model's fp32 ONNX form, `<weights stem>.fp32.onnx` (batch and
    width free, each strip's own width as a second input), after checking that it gives
    torch's log-probabilities on strips of several widths batched together; record it
    in the string model's metadata and return the entry."""
    import onnxruntime

    from shared.runtime import session
    from shared.stringnet import load

    weights = Path(weights)
    model, meta = load(weights)
    out = weights.with_name(f"{weights.stem}.fp32.onnx")
    x, widths = torch.rand(3, 1, 32, 160), torch.tensor([160, 96, 40])
    torch.onnx.export(model, (x, widths), str(out), input_names=["x", "widths"],
                      output_names=["log_probs"],
                      dynamic_axes={"x": {0: "n", 3: "w"}, "widths": {0: "n"},
                                    "log_probs": {0: "t", 1: "n"}},
                      opset_version=OPSET, dynamo=False)
    rng = torch.Generator().manual_seed(5)
    probe = torch.rand(8, 1, 32, 240, generator=rng)
    probe_widths = torch.tensor([240, 200, 160, 120, 80, 64, 40, 16])
    with torch.inference_mode():
        expected = model(probe, probe_widths).numpy()
    got = session(out).run(None, {"x": probe.numpy(), "widths": probe_widths.numpy()})[0]
    worst = float(np.abs(got - expected).max())
    if worst > 1e-3:
        out.unlink()
        raise RuntimeError(f"the string model's ONNX form differs from torch by {worst:.2g}")
    entry = {"file": out.name, "sha256": artifact.sha256_file(out),
             "onnxruntime": onnxruntime.__version__, "opset": OPSET,
             "largest_difference_from_torch": round(worst, 8)}
    meta.setdefault("runtimes", {})[ONNX_FP32] = entry
    artifact.write_metadata(weights, meta)
    return entry


def export_int8(weights: Path, data_dir: Path, real_dir: Path | None = None) -> dict:
    """Write `<weights stem>.int8.onnx` (and the fp32 form it is made from) and record
    them in the metadata; returns the entry."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    weights = Path(weights)
    model, meta = artifact.load(weights)
    pixels = calibration_pixels(data_dir, real_dir)
    pixels = pixels[: len(pixels) // 100 * 100]  # whole batches: the entropy pass wants them
    out = weights.with_name(f"{weights.stem}.int8.onnx")

    class Digits(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(pixels[i : i + 100, None] for i in range(0, len(pixels), 100))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"x": batch}

    fp32 = export_fp32(model, weights)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        quantize_static(str(prepared), str(out), Digits(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=QUANTISED,
                        nodes_to_exclude=convs[:1],
                        calibrate_method=CalibrationMethod.Entropy)
    entry = {"file": out.name, "sha256": artifact.sha256_file(out),
             "onnxruntime": onnxruntime.__version__, "opset": OPSET,
             "calibration": f"entropy (KL) over {len(pixels)} prepared training images: MNIST "
                            "training digits, clean and in the form families, the real sets' "
                            "training parts, images with no digit",
             # The fp32 graph the int8 one was made from: it re-scores unsure images.
             "recheck": {"file": fp32.name, "sha256": artifact.sha256_file(fp32)}}
    meta.setdefault("runtimes", {})[ONNX_INT8] = entry
    artifact.write_metadata(weights, meta)
    return entry

