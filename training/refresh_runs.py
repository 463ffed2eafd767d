"""Refresh history and the per-repository refresh lock, both in the store.

The lock is a row with an expiry rather than a database session lock: the refresh runs in its
own process, and a lock must outlive neither a crashed process (it expires) nor allow a second
refresh of the same repository from another replica (the row is shared). A running refresh
renews its lock (``LockLease``), so the expiry only has to outlast a renewal, not the longest
refresh: one of a large repository may train for hours.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from training.store import Store
from training.store.db import rows_matched
from training.store.models import RefreshLock, RefreshRun, Repository
from training.store.upserts import ensure_repository, get_repository, now

log = logging.getLogger(__name__)

RUNNING, PROMOTED, REJECTED, FAILED = "running", "promoted", "rejected", "failed"


class RefreshBusy(Exception):
    """Another refresh of the repository holds the lock."""


class LockLost(Exception):
    """The lock expired unrenewed and another refresh took it: this one must not promote."""


class SlotTaken(Exception):
    """This scheduled occasion was already run (by this or another replica)."""


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class StartedRun:
    run_id: int
    repository_id: int
    started_at: datetime


class RefreshRuns:
    def __init__(self, store: Store, *, lock_hours: float, holder: str | None = None) -> None:
        self.store = store
        self.lock_for = timedelta(hours=lock_hours)
        self.holder = holder or default_holder()

    def start(
        self, repo: str, *, trigger: str, reason: str, slot: str | None = None, at: datetime | None = None
    ) -> StartedRun:
        """Take the repository's lock and record a running refresh.

        Raises ``RefreshBusy`` when another refresh holds the lock, ``SlotTaken`` when ``slot``
        was already run; in both cases nothing is recorded and nothing needs undoing.
        """
        stamp = at or now()
        with self.store.session() as session:
            repository_id = ensure_repository(session, repo).id
        self._lock(repository_id, stamp)
        try:
            with self.store.session() as session:
                run = RefreshRun(
                    repository_id=repository_id,
                    trigger=trigger,
                    reason=reason,
                    slot=slot,
                    status=RUNNING,
                    started_at=stamp,
                    holder=self.holder,
                )
                session.add(run)
                session.flush()
                run_id = run.id
                session.execute(
                    update(RefreshLock)
                    .where(RefreshLock.repository_id == repository_id)
                    .values(run_id=run_id)
                )
        except IntegrityError:
            self._unlock(repository_id)
            raise SlotTaken(f"{repo}: {slot} was already run") from None
        return StartedRun(run_id, repository_id, stamp)

    def _lock(self, repository_id: int, stamp: datetime) -> None:
        try:
            with self.store.session() as session:
                session.add(
                    RefreshLock(
                        repository_id=repository_id,
                        holder=self.holder,
                        acquired_at=stamp,
                        expires_at=stamp + self.lock_for,
                    )
                )
            return
        except IntegrityError:
            pass
        with self.store.session() as session:
            held = session.get(RefreshLock, repository_id)
            if held is None:
                raise RefreshBusy("the lock changed hands; try again") from None
            if held.expires_at > stamp:
                raise RefreshBusy(
                    f"a refresh by {held.holder} holds the lock since {held.acquired_at:%Y-%m-%d %H:%M} UTC"
                )
            # An expired lock: its holder died. Take it over, unless another taker was faster.
            taken = rows_matched(
                session,
                update(RefreshLock)
                .where(RefreshLock.repository_id == repository_id, RefreshLock.expires_at == held.expires_at)
                .values(holder=self.holder, acquired_at=stamp, expires_at=stamp + self.lock_for, run_id=None),
            )
            if taken != 1:
                raise RefreshBusy("another process took over the expired lock")
            log.warning("took over the refresh lock left by %s (expired)", held.holder)

    def renew(self, started: StartedRun, at: datetime | None = None) -> bool:
        """Push the running refresh's lock expiry on; False when the run no longer holds it."""
        stamp = at or now()
        with self.store.session() as session:
            renewed = rows_matched(
                session,
                update(RefreshLock)
                .where(
                    RefreshLock.repository_id == started.repository_id,
                    RefreshLock.holder == self.holder,
                    RefreshLock.run_id == started.run_id,
                )
                .values(expires_at=stamp + self.lock_for),
            )
        return renewed == 1

    def _unlock(self, repository_id: int) -> None:
        with self.store.session() as session:
            session.execute(
                delete(RefreshLock).where(
                    RefreshLock.repository_id == repository_id, RefreshLock.holder == self.holder
                )
            )

    def finish(
        self,
        started: StartedRun,
        *,
        status: str,
        outcome: str,
        version: str | None = None,
        counts: dict | None = None,
        metrics: dict | None = None,
        at: datetime | None = None,
    ) -> None:
        stamp = at or now()
        with self.store.session() as session:
            run = session.get(RefreshRun, started.run_id)
            if run is None:  # the repository's history was deleted meanwhile (uninstalled)
                log.warning("refresh run %d is no longer in the store: %s", started.run_id, outcome)
                return
            run.status = status
            run.outcome = outcome[:4000]
            run.version = version
            run.counts = counts
            run.metrics = metrics
            run.finished_at = stamp
            run.duration_s = round((stamp - started.started_at).total_seconds(), 1)
        self._unlock(started.repository_id)

    def history(self, repo: str, limit: int = 20) -> list[dict[str, object]]:
        with self.store.session() as session:
            repository = get_repository(session, repo)
            if repository is None:
                return []
            rows = session.scalars(
                select(RefreshRun)
                .where(RefreshRun.repository_id == repository.id)
                .order_by(RefreshRun.id.desc())
                .limit(limit)
            ).all()
        return [
            {
                "started_at": row.started_at.isoformat(),
                "trigger": row.trigger,
                "reason": row.reason,
                "status": row.status,
                "duration_s": row.duration_s,
                "version": row.version,
                "counts": row.counts,
                "test_micro_f1": (row.metrics or {}).get("micro_f1"),
                "test_macro_f1": (row.metrics or {}).get("macro_f1"),
                "outcome": row.outcome,
            }
            for row in rows
        ]

    def last_started(self, repo: str) -> datetime | None:
        with self.store.session() as session:
            return session.scalar(
                select(RefreshRun.started_at)
                .join(Repository, Repository.id == RefreshRun.repository_id)
                .where(Repository.full_name == repo)
                .order_by(RefreshRun.started_at.desc())
                .limit(1)
            )


