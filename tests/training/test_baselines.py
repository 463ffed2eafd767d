"""The classic baselines on real scikit-learn issues: F1 and a threshold-free ranking measure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import baselines

LABELS = ["Bug", "Documentation", "New Feature", "Build / CI"]


@pytest.fixture(scope="module")
def issues(shared_data: Path) -> tuple[list[str], np.ndarray]:
    """The first 400 issues carrying one of LABELS: texts and a 0/1 target per label."""
    texts, rows = [], []
    with (shared_data / "sklearn_surya" / "issues.jsonl").open() as handle:
        for line in handle:
            issue = json.loads(line)
            names = set(issue.get("labels") or [])
            if names & set(LABELS):
                texts.append(f"{issue['title']}\n{issue.get('body') or ''}")
                rows.append([name in names for name in LABELS])
            if len(texts) == 400:
                break
    return texts, np.array(rows, dtype=int)


def _split(issues: tuple[list[str], np.ndarray], start: int, stop: int) -> tuple[list[str], np.ndarray]:
    return issues[0][start:stop], issues[1][start:stop]


def test_naive_bayes_ranks_and_never_predicts_a_label_it_never_saw(issues) -> None:
    train, test = _split(issues, 0, 300), _split(issues, 300, 400)
    unseen = LABELS.index("Build / CI")
    assert train[1][:, unseen].any() and test[1][:, unseen].any(), "the slice must hold Build / CI"
    without = (train[0], train[1].copy())
    without[1][:, unseen] = 0  # as if no training issue carried it

    result = baselines.naive_bayes(LABELS, without, test)

    assert result["per_label"]["Build / CI"]["recall"] == 0.0
    assert result["per_label"]["Bug"]["recall"] > 0
    # The other labels' models do not change (one Naive Bayes per label, the same word counts);
    # the unseen label scores 0 on every issue, so its average precision is its test frequency.
    others = [i for i in range(len(LABELS)) if i != unseen]
    rest = baselines.naive_bayes(
        [LABELS[i] for i in others], (train[0], train[1][:, others]), (test[0], test[1][:, others])
    )
    frequency = float(test[1][:, unseen].mean())
    assert result["macro_ap"] == pytest.approx((3 * float(rest["macro_ap"]) + frequency) / 4)
    assert float(rest["macro_ap"]) > frequency  # the seen labels are ranked, not guessed


def test_tfidf_baseline_reports_the_ranking_of_its_own_probabilities(issues) -> None:
    train, validation, test = _split(issues, 0, 260), _split(issues, 260, 300), _split(issues, 300, 400)
    result = baselines.tfidf_logreg(LABELS, train, validation, test)
    assert 0 <= result["micro_f1"] <= 1
    # Better than ranking the test issues at random (the labels' frequencies), worse than perfect.
    chance = float(np.mean([test[1][:, c].mean() for c in range(len(LABELS))]))
    assert chance < result["macro_ap"] < 1
