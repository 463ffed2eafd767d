"""Tables of the store: the one data layer that training and the bot share."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Repository(Base):
    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200), unique=True)
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    node_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    issues: Mapped[list[Issue]] = relationship(back_populates="repository")


class Label(Base):
    """The repository's label catalogue; node_id recognises a renamed label as the same one."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("repository_id", "node_id", name="uq_labels_repository_node"),
        Index("ix_labels_repository_name", "repository_id", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    node_id: Mapped[str | None] = mapped_column(String(100))
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    color: Mapped[str | None] = mapped_column(String(12))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Issue(Base):
    """An issue or pull request; ``key`` is ``#number``, or a content hash where numbers are unknown."""

    __tablename__ = "issues"
    __table_args__ = (UniqueConstraint("repository_id", "key", name="uq_issues_repository_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(80))
    number: Mapped[int | None] = mapped_column(Integer)
    node_id: Mapped[str | None] = mapped_column(String(100))
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(String(20))
    is_pull_request: Mapped[bool] = mapped_column(Boolean, default=False)
    author_login: Mapped[str | None] = mapped_column(String(200))
    author_association: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(20))
    first_stored_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    repository: Mapped[Repository] = relationship(back_populates="issues")
    labels: Mapped[list[IssueLabel]] = relationship(
        back_populates="issue", cascade="all, delete-orphan", lazy="selectin"
    )


class IssueLabel(Base):
    """A label currently on an issue."""

    __tablename__ = "issue_labels"

    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True)
    label_id: Mapped[int] = mapped_column(
        ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    issue: Mapped[Issue] = relationship(back_populates="labels")
    label: Mapped[Label] = relationship(lazy="joined")


class LabelEvent(Base):
    """A label put on or taken off an issue, as seen by a sync or reported by a webhook."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"), index=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(20))  # labeled | unlabeled
    source: Mapped[str] = mapped_column(String(20))  # import | fetch | webhook
    actor_login: Mapped[str | None] = mapped_column(String(200))
    actor_type: Mapped[str | None] = mapped_column(String(20))  # User | Bot
    delivery_id: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TemplateLabel(Base):
    """A label that one of the repository's issue forms applies by itself at creation."""

    __tablename__ = "template_labels"
    __table_args__ = (UniqueConstraint("repository_id", "source", "name", name="uq_template_labels"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(300))  # template path, or "config"
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FetchCursor(Base):
    """How far a repository's issues have been stored: everything updated before ``since``."""

    __tablename__ = "fetch_cursors"

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    )
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class SplitAssignment(Base):
    """The split an issue was put in; kept so that every refresh is tested on the same issues."""

    __tablename__ = "split_assignments"

    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(String(20))  # train | validation | test
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    meta: Mapped[dict | None] = mapped_column(JSON)


class Installation(Base):
    """Where the GitHub App is installed: which installation serves a repository, and whether
    it still does (uninstalling keeps the history; the bot stops acting)."""

    __tablename__ = "installations"

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    )
    installation_id: Mapped[int] = mapped_column(BigInteger, index=True)
    account_login: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookJob(Base):
    """A webhook delivery, persisted before it is acknowledged and worked off by the worker.

    ``delivery_id`` is GitHub's ``X-GitHub-Delivery``: a redelivery finds its job and is not
    applied twice. A job that keeps failing stays ``failed`` with its error; nothing is dropped.
    """

    __tablename__ = "webhook_jobs"
    __table_args__ = (
        Index("ix_webhook_jobs_status_due", "status", "next_attempt_at"),
        # The claim looks for unfinished earlier jobs of the same repository: finished ones,
        # however many, are skipped by the index.
        Index("ix_webhook_jobs_repository_status", "repository", "status"),
        # The webhooks that have delivered to the bot, found without walking the jobs.
        Index("ix_webhook_jobs_hook", "hook_target", "hook_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(60))
    action: Mapped[str | None] = mapped_column(String(60))
    repository: Mapped[str | None] = mapped_column(String(200))
    issue_number: Mapped[int | None] = mapped_column(Integer)
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    # X-GitHub-Hook-ID and -Installation-Target-Type: the webhook that sent it ("integration" for
    # the App's, "repository" or "organization" for one a token user set up)
    hook_id: Mapped[int | None] = mapped_column(BigInteger)
    hook_target: Mapped[str | None] = mapped_column(String(20))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # pending | running | done | ignored | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RedeliveryRequest(Base):
    """The last time any replica asked GitHub to send a failed delivery again: replicas sharing the
    store ask once per look between them (each request also spends one of its attempts)."""

    __tablename__ = "redelivery_requests"

    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Prediction(Base):
    """What the bot decided for an issue, with which bundle, and whether it was written."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_repository_issue", "repository_id", "issue_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    issue_number: Mapped[int] = mapped_column(Integer)
    bundle_version: Mapped[str] = mapped_column(String(40))
    scores: Mapped[dict] = mapped_column(JSON)
    labels: Mapped[list] = mapped_column(JSON)  # decided labels, in the repository's current names
    reason: Mapped[str] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    delivery_id: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    commented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Feedback(Base):
    """A maintainer's verdict on the bot's labeling of one issue, for one label.

    ``kind`` is ``false_positive`` (a human removed a bot label), ``false_negative`` (a human
    added a label the bot did not apply) or ``accepted`` (a bot label left in place long enough).
    """

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("repository_id", "issue_number", "label_name", "kind", name="uq_feedback"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    issue_number: Mapped[int] = mapped_column(Integer)
    label_name: Mapped[str] = mapped_column(String(200))
    label_node_id: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id", ondelete="SET NULL"))
    actor_login: Mapped[str | None] = mapped_column(String(200))
    delivery_id: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RefreshRun(Base):
    """One retraining of one repository: why, when, on what data, with what result.

    ``slot`` names a scheduled occasion (``schedule:2026-11-30T03:00Z``): unique per repository,
    so several scheduler replicas firing for the same occasion run it once.
    """

    __tablename__ = "refresh_runs"
    __table_args__ = (UniqueConstraint("repository_id", "slot", name="uq_refresh_runs_slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    trigger: Mapped[str] = mapped_column(String(40))  # schedule | manual | api | early
    reason: Mapped[str] = mapped_column(Text)
    slot: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20))  # running | promoted | rejected | failed | skipped
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    version: Mapped[str | None] = mapped_column(String(40))
    counts: Mapped[dict | None] = mapped_column(JSON)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    outcome: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str | None] = mapped_column(String(200))


class RefreshLock(Base):
    """At most one refresh per repository, across processes and replicas sharing the database."""

    __tablename__ = "refresh_locks"

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
