"""Which labels the bot applies to an issue: a pure function of scores, thresholds and config."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.repo_config import RepoConfig
from training.metrics import Thresholds, decide


@dataclass(frozen=True)
class Decision:
    labels: list[tuple[str, float]]  # (current label name, score), best first
    reason: str


def choose_labels(
    *,
    label_names: list[str],
    probabilities: np.ndarray,
    thresholds: Thresholds,
    config: RepoConfig,
    current_names: dict[str, str | None],
    issue_labels: set[str],
    template_labels: set[str],
    removed_by_humans: set[str],
) -> Decision:
    """The labels to apply, and why (also when none).

    ``current_names`` maps each label the bundle knows to its name in the repository now
    (a rename followed) or None (deleted, or never created there): only existing labels are
    applied. Labels a human took off this issue are never put back. Labels an issue form put
    on the issue do not count as a human's labeling.
    """
    if not config.enabled:
        return Decision([], "disabled by the repository's config")
    human_labels = {name for name in issue_labels if name.lower() not in {t.lower() for t in template_labels}}
    if config.skip_if_labeled and human_labels:
        return Decision([], f"already labeled by a human ({', '.join(sorted(human_labels))})")
    overrides = config.threshold_overrides()
    overridden = Thresholds(
        values={
            name: _threshold(overrides, name, current_names.get(name), tuned)
            for name, tuned in thresholds.values.items()
        },
        reliable=thresholds.reliable,
        validation_f1=thresholds.validation_f1,
        validation_support=thresholds.validation_support,
        exclusive_groups=thresholds.exclusive_groups,
    )
    predicted = decide(probabilities.reshape(1, -1), label_names, overridden)[0]
    removed = {name.lower() for name in removed_by_humans}
    chosen: list[tuple[str, float]] = []
    for i in np.argsort(-probabilities):
        if not predicted[i]:
            continue
        current = current_names.get(label_names[i])
        if current is None or not config.labels.permits(current):
            continue
        if current.lower() in removed or current in issue_labels:
            continue
        chosen.append((current, float(probabilities[i])))
    chosen = chosen[: config.max_labels]
    if not chosen:
        return Decision([], "no label scored above its threshold and passed the repository's rules")
    return Decision(chosen, "predicted")


def _threshold(
    overrides: dict[str, float], trained_name: str, current_name: str | None, tuned: float
) -> float:
    """The maintainer's threshold for a label by its name in the repository now, or the name the
    model learned it by (a config written before a rename); else the tuned one."""
    for name in (current_name, trained_name):
        if name is not None and name.lower() in overrides:
            return overrides[name.lower()]
    return tuned
