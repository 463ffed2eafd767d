"""Paired comparison of two methods on the same test issues: is a difference more than test noise?

With 95 test issues and labels that have one or two of them, one issue decides several points of
macro F1. This reads the validation and test scores that ``benchmarks/quality.py --scores-dir``
kept for two methods, pairs their runs by seed, serves each as a refresh would (thresholds tuned
on validation, unreliable labels never applied) and resamples the test issues with replacement:
the same resampled issues for both methods and every seed. Prints, per seed and for the mean over
the seeds, the difference A − B in micro F1, macro F1 and macro AP, its 95% interval, and how
often A is behind in the resamples. It measures the noise of the test split only: the seeds
themselves stand for the noise of training. ``macro_f1_measurable`` is macro F1 over the labels
with at least ``--min-support`` positives among the test issues (chosen once, on the whole
split): a label with one test issue scores 0 or 1 by that issue alone and moves macro F1 by
five points either way.

    python benchmarks/quality.py --datasets sklearn --seeds 42,43,44 --scores-dir /tmp/scores
    python -m benchmarks.paired --a "adapted=/tmp/scores/sklearn_finetune_adapted_*.npz" \\
        --b "vanilla=/tmp/scores/sklearn_finetune_[0-9]*.npz"
"""

from __future__ import annotations

import argparse
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.quality import RESULTS
from training.config import TrainingConfig
from training.machine import cpu_info
from training.metrics import decide, tune_thresholds

MEASURES = ("micro_f1", "macro_f1", "macro_f1_measurable", "macro_ap")


@dataclass(frozen=True)
class Served:
    """One run's test issues as the bot would see them: its decisions and its scores."""

    seed: int
    targets: np.ndarray
    decided: np.ndarray
    probabilities: np.ndarray


def load_runs(pattern: str, config: TrainingConfig) -> tuple[list[str], dict[int, Served]]:
    """The runs kept under a glob, by seed, served with thresholds tuned on their validation."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no score files match {pattern!r} (run quality.py --scores-dir)")
    labels: list[str] = []
    runs: dict[int, Served] = {}
    for path in paths:
        seed = re.search(r"seed(\d+)", Path(path).stem)
        if seed is None:
            raise SystemExit(f"{path}: no seed in the file name (quality.py names them ..._seedN.npz)")
        with np.load(path) as kept:
            labels = list(kept["labels"])
            validation = kept["validation_targets"], kept["validation_probabilities"]
            thresholds = tune_thresholds(labels, *validation, **config.threshold_args())
            test = kept["test_probabilities"]
            runs[int(seed.group(1))] = Served(
                int(seed.group(1)), kept["test_targets"], decide(test, labels, thresholds), test
            )
    return labels, runs


def f1_scores(targets: np.ndarray, decided: np.ndarray) -> tuple[float, float]:
    """Micro and macro F1 as sklearn's ``f1_score(..., zero_division=0)`` gives them, fast enough
    to run thousands of times."""
    true_pos = (targets & decided).sum(axis=0)
    wrong = (targets ^ decided).sum(axis=0)
    per_label = np.divide(2 * true_pos, 2 * true_pos + wrong, out=np.zeros(len(true_pos)), where=true_pos > 0)
    total = 2 * true_pos.sum() + wrong.sum()
    return (float(2 * true_pos.sum() / total) if total else 0.0), float(per_label.mean())


def average_precision(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over the labels with a positive of their average precision, as
    ``training.metrics.macro_average_precision`` gives it (tied scores, such as an issue drawn
    twice, count as one step), without sklearn's per-call overhead."""
    precisions = []
    for column in np.flatnonzero(targets.any(axis=0)):
        order = np.argsort(-probabilities[:, column], kind="stable")
        ranked, positive = probabilities[order, column], targets[order, column].astype(np.int64)
        steps = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
        found = np.cumsum(positive)[steps]
        recall_gained = np.diff(np.r_[0, found]) / found[-1]
        precisions.append(float(np.sum(recall_gained * found / (steps + 1))))
    return float(np.mean(precisions)) if precisions else 0.0


def measurable(run: Served, min_support: int) -> np.ndarray:
    """The labels with at least ``min_support`` positives among the run's whole test split."""
    return run.targets.sum(axis=0) >= min_support


