"""Deliveries that never reached the bot are asked for again.

GitHub does not retry a webhook delivery that failed — the bot down or restarting, the store
unreachable (the bot then answers 503 rather than acknowledge what it could not keep), a
timeout. It keeps a webhook's deliveries for three days and sends one again on request. So, once
at start and then periodically, the bot lists the failed delivery attempts of the App's webhook
(with a token instead: of each repository or organization webhook that has delivered to it
before, by the ``X-GitHub-Hook-ID`` its jobs recorded — one whose every delivery failed is not
known) and asks again for each delivery it has not stored, oldest first (an issue's events keep
their order), at most ``max_attempts`` times (one refused for its content fails every time).
Nothing is asked for while the bot's own store is unreachable: the bot would refuse it again.
Each request is recorded in the store, so that of several replicas only one asks for a delivery
per interval: every request spends one of its attempts.

The first look goes back over the whole window (the bot may have been down); later ones only as
far as the previous look, or the oldest delivery still being asked for, so that a busy webhook's
listing stays short.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from bot.github_api import (
    APP_WEBHOOK,
    GITHUB_ERRORS,
    TOKEN_TARGETS,
    DeliveryAttempt,
    GitHubGateway,
    Webhook,
)
from bot.jobs import JobQueue, delivered_webhooks
from bot.metrics import BotMetrics
from training.store import Store
from training.store.upserts import now

log = logging.getLogger(__name__)

LISTING_LAG = timedelta(minutes=5)  # an attempt is listed once it ends: GitHub waits 10 s at most


@dataclass
class RedeliveryCheck:
    """What one look at the App's deliveries found and did."""

    at: datetime
    attempts_listed: int = 0
    undelivered: int = 0  # deliveries no attempt delivered
    requested: list[str] = field(default_factory=list)  # their GUIDs, asked for again now
    given_up: list[str] = field(default_factory=list)  # asked for max_attempts times already
    asked_already: list[str] = field(default_factory=list)  # by another replica, within an interval
    error: str | None = None

    def summary(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "attempts_listed": self.attempts_listed,
            "undelivered": self.undelivered,
            "requested": self.requested,
            "given_up": self.given_up,
            "asked_already": self.asked_already,
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
        # Replicas sharing the store look on their own schedules; one asks per interval between them.
        self.hold = timedelta(minutes=interval_minutes)
        self.max_attempts = max_attempts
        self.clock = clock
        self.last: RedeliveryCheck | None = None
        self._look_back_to: datetime | None = None  # None: the whole window
        self._given_up: set[str] = set()
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        if not self.interval_minutes:
            return
        if self.gateway.clients is None:
            log.info("failed deliveries are not asked for again: no GitHub credentials")
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
            self._scheduler.shutdown(wait=True)  # a look under way ends first: none runs after this
            self._scheduler = None

    def check(self) -> RedeliveryCheck:
        """One look back over the window; a GitHub failure is logged and kept for ``/status``."""
        result = RedeliveryCheck(at=self.clock())
        try:
            self._check(result)
        except GITHUB_ERRORS as exc:
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
        since = result.at - self.window
        if self._look_back_to is not None:
            since = max(since, self._look_back_to)
        by_guid: dict[str, list[DeliveryAttempt]] = defaultdict(list)
        hook_of: dict[str, Webhook] = {}
        unlisted = []
        for hook in self._webhooks():
            try:
                attempts = self.gateway.failed_deliveries(hook, since=since)
            except GITHUB_ERRORS as exc:
                # one webhook GitHub will not list (a token without the permission for that
                # repository) keeps no other from being looked at
                unlisted.append(f"{hook}: {type(exc).__name__}: {exc}")
                log.warning("could not look for failed webhook deliveries: %s", unlisted[-1])
                continue
            result.attempts_listed += len(attempts)
            for attempt in attempts:
                by_guid[attempt.guid].append(attempt)
                hook_of[attempt.guid] = hook
        result.error = "; ".join(unlisted) or None
        # A successful attempt, where GitHub lists those too, settles a delivery; so does the
        # store holding it (a redelivery that reached the bot, or an answer too late for GitHub).
        undelivered = {
            guid: tries for guid, tries in by_guid.items() if not any(t.status == "OK" for t in tries)
        }
        result.undelivered = len(undelivered)
        stored = self.queue.known(list(undelivered))
        for guid, tries in sorted(undelivered.items(), key=lambda item: min(t.id for t in item[1])):
            if guid in stored:
                continue
            latest = max(tries, key=lambda t: t.id)
            if guid in self._given_up or sum(t.redelivery for t in tries) >= self.max_attempts:
                result.given_up.append(guid)
                if guid not in self._given_up:
                    self._given_up.add(guid)
                    log.error(
                        "delivery %s (%s) failed %d times (last: %s); not asked for again",
                        guid,
                        _name(latest),
                        len(tries),
                        latest.status,
                    )
                continue
            if not self.queue.claim_redelivery(guid, result.at, self.hold):
                result.asked_already.append(guid)
                continue
            self.gateway.redeliver(hook_of[guid], latest.id)
            result.requested.append(guid)
            self.metrics.redeliveries.inc()
            log.warning(
                "delivery %s (%s) never reached the bot (%s): asked GitHub again",
                guid,
                _name(latest),
                latest.status,
            )
        # Next time back to this look (less a margin for attempts GitHub lists late), or to the
        # first attempt of a delivery asked for now: its redelivery is still to come.
        firsts = [
            min(t.delivered_at for t in undelivered[guid]) for guid in result.requested + result.asked_already
        ]
        if not unlisted:  # else the next look goes back as far as this one did
            self._look_back_to = min([result.at - LISTING_LAG, *firsts])
        self.queue.forget_redeliveries(before=result.at - max(self.window, self.hold))

    def _webhooks(self) -> list[Webhook]:
        return [APP_WEBHOOK] if self.gateway.is_app else token_webhooks(self.queue.store)


def token_webhooks(store: Store) -> list[Webhook]:
    """Each repository or organization webhook that has delivered to the bot: its id comes with
    every delivery, so none is configured."""
    delivered = delivered_webhooks(store, TOKEN_TARGETS)
    return [Webhook(target, hook_id, owner) for target, hook_id, owner in delivered]


def _name(delivery: DeliveryAttempt) -> str:
    return f"{delivery.event}.{delivery.action}" if delivery.action else delivery.event
