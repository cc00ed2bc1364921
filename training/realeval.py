"""`digits evaluate --data-set PATH`: a labelled folder or zip through the worker's path.

Every image goes through exactly what a worker runs on a chunk (`prepare_many`, the
model in batches, the verdict: `worker.processing.classify`), and the answers are
scored against `labels.csv`: accuracy (the right digit given back), `no_digit`,
`needs_review`, and the error rate among answers nobody is asked to review, each with
a 95 % Wilson interval, plus a risk-coverage table (the share flagged against the
error rate left among the rest, for other review thresholds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from training.labelled import TEST, DataSetError, Labelled, part_of

Z95 = 1.959964


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(successes: int, n: int) -> dict:
    low, high = wilson(successes, n)
    return {"rate": successes / n if n else 0.0, "count": successes, "n": n,
            "ci95": [round(low, 5), round(high, 5)]}


def select_part(data: Labelled, part: str) -> Labelled:
    """`all`, or one part of a known real set (unknown sets only have `all`)."""
    if part == "all":
        return data
    try:
        parts = part_of(data)
    except DataSetError:
        if part == TEST:  # an outside collection: nothing of it was trained on
            return data
        raise
    return data.subset(parts == part)


def score(labels: np.ndarray, outcomes: list, review_threshold: float) -> dict:
    """The figures for one set of answers (`worker.processing.Outcome`s)."""
    n = len(labels)
    status = np.array([o.status for o in outcomes])
    digit = np.array([-1 if o.digit is None else o.digit for o in outcomes])
    confidence = np.array([o.confidence or 0.0 for o in outcomes])
    flagged = np.array([o.needs_review for o in outcomes])
    done = status == "done"
    right = done & (digit == labels)
    unflagged = done & ~flagged
    curve = []
    for share in (0.0, 0.01, 0.02, 0.05, 0.10, 0.15, 0.20):
        if not done.any():
            break
        t = float(np.quantile(confidence[done], share)) if share else 0.0
        keep = done & (confidence >= t) if share else done
        errors = int((keep & (digit != labels)).sum())
        curve.append({"flagged": round(1 - keep.sum() / max(1, done.sum()), 4),
                      "threshold": round(t, 4),
                      "unflagged_error_rate": round(errors / max(1, keep.sum()), 5)})
    return {
        "n": n,
        "accuracy": _rate(int(right.sum()), n),
        "no_digit": _rate(int((status == "no_digit").sum()), n),
        "failed": int((status == "failed").sum()),
        "needs_review": _rate(int((done & flagged).sum()), n),
        "unflagged_error": _rate(int((unflagged & (digit != labels)).sum()),
                                 int(unflagged.sum())),
        "review_threshold": review_threshold,
        "risk_coverage": curve,
    }


def evaluate_data_set(data: Labelled, classify: Callable[[list[bytes]], list],
                      review_threshold: float, chunk: int = 256) -> dict:
    """Score `data` with `classify` (bytes -> Outcomes), chunk by chunk as a worker would."""
    start = time.perf_counter()
    outcomes = []
    for i in range(0, len(data.blobs), chunk):
        outcomes += classify(data.blobs[i : i + chunk])
    report = score(data.digits(), outcomes, review_threshold)
    report.update(data_set=data.name, seconds=round(time.perf_counter() - start, 1))
    return report


def format_report(r: dict, part: str) -> str:
    def line(name: str, x: dict) -> str:
        lo, hi = x["ci95"]
        return (f"  {name:<22} {x['rate']:8.2%}  ({x['count']} of {x['n']}; 95 % CI "
                f"{lo:.2%} - {hi:.2%})")

    lines = [f"data set {r['data_set']} ({part}): {r['n']} images, {r['seconds']:.0f} s",
             line("accuracy", r["accuracy"]), line("no_digit", r["no_digit"]),
             line("needs_review", r["needs_review"]),
             line("error among unflagged", r["unflagged_error"])]
    if r["failed"]:
        lines.append(f"  failed (unreadable)      {r['failed']}")
    lines.append("  risk-coverage (other review thresholds on the same answers):")
    for c in r["risk_coverage"]:
        lines.append(f"    flag {c['flagged']:6.2%} (confidence < {c['threshold']:.3f}) -> "
                     f"error among the rest {c['unflagged_error_rate']:.3%}")
    return "\n".join(lines)

