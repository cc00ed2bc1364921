"""The workers' model runtime (shared/runtime.py): the shipped int8 ONNX form answers as
torch fp32 does, is chosen by default on a CPU, shows in the model version and /readyz,
and a missing or tampered file falls back to torch with a warning."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from shared import artifact
from shared.runtime import ONNX_INT8, TORCH, choose
from tests.conftest import MODEL

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def predictors(shipped_model):
    from worker.inference import Predictor

    return (Predictor(shipped_model, "cpu", 128, 1, runtime="torch"),
            Predictor(shipped_model, "cpu", 128, 1, runtime="auto"))


def test_the_int8_model_is_the_default_and_answers_as_torch_does(predictors, mnist_test):
    torch_fp32, default = predictors
    assert default.runtime == ONNX_INT8 and default.version.endswith("+onnx-int8")
    assert torch_fp32.version.endswith("+torch")
    images, labels = mnist_test
    pixels = images[:3000].astype(np.float32) / 255
    a = torch_fp32.probabilities(pixels, counted=False)
    b = default.probabilities(pixels, counted=False)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.999
    assert (b.argmax(1) == labels[:3000]).mean() >= 0.995
    assert np.abs(a - b).max() < 0.2  # close probabilities, not only the same digits


def _copy_model(tmp_path):
    for path in MODEL.parent.glob(f"{MODEL.stem}*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / MODEL.name


def test_a_tampered_or_missing_int8_file_falls_back_to_torch(tmp_path, caplog):
    weights = _copy_model(tmp_path)
    meta = artifact.read_metadata(weights)
    onnx_path = tmp_path / meta["runtimes"][ONNX_INT8]["file"]
    assert choose("auto", "cpu", weights, meta) == (ONNX_INT8, onnx_path)
    assert choose("auto", "cuda", weights, meta)[0] == TORCH  # a CPU form
    assert choose("torch", "cpu", weights, meta)[0] == TORCH
    onnx_path.write_bytes(onnx_path.read_bytes()[:-10] + b"0123456789")
    with caplog.at_level(logging.WARNING):
        assert choose(ONNX_INT8, "cpu", weights, meta) == (TORCH, None)
    assert "fails its checksum" in caplog.text and "torch fp32 instead" in caplog.text
    onnx_path.unlink()
    assert choose(ONNX_INT8, "cpu", weights, meta) == (TORCH, None)
    del meta["runtimes"]
    assert choose("auto", "cpu", weights, meta) == (TORCH, None)


def test_unsure_images_are_rescored_by_the_fp32_form_or_else_by_torch(tmp_path, caplog,
                                                                      mnist_test):
    """The int8 model's unsure images get fp32 logits: from the exported fp32 ONNX form
    (the same as torch's to 1e-5), or from torch when that file fails its checksum."""
    import torch

    from worker.inference import Predictor

    weights = _copy_model(tmp_path)
    images, _ = mnist_test
    pixels = images[:512].astype(np.float32) / 255
    torch_fp32 = Predictor(weights, "cpu", 128, 1, runtime="torch")
    default = Predictor(weights, "cpu", 128, 1, runtime="auto")
    assert default.fp32 is not None
    expected = torch_fp32.probabilities(pixels, counted=False)
    with torch.inference_mode():
        torch_logits = torch_fp32._logits(pixels)
    np.testing.assert_allclose(default.fp32.logits(pixels), torch_logits, atol=1e-4)
    unsure = default.probabilities(pixels, counted=False).max(1) < default.recheck_below
    assert unsure.any()
    np.testing.assert_allclose(default.probabilities(pixels, counted=False)[unsure],
                               expected[unsure], atol=1e-5)

    meta = artifact.read_metadata(weights)
    fp32 = tmp_path / meta["runtimes"][ONNX_INT8]["recheck"]["file"]
    fp32.write_bytes(fp32.read_bytes() + b"changed")
    with caplog.at_level(logging.WARNING):
        fallback = Predictor(weights, "cpu", 128, 1, runtime="auto")
    assert fallback.runtime == ONNX_INT8 and fallback.fp32 is None
    assert "fails its checksum" in caplog.text and "torch re-checks" in caplog.text
    np.testing.assert_allclose(fallback.probabilities(pixels, counted=False)[unsure],
                               expected[unsure], atol=1e-5)


def test_readyz_and_results_name_the_runtime(live_stack):
    from tests.conftest import mnist_png_bytes, wait_for

    ready = wait_for(lambda: (r := live_stack.get("/readyz").json()).get("runtimes") and r, 60,
                     what="workers announcing their runtime")
    assert ready["runtimes"] == [ONNX_INT8]
    name, data, _ = mnist_png_bytes(0, 1)[0]
    answer = live_stack.post("/api/v1/predict", files={"image": (name, data)})
    assert answer.json()["model_version"].endswith("+onnx-int8")
    job = live_stack.post("/api/v1/jobs", files=[("files", (name, data, "image/png"))]).json()
    assert live_stack.wait_job(job["id"])["model_version"].endswith("+onnx-int8")
