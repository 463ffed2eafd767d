"""In-process workers that run webhook jobs from the store, with retries and backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from bot.jobs import ClaimedJob, JobQueue
from bot.metrics import BotMetrics
from bot.outcome import Outcome, PermanentJobError, is_outage
from training.store.upserts import now

log = logging.getLogger(__name__)


class Workers:
    """``count`` threads claiming jobs; ``wake()`` cuts the wait after a new delivery."""

    def __init__(
        self,
        queue: JobQueue,
        handle: Callable[[ClaimedJob], Outcome],
        metrics: BotMetrics,
        *,
        count: int,
        poll_seconds: float = 1.0,
        housekeeping: Callable[[], None] | None = None,
        housekeeping_seconds: float = 600.0,
    ) -> None:
        self.queue = queue
        self.handle = handle
        self.metrics = metrics
        self.count = count
        self.poll_seconds = poll_seconds
        self.housekeeping = housekeeping
        self.housekeeping_seconds = housekeeping_seconds
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_housekeeping = 0.0
        self._housekeeping_lock = threading.Lock()
        # The jobs running here and the lease each holds, renewed a third of a lease apart.
        self._running: dict[int, tuple[ClaimedJob, datetime]] = {}
        self._running_lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.count):
            thread = threading.Thread(target=self._run, name=f"issue-labeler-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.count:
            keeper = threading.Thread(target=self._keep_leases, name="issue-labeler-leases", daemon=True)
            keeper.start()
            self._threads.append(keeper)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def wake(self) -> None:
        with self._wake:
            self._pending_wakes += 1
            self._wake.notify()

    def _wait(self) -> None:
        with self._wake:
            if self._pending_wakes == 0:
                self._wake.wait(self.poll_seconds)
            self._pending_wakes = max(self._pending_wakes - 1, 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._maybe_housekeep()
                job = self.queue.claim()
            except Exception:  # the store may be briefly unreachable: keep the worker alive
                log.exception("worker could not claim a job; retrying")
                self._stop.wait(self.poll_seconds)
                continue
            if job is None:
                self._wait()
                continue
            try:
                self.run_one(job)
            except Exception:  # the store failed while the job's end was recorded
                log.exception(
                    "delivery %s: could not record how its job ended; it runs again when its lease ends",
                    job.delivery.delivery_id,
                )
                self._stop.wait(self.poll_seconds)

    def run_one(self, job: ClaimedJob) -> None:
        delivery = job.delivery
        name = f"{delivery.event}.{delivery.action}" if delivery.action else delivery.event
        try:
            with self._lease_kept(job):
                outcome = self.handle(job)
            # inside the try: the handler's last writes commit here, and may fail like its others
            self.queue.finish(job, outcome.text, ignored=outcome.ignored, commit_with=outcome.commit_with)
        except PermanentJobError as exc:
            self.queue.fail(job, str(exc), permanent=True)
            log.error("delivery %s (%s) failed for good: %s", delivery.delivery_id, name, exc)
            self.metrics.jobs.labels(delivery.event, "failed").inc()
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            outage = is_outage(exc)
            gave_up = self.queue.fail(job, error, outage=outage)
            status = "failed" if gave_up else "retry"
            log.warning(
                "delivery %s (%s) attempt %d %s: %s",
                delivery.delivery_id,
                name,
                job.attempts,
                "failed for good" if gave_up else "failed, will retry",
                error,
                exc_info=not outage,  # a defect of ours: where it happened is what matters
            )
            self.metrics.jobs.labels(delivery.event, status).inc()
            return
        self.metrics.jobs.labels(delivery.event, "ignored" if outcome.ignored else "done").inc()
        self.metrics.job_seconds.labels(delivery.event).observe(_since(job.received_at))
        log.info("delivery %s (%s%s): %s", delivery.delivery_id, name, _where(job), outcome.text)

    @contextmanager
    def _lease_kept(self, job: ClaimedJob) -> Iterator[None]:
        """While the handler runs, its job's lease is renewed; not after, so a job whose end
        the store failed to record is claimed again once the lease runs out."""
        with self._running_lock:
            self._running[job.id] = (job, job.lease_until)
        try:
            yield
        finally:
            with self._running_lock:
                self._running.pop(job.id, None)

    def _keep_leases(self) -> None:
        every = max(self.queue.lease.total_seconds() / 3, 0.01)
        while not self._stop.wait(every):
            with self._running_lock:
                held = list(self._running.values())
            for job, until in held:
                try:
                    renewed = self.queue.renew_lease(job.id, until)
                except Exception as exc:  # the store briefly unreachable: the next round tries again
                    log.warning("delivery %s: lease not renewed: %s", job.delivery.delivery_id, exc)
                    continue
                with self._running_lock:
                    if job.id not in self._running:
                        continue  # it ended meanwhile
                    if renewed is None:
                        del self._running[job.id]
                        log.warning(
                            "delivery %s: its job's lease ran out before it could be renewed and "
                            "another worker may run it too",
                            job.delivery.delivery_id,
                        )
                    else:
                        self._running[job.id] = (job, renewed)

    def _maybe_housekeep(self) -> None:
        if (
            self.housekeeping is None
            or time.monotonic() - self._last_housekeeping < self.housekeeping_seconds
        ):
            return
        if not self._housekeeping_lock.acquire(blocking=False):
            return  # another worker thread is at it
        try:
            self._last_housekeeping = time.monotonic()
            self.housekeeping()
        except Exception:  # feedback bookkeeping must never stop a worker
            log.exception("housekeeping failed; it runs again later")
        finally:
            self._housekeeping_lock.release()


def _since(moment: datetime) -> float:
    return max((now() - moment).total_seconds(), 0.0)


def _where(job: ClaimedJob) -> str:
    return f" on {job.delivery.repository}" if job.delivery.repository else ""
