"""From stored issues to a labeled dataset: text, learned labels, deduplication and splits.

Text is title + blank line + body. Labels are mapped through aliases; workflow labels (exclude
patterns), labels the issue forms apply by themselves, deleted labels and labels with too few
examples are not learned. Issues left with none of the learned labels are unlabeled text (for
domain adaptation). Each labeled issue keeps the split it was first given, so every refresh is
tested on the same issues.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Literal

import numpy as np
from skmultilearn.model_selection import IterativeStratification
from sqlalchemy import select
from sqlalchemy.orm import Session

from training.records import repository_argument, storable_text
from training.settings import Settings, SettingsError, load_settings
from training.store import Store, StoreUnavailable
from training.store.models import (
    Feedback,
    Issue,
    LabelEvent,
    Prediction,
    Repository,
    SplitAssignment,
    TemplateLabel,
)
from training.store.upserts import now

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def issue_text(title: str, body: str | None) -> str:
    """What the model reads of an issue, the same at training and serving time."""
    return storable_text(f"{title}\n\n{body or ''}")


class DatasetError(Exception):
    """The stored data cannot make a dataset (unknown repository, nothing labeled, ...)."""


@dataclass(frozen=True)
class DatasetConfig:
    min_label_examples: int = 10
    exclude_labels: tuple[str, ...] = ()
    label_aliases: dict[str, str] = field(default_factory=dict)
    exclude_template_labels: bool = True
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    validation_split: Literal["time", "stratified", "covered"] = "covered"
    seed: int = 42
    # Bot labels nobody has reacted to count only after this many days (see _unconfirmed_bot_labels).
    bot_label_confirm_days: float = 7.0
    as_of: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, as_of: datetime | None = None) -> DatasetConfig:
        return cls(
            min_label_examples=settings.min_label_examples,
            exclude_labels=tuple(settings.exclude_labels),
            label_aliases=dict(settings.label_aliases),
            exclude_template_labels=settings.exclude_template_labels,
            split_fractions=settings.split_fractions,
            validation_split=settings.validation_split,
            seed=settings.seed,
            bot_label_confirm_days=settings.feedback_accept_days,
            as_of=as_of,
        )

    def is_excluded(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatchcase(lowered, pattern.lower()) for pattern in self.exclude_labels)


@dataclass(frozen=True)
class Example:
    issue_id: int
    repo: str
    key: str
    text: str
    labels: tuple[str, ...]
    is_pull_request: bool
    created_at: datetime | None


@dataclass
class IssueDataset:
    repos: list[str]
    label_names: list[str]
    splits: dict[str, list[Example]]
    unlabeled: list[Example]
    label_counts: Counter[str]
    not_learned: dict[str, str]
    duplicates_dropped: int
    split_method: str

    def targets(self, split: str) -> np.ndarray:
        """Multi-hot float targets of a split, columns in ``label_names`` order."""
        index = {name: i for i, name in enumerate(self.label_names)}
        matrix = np.zeros((len(self.splits[split]), len(self.label_names)), dtype=np.float32)
        for row, example in enumerate(self.splits[split]):
            for name in example.labels:
                matrix[row, index[name]] = 1.0
        return matrix

    def texts(self, split: str) -> list[str]:
        return [example.text for example in self.splits[split]]

    def split_hash(self) -> str:
        """Identifies the exact split: same hash, same train/validation/test issues."""
        lines = sorted(f"{e.repo}\t{e.key}\t{name}" for name in SPLITS for e in self.splits[name])
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def manifest(self) -> dict[str, object]:
        return {
            "repos": self.repos,
            "labels": self.label_names,
            "counts": {name: len(self.splits[name]) for name in SPLITS}
            | {"unlabeled": len(self.unlabeled), "duplicates_dropped": self.duplicates_dropped},
            "label_counts": {
                name: {split: sum(name in e.labels for e in self.splits[split]) for split in SPLITS}
                for name in self.label_names
            },
            "not_learned": self.not_learned,
            "split_method": self.split_method,
            "split_hash": self.split_hash(),
        }


def _template_labels(session: Session, repository_ids: list[int]) -> set[tuple[int, str]]:
    rows = session.execute(
        select(TemplateLabel.repository_id, TemplateLabel.name).where(
            TemplateLabel.repository_id.in_(repository_ids)
        )
    )
    return {(repo_id, name) for repo_id, name in rows}


def _time_split(examples: list[Example], fractions: tuple[float, float, float]) -> dict[int, str]:
    """Oldest issues train, newest test, as in production where the model meets new issues."""
    ordered = sorted(examples, key=lambda e: (e.created_at, e.issue_id))
    n = len(ordered)
    n_train = round(n * fractions[0])
    n_validation = round(n * fractions[1])
    result = {}
    for position, example in enumerate(ordered):
        split = (
            "train" if position < n_train else "validation" if position < n_train + n_validation else "test"
        )
        result[example.issue_id] = split
    return result


def _stratified_validation(
    examples: list[Example], by_time: dict[int, str], learned: list[str], config: DatasetConfig
) -> dict[int, str]:
    """Validation carved from everything older than the test issues, label proportions kept.

    Labels drift: on scikit-learn the ``module:*`` labels are frequent in older issues and rare
    in the newest, so a validation part of the next-newest issues holds no positive of them and
    the bot may never apply them. Test stays the newest issues.
    """
    older = [e for e in examples if by_time[e.issue_id] != "test"]
    return _stratified_split(older, learned, _without_test(config.split_fractions), config.seed)


def _covered_validation(
    examples: list[Example], by_time: dict[int, str], learned: list[str]
) -> dict[int, str]:
    """Time-ordered validation, plus the newest training issue of each label it has no positive of.

    Validation stays the next-newest issues (thresholds fit what the bot meets next), while a
    label that drifted out of recent issues still gets a validation positive to be judged by,
    instead of being marked unreliable for want of one. Test is untouched.
    """
    result = dict(by_time)
    wanted = set(learned)
    covered = {name for e in examples if result[e.issue_id] == "validation" for name in e.labels}
    for example in sorted(examples, key=lambda e: (e.created_at, e.issue_id), reverse=True):
        missing = (set(example.labels) & wanted) - covered
        if result[example.issue_id] == "train" and missing:
            result[example.issue_id] = "validation"
            covered |= missing
    return result


def _without_test(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Train and validation fractions of a part that holds no test issues."""
    share = fractions[1] / (fractions[0] + fractions[1])
    return (1.0 - share, share, 0.0)