def measure(run: Served, rows: np.ndarray | None = None, *, min_support: int = 5) -> dict[str, float]:
    """The measures of a run on its test issues (``rows`` of them, repeated ones included)."""
    targets = run.targets if rows is None else run.targets[rows]
    decided = run.decided if rows is None else run.decided[rows]
    probabilities = run.probabilities if rows is None else run.probabilities[rows]
    micro, macro = f1_scores(targets.astype(bool), decided.astype(bool))
    kept = measurable(run, min_support)
    macro_measurable = (
        f1_scores(targets[:, kept].astype(bool), decided[:, kept].astype(bool))[1] if kept.any() else 0.0
    )
    return {
        "micro_f1": micro,
        "macro_f1": macro,
        "macro_f1_measurable": macro_measurable,
        "macro_ap": average_precision(targets, probabilities),
    }


def summarise(differences: np.ndarray, observed: float) -> dict[str, object]:
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "difference": round(observed, 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "behind_share": round(float((differences < 0).mean()), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", required=True, help="NAME=GLOB of the score files of method A (quote it)")
    parser.add_argument("--b", required=True, help="NAME=GLOB of the score files of method B")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="of the resampling")
    parser.add_argument(
        "--min-support", type=int, default=5, help="test positives a label needs for macro_f1_measurable"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "paired.json")
    args = parser.parse_args()
    config = TrainingConfig()
    (name_a, pattern_a), (name_b, pattern_b) = (
        spec.split("=", 1) if "=" in spec else parser.error(f"{spec!r}: give NAME=GLOB")
        for spec in (args.a, args.b)
    )
    labels_a, runs_a = load_runs(pattern_a, config)
    labels_b, runs_b = load_runs(pattern_b, config)
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        parser.error(f"no seed has runs of both: {name_a} {sorted(runs_a)}, {name_b} {sorted(runs_b)}")
    for seed in seeds:
        if labels_a != labels_b or not np.array_equal(runs_a[seed].targets, runs_b[seed].targets):
            parser.error(f"seed {seed}: the two runs were scored on different test issues or labels")
    issues = len(runs_a[seeds[0]].targets)
    support = args.min_support
    kept = [name for name, k in zip(labels_a, measurable(runs_a[seeds[0]], support), strict=True) if k]
    whole = {
        seed: (measure(runs_a[seed], min_support=support), measure(runs_b[seed], min_support=support))
        for seed in seeds
    }
    observed = {seed: {k: whole[seed][0][k] - whole[seed][1][k] for k in MEASURES} for seed in seeds}
    draws = np.random.default_rng(args.seed).integers(0, issues, size=(args.resamples, issues))
    resampled = {seed: {k: np.empty(args.resamples) for k in MEASURES} for seed in seeds}
    for i, rows in enumerate(draws):
        for seed in seeds:
            a = measure(runs_a[seed], rows, min_support=support)
            b = measure(runs_b[seed], rows, min_support=support)
            for k in MEASURES:
                resampled[seed][k][i] = a[k] - b[k]
    report: dict[str, dict[str, object]] = {}
    for seed in seeds:
        report[f"seed {seed}"] = {
            name_a: {k: round(v, 4) for k, v in whole[seed][0].items()},
            name_b: {k: round(v, 4) for k, v in whole[seed][1].items()},
        } | {k: summarise(resampled[seed][k], observed[seed][k]) for k in MEASURES}
    report["mean over seeds"] = {
        k: summarise(
            np.mean([resampled[s][k] for s in seeds], axis=0), float(np.mean([observed[s][k] for s in seeds]))
        )
        for k in MEASURES
    }
    print(f"{name_a} − {name_b}: {issues} test issues, {len(labels_a)} labels, {args.resamples} resamples")
    print(f"measurable (≥ {support} test positives): {', '.join(kept)}")
    header = f"{'':<16}" + "".join(f"{k:>30}" for k in MEASURES)
    print(header)
    print("-" * len(header))
    for row, measured in report.items():
        cells = [
            f"{m['difference']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}] {m['behind_share']:>4.0%}"  # type: ignore[index]
            for m in (measured[k] for k in MEASURES)
        ]
        print(f"{row:<16}" + "".join(f"{cell:>30}" for cell in cells))
    print(f"cells: difference [95% interval over resampled test issues], resamples with {name_a} behind")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"a": args.a, "b": args.b, "test_issues": issues, "resamples": args.resamples, "cpu": cpu_info()}
            | {"min_support": support, "measurable_labels": kept}
            | {"results": report},
            indent=2,
        )
    )
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
