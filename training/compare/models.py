"""The one interface the comparison measures: every model predicts digits from the same
(n, 1, 28, 28) float tensors in [0, 1], saves itself to a file, and counts its parameters.

`TorchClassifier` wraps the MLP and the CNN, `SVMClassifier` the scikit-learn SVM (with
PCA in front when it was needed). `Trained` is what each `fit_*` function hands back: the
classifier plus how it was chosen and how long its final fit took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import joblib
import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.decomposition import PCA
from sklearn.svm import SVC

from shared.network import count_parameters
from training.train import History, predict_logits


class Classifier(Protocol):
    def predict(self, x: torch.Tensor) -> np.ndarray:
        """Predicted digits (n,) int for a (n, 1, 28, 28) float batch in [0, 1]."""

    def save(self, path: Path) -> Path:
        """Write the fitted model in its usual format; return the file written."""

    def n_parameters(self) -> int:
        """Numbers the model stores and needs to predict."""


class TorchClassifier:
    """A PyTorch network; saved as safetensors, the format the service ships the CNN in."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval()

    def predict(self, x: torch.Tensor) -> np.ndarray:
        return predict_logits(self.module, x).argmax(1).numpy()

    def save(self, path: Path) -> Path:
        path = path.with_suffix(".safetensors")
        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(path))
        return path

    def n_parameters(self) -> int:
        return count_parameters(self.module)


class SVMClassifier:
    """An RBF-kernel SVC on flattened pixels, or on their PCA projection if `pca` is set;
    saved with joblib (pickle), scikit-learn's usual format."""

    def __init__(self, svc: SVC, pca: PCA | None = None) -> None:
        self.svc = svc
        self.pca = pca

    def features(self, x: torch.Tensor) -> np.ndarray:
        flat = x.reshape(len(x), -1).numpy()
        return self.pca.transform(flat) if self.pca is not None else flat

    def predict(self, x: torch.Tensor) -> np.ndarray:
        return self.svc.predict(self.features(x))

    def save(self, path: Path) -> Path:
        path = path.with_suffix(".joblib")
        joblib.dump({"pca": self.pca, "svc": self.svc}, path)
        return path

    def n_parameters(self) -> int:
        # What prediction reads: the support vectors, their dual coefficients (one row per
        # other class) and the pairwise intercepts, plus the PCA basis and mean if any.
        count = self.svc.support_vectors_.size + self.svc.dual_coef_.size
        count += self.svc.intercept_.size
        if self.pca is not None:
            count += self.pca.components_.size + self.pca.mean_.size
        return int(count)


@dataclass
class Trained:
    name: str  # "SVM", "MLP" or "CNN"
    description: str  # one line: what the final model is
    classifier: Classifier
    train_size: int  # digits the final model was fitted on
    train_seconds: float  # wall-clock time of the final fit only
    train_cpu_seconds: float  # CPU time of the final fit (all threads)
    selection_seconds: float = 0.0  # wall-clock time spent choosing hyper-parameters
    chosen: dict = field(default_factory=dict)  # hyper-parameters of the final model
    candidates: list[dict] = field(default_factory=list)  # each tried, with its val accuracy
    notes: list[str] = field(default_factory=list)  # what was used and why, for the report
    history: History | None = None  # per-epoch curves, for the networks
