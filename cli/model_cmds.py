"""`digits train` and `digits evaluate`: the ML engineer's commands."""

from __future__ import annotations

import json
from pathlib import Path

from shared.settings import get_settings


def register(sub) -> None:
    p = sub.add_parser("train", help="train the CNN on MNIST and write a model artifact")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training digits")
    p.add_argument("--out", type=Path, default=Path("models"), help="folder for the artifact")
    p.add_argument("--name", default="digits-cnn", help="artifact file name, without suffix")
    p.add_argument("--data", type=Path, default=None, help="MNIST folder (DIGITS_DATA_DIR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, metavar="WEIGHTS",
                   help="skip stage 1 (MNIST alone): fine-tune this artifact on the mixture")
    p.add_argument("--limit", type=int, default=None,
                   help="train on this many digits only (a quick check, not a real model)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy and confusion matrix on the MNIST test digits")
    p.add_argument("--model", type=Path, default=None, help="weights file (DIGITS_MODEL_PATH)")
    p.add_argument("--data", type=Path, default=None, help="MNIST folder (DIGITS_DATA_DIR)")
    p.add_argument("--style", choices=["mnist", "scans", "strings"], default="mnist",
                   help="clean MNIST digits, the generated scan-like set made from them, or "
                        "the generated digit strings (training/strings.py)")
    p.add_argument("--mode", choices=["digit", "string"], default="digit",
                   help="string: read whole fields (labels.csv file,text) with the string "
                        "model; with no --data-set, the generated strings")
    p.add_argument("--data-set", type=Path, default=None, metavar="PATH",
                   help="a folder or zip with labels.csv (file,label), read through the "
                        "worker's own path instead of MNIST")
    p.add_argument("--part", choices=["test", "calibration", "train", "all"], default="test",
                   help="with --data-set: which part of a known real set (training/labelled.py); "
                        "any other set is read whole")
    p.add_argument("--json", action="store_true", help="end with one JSON object")
    p.set_defaults(func=cmd_evaluate)


def _data_dir(arg: Path | None) -> Path:
    from shared.mnist import ensure_data

    settings = get_settings()
    return ensure_data(arg or settings.data_dir, settings.allow_download)


def cmd_train(args) -> int:
    from training.pipeline import train_and_save
    from training.train import Recipe

    recipe = Recipe(seed=args.seed)
    if args.epochs is not None:
        recipe.epochs = args.epochs
    weights = args.out / f"{args.name}.safetensors"
    meta = train_and_save(_data_dir(args.data), weights, recipe, limit=args.limit,
                          init=args.init)
    print(f"trained in {meta['training_seconds']:.0f} s on {meta['train_size']} digits "
          f"(validation accuracy {meta['validation_accuracy']:.4f})")
    print(f"test accuracy {meta['test_accuracy']:.4%} ({meta['test_errors']} errors "
          f"in {meta['test_n']})")
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0


def cmd_evaluate_data_set(args) -> int:
    from shared.settings import get_settings
    from training.labelled import DataSetError, load
    from training.realeval import evaluate_data_set, format_report, select_part
    from worker.inference import Predictor
    from worker.processing import classify

    settings = get_settings()
    try:
        data = select_part(load(args.data_set), args.part)
    except DataSetError as exc:
        print(f"digits evaluate: {exc}")
        return 2
    predictor = Predictor(args.model or settings.model_path, "cpu", settings.max_batch_size)
    report = evaluate_data_set(data, lambda blobs: classify(blobs, predictor),
                               float(predictor.meta.get("review_threshold", 0.0)),
                               settings.chunk_size)
    report["model_version"] = predictor.version
    print(format_report(report, args.part))
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_evaluate_strings(args) -> int:
    from shared.stringnet import path_beside
    from training import strings
    from training.labelled import DataSetError, load
    from worker.strings import StringModel

    settings = get_settings()
    # As a worker runs it: its ONNX form unless DIGITS_RUNTIME=torch.
    model = StringModel(path_beside(args.model or settings.model_path), "cpu",
                        settings.max_batch_size, runtime=settings.runtime)
    if args.data_set is not None:
        try:
            data = load(args.data_set)
        except DataSetError as exc:
            print(f"digits evaluate: {exc}")
            return 2
        files, blobs, labels = data.files, data.blobs, data.labels
        groups = {"length": [str(len(t)) for t in labels]}
        if data.name.startswith("orand"):
            trained = set(model.meta.get("trained_on", {}).get("real_folds", []))
            folds = strings.by_field_fold(files)
            groups["fold"] = folds
            groups["part"] = ["trained on" if int(f) in trained else "held out" for f in folds]
        title = f"data set {data.name}: {len(files)} fields"
    else:
        made = strings.generated_strings(_data_dir(args.data))
        files, blobs, labels = made.files, made.blobs, made.labels
        groups = {"length": [str(len(t)) for t in labels], "neighbours": made.kinds}
        title = f"generated strings ({made.name}): {len(files)} fields"
    report = strings.evaluate(files, blobs, labels, model.read, groups, settings.chunk_size)
    report["model_version"] = model.version
    print(strings.format_strings(report, f"{title}, {report['seconds']:.0f} s, model "
                                         f"{model.version}"))
    if args.data_set is None:  # and fields whose marks are to be passed over
        marked = strings.marked_strings(_data_dir(args.data))
        report["marked"] = strings.evaluate(marked.files, marked.blobs, marked.labels,
                                            model.read, {"style": marked.kinds},
                                            settings.chunk_size)
        print(strings.format_strings(report["marked"], f"dates, amounts and codes with "
                                     f"their marks ({marked.name}): {len(marked.files)} fields"))
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_evaluate(args) -> int:
    if args.mode == "string" or args.style == "strings":
        return cmd_evaluate_strings(args)
    if args.data_set is not None:
        return cmd_evaluate_data_set(args)
    from shared import artifact
    from training.data import test_tensors
    from training.evaluate import evaluate, format_confusion

    data_dir = _data_dir(args.data)
    model, meta = artifact.load(args.model or get_settings().model_path)
    if args.style == "scans":
        from training.scans import evaluate_scans

        report = evaluate_scans(model, meta, data_dir)
        print(report.pop("text", ""))
        summary = report
    else:
        result = evaluate(model, test_tensors(data_dir))
        print(f"model {meta['name']} {meta['version']}")
        print(f"accuracy {result.accuracy:.4%}: {result.errors} errors in {result.n} test digits")
        print(format_confusion(result.confusion))
        summary = {**result.as_dict(), "model_version": meta["version"]}
    if args.json:
        print(json.dumps(summary))
    return 0
