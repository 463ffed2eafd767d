"""Labeling a new issue: predict with the bundle in service, decide by policy, write to GitHub.

Each step is recorded in the store before the next, so a job retried after a crash or a
GitHub failure continues where it stopped and never labels or comments twice. The issue itself
is stored for training after the labels are written: nothing waits for it, and it is stored on
every way out, failures included. On the way out that succeeds, the issue and the stamp of the
labels written commit with the job's end (``Outcome.commit_with``): a job that stops before that
commit runs again and writes the same labels again, which GitHub applies once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bot import feedback
from bot.github_api import GitHubGateway
from bot.jobs import Delivery
from bot.metrics import BotMetrics
from bot.outcome import Outcome
from bot.policy import Decision, choose_labels
from bot.repo_config import RepoConfig, RepoConfigCache
from bot.served_models import ServedModels
from training.bundle import Bundle, BundleSummary
from training.dataset import issue_text
from training.records import RecordError, parse_datetime
from training.store import Store
from training.store.models import Label, Prediction, Repository, TemplateLabel
from training.store.upserts import get_repository, now

log = logging.getLogger(__name__)


class Labeler:
    def __init__(
        self,
        store: Store,
        gateway: GitHubGateway,
        models: ServedModels,
        configs: RepoConfigCache,
        metrics: BotMetrics,
        *,
        dry_run: bool = False,
        recheck_seconds: float = 60.0,
    ) -> None:
        self.dry_run = dry_run  # the whole bot's, over any repository's config
        self.recheck_seconds = recheck_seconds
        self.store = store
        self.gateway = gateway
        self.models = models
        self.configs = configs
        self.metrics = metrics

    def label(self, delivery: Delivery, record_issue: Callable[[Session], Repository]) -> Outcome:
        """Label the delivery's issue; ``record_issue`` stores the issue itself (for training)."""
        repo = str(delivery.repository)
        issue = delivery.payload["issue"]
        number = int(issue["number"])
        installation_id = delivery.installation_id
        with self.store.session() as session:
            recorded = session.scalar(
                select(Prediction).where(Prediction.delivery_id == delivery.delivery_id)
            )
            if recorded is not None and recorded.applied_at is None and recorded.labels:
                self._follow_catalogue(session, repo, recorded)
            plan = _Plan.of(recorded) if recorded is not None else None
            catalogue_known = plan is not None or _has_labels(session, repo)
        config = self.configs.get(repo, installation_id)
        if plan is None:
            bundle = self.models.get(repo)
            if bundle is None:
                return Outcome(
                    f"{repo} has no model bundle in service: not labeled", commit_with=record_issue
                )
            try:
                if not catalogue_known:
                    self.gateway.sync_labels(self.store, repo, installation_id)
                text = issue_text(issue.get("title") or "", issue.get("body"))
                with self.metrics.prediction_seconds.labels(repo).time():
                    probabilities = bundle.probabilities([text])[0]
                issue = self._as_it_is_now(repo, installation_id, issue)
            except Exception:
                self._record_only(record_issue)  # the issue is kept even if labeling never succeeds
                raise
            if issue is None:
                return Outcome(
                    f"{repo}#{number} is no longer on GitHub: not labeled", commit_with=record_issue
                )
            with self.store.session() as session:
                # A repository the store does not know yet (token mode) is created with its issue.
                repository = get_repository(session, repo) or record_issue(session)
                decision, scores = self._decide(session, repository, bundle, probabilities, issue, config)
                prediction = Prediction(
                    repository_id=repository.id,
                    issue_number=number,
                    bundle_version=bundle.version,
                    scores=scores,
                    labels=[name for name, _ in decision.labels],
                    reason=decision.reason,
                    dry_run=config.dry_run or self.dry_run,
                    delivery_id=delivery.delivery_id,
                    decided_at=now(),
                )
                session.add(prediction)
                session.flush()
                plan = _Plan.of(prediction)
        try:
            text, stamps = self._write(repo, installation_id, number, plan, comment=config.comment)
        except Exception:
            self._record_only(record_issue)
            raise

        def close(session: Session) -> None:
            _stamp(session, plan, stamps)
            record_issue(session)

        return Outcome(text, commit_with=close)

    def _follow_catalogue(self, session: Session, repo: str, prediction: Prediction) -> None:
        """A decision GitHub has not taken yet (failing since) names the labels as they were
        then: follow those renamed since and drop those deleted, or GitHub would create them
        anew under the old names. The prediction is corrected so feedback links the labels."""
        repository = get_repository(session, repo)
        if repository is None or not _has_labels(session, repo):
            return  # no catalogue to follow
        live = set(
            session.scalars(
                select(Label.name).where(
                    Label.repository_id == repository.id,
                    Label.deleted_at.is_(None),
                    Label.name.in_(list(prediction.labels)),
                )
            )
        )
        bundle = self.models.summary(repo)
        renamed = current_names(session, repository, bundle) if bundle is not None else {}
        moved = {name: name if name in live else renamed.get(name) for name in prediction.labels}
        labels = list(dict.fromkeys(name for name in moved.values() if name))
        if labels == list(prediction.labels):
            return
        log.info(
            "%s#%d: labels changed since the decision: %s now %s",
            repo,
            prediction.issue_number,
            prediction.labels,
            labels or "none",
        )
        scores = {moved.get(name) or name: score for name, score in prediction.scores.items()}
        prediction.labels, prediction.scores = labels, scores
        if not labels:
            prediction.reason = "its labels were deleted before they could be applied"

    def _as_it_is_now(self, repo: str, installation_id: int | None, issue: dict) -> dict | None:
        """The issue as the decision should see it. A delivery that arrives late — redelivered
        after the bot was down, or long in the queue — shows the issue as it was then: its labels
        are read from GitHub again, since a maintainer may have labeled it meanwhile. None: the
        issue is gone."""
        updated = _timestamp(issue.get("updated_at"))
        if self.gateway.clients is None or updated is None:
            return issue
        if (now() - updated).total_seconds() < self.recheck_seconds:
            return issue
        labels = self.gateway.current_labels(repo, installation_id, int(issue["number"]))
        if labels is None:
            return None
        log.info("%s#%d: a late delivery; labels read again from GitHub: %s", repo, issue["number"], labels)
        return {**issue, "labels": [{"name": name} for name in labels]}

    def _record_only(self, record_issue: Callable[[Session], Repository]) -> None:
        with self.store.session() as session:
            record_issue(session)

    def _decide(
        self,
        session: Session,
        repository: Repository,
        bundle: Bundle,
        probabilities: np.ndarray,
        issue: dict,
        config: RepoConfig,
    ) -> tuple[Decision, dict[str, float]]:
        """The policy's decision, and every label's score under its current name."""
        names = current_names(session, repository, bundle.summary)
        decision = choose_labels(
            label_names=bundle.labels,
            probabilities=probabilities,
            thresholds=bundle.thresholds,
            config=config,
            current_names=names,
            issue_labels={label["name"] for label in issue.get("labels") or []},
            template_labels=set(
                session.scalars(
                    select(TemplateLabel.name).where(TemplateLabel.repository_id == repository.id)
                ).all()
            ),
            removed_by_humans=feedback.removed_by_humans(session, repository, int(issue["number"])),
        )
        scores = {
            names[name] or name: round(float(p), 4)
            for name, p in zip(bundle.labels, probabilities, strict=True)
        }
        return decision, scores

    def _write(
        self, repo: str, installation_id: int | None, number: int, plan: _Plan, *, comment: bool
    ) -> tuple[str, dict[str, datetime]]:
        """What was done, and the stamps of the steps that reached GitHub, still to record (so
        that a retried job does not repeat them)."""
        if plan.dry_run:
            log.info(
                "%s#%d dry run: would apply %s (%s)", repo, number, plan.labels or "nothing", plan.reason
            )
            return f"dry run: would apply {plan.labels or 'nothing'} ({plan.reason})", {}
        if not plan.labels:
            return f"nothing applied: {plan.reason}", {}
        stamps: dict[str, datetime] = {}
        if not plan.applied:
            self.gateway.add_labels(repo, installation_id, number, plan.labels)
            stamps["applied_at"] = now()
            for name in plan.labels:
                self.metrics.labels_applied.labels(repo, name).inc()
            log.info("%s#%d labeled %s with bundle %s", repo, number, plan.labels, plan.version)
        if comment and not plan.commented:
            if stamps:  # recorded before the comment, which may fail: the labels are not retried
                with self.store.session() as session:
                    _stamp(session, plan, stamps)
            self.gateway.comment(repo, installation_id, number, comment_text(plan.labels, plan.scores))
            stamps = {"commented_at": now()}
        return f"applied {plan.labels}", stamps


