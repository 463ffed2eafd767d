"""Thresholds, reliability and exclusive label sets: small exact cases."""

import numpy as np

from training.metrics import (
    Thresholds,
    best_global_threshold_f1,
    decide,
    exclusive_group,
    macro_average_precision,
    scores,
    tune_thresholds,
)

LABELS = ["bug", "feature", "docs"]


def test_threshold_per_label_maximises_validation_f1_and_marks_unreliable_labels() -> None:
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0]])
    p = np.array([[0.30, 0.1, 0.2], [0.35, 0.2, 0.1], [0.10, 0.9, 0.3], [0.05, 0.2, 0.2], [0.2, 0.6, 0.1]])
    t = tune_thresholds(LABELS, y, p, f1_floor=0.5, per_label_min_support=1)
    assert t.values["bug"] == 0.25  # half-way between the lowest positive and the highest negative
    assert t.validation_f1["bug"] == 1.0 and t.reliable["bug"]
    assert t.validation_support["docs"] == 0 and not t.reliable["docs"]
    assert t.validation_f1["feature"] < 1.0


def test_precision_objective_takes_the_threshold_that_reaches_the_target() -> None:
    y = np.array([[1], [1], [0], [1], [0]])
    p = np.array([[0.9], [0.8], [0.7], [0.6], [0.1]])
    by_f1 = tune_thresholds(["x"], y, p, per_label_min_support=1)
    by_precision = tune_thresholds(
        ["x"], y, p, objective="precision", precision_target=1.0, per_label_min_support=1
    )
    assert by_f1.values["x"] == 0.35
    assert by_precision.values["x"] == 0.75


def test_decide_never_applies_unreliable_labels_and_one_per_exclusive_group() -> None:
    thresholds = Thresholds(
        values={"bug": 0.5, "feature": 0.4, "docs": 0.5},
        reliable={"bug": True, "feature": True, "docs": False},
        validation_f1={},
        validation_support={},
    )
    p = np.array([[0.9, 0.6, 0.99], [0.6, 0.7, 0.0]])
    assert decide(p, LABELS, thresholds).tolist() == [[1, 1, 0], [1, 1, 0]]
    thresholds.exclusive_groups = [["bug", "feature"]]
    # score/threshold: 1.8 > 1.5 keeps bug; 1.75 > 1.2 keeps feature
    assert decide(p, LABELS, thresholds).tolist() == [[1, 0, 0], [0, 1, 0]]


def test_exclusive_group_is_found_only_among_labels_never_seen_together() -> None:
    y = np.zeros((40, 3), dtype=int)
    y[:15, 0] = 1
    y[15:30, 1] = 1
    y[5:20, 2] = 1  # docs co-occurs with both
    assert exclusive_group(LABELS, y) == ["bug", "feature"]
    assert exclusive_group(LABELS, y, min_coverage=0.8) == []  # 30 of 40 issues: not a type set
    y[0, 1] = 1
    assert exclusive_group(LABELS, y) == []


def test_scores_report_micro_macro_and_per_label() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0]])
    predicted = np.array([[1, 0, 0], [0, 0, 1]])
    result = scores(LABELS, y, predicted)
    assert result["micro_f1"] == 0.5
    assert result["per_label"]["bug"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert result["per_label"]["docs"]["support"] == 0


def test_labels_with_few_validation_positives_share_the_best_overall_threshold() -> None:
    # "bug" has five positives: a threshold of its own; "feature" has two: the shared one
    y = np.array([[1, 0]] * 5 + [[0, 1]] * 2 + [[0, 0]] * 3)
    p = np.array([[0.9, 0.1]] * 5 + [[0.1, 0.35]] * 2 + [[0.2, 0.3]] * 3)
    t = tune_thresholds(["bug", "feature"], y, p, per_label_min_support=5)
    assert t.values["bug"] == 0.55  # half-way between its lowest positive and highest negative
    shared = t.values["feature"]
    assert 0.3 < shared <= 0.35  # the grid threshold that separates both labels best overall
    assert t.validation_f1["feature"] == 1.0 and t.reliable["feature"]


def test_macro_average_precision_sees_a_model_that_only_knows_label_frequencies() -> None:
    # "bug" on most issues, "docs" on one, "feature" on none (left out: nothing to rank).
    y = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0]])
    frequencies = np.tile([0.8, 0.0, 0.2], (5, 1))  # the same scores for every issue
    ranking = np.array([[0.6, 0.1, 0.1], [0.7, 0.1, 0.2], [0.6, 0.1, 0.1], [0.6, 0.1, 0.9], [0.1, 0.1, 0.3]])
    # Micro-F1 rates frequencies close to a perfect ranking (bug on every issue is nearly right) ...
    assert best_global_threshold_f1(y, frequencies) == 0.8
    assert best_global_threshold_f1(y, ranking) == 1.0
    # ... the labels' mean average precision halves it: it never puts docs' issue first.
    assert macro_average_precision(y, frequencies) == (0.8 + 0.2) / 2
    assert macro_average_precision(y, ranking) == 1.0
    assert macro_average_precision(np.zeros((2, 3)), frequencies[:2]) == 0.0


def test_labels_sharing_the_threshold_are_judged_by_their_pooled_f1() -> None:
    # "docs" and "perf" have too few validation positives for a threshold of their own. "perf"
    # misses its only positive (F1 0), but the pair is right on 3 of 4 positives with no false
    # alarm: both are applied. "bug" has a threshold of its own and misses the floor alone.
    names = ["bug", "docs", "perf"]
    y = np.array([[1, 0, 0]] * 5 + [[0, 1, 0]] * 3 + [[0, 0, 1]] + [[0, 0, 0]] * 3)
    p = np.array([[0.3, 0.1, 0.01]] * 5 + [[0.35, 0.9, 0.01]] * 3 + [[0.35, 0.1, 0.01]] * 4)
    t = tune_thresholds(names, y, p, f1_floor=0.6, per_label_min_support=5)
    assert t.validation_f1["perf"] == 0.0 and t.validation_f1["docs"] == 1.0
    assert t.shared_group_f1 == 2 * 3 / (2 * 3 + 1)
    assert t.reliable["docs"] and t.reliable["perf"]
    assert t.validation_f1["bug"] == 10 / 17 and not t.reliable["bug"]
    assert Thresholds.from_json(t.to_json()) == t
    # The same issues, but docs scores its issues no higher than any other: neither is applied.
    p[5:8, 1] = 0.1
    t = tune_thresholds(names, y, p, f1_floor=0.6, per_label_min_support=5)
    assert t.shared_group_f1 is not None and t.shared_group_f1 < 0.6
    assert not t.reliable["docs"] and not t.reliable["perf"]
