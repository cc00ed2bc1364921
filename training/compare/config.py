"""What a comparison run trains on and searches over: the full run and the `--quick` check.

Both go through the same code; `--quick` only shrinks the data, the epochs and the
number of timing samples, so a test can run the whole pipeline in a minute or two.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompareConfig:
    quick: bool = False
    seed: int = 0
    # Training digits (after the validation part is set aside); None means all 55,000.
    train_limit: int | None = None
    # Test digits to report on; None means all 10,000.
    test_limit: int | None = None

    # SVM: C and gamma are chosen on a subset, because each candidate is a full libsvm fit.
    svm_grid_train: int = 5_000
    svm_grid_val: int = 2_000
    svm_c: tuple[float, ...] = (1.0, 10.0)
    svm_gamma: tuple[float, ...] = (0.01, 0.025, 0.05)
    # Fits on growing subsets, timed, to extrapolate the fit on all training digits.
    svm_probe_sizes: tuple[int, ...] = (2_500, 5_000, 10_000)
    # The "about 20 minutes here": above this estimate, fall back to PCA features.
    svm_budget_s: float = 20 * 60
    svm_pca_components: int = 50

    # MLP: one hidden layer (LeCun's table lists 784-800-10); width and dropout searched.
    mlp_hidden: tuple[int, ...] = (300, 800)
    mlp_dropout: tuple[float, ...] = (0.0, 0.3)
    mlp_epochs: int = 15

    # CNN: the shipped recipe; None keeps its epochs.
    cnn_epochs: int | None = None

    # Single-image latency: this many test digits, one at a time, after a warm-up.
    latency_samples: int = 300
    # Misclassified digits drawn per model.
    error_grid: int = 100


FULL = CompareConfig()

QUICK = CompareConfig(
    quick=True,
    train_limit=3_000,
    test_limit=2_000,
    svm_grid_train=1_000,
    svm_grid_val=600,
    svm_c=(1.0, 10.0),
    svm_gamma=(0.01, 0.05),
    svm_probe_sizes=(250, 500, 1_000),
    mlp_hidden=(100, 300),
    mlp_dropout=(0.0, 0.3),
    mlp_epochs=4,
    cnn_epochs=2,
    latency_samples=50,
    error_grid=40,
)
