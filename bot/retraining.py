"""Retraining: on a cron schedule, early when the data says so, and on demand.

Every refresh is ``python -m training.refresh`` in a child process at a lower priority, the same
code path as by hand; the child takes the repository's refresh lock and records the run in the
store. The schedule lives in APScheduler's SQLAlchemy job store, in the bot's database, so a
restart neither loses nor repeats it; several replicas may each fire for the same occasion, and
the occasion's "slot" (unique per repository) lets only one of them train.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot import feedback
from bot.labeling import current_names
from bot.served_models import ServedModels
from training.cron import cron_trigger
from training.dataset import DatasetConfig, DatasetError, build_dataset
from training.refresh_runs import RefreshRuns
from training.settings import Settings
from training.store import Store
from training.store.upserts import get_repository, now

log = logging.getLogger(__name__)

SCHEDULED_JOB, CHECK_JOB = "issue-labeler-scheduled-refresh", "issue-labeler-early-refresh-check"
JOBS_TABLE = "apscheduler_jobs"


@dataclass(frozen=True)
class RefreshRequest:
    repo: str
    trigger: str  # schedule | early | api
    reason: str
    slot: str | None = None


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``ISSUE_LABELER_*`` variables, so a child process sees exactly these."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, default=str)
        else:
            text = str(value)
        env[f"ISSUE_LABELER_{name.upper()}"] = text
    return env


TIMED_OUT = 124  # as timeout(1) reports it
STOPPED = 143  # not started: the bot is stopping (128 + SIGTERM)
STOP_GRACE_SECONDS = 60.0


class RefreshLauncher:
    """Runs one refresh as ``python -m training.refresh`` at ``refresh_nice`` and waits for it."""

    def __init__(self, settings: Settings, extra_args: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.extra_args = extra_args
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def __call__(self, request: RefreshRequest) -> int:
        if self._stopping:
            log.info("%s: refresh not started, the bot is stopping", request.repo)
            return STOPPED
        command = [
            sys.executable, "-m", "training.refresh",
            "--repo", request.repo,
            "--trigger", request.trigger,
            "--reason", request.reason,
            "--nice", str(self.settings.refresh_nice),
            *self.extra_args,
        ]  # fmt: skip
        if request.slot:
            command += ["--slot", request.slot]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ISSUE_LABELER_")}
        environment |= settings_env(self.settings) | {"TQDM_DISABLE": "1"}
        log.info("%s: refresh starting (%s: %s)", request.repo, request.trigger, request.reason)
        code = self._run(command, environment, request.repo)
        if self._stopping:
            log.info(
                "%s: refresh stopped as the bot stops (exit %d; recorded in its history)", request.repo, code
            )
            return code
        outcome = {
            0: "finished",
            1: "failed",
            2: "refused its settings",
            3: "skipped: another refresh runs",
            TIMED_OUT: "stopped: still running after ISSUE_LABELER_REFRESH_TIMEOUT_HOURS",
        }
        log.log(
            logging.INFO if code in (0, 3) else logging.ERROR,
            "%s: refresh %s (exit %d)",
            request.repo,
            outcome.get(code, "crashed"),
            code,
        )
        return code

    def _run(self, command: list[str], environment: dict[str, str], repo: str) -> int:
        """The child's exit status; past the time limit it is asked to stop (it records the run
        failed and frees the lock), then killed if it does not."""
        limit = self.settings.refresh_timeout_hours * 3600 or None
        child = self._child = subprocess.Popen(command, env=environment)
        try:
            return child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            log.error(
                "%s: refresh still running after %.1f h: stopping it",
                repo,
                self.settings.refresh_timeout_hours,
            )
            _stop(child, STOP_GRACE_SECONDS)
            return TIMED_OUT
        except BaseException:  # the bot itself stopping: the child must not outlive it unseen
            child.terminate()
            raise
        finally:
            self._child = None

    def stop_running(self, grace: float = 20.0) -> None:
        """Stop the refresh running now, if any, as the bot shuts down: it records itself failed
        and frees its lock, where a container's end would kill it unrecorded."""
        self._stopping = True
        child = self._child
        if child is not None and child.poll() is None:
            log.info("stopping the running refresh (the bot is stopping)")
            _stop(child, grace)


