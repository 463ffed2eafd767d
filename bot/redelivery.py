"""Deliveries that never reached the bot are asked for again.

GitHub does not retry a webhook delivery that failed — the bot down or restarting, the store
unreachable (the bot then answers 503 rather than acknowledge what it could not keep), a
timeout. It keeps the App's deliveries for three days and sends one again on request. So, once
at start and then periodically, the bot lists the App's recent deliveries, and asks again for each
one that no attempt delivered and that it has not stored, oldest first (an issue's events keep
their order), at most ``max_attempts`` times (one refused for its content fails every time).
Nothing is asked for while the bot's own store is unreachable: the bot would refuse it again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from github import GithubException
from github.HookDelivery import HookDeliverySummary
from requests import RequestException
from sqlalchemy.exc import SQLAlchemyError

from bot.github_api import GitHubGateway
from bot.jobs import JobQueue
from bot.metrics import BotMetrics
from training.github_client import GitHubAuthError
from training.store.upserts import now

log = logging.getLogger(__name__)


@dataclass
class RedeliveryCheck:
    """What one look at the App's deliveries found and did."""

    at: datetime
    attempts_listed: int = 0
    undelivered: int = 0  # deliveries no attempt delivered
    requested: list[str] = field(default_factory=list)  # their GUIDs, asked for again now
    given_up: list[str] = field(default_factory=list)  # asked for max_attempts times already
    error: str | None = None

    def summary(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "attempts_listed": self.attempts_listed,
            "undelivered": self.undelivered,
            "requested": self.requested,
            "given_up": self.given_up,
            "error": self.error,
        }


class Redeliverer:
    def __init__(
        self,
        gateway: GitHubGateway,
        queue: JobQueue,
        metrics: BotMetrics,
        *,
        interval_minutes: float,
        window_hours: float,
        max_attempts: int,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.gateway = gateway
        self.queue = queue
        self.metrics = metrics
        self.interval_minutes = interval_minutes
        self.window = timedelta(hours=window_hours)
        self.max_attempts = max_attempts
        self.clock = clock
        self.last: RedeliveryCheck | None = None
        self._reported: set[str] = set()
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        if not self.interval_minutes:
            return
        if not self.gateway.is_app:
            log.info("failed deliveries are not asked for again: that needs a GitHub App")
            return
        scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1}, timezone=UTC)
        scheduler.add_job(
            self.check,
            IntervalTrigger(minutes=self.interval_minutes, timezone=UTC),
            next_run_time=datetime.now(UTC),  # what failed while the bot was down, at once
            id="redeliver",
        )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def check(self) -> RedeliveryCheck:
        """One look back over the window; a GitHub failure is logged and kept for ``/status``."""
        result = RedeliveryCheck(at=self.clock())
        try:
            self._check(result)
        except (GithubException, RequestException, GitHubAuthError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            log.warning("could not look for failed webhook deliveries: %s", result.error)
        self.last = result
        return result

    def _check(self, result: RedeliveryCheck) -> None:
        try:
            self.queue.counts()
        except SQLAlchemyError as exc:  # a redelivery now would be refused again (503)
            result.error = f"the store is unreachable, nothing asked for: {type(exc).__name__}"
            return
        attempts = self.gateway.app_deliveries(since=result.at - self.window)
        result.attempts_listed = len(attempts)
        by_guid: dict[str, list[HookDeliverySummary]] = defaultdict(list)
        for attempt in attempts:
            by_guid[attempt.guid].append(attempt)
        undelivered = {
            guid: tries for guid, tries in by_guid.items() if not any(t.status == "OK" for t in tries)
        }
        result.undelivered = len(undelivered)
        stored = self.queue.known(list(undelivered))  # accepted, but answered too late for GitHub
        for guid, tries in sorted(undelivered.items(), key=lambda item: min(t.id for t in item[1])):
            if guid in stored:
                continue
            if sum(t.redelivery for t in tries) >= self.max_attempts:
                result.given_up.append(guid)
                if guid not in self._reported:
                    self._reported.add(guid)
                    last = max(tries, key=lambda t: t.id)
                    log.error(
                        "delivery %s (%s) failed %d times (last: %s); not asked for again",
                        guid,
                        _name(last),
                        len(tries),
                        last.status,
                    )
                continue
            latest = max(tries, key=lambda t: t.id)
            self.gateway.redeliver(latest.id)
            result.requested.append(guid)
            self.metrics.redeliveries.inc()
            log.warning(
                "delivery %s (%s) never reached the bot (%s): asked GitHub again",
                guid,
                _name(latest),
                latest.status,
            )


def _name(delivery: HookDeliverySummary) -> str:
    return f"{delivery.event}.{delivery.action}" if delivery.action else str(delivery.event)
