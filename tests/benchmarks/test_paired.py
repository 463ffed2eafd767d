"""The paired comparison's fast measures agree with the library ones it stands in for."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from benchmarks.paired import Served, average_precision, f1_scores, measure
from training.metrics import macro_average_precision


def _run(rng: np.random.Generator, issues: int = 40, labels: int = 6) -> Served:
    targets = (rng.random((issues, labels)) < 0.2).astype(np.int8)
    targets[:, -1] = 0  # a label without a test issue, as rare labels often are
    probabilities = np.round(rng.random((issues, labels)), 2)  # rounded: tied scores occur
    decided = (probabilities > 0.6).astype(np.int8)
    return Served(seed=1, targets=targets, decided=decided, probabilities=probabilities)


def test_fast_measures_equal_sklearns_on_resampled_issues_with_ties() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        run = _run(rng)
        rows = rng.integers(0, len(run.targets), size=len(run.targets))  # repeated issues: exact ties
        targets, decided, probabilities = run.targets[rows], run.decided[rows], run.probabilities[rows]
        micro, macro = f1_scores(targets.astype(bool), decided.astype(bool))
        assert np.isclose(micro, f1_score(targets, decided, average="micro", zero_division=0))
        assert np.isclose(macro, f1_score(targets, decided, average="macro", zero_division=0))
        expected = macro_average_precision(targets, probabilities)
        assert np.isclose(average_precision(targets, probabilities), expected)


def test_measure_of_a_run_against_itself_differs_by_nothing() -> None:
    run = _run(np.random.default_rng(3))
    rows = np.arange(len(run.targets))[::-1]
    assert measure(run) == measure(run, rows)


def test_measurable_macro_f1_keeps_the_labels_of_the_whole_split_in_every_resample() -> None:
    rng = np.random.default_rng(11)
    run = _run(rng)
    run.targets[:, 0] = 0
    run.targets[:2, 0] = 1  # two test positives: below the support asked
    kept = run.targets.sum(axis=0) >= 5
    assert not kept[0] and not kept[-1] and kept[1:-1].any()
    for _ in range(10):
        rows = rng.integers(0, len(run.targets), size=len(run.targets))
        expected = f1_score(
            run.targets[rows][:, kept], run.decided[rows][:, kept], average="macro", zero_division=0
        )
        assert np.isclose(measure(run, rows, min_support=5)["macro_f1_measurable"], expected)
