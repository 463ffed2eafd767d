"""Ranking against thresholds: how much of a method's test F1 is its ranking, how much its thresholds.

Reads the validation and test scores that ``benchmarks/quality.py --scores-dir DIR`` kept for each
transformer run, trains TF-IDF + LR on the same split, and prints for each: micro / macro F1 as
served (thresholds tuned on validation), the labels' mean average precision (``macro_ap``) and the
pooled one (``micro_ap``, all labels' scores ranked together: it also needs scores that are
comparable across labels), and micro F1 at the best single threshold for all labels read off the
test issues themselves — not a result, but what one shared threshold could do at best with these
scores (the served rule gives labels with enough validation positives thresholds of their own, so
it can score above it).

    python benchmarks/quality.py --datasets sklearn --seeds 42,43,44 --scores-dir /tmp/scores
    python -m benchmarks.ranking --scores-dir /tmp/scores
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

from benchmarks.quality import DATASETS, RESULTS, load_dataset
from training import baselines
from training.config import TrainingConfig
from training.machine import cpu_info
from training.metrics import (
    best_global_threshold_f1,
    decide,
    macro_average_precision,
    scores,
    tune_thresholds,
)
from training.quickstart import DEFAULT_DATA_DIR


@dataclass(frozen=True)
class Scored:
    name: str
    validation: np.ndarray
    test: np.ndarray


def measure(
    label_names: list[str],
    validation_targets: np.ndarray,
    test_targets: np.ndarray,
    run: Scored,
    config: TrainingConfig,
) -> dict[str, object]:
    thresholds = tune_thresholds(label_names, validation_targets, run.validation, **config.threshold_args())
    served = scores(label_names, test_targets, decide(run.test, label_names, thresholds))
    return {
        "run": run.name,
        "micro_f1": round(float(served["micro_f1"]), 4),
        "macro_f1": round(float(served["macro_f1"]), 4),
        "macro_ap": round(macro_average_precision(test_targets, run.test), 4),
        "micro_ap": round(float(average_precision_score(test_targets.ravel(), run.test.ravel())), 4),
        "best_single_threshold_micro_f1": round(best_global_threshold_f1(test_targets, run.test), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scores-dir", type=Path, required=True, help="quality.py's --scores-dir")
    parser.add_argument("--dataset", default="sklearn", choices=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "ranking.json")
    args = parser.parse_args()
    kept = sorted(args.scores_dir.glob(f"{args.dataset}_*.npz"))
    if not kept:
        parser.error(f"no {args.dataset}_*.npz scores in {args.scores_dir} (run quality.py --scores-dir)")
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(args.dataset, args.data_dir, Path(tmp))
    labels = data.label_names
    train = (data.texts("train"), data.targets("train"))
    validation, test = data.targets("validation"), data.targets("test")
    tfidf = baselines.fit_tfidf_logreg(labels, train)
    runs = [Scored("tfidf_logreg", tfidf(data.texts("validation")), tfidf(data.texts("test")))]
    for path in kept:
        with np.load(path) as saved:
            same = (
                list(saved["labels"]) == labels
                and np.array_equal(saved["validation_targets"], validation)
                and np.array_equal(saved["test_targets"], test)
            )
            if not same:
                parser.error(f"{path.name} was scored on another split or label set than the current one")
            runs.append(Scored(path.stem, saved["validation_probabilities"], saved["test_probabilities"]))
    config = TrainingConfig()
    rows = [measure(labels, validation, test, run, config) for run in runs]
    header = f"{'run':<40} {'micro F1':>9} {'macro F1':>9} {'macro AP':>9} {'micro AP':>9} {'best 1 thr':>10}"
    print(f"{args.dataset}: {len(test)} test issues, {data.split_method} split")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['run']:<40} {row['micro_f1']:>9.3f} {row['macro_f1']:>9.3f} {row['macro_ap']:>9.3f} "
            f"{row['micro_ap']:>9.3f} {row['best_single_threshold_micro_f1']:>10.3f}"
        )
    print("best 1 thr: micro F1 at the best single threshold for all labels, chosen on the test issues")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"dataset": args.dataset, "split": data.split_method, "cpu": cpu_info(), "results": rows},
            indent=2,
        )
    )
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
