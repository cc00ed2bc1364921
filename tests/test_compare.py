"""`digits compare`: the quick run through the real CLI entry point, then its report checked
as a reader would use it (numbers sane, every figure a real PNG, every link resolving), plus
the SVM's budget decision and the report's error interval on their own."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from training.compare.config import QUICK
from training.compare.report import wilson_interval
from training.compare.svm import extrapolate, fit_svm

DATA_DIR = Path(os.environ.get("DIGITS_DATA_DIR", "/work/shared/data/mnist"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANCE = 0.1

needs_mnist = pytest.mark.skipif(not (DATA_DIR / "t10k-labels-idx1-ubyte.gz").exists()
                                 and not (DATA_DIR / "t10k-labels-idx1-ubyte").exists(),
                                 reason=f"MNIST not found in {DATA_DIR} (DIGITS_DATA_DIR)")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", "--quick", "--data", str(DATA_DIR), "--out", str(out)]) == 0
    return out


@pytest.mark.slow
@needs_mnist
def test_quick_run_measures_three_models_sanely(quick_report):
    results = json.loads((quick_report / "comparison.json").read_text())
    assert results["quick"] is True
    models = {m["name"]: m for m in results["models"]}
    assert sorted(models) == ["CNN", "MLP", "SVM"]
    for name, m in models.items():
        n = m["n_test"]
        assert n == results["data"]["test_size"] == QUICK.test_limit
        # Well above chance even on the small subset, and consistent with the error count.
        assert 0 < m["accuracy"] <= 1
        assert m["accuracy"] > 5 * CHANCE, name
        assert m["errors"] == round(n * (1 - m["accuracy"]))
        confusion = np.array(m["confusion"])
        assert confusion.shape == (10, 10) and confusion.sum() == n
        assert n - np.trace(confusion) == m["errors"] == len(m["misclassified"])
        assert all(0 <= r <= 1 for r in m["per_class_error_rate"])
        assert sum(m["per_class_errors"]) == m["errors"]
        assert m["train_seconds"] > 0 and m["test_seconds"] > 0
        assert m["train_cpu_seconds"] > 0 and m["test_cpu_seconds"] > 0
        assert m["throughput_per_s"] == pytest.approx(n / m["test_seconds"])
        assert 0 < m["latency_ms"]["median"] <= m["latency_ms"]["p95"]
        assert m["latency_ms"]["samples"] == QUICK.latency_samples
        assert m["size_bytes"] > 1000 and m["parameters"] > 1000
        assert m["train_size"] == results["data"]["train_size"] == QUICK.train_limit
    # Hyper-parameters were chosen among candidates scored on the validation part.
    for name in ("SVM", "MLP"):
        assert len(models[name]["candidates"]) >= 2
        assert all(0 < c["val_accuracy"] <= 1 for c in models[name]["candidates"])
    assert models["SVM"]["chosen"]["features"] == "raw pixels"  # 3,000 digits fit in budget
    cnn_history = models["CNN"]["history"]
    assert len(cnn_history["train_loss"]) == len(cnn_history["val_acc"]) == QUICK.cnn_epochs
    assert results["machine"]["cpu"] and results["machine"]["libraries"]["torch"]


@pytest.mark.slow
@needs_mnist
def test_every_figure_is_a_real_png(quick_report):
    pngs = sorted(quick_report.glob("*.png"))
    # Accuracy and timing bars, then a confusion matrix and an error grid per model, and
    # training curves for the two networks.
    assert len(pngs) == 2 + 3 * 2 + 2, [p.name for p in pngs]
    for path in pngs:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path.name
        assert len(data) > 5_000, path.name  # a drawn figure, not an empty canvas
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 200, path.name
            # Not one flat colour: something was drawn.
            assert len(image.convert("L").getcolors(maxcolors=256)) > 10, path.name


@pytest.mark.slow
@needs_mnist
def test_report_tables_and_links(quick_report):
    markdown = (quick_report / "comparison.md").read_text()
    results = json.loads((quick_report / "comparison.json").read_text())
    assert "Quick check" in markdown  # a quick report can never pass for a real one
    for header in ("| model | test accuracy | errors |", "| digit | test count | SVM | MLP | CNN |",
                   "| family | model | preprocessing | test error | reference |",
                   "| features | C | gamma |", "| hidden units | dropout |"):
        assert header in markdown, header
    # The summary table states what the JSON holds.
    for m in results["models"]:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| **{m['name']}**"))
        assert f"{100 * m['accuracy']:.2f}%" in row and f"| {m['errors']} |" in row
    # The published figures are there, with their source named.
    assert "LeNet-5" in markdown and "0.95%" in markdown and "1.40%" in markdown
    assert "yann.lecun.com/exdb/mnist" in markdown
    # Every local link resolves, and every figure written is shown.
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    local = [t for t in targets if not t.startswith(("http://", "https://", "#"))]
    assert local
    for target in local:
        assert (quick_report / target).is_file(), target
    shown = {t for t in local if t.endswith(".png")}
    assert shown == {p.name for p in quick_report.glob("*.png")}
    # Anchors point at headings that exist.
    headings = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", markdown, flags=re.M)}
    for anchor in (t[1:] for t in targets if t.startswith("#")):
        assert anchor in headings, anchor


def test_extrapolate_recovers_a_power_law():
    sizes = [1_000, 2_000, 4_000]
    seconds = [3e-6 * n**1.8 for n in sizes]
    estimate, exponent = extrapolate(sizes, seconds, 55_000)
    assert exponent == pytest.approx(1.8)
    assert estimate == pytest.approx(3e-6 * 55_000**1.8)


@needs_mnist
def test_svm_over_budget_uses_pca_on_every_digit():
    from training.data import train_val_split

    train, val = train_val_split(DATA_DIR, limit=600)
    config = replace(QUICK, svm_budget_s=0.0, svm_grid_train=300, svm_grid_val=120,
                     svm_probe_sizes=(100, 200, 400), svm_c=(5.0,), svm_gamma=(0.01, 0.05),
                     svm_pca_components=20)
    trained = fit_svm(train, val, config, log=lambda line: None)
    assert trained.chosen["features"] == "PCA-20"
    assert trained.train_size == 600
    assert any("over budget" in note for note in trained.notes)
    # Chosen again on the PCA features: those candidates are listed beside the raw ones.
    assert {c["features"] for c in trained.candidates} == {"raw pixels", "PCA-20"}
    clf = trained.classifier
    assert clf.pca is not None and clf.pca.n_components_ == 20
    predicted = clf.predict(val.x)
    assert predicted.shape == (len(val.x),)
    assert (predicted == val.y.numpy()).mean() > 0.7
    svc = clf.svc
    assert clf.n_parameters() == (svc.support_vectors_.size + svc.dual_coef_.size
                                  + svc.intercept_.size + 20 * 784 + 784)


def test_wilson_interval():
    low, high = wilson_interval(0, 100)
    assert low == 0 and high == pytest.approx(0.0370, abs=1e-4)
    low, high = wilson_interval(140, 10_000)  # LeCun's 1.4% SVM, on a test set this size
    assert low < 0.014 < high and high - low == pytest.approx(0.0046, abs=3e-4)
    assert not math.isnan(low)
