"""The RBF-kernel SVM: C and gamma chosen on the validation part, then one decision made by
measurement: can libsvm fit all the training digits' raw pixels in the time budget?

libsvm's fit grows faster than linearly with the number of digits, so the fit time is
measured on a few growing subsets and extrapolated with a power law. Under the budget, the
final SVM sees every training digit's 784 pixels; over it, the pixels are first projected
on their leading principal components (PCA), which shrinks every kernel evaluation, and C
and gamma are chosen again for those features. The report states which, and why.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.svm import SVC

from training.compare.config import CompareConfig
from training.compare.models import SVMClassifier, Trained
from training.compare.stopwatch import Stopwatch
from training.data import Tensors

# More kernel cache than the 200 MB default: fewer recomputed rows, same result.
CACHE_MB = 1000


def _svc(c: float, gamma: float) -> SVC:
    return SVC(kernel="rbf", C=c, gamma=gamma, cache_size=CACHE_MB)


def flat(data: Tensors) -> tuple[np.ndarray, np.ndarray]:
    return data.x.reshape(len(data.x), -1).numpy(), data.y.numpy()


def grid_search(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                cs: tuple[float, ...], gammas: tuple[float, ...], log=print) -> list[dict]:
    """Every (C, gamma) fitted on (x, y) and scored on the validation digits."""
    rows = []
    for c, gamma in itertools.product(cs, gammas):
        start = time.perf_counter()
        svc = _svc(c, gamma).fit(x, y)
        fit_seconds = time.perf_counter() - start
        val_acc = float((svc.predict(x_val) == y_val).mean())
        rows.append({"C": c, "gamma": gamma, "val_accuracy": val_acc,
                     "fit_seconds": round(fit_seconds, 2),
                     "support_vectors": int(svc.n_support_.sum())})
        log(f"  SVM C={c:g} gamma={gamma:g}: validation accuracy {val_acc:.4f} "
            f"({fit_seconds:.1f} s fit)")
    return rows


def best_of(rows: list[dict]) -> dict:
    # Ties go to fewer support vectors: the same accuracy, faster to predict.
    return max(rows, key=lambda r: (r["val_accuracy"], -r["support_vectors"]))


def extrapolate(sizes: list[int], seconds: list[float], target: int) -> tuple[float, float]:
    """Fit seconds = a * n**k on the probes (least squares in log-log); return the estimate
    at `target` and the exponent k."""
    k, log_a = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(np.exp(log_a) * target**k), float(k)


def probe_fit_times(x: np.ndarray, y: np.ndarray, c: float, gamma: float,
                    sizes: tuple[int, ...]) -> list[tuple[int, float]]:
    """CPU seconds of each fit: libsvm fits on one thread, so this is the time it takes on an
    otherwise idle core, whatever else the machine is doing while we measure."""
    probes = []
    for n in sizes:
        with Stopwatch() as clock:
            _svc(c, gamma).fit(x[:n], y[:n])
        probes.append((n, clock.cpu))
    return probes


def fit_svm(train_set: Tensors, val_set: Tensors, config: CompareConfig,
            log=print) -> Trained:
    started = time.perf_counter()
    x, y = flat(train_set)
    x_val, y_val = flat(val_set)
    # The training digits are already in seeded random order, so prefixes are random subsets.
    n_grid, n_val = min(config.svm_grid_train, len(x)), min(config.svm_grid_val, len(x_val))
    xg, yg, xv, yv = x[:n_grid], y[:n_grid], x_val[:n_val], y_val[:n_val]

    log(f"SVM: choosing C and gamma on {n_grid:,} training / {n_val:,} validation digits")
    candidates = [{**row, "features": "raw pixels"}
                  for row in grid_search(xg, yg, xv, yv, config.svm_c, config.svm_gamma, log)]
    best = best_of(candidates)

    sizes = tuple(n for n in config.svm_probe_sizes if n < len(x))
    probes = probe_fit_times(x, y, best["C"], best["gamma"], sizes) if len(sizes) >= 2 else []
    if probes:
        estimate, exponent = extrapolate(*zip(*probes, strict=True), len(x))
    else:  # too few digits to probe: fitting them all is cheap by definition
        estimate, exponent = 0.0, float("nan")
    probe_text = ", ".join(f"{n:,} digits {s:.1f} s" for n, s in probes)
    log(f"SVM: probe fits {probe_text or 'skipped'}; all {len(x):,} estimated {estimate:.0f} s")

    pca = None
    why = (f"Fit time on raw pixels, measured (CPU time) on subsets ({probe_text}) and "
           f"extrapolated with a power law (exponent {exponent:.2f}), was estimated at "
           f"{estimate / 60:.1f} min for all {len(x):,} training digits, against a budget of "
           f"{config.svm_budget_s / 60:.0f} min")
    if estimate <= config.svm_budget_s:
        features = "raw pixels"
        notes = [f"{why}: within budget, so the SVM is fitted on every training digit's 784 "
                 "raw pixels (scaled to [0, 1]), with no reduction and no subset."]
    else:
        features = f"PCA-{config.svm_pca_components}"
        notes = [f"{why}: over budget, so the pixels are projected on their "
                 f"{config.svm_pca_components} leading principal components (fitted on the "
                 "training part) and C and gamma are chosen again on those features. Every "
                 "training digit is still used."]
        pca = PCA(config.svm_pca_components, random_state=config.seed).fit(x)
        log(f"SVM: over budget; choosing C and gamma again on {features} features")
        rows = grid_search(pca.transform(xg), yg, pca.transform(xv), yv,
                           config.svm_c, config.svm_gamma, log)
        candidates += [{**row, "features": features} for row in rows]
        best = best_of(rows)

    notes.append(f"C and gamma chosen by accuracy on {n_val:,} validation digits, each "
                 f"candidate fitted on {n_grid:,} training digits (a full fit per candidate "
                 "would cost the grid size times the final fit). One-vs-one multi-class, as "
                 "libsvm does it; libsvm fits on one core.")
    log(f"SVM: fitting C={best['C']:g} gamma={best['gamma']:g} on {len(x):,} digits "
        f"({features})")
    search_seconds = time.perf_counter() - started
    with Stopwatch() as clock:
        if pca is not None:
            # The projection is part of training: fitted again (same seed, same result) so
            # that the reported training time includes it.
            pca = PCA(config.svm_pca_components, random_state=config.seed).fit(x)
            svc = _svc(best["C"], best["gamma"]).fit(pca.transform(x), y)
        else:
            svc = _svc(best["C"], best["gamma"]).fit(x, y)
    if probes:
        notes.append(f"The final fit took {clock.cpu / 60:.1f} min of CPU time, "
                     f"{clock.wall / 60:.1f} min wall-clock (estimated {estimate / 60:.1f} "
                     "min of CPU time for raw pixels).")
    return Trained(
        name="SVM",
        description=f"RBF kernel, C={best['C']:g}, gamma={best['gamma']:g}, {features}",
        classifier=SVMClassifier(svc, pca),
        train_size=len(x),
        train_seconds=clock.wall,
        train_cpu_seconds=clock.cpu,
        selection_seconds=search_seconds,
        chosen={"C": best["C"], "gamma": best["gamma"], "features": features,
                "support_vectors": int(svc.n_support_.sum()),
                "estimated_raw_fit_seconds": round(estimate, 1),
                "probe_fits": [{"n": n, "seconds": round(s, 2)} for n, s in probes]},
        candidates=candidates,
        notes=notes,
    )
