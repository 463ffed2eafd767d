"""Multi-label metrics, per-label thresholds and mutually exclusive label sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support


def best_global_threshold_f1(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Micro-F1 at the best single threshold: robust to calibration, for checkpoint selection."""
    best = 0.0
    for threshold in np.linspace(0.05, 0.95, 19):
        score = f1_score(targets, probabilities >= threshold, average="micro", zero_division=0)
        best = max(best, float(score))
    return best


def macro_average_precision(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean average precision over the labels with a positive: how well each label's issues are
    ranked first, without a threshold. A model that only predicts label frequencies ranks every
    issue alike and scores low here, while its micro-F1 can look good on a small validation set."""
    present = targets.sum(axis=0) > 0
    if not present.any():
        return 0.0
    return float(average_precision_score(targets[:, present], probabilities[:, present], average="macro"))


@dataclass
class Thresholds:
    """Per-label decision thresholds; ``reliable`` labels are the only ones the bot applies."""

    values: dict[str, float]
    reliable: dict[str, bool]
    validation_f1: dict[str, float]
    validation_support: dict[str, int]
    exclusive_groups: list[list[str]] = field(default_factory=list)
    # pooled validation F1 of the labels that share one threshold (None: no such label)
    shared_group_f1: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "thresholds": self.values,
            "reliable": self.reliable,
            "validation_f1": self.validation_f1,
            "validation_support": self.validation_support,
            "exclusive_groups": self.exclusive_groups,
            "shared_group_f1": self.shared_group_f1,
        }

    @classmethod
    def from_json(cls, data: dict) -> Thresholds:
        return cls(
            values={k: float(v) for k, v in data["thresholds"].items()},
            reliable={k: bool(v) for k, v in data["reliable"].items()},
            validation_f1=data.get("validation_f1", {}),
            validation_support=data.get("validation_support", {}),
            exclusive_groups=data.get("exclusive_groups", []),
            shared_group_f1=data.get("shared_group_f1"),
        )


def _best_threshold(
    y: np.ndarray, p: np.ndarray, objective: str, precision_target: float
) -> tuple[float, float]:
    """The threshold maximising F1 (or the lowest reaching the precision target) and its F1.

    The threshold is put half-way between the deciding score and the next lower one, not on the
    score itself, so that a new issue scoring a little under the validation example still counts.
    """
    candidates = np.unique(p)
    best_i, best_f1, best_ok = 0, -1.0, False
    for i, t in enumerate(candidates):
        predicted = p >= t
        tp = float((predicted & (y == 1)).sum())
        fp = float((predicted & (y == 0)).sum())
        fn = float((~predicted & (y == 1)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if objective == "precision":
            ok = tp > 0 and tp / (tp + fp) >= precision_target
            if (ok, f1) > (best_ok, best_f1):
                best_i, best_f1, best_ok = i, f1, ok
        elif f1 > best_f1:
            best_i, best_f1 = i, f1
    lower = candidates[best_i - 1] if best_i > 0 else 0.0
    return float((candidates[best_i] + lower) / 2), max(best_f1, 0.0)


class ThresholdArgs(TypedDict):
    """The settings of ``tune_thresholds`` a training config chooses."""

    objective: str
    precision_target: float
    min_support: int
    f1_floor: float
    per_label_min_support: int


def tune_thresholds(
    label_names: list[str],
    targets: np.ndarray,
    probabilities: np.ndarray,
    *,
    objective: str = "f1",
    precision_target: float = 0.8,
    min_support: int = 1,
    f1_floor: float = 0.1,
    per_label_min_support: int = 5,
) -> Thresholds:
    """One threshold per label, tuned on validation, and which labels are reliable enough to apply.

    A threshold tuned on one or two positives fits those issues, not the label (measured on
    scikit-learn: per-label thresholds from 47 validation issues lost 5-13 points of test micro
    F1); labels with fewer than ``per_label_min_support`` validation positives share the single
    threshold that maximises validation micro-F1 over all labels. They are also judged together:
    one missed positive gives such a label a validation F1 of 0, which says little about it (on
    scikit-learn, labels dropped that way scored up to 0.73 test F1), so they are applied when the
    group's pooled F1 at the shared threshold reaches ``f1_floor``. A label with a threshold of
    its own must reach the floor alone.
    """
    shared = _best_shared_threshold(targets, probabilities)
    support = targets.sum(axis=0).astype(int)
    few = [c for c in range(len(label_names)) if 0 < support[c] < per_label_min_support]
    pooled = (
        float(f1_score(targets[:, few], probabilities[:, few] >= shared, average="micro", zero_division=0))
        if few
        else 0.0
    )
    values, reliable, validation_f1 = {}, {}, {}
    for column, name in enumerate(label_names):
        y, p = targets[:, column], probabilities[:, column]
        n_pos = int(support[column])
        if n_pos == 0:
            values[name], validation_f1[name], reliable[name] = shared, 0.0, False
            continue
        if n_pos >= per_label_min_support:
            threshold, f1 = _best_threshold(y, p, objective, precision_target)
            evidence = f1
        else:
            threshold = shared
            f1 = float(f1_score(y, p >= threshold, zero_division=0))
            evidence = pooled
        values[name], validation_f1[name] = threshold, f1
        reliable[name] = n_pos >= min_support and evidence >= f1_floor
    return Thresholds(
        values=values,
        reliable=reliable,
        validation_f1=validation_f1,
        validation_support={name: int(support[c]) for c, name in enumerate(label_names)},
        shared_group_f1=pooled if few else None,
    )


def _best_shared_threshold(targets: np.ndarray, probabilities: np.ndarray) -> float:
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    f1s = [f1_score(targets, probabilities >= t, average="micro", zero_division=0) for t in grid]
    return float(grid[int(np.argmax(f1s))])


def decide(probabilities: np.ndarray, label_names: list[str], thresholds: Thresholds) -> np.ndarray:
    """0/1 predictions: threshold per label, unreliable labels never, one per exclusive group."""
    limits = np.array([thresholds.values[name] for name in label_names])
    usable = np.array([thresholds.reliable[name] for name in label_names])
    predicted = (probabilities >= limits) & usable
    index = {name: i for i, name in enumerate(label_names)}
    for group in thresholds.exclusive_groups:
        columns = [index[name] for name in group if name in index]
        margin = probabilities[:, columns] / np.maximum(limits[columns], 1e-6)
        keep = np.argmax(np.where(predicted[:, columns], margin, -np.inf), axis=1)
        for j, column in enumerate(columns):
            predicted[:, column] &= keep == j
    return predicted.astype(np.int8)


def exclusive_group(
    label_names: list[str], targets: np.ndarray, min_examples: int = 10, min_coverage: float = 0.5
) -> list[str]:
    """Frequent labels (greedy, by frequency) never seen together on one issue, like type labels.

    Only a set that covers at least ``min_coverage`` of the issues counts: rare area labels that
    merely happen not to co-occur are no evidence of a real either-or.
    """
    counts = targets.sum(axis=0)
    order = [i for i in np.argsort(-counts) if counts[i] >= min_examples]
    group: list[int] = []
    for i in order:
        if all(not np.any(targets[:, i].astype(bool) & targets[:, j].astype(bool)) for j in group):
            group.append(int(i))
    coverage = targets[:, group].any(axis=1).mean() if group else 0.0
    return [label_names[i] for i in group] if len(group) >= 2 and coverage >= min_coverage else []


class LabelScores(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class Scores(TypedDict):
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    per_label: dict[str, LabelScores]


def scores(label_names: list[str], targets: np.ndarray, predicted: np.ndarray) -> Scores:
    """Micro and macro F1 and per-label precision/recall/F1/support."""
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, average=None, zero_division=0
    )
    return {
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
        "micro_precision": float(
            precision_recall_fscore_support(targets, predicted, average="micro", zero_division=0)[0]
        ),
        "micro_recall": float(
            precision_recall_fscore_support(targets, predicted, average="micro", zero_division=0)[1]
        ),
        "per_label": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
    }