@dataclass(frozen=True)
class _Plan:
    """A recorded prediction, as far as writing it to GitHub goes."""

    id: int
    labels: list[str]
    reason: str
    dry_run: bool
    applied: bool
    commented: bool
    scores: dict[str, float]
    version: str

    @classmethod
    def of(cls, row: Prediction) -> _Plan:
        return cls(
            row.id,
            list(row.labels),
            row.reason,
            row.dry_run,
            row.applied_at is not None,
            row.commented_at is not None,
            dict(row.scores),
            row.bundle_version,
        )


def _stamp(session: Session, plan: _Plan, stamps: dict[str, datetime]) -> None:
    """Record the steps of the plan that reached GitHub, so a retried job does not repeat them."""
    if stamps:
        session.execute(update(Prediction).where(Prediction.id == plan.id).values(**stamps))


def _timestamp(value: object) -> datetime | None:
    try:
        return parse_datetime(value, "issue.updated_at")
    except RecordError:  # the labeling goes on with the delivery's issue as it is
        return None


def _has_labels(session: Session, repo: str) -> bool:
    """Whether the repository's label catalogue was ever read (else it is synced first)."""
    return (
        session.scalar(
            select(Label.id)
            .join(Repository, Repository.id == Label.repository_id)
            .where(Repository.full_name == repo)
            .limit(1)
        )
        is not None
    )


