"""`digits compare`: train an RBF SVM, an MLP and the shipped CNN on MNIST, measure them the
same way on this machine, and write a Markdown report with its PNG figures."""

from __future__ import annotations

import shlex
from pathlib import Path

from shared.settings import get_settings

# A quick run is a pipeline check, not a measurement: by default it stays out of reports/.
QUICK_OUT = Path("var/compare-quick")
FULL_OUT = Path("reports")


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train and measure SVM, MLP and CNN on MNIST; write a report with plots",
        description="Train an RBF-kernel SVM, an MLP and the CNN on the standard MNIST split, "
                    "choosing hyper-parameters on a validation part, then measure accuracy, "
                    "timings and size on this machine and write comparison.md, "
                    "comparison.json and PNG figures. The full run takes about half an hour "
                    "on 2 cores.",
    )
    p.add_argument("--data", type=Path, default=None, help="MNIST folder (DIGITS_DATA_DIR)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"report folder (default {FULL_OUT}, or {QUICK_OUT} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="the same pipeline on a small subset, in a minute or two: checks the "
                        "pipeline, says nothing about the models")
    p.add_argument("--seed", type=int, default=0, help="validation split and training seed")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from dataclasses import replace

    from shared.mnist import ensure_data
    from training.compare.config import FULL, QUICK
    from training.compare.pipeline import run_comparison

    settings = get_settings()
    data_dir = ensure_data(args.data or settings.data_dir, settings.allow_download)
    out = args.out or (QUICK_OUT if args.quick else FULL_OUT)
    config = replace(QUICK if args.quick else FULL, seed=args.seed)
    # The command as the report will tell readers to rerun it (no machine-specific paths).
    words = ["digits", "compare", "--out", str(out)]
    if args.quick:
        words.append("--quick")
    if args.seed:
        words += ["--seed", str(args.seed)]
    report = run_comparison(data_dir, out, config, command=shlex.join(words),
                            log=lambda line: print(line, flush=True))
    print(f"report: {report}")
    return 0
