"""Hold a runtime to the acceptance rules against torch fp32, with the exact form a
worker runs (worker.inference.Predictor), on the data the model is judged on:

- MNIST test accuracy >= 99.65 %, and the same digit as torch for >= 99.9 % of images;
- every scan family, form family and real set: accuracy no more than 0.1 point below
  torch's (reading more digits right is no regression);
- needs_review and no_digit rates, and the share of non-digits refused, within 0.2
  points of torch's either way.

A bound finer than one image of its family cannot be measured there (the non-digit
families hold 300 images: one image is 0.33 point), so a difference of one image
always passes. Families reported only (res8, too small to stay legible) are shown,
not held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_MNIST = 0.9965
MIN_SAME_DIGIT = 0.999
MAX_ACCURACY_GAP = 0.001
MAX_RATE_GAP = 0.002


class AsTorch:
    """A Predictor's logits behind the call the evaluation code makes on a torch model."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    def __call__(self, x):
        import torch

        pixels = x.squeeze(1).numpy().astype(np.float32)
        if self.predictor.onnx is not None:  # as a worker runs it, re-checks included
            return torch.from_numpy(self.predictor.int8_logits(pixels))
        with torch.inference_mode():
            return self.predictor.model(x.to(torch.float32))


def _measures(predictor, data_dir: Path, real_dir: Path | None) -> tuple[dict, np.ndarray]:
    """{measure name: (value, images it is measured on)} and the MNIST test digits."""
    from shared.mnist import load_split
    from training.forms import NON_DIGIT_SIZE, REPORT_ONLY
    from training.labelled import real_parts
    from training.realeval import evaluate_data_set
    from training.scans import evaluate_scans
    from worker.processing import classify

    test = load_split(data_dir, "test")
    probs = predictor.probabilities(test.images.astype(np.float32) / 255, counted=False)
    digits = probs.argmax(1)
    out = {"mnist accuracy": (float((digits == test.labels).mean()), len(digits))}
    scans = evaluate_scans(AsTorch(predictor), predictor.meta, data_dir)
    families = {**scans["per_family"], **scans["forms"]["families"]}
    for name, f in families.items():
        if name in REPORT_ONLY:
            continue
        for key in ("accuracy", "no_digit", "needs_review"):
            out[f"{name} {key}"] = (f[key], f["n"])
    for name, share in scans["forms"]["non_digits_refused"].items():
        out[f"{name} refused"] = (share, NON_DIGIT_SIZE)
    for data in real_parts(real_dir, "test") if real_dir else []:
        report = evaluate_data_set(data, lambda blobs: classify(blobs, predictor),
                                   float(predictor.meta.get("review_threshold", 0.0)), 256)
        for key in ("accuracy", "no_digit", "needs_review"):
            out[f"{data.name} {key}"] = (report[key]["rate"], report[key]["n"])
    return out, digits


def check(weights: Path, data_dir: Path, real_dir: Path | None, runtime: str) -> dict:
    """Both runtimes' measures, the differences and the verdict of each rule."""
    from worker.inference import Predictor

    base = Predictor(weights, "cpu", 128, 0, runtime="torch")
    other = Predictor(weights, "cpu", 128, 0, runtime=runtime)
    if other.runtime != runtime:
        raise SystemExit(f"runtime {runtime} is not available here (see the warning above)")
    torch_figures, torch_digits = _measures(base, data_dir, real_dir)
    figures, digits = _measures(other, data_dir, real_dir)
    rows = []
    for name, (value, n) in figures.items():
        base = torch_figures[name][0]
        one_image = 1 / n + 1e-4  # rates come rounded to 4 places
        if name == "mnist accuracy":
            limit, ok = f">= {MIN_MNIST:.2%}", value >= MIN_MNIST
        elif name.endswith("accuracy"):
            limit = f"at most {MAX_ACCURACY_GAP * 100:.1f} pt below"
            ok = base - value <= max(MAX_ACCURACY_GAP + 1e-9, one_image)
        else:
            limit = f"within {MAX_RATE_GAP * 100:.1f} pt"
            ok = abs(value - base) <= max(MAX_RATE_GAP + 1e-9, one_image)
        rows.append({"measure": name, "n": n, "torch": base, runtime: value, "rule": limit,
                     "ok": bool(ok)})
    same = float((digits == torch_digits).mean())
    rows.append({"measure": "same digit as torch (MNIST test)", "n": len(digits), "torch": 1.0,
                 runtime: same,
                 "rule": f">= {MIN_SAME_DIGIT:.1%}", "ok": same >= MIN_SAME_DIGIT})
    return {"runtime": runtime, "rows": rows, "accepted": all(r["ok"] for r in rows)}


def format_check(report: dict) -> str:
    runtime = report["runtime"]
    lines = [f"{'measure':<34} {'images':>7} {'torch':>8} {runtime:>10}  rule"]
    for r in report["rows"]:
        lines.append(f"{r['measure']:<34} {r['n']:>7} {r['torch']:>8.2%} {r[runtime]:>10.2%}"
                     f"  {r['rule']}{'' if r['ok'] else '  FAILS'}")
    lines.append(f"{runtime}: {'accepted' if report['accepted'] else 'NOT accepted'}")
    return "\n".join(lines)
