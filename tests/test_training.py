"""Training and the artifact: a short run learns, the artifact round-trips and refuses
tampering, and the shipped model reaches its recorded accuracy on all 10,000 test digits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import torch

from shared import artifact
from tests.conftest import ROOT
from training.data import test_tensors as load_test_digits
from training.data import train_val_split
from training.evaluate import evaluate
from training.train import Recipe, train


@pytest.fixture(scope="module")
def small_model(data_dir):
    torch.manual_seed(0)
    train_set, val_set = train_val_split(data_dir, seed=0, limit=3000)
    start = time.perf_counter()
    model, history = train(train_set, val_set, Recipe(epochs=2, batch_size=64), progress=False)
    return model, history, time.perf_counter() - start


def test_short_training_learns_well_above_chance(small_model, data_dir):
    model, history, seconds = small_model
    assert seconds < 60
    assert history.val_acc[-1] > 0.85
    assert history.train_loss[-1] < history.train_loss[0]
    subset = load_test_digits(data_dir)
    subset.x, subset.y = subset.x[:2000], subset.y[:2000]
    assert evaluate(model, subset).accuracy > 0.85


def test_artifact_round_trips(small_model, tmp_path):
    model, _, _ = small_model
    weights = tmp_path / "m.safetensors"
    meta = artifact.save(model, weights, test_accuracy=0.5)
    loaded, loaded_meta = artifact.load(weights)
    assert loaded_meta == meta
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_a_flipped_byte_in_the_weights_is_refused(small_model, tmp_path):
    model, _, _ = small_model
    weights = tmp_path / "m.safetensors"
    artifact.save(model, weights)
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(artifact.ArtifactError, match="fail their checksum"):
        artifact.load(weights)


def test_mismatched_metadata_is_refused(small_model, tmp_path):
    model, _, _ = small_model
    weights = tmp_path / "m.safetensors"
    artifact.save(model, weights)
    meta_file = weights.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    meta["architecture"]["hidden"] = 64  # metadata that does not describe these weights
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(artifact.ArtifactError, match="do not match their metadata"):
        artifact.load(weights)
    meta_file.unlink()
    with pytest.raises(artifact.ArtifactError, match=r"metadata .* not found"):
        artifact.load(weights)


def test_cli_refuses_a_tampered_model_in_one_line(shipped_model, tmp_path):
    copy = tmp_path / shipped_model.name
    shutil.copy(shipped_model, copy)
    shutil.copy(shipped_model.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "cli.main", "evaluate", "--model", str(copy)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "fail their checksum" in result.stderr
    assert "Traceback" not in result.stderr


def test_shipped_model_reaches_its_recorded_accuracy(shipped_model, data_dir):
    model, meta = artifact.load(shipped_model)
    result = evaluate(model, load_test_digits(data_dir))
    assert result.n == 10_000
    assert result.errors == meta["test_errors"]
    assert result.accuracy == pytest.approx(meta["test_accuracy"])
    assert result.accuracy >= 0.9965
    assert meta["training_seconds"] <= 900  # both stages, on this 2-core machine
    for key in ("name", "version", "architecture", "input", "data_sha256", "created_at",
                "weights_sha256", "temperature"):
        assert key in meta


def test_evaluate_json_last_line(shipped_model, data_dir):
    result = subprocess.run([sys.executable, "-m", "cli.main", "evaluate", "--json",
                             "--data", str(data_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 10_000 and summary["accuracy"] >= 0.9965
    assert summary["errors"] == round((1 - summary["accuracy"]) * 10_000)


def test_weight_space_average_keeps_its_ends():
    """WiSE-FT's interpolation: alpha 0 is the MNIST model, 1 the tuned one."""
    import torch

    from shared.network import DigitCNN
    from training.pipeline import interpolate

    torch.manual_seed(0)
    start, tuned = DigitCNN().eval(), DigitCNN().eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(interpolate(start, tuned, 0.0)(x), start(x), atol=1e-5)
        assert torch.allclose(interpolate(start, tuned, 1.0)(x), tuned(x), atol=1e-5)
        half = interpolate(start, tuned, 0.5).state_dict()
    w = "classifier.4.weight"
    assert torch.allclose(half[w], (start.state_dict()[w] + tuned.state_dict()[w]) / 2)
