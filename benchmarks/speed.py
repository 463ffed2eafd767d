"""Speed and size: PyTorch fp32 vs ONNX fp32 vs ONNX INT8 (chapter 8's PerformanceBenchmark).

Needs a bundle trained with ``keep_pytorch_model: true`` (see benchmarks/sklearn.yml), so all
three run the same weights. Prints a table and writes JSON.

    python benchmarks/speed.py --bundle var/models/scikit-learn__scikit-learn/current
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from training.bundle import Bundle, write_manifest
from training.classifier import load_classifier
from training.config import TrainingConfig
from training.dataset import DatasetConfig, IssueDataset, build_dataset
from training.export import quantize_as_configured
from training.machine import cpu_info, describe
from training.metrics import scores
from training.quickstart import sample_settings
from training.settings import load_settings
from training.store import Store

RESULTS = Path(__file__).resolve().parent / "results"


def _latencies(
    predicts: dict[str, Callable[[list[str]], np.ndarray]], text: str, runs: int, blocks: int = 4
) -> dict[str, list[float]]:
    """Batch-1 timings, taken in blocks that take turns, so slow drift of a shared machine hits
    every model alike; a pause between blocks lets the previous runtime's spinning threads sleep."""
    timings: dict[str, list[float]] = {name: [] for name in predicts}
    for predict in predicts.values():
        predict([text])  # warm-up
    for _ in range(blocks):
        for name, predict in predicts.items():
            time.sleep(0.5)
            for _ in range(max(1, runs // blocks)):
                started = time.perf_counter()
                predict([text])
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def _throughput(predict: Callable[[list[str]], np.ndarray], texts: list[str], rounds: int) -> float:
    batch = texts[:32]
    predict(batch)
    started = time.perf_counter()
    for _ in range(rounds):
        predict(batch)
    return rounds * len(batch) / (time.perf_counter() - started)


def bundle_with(model_path: Path, precision: str, source: Bundle, folder: Path) -> Bundle:
    """A copy of the bundle serving another ONNX file (fp32 or INT8)."""
    folder.mkdir()
    for path in source.folder.iterdir():
        if path.is_file() and path.name not in {"model.onnx", "model_fp32.onnx", "bundle.json"}:
            shutil.copy(path, folder / path.name)
    shutil.copy(model_path, folder / "model.onnx")
    kept = {k: v for k, v in source.info.items() if k not in {"files", "format"}}
    write_manifest(folder, kept | {"precision": precision})
    return Bundle(folder, threads=torch.get_num_threads())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=100, help="batch-1 timings per model")
    parser.add_argument("--rounds", type=int, default=5, help="batch-32 rounds per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.bundle.resolve()
    if not (folder / "pytorch").is_dir() or not (folder / "model_fp32.onnx").is_file():
        parser.error(f"{folder} has no pytorch/ and model_fp32.onnx: train it with keep_pytorch_model: true")
    served = Bundle(folder, threads=args.threads)
    dataset = bundle_dataset(folder)
    test_texts, test_targets = _test_split(dataset, served)

    tokenizer = AutoTokenizer.from_pretrained(folder / "pytorch")
    model = load_classifier(str(folder / "pytorch")).eval()

    @torch.no_grad()
    def pytorch_predict(texts: list[str]) -> np.ndarray:
        encoded = tokenizer(
            texts, truncation=True, max_length=served.max_length, padding=True, return_tensors="pt"
        )
        return torch.sigmoid(model(**encoded).logits).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        trained_with = TrainingConfig.from_file(folder / "training_config.json")
        int8_path = quantize_as_configured(
            folder / "model_fp32.onnx",
            Path(tmp) / "int8.onnx",
            tokenizer,
            dataset.texts("train"),
            trained_with,
        )
        fp32 = bundle_with(folder / "model_fp32.onnx", "fp32", served, Path(tmp) / "fp32")
        int8 = bundle_with(int8_path, "int8", served, Path(tmp) / "int8")
        sample = _sample_issue(test_texts, tokenizer, target_tokens=200)
        # (as served: an INT8 bundle scores one issue at a time; in batches of 32; size)
        Predict = Callable[[list[str]], np.ndarray]
        candidates: dict[str, tuple[Predict, Predict, int]] = {
            "PyTorch fp32": (
                pytorch_predict,
                pytorch_predict,
                (folder / "pytorch" / "model.safetensors").stat().st_size,
            ),
            "ONNX fp32": (
                fp32.probabilities,
                partial(fp32.probabilities, batch_size=32),
                (folder / "model_fp32.onnx").stat().st_size,
            ),
            "ONNX INT8": (
                int8.probabilities,
                partial(int8.probabilities, batch_size=32),
                int8_path.stat().st_size,
            ),
        }
        latencies_of = _latencies({name: c[0] for name, c in candidates.items()}, sample, args.runs)
        rows: list[dict[str, Any]] = []
        for name, (predict, predict_batches, size) in candidates.items():
            latencies = latencies_of[name]
            decided = served.decide(predict(test_texts))
            rows.append(
                {
                    "model": name,
                    "size_mb": round(size / 1e6, 1),
                    "latency_p50_ms": round(statistics.median(latencies), 2),
                    "latency_p99_ms": round(float(np.percentile(latencies, 99)), 2),
                    "batch32_texts_per_s": round(_throughput(predict_batches, test_texts, args.rounds), 1),
                    "test_micro_f1": round(
                        float(scores(served.labels, test_targets, decided)["micro_f1"]), 4
                    ),
                }
            )
    base = rows[0]
    for row in rows:
        row["speedup_p50"] = round(base["latency_p50_ms"] / row["latency_p50_ms"], 2)
        row["size_ratio"] = round(row["size_mb"] / base["size_mb"], 3)
    tokens = len(tokenizer(sample, truncation=True, max_length=served.max_length)["input_ids"])
    print(
        f"bundle {folder.name}, {args.threads} threads, sample issue of {tokens} tokens, "
        f"{len(test_texts)} test issues"
    )
    header = f"{'model':<14} {'MB':>6} {'p50 ms':>8} {'p99 ms':>8} {'x p50':>6} {'b32/s':>7} {'micro F1':>9}"
    print(header)
    for row in rows:
        print(
            f"{row['model']:<14} {row['size_mb']:>6} {row['latency_p50_ms']:>8} {row['latency_p99_ms']:>8} "
            f"{row['speedup_p50']:>6} {row['batch32_texts_per_s']:>7} {row['test_micro_f1']:>9}"
        )
    print(describe(cpu_info()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "bundle": str(folder),
                "threads": args.threads,
                "sample_tokens": tokens,
                "cpu": cpu_info(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"written {args.out}")
    return 0


def bundle_dataset(folder: Path) -> IssueDataset:
    """The bundle's own splits, rebuilt from the store it was trained from (splits are recorded)."""
    manifest = json.loads((folder / "data_manifest.json").read_text())
    settings = sample_settings(load_settings())
    store = Store(settings.database_url)
    try:
        with store.session() as session:
            dataset = build_dataset(session, manifest["repos"], DatasetConfig.from_settings(settings))
    finally:
        store.close()
    if dataset.split_hash() != manifest["split_hash"]:
        raise SystemExit(
            "the store's split differs from the bundle's: point ISSUE_LABELER_DATABASE_URL (and the "
            "label settings) at the store the bundle was trained from"
        )
    return dataset


def _test_split(dataset: IssueDataset, served: Bundle) -> tuple[list[str], np.ndarray]:
    """The bundle's test issues and their targets over the served labels."""
    texts = dataset.texts("test")
    targets = np.array(
        [[1 if name in e.labels else 0 for name in served.labels] for e in dataset.splits["test"]]
    )
    return texts, targets


def _sample_issue(texts: list[str], tokenizer: object, target_tokens: int) -> str:
    """The real test issue whose length is closest to ``target_tokens``."""
    # Counting whole issues, longer than the model reads: the tokenizer's warning would be noise.
    lengths = [len(tokenizer(text, verbose=False)["input_ids"]) for text in texts]  # type: ignore[operator]
    return texts[int(np.argmin([abs(n - target_tokens) for n in lengths]))]


if __name__ == "__main__":
    raise SystemExit(main())
