"""`digits calibrate`: fit the no-digit and review thresholds into the model metadata."""

from __future__ import annotations

from pathlib import Path

from shared.settings import get_settings


def register(sub) -> None:
    p = sub.add_parser("calibrate",
                       help="fit the no_digit and needs_review thresholds on validation digits "
                            "drawn as scans, and store them in the model metadata")
    p.add_argument("--model", type=Path, default=None, help="weights file (DIGITS_MODEL_PATH)")
    p.add_argument("--data", type=Path, default=None, help="MNIST folder (DIGITS_DATA_DIR)")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from cli.model_cmds import _data_dir
    from shared import artifact
    from training.calibrate import fit, write

    weights = args.model or get_settings().model_path
    model, meta = artifact.load(weights)
    real_dir = get_settings().real_data_dir
    fitted = fit(model, meta, _data_dir(args.data), real_dir if real_dir.is_dir() else None)
    report = fitted["report"]
    meta = write(Path(weights), fitted)
    print(f"review_threshold {meta['review_threshold']:.4f}, "
          f"no_digit_threshold {meta['no_digit_threshold']:.4f}, "
          f"max clutter {meta['no_digit_max_clutter']:.3f}, "
          f"max ink fraction {meta['no_digit_max_ink_fraction']:.3f}, "
          f"max pen width {meta['no_digit_max_pen']:.2f}x MNIST's")
    for name, r in report["digits"].items():
        print(f"  {name:<20} {r['n']:>5} digits: {r['flagged_share']:.2%} flagged, unflagged "
              f"error rate {r['unflagged_error_rate']:.3%}, {r['refused_as_no_digit']:.2%} "
              f"refused as no_digit")
    others = report["non_digits"]
    print(f"  non-digits: {others['refused']:.2%} of {others['n']} refused "
          f"{others['refused_by_kind']}")
    print(f"wrote {artifact.metadata_path(Path(weights))}")
    return 0
