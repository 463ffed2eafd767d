"""The job queue in the store: each job claimed once, in order per repository, never dropped."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from sqlalchemy import select

from bot.jobs import ClaimedJob, Delivery, JobQueue
from tests.bot.helpers import wait_for
from training.store import Store
from training.store.models import WebhookJob
from training.store.upserts import now


def _delivery(
    delivery_id: str, repo: str | None, installation: int = 1, event: str = "issues", number: int = 1
) -> Delivery:
    payload: dict = {"action": "opened", "installation": {"id": installation}}
    if repo:
        payload["repository"] = {"full_name": repo}
    if event == "issues":
        payload["issue"] = {"number": number}
    return Delivery(delivery_id, event, payload)


def _accept(queue: JobQueue, delivery: Delivery) -> bool:
    return queue.accept(delivery, json.dumps(delivery.payload).encode(), handled=True)


def test_two_replicas_never_claim_the_same_job(store: Store) -> None:
    replicas = [JobQueue(store, max_attempts=3, retry_seconds=1, lease_seconds=60) for _ in range(2)]
    for i in range(30):
        assert _accept(replicas[0], _delivery(f"d{i}", f"o/r{i}"))
    assert not _accept(replicas[1], _delivery("d0", "o/r0"))  # a redelivery
    claimed: list[str] = []
    lock = threading.Lock()

    def work(queue: JobQueue) -> None:
        while (job := queue.claim()) is not None:
            with lock:
                claimed.append(job.delivery.delivery_id)
            queue.finish(job, "ok")

    threads = [threading.Thread(target=work, args=(q,)) for q in replicas for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(f"d{i}" for i in range(30))


def test_jobs_of_one_repository_run_in_order_after_their_installation(store: Store) -> None:
    queue = JobQueue(store, max_attempts=3, retry_seconds=1, lease_seconds=60)
    _accept(queue, _delivery("install", None, installation=5, event="installation"))
    _accept(queue, _delivery("opened", "o/a", installation=5))
    _accept(queue, _delivery("labeled", "o/a", installation=5))
    _accept(queue, _delivery("other", "o/b", installation=6))
    first, second = queue.claim(), queue.claim()
    assert first is not None and second is not None
    assert {first.delivery.delivery_id, second.delivery.delivery_id} == {"install", "other"}
    assert queue.claim() is None  # o/a waits for the installation
    queue.finish(first if first.delivery.delivery_id == "install" else second, "ok")
    opened = queue.claim()
    assert opened is not None and opened.delivery.delivery_id == "opened"
    assert queue.claim() is None  # "labeled" waits for "opened"
    queue.finish(opened, "ok")
    labeled = queue.claim()
    assert labeled is not None and labeled.delivery.delivery_id == "labeled"


def test_issues_of_one_repository_run_side_by_side_after_repository_wide_events(store: Store) -> None:
    queue = JobQueue(store, max_attempts=3, retry_seconds=1, lease_seconds=60)
    _accept(queue, _delivery("label-deleted", "o/a", event="label"))
    _accept(queue, _delivery("opened-1", "o/a", number=1))
    _accept(queue, _delivery("opened-2", "o/a", number=2))
    _accept(queue, _delivery("labeled-1", "o/a", number=1))
    first = queue.claim()
    assert first is not None and first.delivery.delivery_id == "label-deleted"
    assert queue.claim() is None  # every issue waits for the label catalogue change
    queue.finish(first, "ok")
    one, two = queue.claim(), queue.claim()
    assert one is not None and two is not None
    assert [one.delivery.delivery_id, two.delivery.delivery_id] == ["opened-1", "opened-2"]
    assert queue.claim() is None  # "labeled-1" waits for "opened-1", not for issue 2
    _accept(queue, _delivery("push", "o/a", event="push"))
    queue.finish(one, "ok")
    labeled = queue.claim()
    assert labeled is not None and labeled.delivery.delivery_id == "labeled-1"
    assert queue.claim() is None  # the push waits for every earlier job of the repository
    queue.finish(two, "ok")
    queue.finish(labeled, "ok")
    push = queue.claim()
    assert push is not None and push.delivery.delivery_id == "push"


def test_failures_back_off_then_fail_for_good_and_expired_leases_are_reclaimed(store: Store) -> None:
    queue = JobQueue(store, max_attempts=2, retry_seconds=0.3, lease_seconds=0.3)
    _accept(queue, _delivery("flaky", "o/a"))
    job = queue.claim()
    assert job is not None and job.attempts == 1
    assert queue.fail(job, "GithubException: 502") is False
    assert queue.claim() is None  # backing off
    time.sleep(0.35)
    job = queue.claim()
    assert job is not None and job.attempts == 2
    assert queue.fail(job, "GithubException: 502") is True
    assert queue.status_of("flaky") == "failed" and queue.failed()[0]["error"] == "GithubException: 502"

    _accept(queue, _delivery("crashed", "o/b"))
    assert queue.claim() is not None  # its worker dies without finishing
    assert queue.claim() is None
    time.sleep(0.35)
    again = queue.claim()
    assert again is not None and again.delivery.delivery_id == "crashed" and again.attempts == 2


def test_a_lease_is_renewed_only_by_the_worker_that_still_holds_it(store: Store) -> None:
    queue = JobQueue(store, max_attempts=3, retry_seconds=1, lease_seconds=1.0)
    _accept(queue, _delivery("slow", "o/a"))
    job = queue.claim()
    assert job is not None and job.lease_until is not None
    time.sleep(0.6)
    renewed = queue.renew_lease(job.id, job.lease_until)
    assert renewed is not None and renewed > job.lease_until
    time.sleep(0.6)
    assert queue.claim() is None  # past the first lease, within the renewed one
    assert queue.renew_lease(job.id, job.lease_until) is None  # a lease since replaced

    time.sleep(1.0)  # not renewed again: it runs out and another worker claims the job
    taken = queue.claim()
    assert taken is not None and taken.id == job.id and taken.attempts == 2
    assert queue.renew_lease(job.id, renewed) is None  # the first worker's lease is gone
    assert taken.lease_until is not None
    queue.finish(taken, "done")
    assert queue.renew_lease(taken.id, taken.lease_until) is None  # ended


def test_finished_jobs_are_forgotten_but_failed_ones_and_each_webhooks_latest_stay(store: Store) -> None:
    queue = JobQueue(store, max_attempts=1, retry_seconds=1, lease_seconds=60)
    for name in ("done-1", "hook-old", "hook-latest", "failed", "pending"):
        delivery = _delivery(name, f"o/{name}")
        if name.startswith("hook"):
            delivery = Delivery(name, "issues", delivery.payload, hook_id=500, hook_target="repository")
        _accept(queue, delivery)
    for _ in range(4):  # oldest first: all but "pending"
        job = queue.claim()
        assert job is not None and job.delivery.delivery_id != "pending"
        if job.delivery.delivery_id == "failed":
            queue.fail(job, "GithubException: 403", permanent=True)
        else:
            queue.finish(job, "done")
    assert queue.forget_finished(before=now() - timedelta(days=1)) == 0  # nothing that old
    assert queue.forget_finished(before=now() + timedelta(seconds=1), batch=1) == 2
    kept = {
        name: queue.status_of(name) for name in ("done-1", "hook-old", "hook-latest", "failed", "pending")
    }
    assert kept == {
        "done-1": None,
        "hook-old": None,
        "hook-latest": "done",  # the token-mode bot knows webhook 500 by it
        "failed": "failed",
        "pending": "pending",
    }


def test_an_outage_is_retried_beyond_the_tries_within_its_window_with_capped_waits(store: Store) -> None:
    queue = JobQueue(
        store, max_attempts=1, retry_seconds=0.05, lease_seconds=5, retry_max_seconds=0.1, outage_hours=1
    )
    _accept(queue, _delivery("outage", "o/a"))
    waits = []
    for attempt in range(1, 6):
        time.sleep(0.11)
        job = queue.claim()
        assert job is not None and job.attempts == attempt
        before = now()
        assert queue.fail(job, "GithubException: 503", outage=True) is False  # within the hour
        with store.session() as session:
            due = session.scalar(select(WebhookJob.next_attempt_at).where(WebhookJob.delivery_id == "outage"))
        waits.append(round((due - before).total_seconds(), 2))
    assert waits == [0.05, 0.1, 0.1, 0.1, 0.1], waits  # doubling, capped

    time.sleep(0.11)
    over = JobQueue(store, max_attempts=1, retry_seconds=0.05, lease_seconds=5, outage_hours=0)
    job = over.claim()  # the window has passed: the next failure is the last
    assert job is not None and over.fail(job, "GithubException: 503", outage=True) is True
    _accept(queue, _delivery("broken", "o/b"))
    job = queue.claim()
    assert job is not None and queue.fail(job, "KeyError: 'x'") is True  # no outage: its one try


def test_a_job_past_its_tries_holds_back_only_its_own_issue(store: Store) -> None:
    """Within its regular tries a failing job keeps the order; waiting out an outage beyond them,
    it no longer stops the repository: other issues and repository-wide events go on, while the
    later jobs of its own issue still wait for it."""
    # waits of 1 s and 2 s: long enough that no retry falls due between two lines of the test
    queue = JobQueue(store, max_attempts=2, retry_seconds=1.0, lease_seconds=60, outage_hours=1)
    for delivery in (
        _delivery("push", "o/a", event="push"),
        _delivery("opened-1", "o/a", number=1),
        _delivery("labeled-1", "o/a", number=1),
    ):
        _accept(queue, delivery)
    push = _next(queue, "push")
    assert queue.fail(push, "GithubException: 502", outage=True) is False
    assert queue.claim() is None  # one failure: the issues wait for its retry
    assert _holding(queue) == {"push": "the repository's later jobs"}
    push = _next(queue, "push")
    assert queue.claim() is None  # its second try runs: still in order
    assert queue.fail(push, "GithubException: 502", outage=True) is False  # now past its 2 tries
    assert _holding(queue) == {"push": "nothing"}
    opened = _next(queue, "opened-1")
    assert queue.claim() is None  # "labeled-1" waits for "opened-1"
    assert queue.fail(opened, "GithubException: 503", outage=True) is False
    _accept(queue, _delivery("label-created", "o/a", event="label"))
    _accept(queue, _delivery("opened-2", "o/a", number=2))
    assert queue.claim() is None  # the label event waits for issue 1's retry, issue 2 for it
    assert _holding(queue)["opened-1"].startswith("its issue's later jobs, and the repository's")
    opened = _next(queue, "opened-1")
    assert queue.fail(opened, "GithubException: 503", outage=True) is False  # past its tries too
    assert _holding(queue) == {"push": "nothing", "opened-1": "its issue's later jobs"}
    label = _next(queue, "label-created")
    queue.finish(label, "ok")
    two = _next(queue, "opened-2")
    queue.finish(two, "ok")
    assert queue.status_of("labeled-1") == "pending"

    finished: list[str] = []  # GitHub is back: the two run again, and issue 1 keeps its order
    while len(finished) < 3:
        job = _next(queue)
        queue.finish(job, "ok")
        finished.append(job.delivery.delivery_id)
    assert sorted(finished) == ["labeled-1", "opened-1", "push"]
    assert finished.index("opened-1") < finished.index("labeled-1")


def _holding(queue: JobQueue) -> dict[str, str]:
    """What each job waiting for a retry holds back, as /status lists it."""
    return {str(job["delivery_id"]): str(job["holds_back"]) for job in queue.retrying()}


def _next(queue: JobQueue, delivery_id: str | None = None) -> ClaimedJob:
    """The next job to fall due (``delivery_id``, when given), claimed."""
    job = wait_for(queue.claim, timeout=10, what=f"{delivery_id or 'a job'} to fall due")
    assert delivery_id in (None, job.delivery.delivery_id), job.delivery.delivery_id
    return job