def current_names(session: Session, repository: Repository, bundle: BundleSummary) -> dict[str, str | None]:
    """Each bundle label's name in the repository now: renames followed by node id; a label
    deleted and created again under the bundle's name (as label-sync tools do) is the new one;
    deleted or never-created labels None."""
    node_ids = [node for node in bundle.label_node_ids.values() if node]
    rows = session.scalars(
        select(Label).where(
            Label.repository_id == repository.id,
            or_(Label.name.in_(bundle.labels), Label.node_id.in_(node_ids)),
        )
    ).all()
    by_node = {row.node_id: row for row in rows if row.node_id}
    live_by_name = {row.name: row for row in rows if row.deleted_at is None}
    names: dict[str, str | None] = {}
    for label in bundle.labels:
        row = by_node.get(bundle.label_node_ids.get(label, ""))
        if row is None or row.deleted_at is not None:
            row = live_by_name.get(label, row)
        names[label] = row.name if row is not None and row.deleted_at is None else None
    return names


def comment_text(labels: list[str], scores: dict[str, float]) -> str:
    """One comment with the suggestions, details folded away (comments are noisy)."""
    lines = [f"| {name} | {scores.get(name, 0.0):.2f} |" for name in labels]
    return "\n".join(
        [
            f"Suggested labels: {', '.join(f'`{name}`' for name in labels)}",
            "",
            "<details><summary>Confidence</summary>",
            "",
            "| label | score |",
            "|---|---|",
            *lines,
            "",
            "</details>",
        ]
    )