class LockLease:
    """Renews a running refresh's lock from a background thread, a quarter of its lifetime
    apart, until the refresh ends. A renewal the store cannot take now is tried again at the
    next one; a lock found taken by another refresh is lost for good, and ``check`` says so
    before anything is promoted."""

    def __init__(self, runs: RefreshRuns, started: StartedRun, repo: str, every: float | None = None) -> None:
        self.runs, self.started, self.repo = runs, started, repo
        self.every = every if every is not None else runs.lock_for.total_seconds() / 4
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"refresh-lock {repo}", daemon=True)

    def __enter__(self) -> LockLease:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost:
            raise LockLost(
                f"{self.repo}: this refresh's lock expired unrenewed and another refresh took it; "
                "nothing promoted (raise ISSUE_LABELER_REFRESH_LOCK_HOURS if the store is often "
                "unreachable for that long)"
            )

    def _renew(self) -> None:
        while not self._stop.wait(self.every):
            try:
                held = self.runs.renew(self.started)
            except SQLAlchemyError as exc:
                log.warning("%s: could not renew the refresh lock (%s); trying again", self.repo, exc)
                continue
            if not held:
                self.lost = True
                log.error("%s: another refresh took the lock; this one will not promote", self.repo)
                return


def format_history(repo: str, rows: list[dict[str, object]]) -> str:
    if not rows:
        return f"{repo}: no refresh recorded"
    header = f"{'started (UTC)':<17} {'trigger':<9} {'status':<9} {'min':>5} {'micro':>6} {'macro':>6}"
    lines = [header + "  version, reason: outcome"]
    for row in rows:
        started = str(row["started_at"])[:16].replace("T", " ")
        minutes = f"{float(row['duration_s']) / 60:.1f}" if row["duration_s"] is not None else "-"  # type: ignore[arg-type]
        micro = f"{row['test_micro_f1']:.3f}" if row["test_micro_f1"] is not None else "-"
        macro = f"{row['test_macro_f1']:.3f}" if row["test_macro_f1"] is not None else "-"
        lines.append(
            f"{started:<17} {row['trigger']!s:<9} {row['status']!s:<9} {minutes:>5} {micro:>6} {macro:>6}  "
            f"{row['version'] or ''} {row['reason']}: {row['outcome'] or ''}"
        )
    return "\n".join(lines)