def _stratified_part(y: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the rows, label proportions kept (iterative)."""
    n = y.shape[0]
    if fraction <= 0 or n < 2:
        return np.zeros(n, dtype=bool)
    strat = IterativeStratification(
        n_splits=2, order=1, sample_distribution_per_fold=[fraction, 1.0 - fraction]
    )
    mask = np.zeros(n, dtype=bool)
    best = None
    for _train, test in strat.split(np.zeros((n, 1)), y):
        if best is None or abs(len(test) - fraction * n) < abs(len(best) - fraction * n):
            best = test
    assert best is not None
    mask[best] = True
    return mask


def _stratified_split(
    examples: list[Example], label_names: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[int, str]:
    """Iterative stratification (scikit-multilearn) of the examples in a seeded random order.

    The algorithm itself only breaks ties at random, from numpy's global generator; the seeded
    shuffle is what makes the seed choose the split, and the saved state keeps others unaffected.
    """
    order = np.random.default_rng(seed).permutation(len(examples))
    examples = [examples[i] for i in order]
    index = {name: i for i, name in enumerate(label_names)}
    y = np.zeros((len(examples), len(label_names)), dtype=int)
    for row, example in enumerate(examples):
        for name in example.labels:
            y[row, index[name]] = 1
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        test_mask = _stratified_part(y, fractions[2])
        rest = np.flatnonzero(~test_mask)
        share = fractions[1] / (fractions[0] + fractions[1])
        validation_mask = np.zeros(len(examples), dtype=bool)
        validation_mask[rest[_stratified_part(y[rest], share)]] = True
    finally:
        np.random.set_state(state)
    return {
        example.issue_id: "test" if test_mask[i] else "validation" if validation_mask[i] else "train"
        for i, example in enumerate(examples)
    }


def build_dataset(
    session: Session, repos: list[str], config: DatasetConfig, *, persist_splits: bool = False
) -> IssueDataset:
    """The dataset of the given repositories; ``persist_splits`` records new split assignments."""
    repositories = session.scalars(select(Repository).where(Repository.full_name.in_(repos))).all()
    missing = set(repos) - {r.full_name for r in repositories}
    if missing:
        raise DatasetError(
            f"unknown repository {', '.join(sorted(missing))}: fetch or import it first "
            "(python -m training.fetch --repo OWNER/NAME, or --from-jsonl PATH)"
        )
    ids = {r.id: r.full_name for r in repositories}
    templates = _template_labels(session, list(ids)) if config.exclude_template_labels else set()
    issues = session.scalars(
        select(Issue).where(Issue.repository_id.in_(list(ids))).order_by(Issue.created_at, Issue.id)
    ).all()

    unconfirmed = _unconfirmed_bot_labels(session, list(ids), config)
    rejected = _issues_with_rejected_bot_labels(session, list(ids))
    not_learned: dict[str, str] = {}
    seen_texts: set[str] = set()
    duplicates = 0
    candidates: list[Example] = []
    for issue in issues:
        text = issue_text(issue.title, issue.body)
        if text in seen_texts:
            duplicates += 1
            continue
        seen_texts.add(text)
        names = set()
        pending = unconfirmed.get(issue.id, set())
        for link in issue.labels:
            label = link.label
            name = config.label_aliases.get(label.name, label.name)
            if label.name.lower() in pending:
                continue  # the bot's, and nobody has confirmed or corrected it yet
            if label.deleted_at is not None:
                not_learned[name] = "deleted from the repository"
            elif (issue.repository_id, label.name) in templates or (issue.repository_id, name) in templates:
                not_learned[name] = "applied by an issue form"
            elif config.is_excluded(name):
                not_learned[name] = "excluded (workflow label)"
            else:
                names.add(name)
        candidates.append(
            Example(
                issue_id=issue.id,
                repo=ids[issue.repository_id],
                key=issue.key,
                text=text,
                labels=tuple(sorted(names)),
                is_pull_request=issue.is_pull_request,
                created_at=issue.created_at,
            )
        )

    counts = Counter(name for example in candidates for name in example.labels)
    learned = sorted(name for name, n in counts.items() if n >= config.min_label_examples)
    for name, n in counts.items():
        if n < config.min_label_examples:
            not_learned[name] = f"{n} example{'s' if n != 1 else ''}, fewer than {config.min_label_examples}"
    learned_set = set(learned)
    labeled: list[Example] = []
    unlabeled: list[Example] = []
    for example in candidates:
        kept = tuple(name for name in example.labels if name in learned_set)
        # An issue whose bot labels a human took off is a checked negative, not unlabeled text.
        target = labeled if kept or example.issue_id in rejected else unlabeled
        target.append(Example(**{**example.__dict__, "labels": kept}))
    if not labeled:
        raise DatasetError(
            f"no issue of {', '.join(repos)} has a label with at least {config.min_label_examples} "
            "examples after exclusions; lower ISSUE_LABELER_MIN_LABEL_EXAMPLES or fetch more issues"
        )

    assigned = _assign_splits(session, labeled, learned, config, persist=persist_splits)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for example in labeled:
        splits[assigned[example.issue_id][0]].append(example)
    methods = sorted({method for _split, method in assigned.values()})
    return IssueDataset(
        repos=sorted(repos),
        label_names=learned,
        splits=splits,
        unlabeled=unlabeled,
        label_counts=Counter({name: counts[name] for name in learned}),
        not_learned=dict(sorted(not_learned.items())),
        duplicates_dropped=duplicates,
        split_method="+".join(methods),
    )


def _unconfirmed_bot_labels(
    session: Session, repository_ids: list[int], config: DatasetConfig
) -> dict[int, set[str]]:
    """Labels the bot applied less than ``bot_label_confirm_days`` ago to issues no human has
    relabeled since: not ground truth yet (lower-cased names, per issue id)."""
    cutoff = (config.as_of or datetime.now(UTC)) - timedelta(days=config.bot_label_confirm_days)
    rows = session.execute(
        select(Issue.id, Prediction.labels, Prediction.applied_at)
        .join(
            Issue,
            (Issue.repository_id == Prediction.repository_id) & (Issue.number == Prediction.issue_number),
        )
        .where(
            Prediction.repository_id.in_(repository_ids),
            Prediction.applied_at.is_not(None),
            Prediction.applied_at > cutoff,
        )
    ).all()
    pending: dict[int, set[str]] = {}
    for issue_id, labels, applied_at in rows:
        touched = session.scalar(
            select(LabelEvent.id)
            .where(
                LabelEvent.issue_id == issue_id,
                LabelEvent.actor_type == "User",
                LabelEvent.occurred_at >= applied_at,
            )
            .limit(1)
        )
        if touched is None:
            pending.setdefault(issue_id, set()).update(name.lower() for name in labels)
    return pending


def _issues_with_rejected_bot_labels(session: Session, repository_ids: list[int]) -> set[int]:
    return set(
        session.scalars(
            select(Issue.id)
            .join(
                Feedback,
                (Feedback.repository_id == Issue.repository_id) & (Feedback.issue_number == Issue.number),
            )
            .where(Issue.repository_id.in_(repository_ids), Feedback.kind == "false_positive")
        ).all()
    )


def _assign_splits(
    session: Session, labeled: list[Example], learned: list[str], config: DatasetConfig, *, persist: bool
) -> dict[int, tuple[str, str]]:
    """Earlier assignments are kept; new examples are split by time, or stratified without dates."""
    existing = {
        row.issue_id: row
        for row in session.scalars(
            select(SplitAssignment).where(SplitAssignment.issue_id.in_([e.issue_id for e in labeled]))
        )
    }
    result = {
        issue_id: (row.split, (row.meta or {}).get("method", "recorded"))
        for issue_id, row in existing.items()
    }
    fresh = [e for e in labeled if e.issue_id not in existing]
    if fresh:
        if all(e.created_at is not None for e in fresh):
            method, new = "time", _time_split(fresh, config.split_fractions)
            if config.validation_split == "stratified":
                method = "time+stratified-validation"
                new |= _stratified_validation(fresh, new, learned, config)
            elif config.validation_split == "covered":
                method = "time+covered-validation"
                new = _covered_validation(fresh, new, learned)
        else:
            method = "iterative-stratification"
            new = _stratified_split(fresh, learned, config.split_fractions, config.seed)
        stamp = now()
        for issue_id, split in new.items():
            result[issue_id] = (split, method)
            if persist:
                session.add(
                    SplitAssignment(
                        issue_id=issue_id, split=split, assigned_at=stamp, meta={"method": method}
                    )
                )
        if persist:
            session.flush()
    if config.split_fractions[1] > 0 and not any(split == "validation" for split, _ in result.values()):
        _carve_validation(session, labeled, learned, result, config, persist=persist)
    return result


def _carve_validation(
    session: Session,
    labeled: list[Example],
    learned: list[str],
    result: dict[int, tuple[str, str]],
    config: DatasetConfig,
    *,
    persist: bool,
) -> None:
    """Given splits without a validation part: take it from their training part."""
    train = [e for e in labeled if result[e.issue_id][0] == "train"]
    fractions = _without_test(config.split_fractions)
    if config.validation_split != "stratified" and all(e.created_at is not None for e in train):
        carved = _time_split(train, fractions)
        if config.validation_split == "covered":
            carved = _covered_validation(train, carved, learned)
    else:
        carved = _stratified_split(train, learned, fractions, config.seed)
    stamp = now()
    for issue_id, split in carved.items():
        if split != "validation":
            continue
        result[issue_id] = ("validation", "carved")
        if persist:
            row = session.get(SplitAssignment, issue_id)
            if row is None:
                session.add(
                    SplitAssignment(
                        issue_id=issue_id, split=split, assigned_at=stamp, meta={"method": "carved"}
                    )
                )
            else:
                row.split, row.meta = "validation", {"method": "carved"}
    if persist:
        session.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m training.dataset --repo OWNER/NAME``: show the dataset a refresh would train on."""
    parser = argparse.ArgumentParser(prog="python -m training.dataset", description=main.__doc__)
    parser.add_argument(
        "--repo", action="append", required=True, type=repository_argument, metavar="OWNER/NAME"
    )
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        store = Store(settings.database_url)
    except (SettingsError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        with store.session() as session:
            dataset = build_dataset(session, args.repo, DatasetConfig.from_settings(settings))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        store.close()
    manifest = dataset.manifest()
    if args.json:
        print(json.dumps(manifest, indent=2))  # noqa: T201
        return 0
    print(format_manifest(manifest))  # noqa: T201
    return 0


def format_manifest(manifest: dict) -> str:
    counts = manifest["counts"]
    lines = [
        f"repositories: {', '.join(manifest['repos'])}",
        f"split ({manifest['split_method']}): train {counts['train']}, validation {counts['validation']}, "
        f"test {counts['test']}; unlabeled text {counts['unlabeled']}; "
        f"duplicates dropped {counts['duplicates_dropped']}",
        f"split hash: {manifest['split_hash'][:16]}",
        f"{'learned label':<32} {'train':>6} {'val':>6} {'test':>6}",
    ]
    for name, per_split in manifest["label_counts"].items():
        lines.append(
            f"{name:<32} {per_split['train']:>6} {per_split['validation']:>6} {per_split['test']:>6}"
        )
    if manifest["not_learned"]:
        lines.append("not learned:")
        lines += [f"  {name}: {reason}" for name, reason in manifest["not_learned"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