def _stop(child: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (a refresh records the stop and frees its lock), SIGKILL after ``grace`` seconds."""
    child.terminate()
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def previous_fire_time(trigger: CronTrigger, moment: datetime) -> datetime | None:
    """The schedule's latest occasion at or before ``moment`` (what a late or repeated firing was for)."""
    probe, latest = moment - timedelta(days=400), None
    while True:
        fire = trigger.get_next_fire_time(latest, probe)
        if fire is None or fire > moment:
            return latest
        latest, probe = fire, fire + timedelta(seconds=1)


# APScheduler's persistent job store keeps a textual reference to a module-level function; the
# running Retrainer is found through this table by the key stored as the job's argument.
_RETRAINERS: dict[str, Retrainer] = {}


def _scheduled_entry(key: str) -> None:
    retrainer = _RETRAINERS.get(key)
    if retrainer is not None:
        retrainer.scheduled()


def _check_entry(key: str) -> None:
    retrainer = _RETRAINERS.get(key)
    if retrainer is not None:
        retrainer.check_early()


class Retrainer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        models: ServedModels,
        installed: Callable[[], list[str]],
        launch: Callable[[RefreshRequest], int],
        *,
        clock: Callable[[], datetime] = now,
        on_finished: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.installed = installed
        self.launch = launch
        self.clock = clock
        self.on_finished = on_finished
        self.runs = RefreshRuns(store, lock_hours=settings.refresh_lock_hours)
        self.trigger = cron_trigger(settings.refresh_schedule) if settings.refresh_schedule else None
        self.scheduler: BackgroundScheduler | None = None
        self._busy = threading.Lock()
        self._stopping = False

    # -- the scheduler ---------------------------------------------------------------------------
    def start(self) -> None:
        _RETRAINERS["default"] = self
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.store.engine, tablename=JOBS_TABLE)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 24 * 3600},
            timezone=UTC,
        )
        scheduler.start(paused=True)
        # A stored job keeps its next run time (a restart must not skip an occasion); it is only
        # rescheduled when the configured schedule changed.
        check = (
            IntervalTrigger(minutes=self.settings.refresh_check_minutes, timezone=UTC)
            if self.settings.refresh_check_minutes
            else None
        )
        for job_id, entry, trigger in [
            (SCHEDULED_JOB, _scheduled_entry, self.trigger),
            (CHECK_JOB, _check_entry, check),
        ]:
            job = scheduler.get_job(job_id)
            if trigger is None:
                if job is not None:
                    job.remove()
            elif job is None:
                scheduler.add_job(entry, trigger, args=["default"], id=job_id)
            elif str(job.trigger) != str(trigger):
                job.reschedule(trigger)
        self.scheduler = scheduler
        job = scheduler.get_job(SCHEDULED_JOB)
        if job is None:
            log.info("scheduled retraining off (ISSUE_LABELER_REFRESH_SCHEDULE is empty)")
        else:
            log.info(
                "retraining scheduled (%s UTC); next %s", self.settings.refresh_schedule, job.next_run_time
            )
        scheduler.resume()  # an occasion missed while the bot was down runs now, once

    def stop(self) -> None:
        self._stopping = True
        if self.scheduler is not None:
            # APScheduler looks at due jobs once more while shutting down and would mark an
            # occasion due right now as done without running it; detach the store first.
            self.scheduler.pause()
            self.scheduler.remove_jobstore("default", shutdown=False)
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        _RETRAINERS.pop("default", None)
        if isinstance(self.launch, RefreshLauncher):
            self.launch.stop_running()

    # -- what the jobs do ------------------------------------------------------------------------
    def scheduled(self) -> list[int]:
        """Refresh every installed repository for the schedule's current occasion."""
        if self.trigger is None:
            return []
        occasion = previous_fire_time(self.trigger, self.clock())
        if occasion is None:
            return []
        slot = f"schedule:{occasion.astimezone(UTC):%Y-%m-%dT%H:%MZ}"
        reason = f"scheduled ({self.settings.refresh_schedule} UTC)"
        return [
            code
            for code in self._for_each(lambda repo: self._run(RefreshRequest(repo, "schedule", reason, slot)))
            if code is not None
        ]

    def check_early(self) -> list[int]:
        def check(repo: str) -> int | None:
            reasons = self.early_reasons(repo)
            return self._run(RefreshRequest(repo, "early", "; ".join(reasons))) if reasons else None

        return [code for code in self._for_each(check) if code is not None]

    def _for_each(self, work: Callable[[str], int | None]) -> list[int | None]:
        """``work`` for each installed repository in turn: one that fails (the store briefly
        unreachable, say) is logged and the others still get theirs."""
        done: list[int | None] = []
        for repo in self.installed():
            if self._stopping:
                break
            try:
                done.append(work(repo))
            except Exception:
                log.exception("%s: retraining failed here; the other repositories go on", repo)
        return done

    def on_demand(self, repo: str, reason: str = "requested through /admin/refresh") -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(RefreshRequest(repo, "api", reason),), name=f"refresh-{repo}", daemon=True
        )
        thread.start()
        return thread

    @property
    def refreshing(self) -> bool:
        """A refresh started from this process is running."""
        return self._busy.locked()

    def _run(self, request: RefreshRequest) -> int:
        with self._busy:  # one child at a time from this process; the store lock covers replicas
            code = self.launch(request)
        if self._stopping:  # the bot is shutting down (the store closing): the run recorded itself
            return code
        if self.on_finished is not None:
            latest = self.runs.history(request.repo, limit=1)
            self.on_finished(request.repo, str(latest[0]["status"]) if latest else f"exit {code}")
        self.models.get(request.repo, force_check=True)  # a promoted bundle serves at once
        return code

    # -- when to retrain early -------------------------------------------------------------------
    def early_reasons(self, repo: str) -> list[str]:
        """Why ``repo`` should retrain before its scheduled time (empty: it need not)."""
        since = self.runs.last_started(repo)
        stamp = self.clock()
        bundle = self.models.summary(repo)  # an unloaded model stays unloaded
        reasons: list[str] = []
        with self.store.session() as session:
            repository = get_repository(session, repo)
            if repository is None:
                return []
            if bundle is None:
                if since is None or stamp - since > timedelta(days=1):
                    reasons.append("no bundle in service")
                return reasons
            try:
                dataset = build_dataset(
                    session, [repo], DatasetConfig.from_settings(self.settings, as_of=stamp)
                )
            except DatasetError:
                return []
            if since is not None:
                labeled = dataset.splits["train"] + dataset.splits["validation"] + dataset.splits["test"]
                new_labeled = sum(1 for e in labeled if e.created_at is not None and e.created_at > since)
                if new_labeled >= self.settings.refresh_min_new_labeled:
                    reasons.append(f"{new_labeled} new labeled issues since the last refresh")
            learned = set(dataset.label_names)
            added = sorted(learned - set(bundle.labels))
            gone = sorted(
                name
                for name, current in current_names(session, repository, bundle).items()
                if current is None
            )
            if added:
                reasons.append(f"new labels to learn: {', '.join(added)}")
            if gone:
                reasons.append(f"labels deleted from the repository: {', '.join(gone)}")
            live = feedback.live_precision(session, bundle_version=bundle.version).get(repo, {})
        applied = sum(int(v["applied"]) for v in live.values())
        removed = sum(int(v["removed_by_humans"]) for v in live.values())
        if applied >= self.settings.refresh_min_feedback:
            precision = (applied - removed) / applied
            if precision < self.settings.refresh_precision_floor:
                reasons.append(
                    f"live precision {precision:.2f} below {self.settings.refresh_precision_floor} "
                    f"({removed} of {applied} applied labels removed by maintainers)"
                )
        return reasons
