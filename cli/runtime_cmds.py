"""`digits export-onnx`: the int8 ONNX form of the model, beside its weights, for the
workers' faster runtime (shared/runtime.py), and the fp32 ONNX form of the string model
beside it; `--check` holds the digit model to the acceptance rules against torch fp32
first (training/runtimecheck.py)."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("export-onnx", help="export the model as int8 ONNX for the workers")
    p.add_argument("--model", type=Path, default=None, help="weights file (DIGITS_MODEL_PATH)")
    p.add_argument("--data", type=Path, default=None, help="MNIST folder (DIGITS_DATA_DIR)")
    p.add_argument("--check", action="store_true",
                   help="compare it with torch fp32 on MNIST, the scan and form families and "
                        "the real sets' test parts; exit 1 if a rule fails")
    p.add_argument("--strings-only", action="store_true",
                   help="export only the string model's fp32 ONNX form (the digit model's "
                        "int8 form stays as it is)")
    p.add_argument("--json", action="store_true", help="end with one JSON object")
    p.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args) -> int:
    from shared.settings import get_settings
    from shared.stringnet import path_beside
    from training.export import export_int8, export_strings

    settings = get_settings()
    weights = Path(args.model or settings.model_path)
    data_dir = Path(args.data or settings.data_dir)
    real = settings.real_data_dir if Path(settings.real_data_dir).is_dir() else None
    if not args.strings_only:
        entry = export_int8(weights, data_dir, real)
        print(f"wrote {weights.parent / entry['file']} (sha256 {entry['sha256'][:12]}...), "
              f"listed in {weights.with_suffix('.json').name}")
    strings = path_beside(weights)
    if strings.is_file():  # the string model beside it: its fp32 ONNX form
        entry = export_strings(strings)
        print(f"wrote {strings.parent / entry['file']} (sha256 {entry['sha256'][:12]}..., "
              f"at most {entry['largest_difference_from_torch']:.1g} from torch), listed in "
              f"{strings.with_suffix('.json').name}")
    if not args.check or args.strings_only:
        return 0
    from training.runtimecheck import check, format_check

    report = check(weights, data_dir, real, "onnx-int8")
    print(format_check(report))
    if args.json:
        print(json.dumps(report))
    return 0 if report["accepted"] else 1
