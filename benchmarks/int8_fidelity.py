"""INT8 fidelity: how far a bundle's INT8 model is from its fp32 ONNX, by activation smoothing.

Needs a bundle trained with ``keep_pytorch_model: true`` (see benchmarks/sklearn.yml) and the
store it was trained from (ISSUE_LABELER_DATABASE_URL), whose recorded splits give the issues.
Each smoothing share (0: plain dynamic INT8) quantizes the bundle's fp32 graph as a refresh
would and scores the bundle's test, validation and training issues one at a time, as the bot
serves them: decisions changed against fp32, |probability difference|, test F1 as served.

    python benchmarks/int8_fidelity.py --bundle REGISTRY/OWNER__NAME/VERSION --smoothing 0,0.8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from benchmarks.speed import RESULTS, bundle_dataset, bundle_with
from training.bundle import Bundle
from training.config import TrainingConfig
from training.export import calibration_feeds, quantize_int8
from training.machine import cpu_info
from training.metrics import scores


def fidelity_rows(folder: Path, smoothing: list[float], tmp: Path) -> list[dict[str, object]]:
    """One row per smoothing share, against the bundle's fp32 ONNX model."""
    config = TrainingConfig.from_file(folder / "training_config.json")
    dataset = bundle_dataset(folder)
    source = Bundle(folder)
    test = dataset.texts("test")
    texts = test + dataset.texts("validation") + dataset.texts("train")
    targets = np.array([[1 if n in e.labels else 0 for n in source.labels] for e in dataset.splits["test"]])
    fp32 = bundle_with(folder / "model_fp32.onnx", "fp32", source, tmp / "fp32")
    reference = fp32.probabilities(texts)
    decided = fp32.decide(reference)
    tokenizer = AutoTokenizer.from_pretrained(folder / "pytorch")
    calibration = calibration_feeds(
        tokenizer, dataset.texts("train")[: config.int8_calibration_issues], config.max_length
    )
    fp32_test = scores(source.labels, targets, decided[: len(test)])
    rows: list[dict[str, object]] = []
    for share in smoothing:
        model = quantize_int8(
            folder / "model_fp32.onnx", tmp / f"int8_{share}.onnx", smoothing=share, calibration=calibration
        )
        int8 = bundle_with(model, "int8", source, tmp / f"int8_{share}")
        probabilities = int8.probabilities(texts)
        decisions = int8.decide(probabilities)
        served = scores(source.labels, targets, decisions[: len(test)])
        difference = np.abs(probabilities - reference)
        rows.append(
            {
                "smoothing": share,
                "issues": len(texts),
                "decisions_changed": int((decisions != decided).sum()),
                "decisions": int(decisions.size),
                "mean_abs_prob_diff": round(float(difference.mean()), 5),
                "max_abs_prob_diff": round(float(difference.max()), 4),
                "test_micro_f1": round(float(served["micro_f1"]), 4),
                "test_macro_f1": round(float(served["macro_f1"]), 4),
                "fp32_test_micro_f1": round(float(fp32_test["micro_f1"]), 4),
                "size_mb": round(model.stat().st_size / 1e6, 1),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--smoothing", default="0,0.8", help="comma-separated shares, 0 = plain INT8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_fidelity.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.bundle.resolve()
    if not (folder / "pytorch").is_dir() or not (folder / "model_fp32.onnx").is_file():
        parser.error(f"{folder} has no pytorch/ and model_fp32.onnx: train it with keep_pytorch_model: true")
    with tempfile.TemporaryDirectory() as tmp:
        rows = fidelity_rows(folder, [float(s) for s in args.smoothing.split(",")], Path(tmp))
    header = ("smoothing", "changed", "mean |dp|", "max |dp|", "test micro/macro", "fp32 micro")
    print("  ".join(header))
    for r in rows:
        changed = f"{r['decisions_changed']}/{r['decisions']}"
        served = f"{r['test_micro_f1']:.3f}/{r['test_macro_f1']:.3f}"
        values = (r["smoothing"], changed, r["mean_abs_prob_diff"], r["max_abs_prob_diff"], served)
        print("  ".join(str(v).rjust(len(h)) for v, h in zip(values, header, strict=False)), end="  ")
        print(f"{r['fp32_test_micro_f1']:.3f}".rjust(len(header[-1])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bundle": str(folder), "cpu": cpu_info(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
