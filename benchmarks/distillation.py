"""Distillation: a trained bundle's PyTorch model (the teacher) against a shallower student.

Distils the teacher with ``training.distill`` on the bundle's own splits (rebuilt from the store
it was trained from), tunes the student's thresholds on validation as a refresh does, and
compares both on the test split: every label and as served. With ``--registry`` the student
is also written as an INT8 bundle there (a copy of the teacher's, model and thresholds
replaced), for ``benchmarks.webhook_load``. Prints a table and writes JSON.

    python -m benchmarks.distillation --bundle var/models/scikit-learn__scikit-learn/current \\
        --set distill_layers=3 --set distill_alpha=0.2 --set distill_temperature=4 --set distill_epochs=4
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.speed import bundle_dataset
from training.allocator import keep_freed_memory
from training.bundle import write_manifest
from training.classifier import load_classifier
from training.config import TrainingConfig
from training.dataset import IssueDataset
from training.distill import distill_dataset
from training.export import export_onnx, quantize_as_configured
from training.finetune import positive_weights, predict_probabilities
from training.machine import cpu_info
from training.metrics import Thresholds, decide, scores, tune_thresholds

RESULTS = Path(__file__).resolve().parent / "results"


def _evaluate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: IssueDataset, config: TrainingConfig
) -> tuple[dict[str, float], Thresholds]:
    labels = dataset.label_names
    validation, test = dataset.splits["validation"], dataset.splits["test"]
    val_probs = predict_probabilities(model, tokenizer, dataset.texts("validation"), config.max_length)
    thresholds = tune_thresholds(labels, dataset.targets("validation"), val_probs, **config.threshold_args())
    test_probs = predict_probabilities(model, tokenizer, dataset.texts("test"), config.max_length)
    every = replace(thresholds, reliable=dict.fromkeys(labels, True))
    served = scores(labels, dataset.targets("test"), decide(test_probs, labels, thresholds))
    all_labels = scores(labels, dataset.targets("test"), decide(test_probs, labels, every))
    val = scores(labels, dataset.targets("validation"), decide(val_probs, labels, thresholds))
    row = {
        "validation_micro_f1": float(val["micro_f1"]),
        "test_every_label_micro_f1": float(all_labels["micro_f1"]),
        "test_every_label_macro_f1": float(all_labels["macro_f1"]),
        "test_served_micro_f1": float(served["micro_f1"]),
        "test_served_macro_f1": float(served["macro_f1"]),
        "validation_issues": len(validation),
        "test_issues": len(test),
    }
    return {k: round(v, 4) for k, v in row.items()}, thresholds


def _save_student(
    teacher_bundle: Path,
    registry: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    thresholds: Thresholds,
    config: TrainingConfig,
    calibration_texts: list[str],
) -> Path:
    repo_dir = registry / teacher_bundle.parent.name
    shutil.rmtree(repo_dir, ignore_errors=True)
    folder = repo_dir / teacher_bundle.name
    shutil.copytree(teacher_bundle, folder, ignore=shutil.ignore_patterns("pytorch", "model_fp32.onnx"))
    (repo_dir / "current").symlink_to(folder.name)
    (folder / "thresholds.json").write_text(json.dumps(thresholds.to_json(), indent=2))
    with tempfile.TemporaryDirectory() as tmp:
        student = export_onnx(model, tokenizer, Path(tmp) / "student.onnx")
        quantize_as_configured(student, folder / "model.onnx", tokenizer, calibration_texts, config)
    info = json.loads((folder / "bundle.json").read_text())
    kept = {k: v for k, v in info.items() if k not in {"files", "format"}}
    write_manifest(folder, kept | {"precision": "int8"})  # the teacher's bundle may serve fp32
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundle", type=Path, required=True, help="a bundle with pytorch/ (keep_pytorch_model)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="training argument for the student"
    )
    parser.add_argument("--registry", type=Path, help="also write the student as a bundle in this registry")
    parser.add_argument("--out", type=Path, default=RESULTS / "distillation.json")
    args = parser.parse_args()
    folder = args.bundle.resolve()
    if not (folder / "pytorch").is_dir():
        parser.error(f"{folder} has no pytorch/: train it with keep_pytorch_model: true")
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    trained_with = json.loads((folder / "training_config.json").read_text())
    config = TrainingConfig(**(trained_with | {"distill_layers": 3} | overrides))
    torch.set_num_threads(config.torch_threads or 2)
    if config.keep_freed_memory:
        keep_freed_memory()
    dataset = bundle_dataset(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder / "pytorch")
    teacher = load_classifier(str(folder / "pytorch")).eval()
    teacher_row, _ = _evaluate(teacher, tokenizer, dataset, config)
    pos_weight = (
        positive_weights(dataset.targets("train"), config.pos_weight_cap)
        if config.pos_weight == "auto"
        else None
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        student = distill_dataset(teacher, tokenizer, dataset, Path(tmp), config, pos_weight)
    seconds = round(time.monotonic() - started, 1)
    student_row, thresholds = _evaluate(student.model, tokenizer, dataset, config)
    rows = [
        {"model": f"teacher ({teacher.config.num_hidden_layers} layers)", **teacher_row},
        {"model": f"student (layers {student.layers_kept})", **student_row, "distill_seconds": seconds},
    ]
    print(f"{'model':<26} {'val micro':>9} {'every label':>13} {'as served':>13}")
    for row in rows:
        print(
            f"{row['model']:<26} {row['validation_micro_f1']:>9.3f} "
            f"{row['test_every_label_micro_f1']:>6.3f}/{row['test_every_label_macro_f1']:.3f} "
            f"{row['test_served_micro_f1']:>6.3f}/{row['test_served_macro_f1']:.3f}"
        )
    print(f"distilled on {student.texts} issues in {seconds:.0f}s")
    if args.registry:
        saved = _save_student(
            folder,
            args.registry.resolve(),
            student.model,
            tokenizer,
            thresholds,
            config,
            dataset.texts("train"),
        )
        print(f"student bundle: {saved}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"bundle": str(folder), "config": config.model_dump(), "cpu": cpu_info(), "rows": rows},
            indent=2,
        )
    )
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
