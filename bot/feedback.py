"""Maintainers' corrections of the bot's labels, kept in the store for the next training run."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from training.store.models import Feedback, Issue, IssueLabel, Label, LabelEvent, Prediction, Repository
from training.store.upserts import insert_unless_present

FALSE_POSITIVE, FALSE_NEGATIVE, ACCEPTED = "false_positive", "false_negative", "accepted"


def latest_prediction(session: Session, repository: Repository, number: int) -> Prediction | None:
    return session.scalar(
        select(Prediction)
        .where(Prediction.repository_id == repository.id, Prediction.issue_number == number)
        .order_by(Prediction.id.desc())
        .limit(1)
    )


def _add(
    session: Session,
    repository: Repository,
    number: int,
    label: str,
    kind: str,
    *,
    prediction: Prediction | None,
    actor: str | None,
    node_id: str | None,
    delivery_id: str | None,
    at: datetime,
) -> bool:
    exists = session.scalar(
        select(Feedback.id).where(
            Feedback.repository_id == repository.id,
            Feedback.issue_number == number,
            func.lower(Feedback.label_name) == label.lower(),
            Feedback.kind == kind,
        )
    )
    if exists is not None:
        return False
    values = {
        "repository_id": repository.id,
        "issue_number": number,
        "label_name": label,
        "label_node_id": node_id,
        "kind": kind,
        "prediction_id": prediction.id if prediction is not None else None,
        "actor_login": actor,
        "delivery_id": delivery_id,
        "occurred_at": at,
    }
    # two replicas sweeping accepted labels at once write the same rows: the later one skips
    unique = ["repository_id", "issue_number", "label_name", "kind"]
    return insert_unless_present(session, Feedback, values, unique) is not None


def record_human_change(
    session: Session,
    repository: Repository,
    number: int,
    *,
    action: str,
    label: str,
    node_id: str | None,
    actor: str | None,
    delivery_id: str | None,
    at: datetime,
) -> str | None:
    """Feedback for a label a human added or removed; the kind recorded, or None.

    Removing a label the bot applied is a false positive; adding one the bot could have applied
    but did not is a false negative. Changes on issues the bot never looked at are plain data.
    """
    prediction = latest_prediction(session, repository, number)
    if prediction is None or prediction.dry_run:
        return None
    applied = {name.lower() for name in prediction.labels} if prediction.applied_at else set()
    if action == "unlabeled" and label.lower() in applied:
        kind = FALSE_POSITIVE
    elif action == "labeled" and label.lower() not in applied:
        kind = FALSE_NEGATIVE
    else:
        return None
    added = _add(
        session,
        repository,
        number,
        label,
        kind,
        prediction=prediction,
        actor=actor,
        node_id=node_id,
        delivery_id=delivery_id,
        at=at,
    )
    return kind if added else None


def removed_by_humans(session: Session, repository: Repository, number: int) -> set[str]:
    """Labels a human took off this issue (current names): the bot never puts them back."""
    names = set(
        session.scalars(
            select(Label.name)
            .join(LabelEvent, LabelEvent.label_id == Label.id)
            .join(Issue, Issue.id == LabelEvent.issue_id)
            .where(
                Issue.repository_id == repository.id,
                Issue.number == number,
                LabelEvent.action == "unlabeled",
                LabelEvent.actor_type == "User",
            )
        ).all()
    )
    names |= set(
        session.scalars(
            select(Feedback.label_name).where(
                Feedback.repository_id == repository.id,
                Feedback.issue_number == number,
                Feedback.kind == FALSE_POSITIVE,
            )
        ).all()
    )
    return names


def sweep_accepted(session: Session, *, at: datetime, days: float) -> int:
    """Count bot labels still on their issue ``days`` after they were applied as accepted."""
    cutoff = at - timedelta(days=days)
    predictions = session.scalars(
        select(Prediction).where(Prediction.applied_at.is_not(None), Prediction.applied_at <= cutoff)
    ).all()
    added = 0
    for prediction in predictions:
        current = {
            name.lower()
            for name in session.scalars(
                select(Label.name)
                .join(IssueLabel, IssueLabel.label_id == Label.id)
                .join(Issue, Issue.id == IssueLabel.issue_id)
                .where(
                    Issue.repository_id == prediction.repository_id, Issue.number == prediction.issue_number
                )
            ).all()
        }
        repository = session.get(Repository, prediction.repository_id)
        assert repository is not None
        for label in prediction.labels:
            if label.lower() not in current:
                continue
            added += _add(
                session,
                repository,
                prediction.issue_number,
                label,
                ACCEPTED,
                prediction=prediction,
                actor=None,
                node_id=None,
                delivery_id=None,
                at=at,
            )
    return added


def live_precision(
    session: Session, *, bundle_version: str | None = None
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per repository and label: labels applied, removed by humans, accepted, and precision so far
    (applied minus removed, over applied); only one bundle's labels when ``bundle_version`` is given."""
    applied: dict[tuple[str, str], int] = {}
    which = Prediction.bundle_version == bundle_version if bundle_version else Prediction.id.is_not(None)
    for full_name, labels in session.execute(
        select(Repository.full_name, Prediction.labels)
        .join(Repository, Repository.id == Prediction.repository_id)
        .where(Prediction.applied_at.is_not(None), which)
    ).all():
        for label in labels:
            applied[(full_name, label)] = applied.get((full_name, label), 0) + 1
    verdicts: dict[tuple[str, str, str], int] = {}
    for full_name, label, kind, count in session.execute(
        select(Repository.full_name, Feedback.label_name, Feedback.kind, func.count())
        .join(Repository, Repository.id == Feedback.repository_id)
        .outerjoin(Prediction, Prediction.id == Feedback.prediction_id)
        .where(which if bundle_version else Feedback.id.is_not(None))
        .group_by(Repository.full_name, Feedback.label_name, Feedback.kind)
    ).all():
        verdicts[(full_name, label, kind)] = int(count)
    result: dict[str, dict[str, dict[str, float | int]]] = {}
    for (full_name, label), count in sorted(applied.items()):
        removed = verdicts.get((full_name, label, FALSE_POSITIVE), 0)
        result.setdefault(full_name, {})[label] = {
            "applied": count,
            "removed_by_humans": removed,
            "accepted": verdicts.get((full_name, label, ACCEPTED), 0),
            "missed": verdicts.get((full_name, label, FALSE_NEGATIVE), 0),
            "precision": round((count - removed) / count, 4),
        }
    return result
