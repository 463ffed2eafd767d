"""Webhook deliveries as jobs in the store: accepted once, claimed by one worker, never dropped.

Claiming is a conditional UPDATE, so two workers (threads or replicas on one PostgreSQL
database) cannot run the same job; a job whose worker died is claimed again when its lease
runs out, while a running job's worker renews it (a job may wait minutes on GitHub). Jobs of
one issue run in arrival order, after any earlier repository-wide job (label, push) and
installation event; jobs of different issues run side by side. A job that has
failed all its regular tries and only waits out an outage holds back no more than the later
jobs of its own issue: one issue GitHub keeps failing on must not stop a repository's labeling
for the hours of ``outage_hours``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.dml import ReturningUpdate

from training.records import is_repository_name
from training.store import Store
from training.store.db import rows_matched
from training.store.models import RedeliveryRequest, WebhookJob
from training.store.upserts import now

PENDING, RUNNING, DONE, IGNORED, FAILED = "pending", "running", "done", "ignored", "failed"
JOB_STATUSES = (PENDING, RUNNING, DONE, IGNORED, FAILED)
# Due jobs looked at per claim, oldest first; blocked ones among them wait for the next claim.
CLAIM_WINDOW = 50
# The widths of the job's columns that a delivery's headers and action fill: longer is not GitHub's.
MAX_DELIVERY_ID, MAX_EVENT, MAX_ACTION = 100, 60, 60


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: str
    payload: dict
    hook_id: int | None = None  # X-GitHub-Hook-ID: the webhook that sent it
    hook_target: str | None = None  # X-GitHub-Hook-Installation-Target-Type

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) and len(action) <= MAX_ACTION else None

    @property
    def repository(self) -> str | None:
        """OWNER/NAME, or None where the payload has none or another shape (its job then fails
        in ``bot.payload_shapes``' check, which names the field, instead of at the accept)."""
        repo = self.payload.get("repository")
        name = repo.get("full_name") if isinstance(repo, dict) else None
        return name if isinstance(name, str) and is_repository_name(name) else None

    @property
    def issue_number(self) -> int | None:
        """The issue an ``issues`` event is about; None for repository-wide events."""
        issue = self.payload.get("issue")
        value = issue.get("number") if isinstance(issue, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def installation_id(self) -> int | None:
        installation = self.payload.get("installation")
        value = installation.get("id") if isinstance(installation, dict) else None
        return value if isinstance(value, int) else None


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    attempts: int
    delivery: Delivery
    received_at: datetime
    lease_until: datetime  # as the claim wrote it: what a renewal must still find


class JobQueue:
    def __init__(
        self,
        store: Store,
        *,
        max_attempts: int,
        retry_seconds: float,
        lease_seconds: float,
        retry_max_seconds: float = 300.0,
        outage_hours: float = 0.0,
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.retry_max = retry_max_seconds
        self.outage = timedelta(hours=outage_hours)
        self.lease = timedelta(seconds=lease_seconds)

    def accept(self, delivery: Delivery, raw_body: bytes, *, handled: bool) -> bool:
        """Persist a delivery; False when this delivery id was accepted before (a redelivery).

        Events the bot has no handler for are kept as ``ignored`` so they cost no work.
        A redelivery of a job that failed for good puts it back in the queue: that is what
        GitHub's "Redeliver" button is for, once the cause is fixed.
        """
        stamp = now()
        job = WebhookJob(
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            action=delivery.action,
            repository=delivery.repository,
            issue_number=delivery.issue_number,
            installation_id=delivery.installation_id,
            hook_id=delivery.hook_id,
            hook_target=delivery.hook_target,
            payload=raw_body.decode("utf-8"),
            status=PENDING if handled else IGNORED,
            attempts=0,
            outcome=None if handled else f"no handler for {delivery.event}",
            received_at=stamp,
            next_attempt_at=stamp,
            finished_at=None if handled else stamp,
        )
        try:
            with self.store.session() as session:
                session.add(job)
        except IntegrityError:
            self.retry_failed(delivery.delivery_id)
            return False
        return True

    def claim(self) -> ClaimedJob | None:
        """The oldest due job, now leased to the caller; None when there is none."""
        stamp = now()
        with self.store.session() as session:
            candidates = session.execute(_DUE_UNBLOCKED, {"now": stamp, "tries": self.max_attempts}).all()
            for job_id, status, lease_until in candidates:
                # Only the worker whose UPDATE still sees the row as it read it gets the job.
                statement = _TAKE_NEW if lease_until is None else _TAKE_EXPIRED
                row = session.execute(
                    statement,
                    {
                        "job_id": job_id,
                        "seen_status": status,
                        "seen_lease": lease_until,
                        "new_lease": stamp + self.lease,
                    },
                ).first()
                if row is not None:
                    delivery = Delivery(row.delivery_id, row.event, json.loads(row.payload))
                    return ClaimedJob(row.id, row.attempts, delivery, row.received_at, row.lease_until)
        return None

    def renew_lease(self, job_id: int, held_until: datetime) -> datetime | None:
        """Extend a running job's lease, if it is still the one its worker holds (``held_until``);
        the new expiry, or None when the job ended or another worker claimed it meanwhile."""
        with self.store.session() as session:
            return session.scalar(
                update(WebhookJob)
                .where(
                    WebhookJob.id == job_id,
                    WebhookJob.status == RUNNING,
                    WebhookJob.lease_until == held_until,
                )
                .values(lease_until=now() + self.lease)
                .returning(WebhookJob.lease_until)
            )

    def finish(
        self,
        job: ClaimedJob,
        outcome: str,
        *,
        ignored: bool = False,
        commit_with: Callable[[Session], object] | None = None,
    ) -> None:
        """Record the job's end; ``commit_with`` writes in the same transaction."""
        with self.store.session() as session:
            if commit_with is not None:
                commit_with(session)
            session.execute(
                update(WebhookJob)
                .where(WebhookJob.id == job.id)
                .values(
                    status=IGNORED if ignored else DONE,
                    outcome=outcome[:2000],
                    last_error=None,
                    lease_until=None,
                    finished_at=now(),
                )
            )

    def fail(self, job: ClaimedJob, error: str, *, permanent: bool = False, outage: bool = False) -> bool:
        """Schedule a retry with exponential backoff; True when the job is given up (failed).

        A job is given ``max_attempts`` tries; one failing for an ``outage`` (GitHub or the store
        unavailable) is also retried until ``outage_hours`` after its delivery: the issue is
        labeled once GitHub is back, and a late run reads the issue's labels again first."""
        stamp = now()
        give_up = permanent or (
            job.attempts >= self.max_attempts and not (outage and stamp - job.received_at < self.outage)
        )
        delay = timedelta(
            seconds=min(self.retry_seconds * 2 ** min(max(job.attempts - 1, 0), 30), self.retry_max)
        )
        with self.store.session() as session:
            session.execute(
                update(WebhookJob)
                .where(WebhookJob.id == job.id)
                .values(
                    status=FAILED if give_up else PENDING,
                    last_error=error[:4000],
                    lease_until=None,
                    next_attempt_at=stamp if give_up else stamp + delay,
                    finished_at=stamp if give_up else None,
                )
            )
        return give_up

    def retry_failed(self, delivery_id: str) -> bool:
        """Put a failed job back in the queue, its attempts counted afresh."""
        stamp = now()
        with self.store.session() as session:
            retried = rows_matched(
                session,
                update(WebhookJob)
                .where(WebhookJob.delivery_id == delivery_id, WebhookJob.status == FAILED)
                .values(status=PENDING, attempts=0, next_attempt_at=stamp, finished_at=None),
            )
            return retried == 1

    def counts(self) -> dict[str, int]:
        with self.store.session() as session:
            rows = session.execute(select(WebhookJob.status, func.count()).group_by(WebhookJob.status)).all()
        return {status: int(n) for status, n in rows}

    def failed(self, limit: int = 20) -> list[dict[str, object]]:
        return self._listed(WebhookJob.status == FAILED, limit)

    def retrying(self, limit: int = 20) -> list[dict[str, object]]:
        """Jobs waiting for another try after a failure (through a GitHub outage, say): pending
        by their status, and the reason they wait and what they hold back only here."""
        return self._listed(
            (WebhookJob.status == PENDING) & WebhookJob.last_error.is_not(None), limit, holds_back=True
        )

    def _holds_back(self, job: WebhookJob) -> str:
        """Which later jobs a pending job keeps waiting, in the claim statement's terms. (A job
        queued behind a stuck one of its issue is stuck too, but is not read for here: it
        cannot run, so cannot fail, before that one ends — unless that one is a failed job
        redelivered since.)"""
        past_tries = job.attempts >= self.max_attempts
        if job.repository is None:
            return "nothing" if past_tries else "the installation's later jobs"
        if job.issue_number is None:
            return "nothing" if past_tries else "the repository's later jobs"
        if past_tries:
            return "its issue's later jobs"
        return "its issue's later jobs, and the repository's from its next label or push event on"

    def _listed(
        self, where: ColumnElement[bool], limit: int, *, holds_back: bool = False
    ) -> list[dict[str, object]]:
        with self.store.session() as session:
            rows = session.scalars(
                select(WebhookJob).where(where).order_by(WebhookJob.id.desc()).limit(limit)
            ).all()
        return [
            {
                "id": r.id,
                "delivery_id": r.delivery_id,
                "event": f"{r.event}.{r.action}" if r.action else r.event,
                "repository": r.repository,
                "attempts": r.attempts,
                "error": r.last_error,
                "received_at": _iso(r.received_at),
                **({"next_attempt_at": _iso(r.next_attempt_at)} if r.status == PENDING else {}),
                **({"holds_back": self._holds_back(r)} if holds_back else {}),
            }
            for r in rows
        ]

    def known(self, delivery_ids: list[str]) -> set[str]:
        """Which of these deliveries the bot has accepted (whatever GitHub recorded of them)."""
        if not delivery_ids:
            return set()
        with self.store.session() as session:
            rows = session.scalars(
                select(WebhookJob.delivery_id).where(WebhookJob.delivery_id.in_(delivery_ids))
            )
            return set(rows)

    def claim_redelivery(self, delivery_id: str, at: datetime, hold: timedelta) -> bool:
        """Whether the caller may ask GitHub for this delivery again now: True, and recorded as
        asked at ``at``, unless someone sharing the store (another replica) asked after ``at - hold``.
        The conditional UPDATE or the primary key lets only one of two callers through."""
        with self.store.session() as session:
            renewed = rows_matched(
                session,
                update(RedeliveryRequest)
                .where(RedeliveryRequest.delivery_id == delivery_id)
                .where(RedeliveryRequest.requested_at <= at - hold)
                .values(requested_at=at),
            )
        if renewed:
            return True
        try:
            with self.store.session() as session:
                session.add(RedeliveryRequest(delivery_id=delivery_id, requested_at=at))
        except IntegrityError:
            return False
        return True

    def forget_redeliveries(self, before: datetime) -> None:
        """Drop the records of requests made before ``before``: no look goes back that far."""
        with self.store.session() as session:
            session.execute(delete(RedeliveryRequest).where(RedeliveryRequest.requested_at < before))

    def forget_finished(self, before: datetime, batch: int = 500) -> int:
        """Delete the jobs that ended (done or ignored) before ``before``, their payloads with
        them, a batch per transaction so that deliveries keep being accepted meanwhile. Failed
        jobs stay for an operator to see, and so does each webhook's latest job: with a token the
        bot knows a webhook only by the deliveries it stored (``delivered_webhooks``)."""
        latest_of_each_hook = (
            select(func.max(WebhookJob.id))
            .where(WebhookJob.hook_id.is_not(None))
            .group_by(WebhookJob.hook_target, WebhookJob.hook_id)
        )
        forgotten = 0
        while True:
            with self.store.session() as session:
                ids = session.scalars(
                    select(WebhookJob.id)
                    .where(
                        WebhookJob.status.in_((DONE, IGNORED)),
                        WebhookJob.finished_at < before,
                        WebhookJob.id.not_in(latest_of_each_hook),
                    )
                    .order_by(WebhookJob.id)
                    .limit(batch)
                ).all()
                if not ids:
                    return forgotten
                session.execute(delete(WebhookJob).where(WebhookJob.id.in_(ids)))
            forgotten += len(ids)

    def status_of(self, delivery_id: str) -> str | None:
        with self.store.session() as session:
            return session.scalar(select(WebhookJob.status).where(WebhookJob.delivery_id == delivery_id))


def delivered_webhooks(store: Store, targets: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(target type, hook id, owner) of each webhook of these target types that has delivered
    here: a repository webhook's OWNER/NAME from its latest delivery naming one (a renamed
    repository's new name), an organization webhook's login from its latest delivery, which
    names the organization whatever the event (its ping names no repository)."""
    named = or_(WebhookJob.hook_target == "organization", WebhookJob.repository.is_not(None))
    latest = (
        select(func.max(WebhookJob.id))
        .where(WebhookJob.hook_target.in_(targets), WebhookJob.hook_id.is_not(None), named)
        .group_by(WebhookJob.hook_target, WebhookJob.hook_id)
    )
    found = []
    with store.session() as session:
        rows = session.execute(
            select(WebhookJob.hook_target, WebhookJob.hook_id, WebhookJob.repository, WebhookJob.payload)
            .where(WebhookJob.id.in_(latest))
            .order_by(WebhookJob.id)
        )
        for target, hook_id, repository, payload in rows:
            owner = _organization(payload) if target == "organization" else repository
            if owner and target and hook_id is not None:  # the query asks for both
                found.append((target, hook_id, owner))
    return found


def _organization(payload: str) -> str | None:
    organization = json.loads(payload).get("organization")
    login = organization.get("login") if isinstance(organization, dict) else None
    return login if isinstance(login, str) and login else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _due_unblocked_statement() -> Select:
    """Up to 5 due jobs that no earlier unfinished job holds back, oldest first; ``:now`` and
    ``:tries`` (a job's regular tries) bound.

    Built once: building this statement costs more than running it.
    """
    stamp: BindParameter[datetime] = bindparam("now")
    due = or_(
        (WebhookJob.status == PENDING) & (WebhookJob.next_attempt_at <= stamp),
        (WebhookJob.status == RUNNING) & (WebhookJob.lease_until < stamp),
    )
    # Per issue, after repository-wide and installation events, jobs run in arrival order:
    # "labeled" never overtakes "opened", nor an issue event the installation it needs.
    earlier = aliased(WebhookJob)
    repository_wide = earlier.issue_number.is_(None) | WebhookJob.issue_number.is_(None)
    # Past its regular tries (failed that often: pending again, or running once more), a job
    # waits out an outage; it and the later jobs of its issue, queued behind it, are "stuck".
    # A stuck job holds back only its own issue's later jobs: the issues and repository-wide
    # events after it go on, with the label catalogue and config the store has, rather than
    # waiting hours for one issue (or one push) GitHub keeps failing on.
    tries: BindParameter[int] = bindparam("tries")

    def past_tries(job: type[WebhookJob]) -> ColumnElement[bool]:
        return ((job.status == PENDING) & (job.attempts >= tries)) | (
            (job.status == RUNNING) & (job.attempts > tries)
        )

    behind = aliased(WebhookJob)
    stuck = past_tries(earlier) | (
        earlier.issue_number.is_not(None)
        & exists().where(
            behind.id < earlier.id,
            behind.repository == earlier.repository,
            behind.issue_number == earlier.issue_number,
            behind.status.in_([PENDING, RUNNING]),
            past_tries(behind),
        )
    )
    same_issue = earlier.issue_number.is_not(None) & (earlier.issue_number == WebhookJob.issue_number)
    blocked = exists().where(
        earlier.id < WebhookJob.id,
        earlier.status.in_([PENDING, RUNNING]),
        or_(
            (earlier.repository == WebhookJob.repository) & (same_issue | (repository_wide & ~stuck)),
            earlier.repository.is_(None)
            & (earlier.installation_id == WebhookJob.installation_id)
            & ~past_tries(earlier),
        ),
    )
    # Only the oldest due jobs are checked for being blocked: with a backlog of thousands
    # (after an outage) checking every one would cost each claim time quadratic in it.
    oldest_due = select(WebhookJob.id).where(due).order_by(WebhookJob.id).limit(CLAIM_WINDOW)
    return (
        select(WebhookJob.id, WebhookJob.status, WebhookJob.lease_until)
        .where(WebhookJob.id.in_(oldest_due.scalar_subquery()), ~blocked)
        .order_by(WebhookJob.id)
        .limit(5)
    )


def _take_statement(*, expired_lease: bool) -> ReturningUpdate:
    """Lease a job if it is still as it was read (``:seen_status``, ``:seen_lease``), returning
    what the worker needs in the same round trip."""
    seen_lease = (
        WebhookJob.lease_until == bindparam("seen_lease")
        if expired_lease
        else WebhookJob.lease_until.is_(None)
    )
    return (
        update(WebhookJob)
        .where(
            WebhookJob.id == bindparam("job_id"),
            WebhookJob.status == bindparam("seen_status"),
            seen_lease,
        )
        .values(status=RUNNING, lease_until=bindparam("new_lease"), attempts=WebhookJob.attempts + 1)
        .returning(
            WebhookJob.id,
            WebhookJob.attempts,
            WebhookJob.delivery_id,
            WebhookJob.event,
            WebhookJob.payload,
            WebhookJob.received_at,
            WebhookJob.lease_until,
        )
    )


_DUE_UNBLOCKED = _due_unblocked_statement()
_TAKE_NEW = _take_statement(expired_lease=False)
_TAKE_EXPIRED = _take_statement(expired_lease=True)
