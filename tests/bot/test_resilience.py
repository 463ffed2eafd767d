"""GitHub failures are retried; jobs that keep failing stay visible; a model swap needs no restart."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, select, update

from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest, start_bot
from tests.bot.helpers import API_TOKEN, build_bundle, example, wait_for
from tests.fakegithub.server import Fault, secondary_rate_limit
from training.registry import Registry
from training.store.models import Prediction, WebhookJob
from training.store.upserts import now


def test_github_502_then_201_is_retried_and_labels_once(bot: BotUnderTest) -> None:
    issue = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{issue['number']}/labels"
    bot.fake.faults.append(Fault(path=path, method="POST", status=502, times=1))
    bot.send_issue("opened", issue, delivery_id="r-1")
    wait_for(lambda: bot.job_status("r-1") == "done", what="the retried job")
    posts = bot.fake.requests_to(path, "POST")
    assert [p.status for p in posts] == [502, 200]
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]


def test_an_outage_longer_than_a_jobs_tries_is_waited_out_and_labels_once(bot: BotUnderTest) -> None:
    """GitHub down for a while: more failures than ``job_max_attempts`` (3 here), labeled when it is back."""
    issue = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{issue['number']}/labels"
    bot.fake.faults.append(Fault(path=path, method="POST", status=503, times=5))
    bot.send_issue("opened", issue, delivery_id="o-1")
    wait_for(lambda: bot.job_status("o-1") == "done", what="the job to outlast the outage", timeout=30)
    assert [p.status for p in bot.fake.requests_to(path, "POST")] == [503] * 5 + [200]
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]


@pytest.mark.parametrize("bot_settings", [{"job_retry_max_seconds": 0.2}])
def test_a_job_waiting_out_an_outage_shows_why_in_the_status(bot: BotUnderTest) -> None:
    """Pending by its status, but not like a job not yet run: /status lists it with its error."""
    issue = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{issue['number']}/labels"
    bot.fake.faults.append(Fault(path=path, method="POST", status=503, times=10_000))
    bot.send_issue("opened", issue, delivery_id="w-1")

    def status() -> dict:
        return bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()

    def beyond_its_tries() -> dict | None:
        now = status()
        waiting = [j for j in now["retrying_jobs"] if j["attempts"] > bot.settings.job_max_attempts]
        return now if waiting else None

    during = wait_for(beyond_its_tries, what="the job to be retried beyond its tries")
    (job,) = during["retrying_jobs"]
    assert job["delivery_id"] == "w-1" and "503" in job["error"] and job["next_attempt_at"]
    assert job["holds_back"] == "its issue's later jobs"  # past its tries: not the repository
    assert during["failed_jobs"] == [] and during["jobs"].get("failed", 0) == 0
    bot.fake.faults.clear()
    wait_for(lambda: bot.job_status("w-1") == "done", what="the job once GitHub is back")
    assert status()["retrying_jobs"] == []
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]


@pytest.mark.parametrize("bot_settings", [{"job_retry_max_seconds": 0.2}])
def test_an_issue_github_keeps_failing_on_does_not_hold_back_the_repository(bot: BotUnderTest) -> None:
    """Past its tries, a job waiting out an outage holds back only its own issue: a label
    renamed after it is followed, and the next issue is labeled, while it still waits."""
    stuck = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{stuck['number']}/labels"
    bot.fake.faults.append(Fault(path=path, method="POST", status=503, times=10_000))
    bot.send_issue("opened", stuck, delivery_id="stuck-1")

    def past_its_tries() -> bool:
        with bot.services.store.session() as session:
            job = session.scalar(select(WebhookJob).where(WebhookJob.delivery_id == "stuck-1"))
            return job.status == "pending" and job.attempts >= bot.settings.job_max_attempts

    wait_for(past_its_tries, what="the job to fail all its regular tries")

    bot.fake.rename_label(bot.repo, "bug", "type: bug")
    renamed = example("label", "edited")
    renamed.update(
        label=dict(bot.fake.label_json(bot.repo, "type: bug")),
        changes={"name": {"from": "bug"}},
        repository=bot.repository,
        installation={"id": INSTALLATION},
    )
    bot.deliver.send("label", renamed, delivery_id="rename-1")
    later = bot.open_issue()
    bot.send_issue("opened", later, delivery_id="later-1")
    wait_for(lambda: bot.job_status("later-1") == "done", what="the later issue's job")
    assert bot.job_status("rename-1") == "done"
    assert bot.labels_on(later["number"]) == ["documentation", "type: bug"]
    assert bot.job_status("stuck-1") in {"pending", "running"}  # still waiting it out
    assert bot.labels_on(stuck["number"]) == []

    deleted = example("label", "deleted")
    deleted.update(
        label=dict(bot.fake.label_json(bot.repo, "documentation")),
        repository=bot.repository,
        installation={"id": INSTALLATION},
    )
    bot.repo.labels.pop("documentation")
    bot.deliver.send("label", deleted, delivery_id="delete-1")
    wait_for(lambda: bot.job_status("delete-1") == "done", what="the label deletion")
    bot.fake.faults.clear()
    wait_for(lambda: bot.job_status("stuck-1") == "done", what="the stuck job once GitHub is back")
    # decided as "bug" and "documentation": the rename followed, the deleted label not created anew
    assert bot.labels_on(stuck["number"]) == ["type: bug"]
    assert "documentation" not in bot.repo.labels
    with bot.services.store.session() as session:
        prediction = session.scalar(select(Prediction).where(Prediction.delivery_id == "stuck-1"))
        assert prediction is not None and prediction.labels == ["type: bug"]


@pytest.mark.parametrize("bot_settings", [{"job_outage_hours": 0}])  # no outage waited out
def test_a_job_that_keeps_failing_is_kept_as_failed_with_its_error(bot: BotUnderTest) -> None:
    issue = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{issue['number']}/labels"
    bot.fake.faults.append(Fault(path=path, method="POST", status=503, times=100))
    bot.send_issue("opened", issue, delivery_id="f-1")
    wait_for(lambda: bot.job_status("f-1") == "failed", what="the job to fail")
    assert len(bot.fake.requests_to(path, "POST")) == bot.settings.job_max_attempts
    status = bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    assert status["jobs"]["failed"] == 1
    (failed,) = status["failed_jobs"]
    assert failed["delivery_id"] == "f-1" and "503" in failed["error"] and failed["attempts"] == 3
    assert bot.stored_title(issue["number"]) == issue["title"]  # the issue is kept all the same
    # GitHub is healthy again and the maintainer presses "Redeliver": the job runs again, once
    bot.fake.faults.clear()
    assert bot.send_issue("opened", issue, delivery_id="f-1").status_code == 200
    wait_for(lambda: bot.job_status("f-1") == "done", what="the redelivered job")
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]


def test_a_defect_of_ours_is_retried_with_its_traceback_not_called_a_malformed_payload(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A KeyError raised by our own code was reported as "malformed issues payload" and the job
    failed for good at once, with no traceback to find the defect by."""
    labeler = bot.services.handlers.labeler
    label = labeler.label
    raised: list[str] = []

    def defective_once(*args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append("once")
            raise KeyError("scores")
        return label(*args, **kwargs)

    monkeypatch.setattr(labeler, "label", defective_once)
    caplog.set_level(logging.WARNING, logger="bot.worker")
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id="defect-1")
    wait_for(lambda: bot.job_status("defect-1") == "done", what="the job retried after the defect")
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    (record,) = [r for r in caplog.records if "defect-1" in r.getMessage()]
    assert "failed, will retry: KeyError: 'scores'" in record.getMessage()
    assert "malformed" not in record.getMessage()
    assert record.exc_info is not None and "defective_once" in caplog.text  # where it happened


def test_a_write_github_refuses_for_good_fails_at_once_but_a_rate_limit_is_retried(bot: BotUnderTest) -> None:
    archived = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{archived['number']}/labels"
    body = {
        "message": "Repository was archived so is read-only.",
        "documentation_url": "https://docs.github.com",
    }
    bot.fake.faults.append(Fault(path=path, method="POST", status=403, body=body, times=100))
    bot.send_issue("opened", archived, delivery_id="a-1")
    wait_for(lambda: bot.job_status("a-1") == "failed", what="the job to fail")
    assert len(bot.fake.requests_to(path, "POST")) == 1  # not retried: no retry changes the answer
    (failed,) = bot.services.queue.failed()
    assert "403" in failed["error"] and "archived" in failed["error"] and failed["attempts"] == 1
    assert bot.stored_title(archived["number"]) == archived["title"]

    busy = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{busy['number']}/labels"
    bot.fake.faults.append(secondary_rate_limit(path, retry_after=0, method="POST", times=1))
    bot.send_issue("opened", busy, delivery_id="a-2")
    wait_for(lambda: bot.job_status("a-2") == "done", what="the rate-limited job")
    assert [p.status for p in bot.fake.requests_to(path, "POST")] == [403, 200]
    assert bot.labels_on(busy["number"]) == ["bug", "documentation"]


@pytest.mark.parametrize("bot_settings", [{"worker_threads": 2, "job_lease_seconds": 0.6}])
def test_a_job_slower_than_its_lease_keeps_it_and_runs_once(bot: BotUnderTest) -> None:
    """GitHub answering slowly (or a rate limit waited out) may hold a job past its lease: its
    worker renews the lease, so the other worker does not run the job a second time."""
    issue = bot.open_issue()
    path = rf"/repos/{REPO}/issues/{issue['number']}/labels"
    bot.fake.faults.append(
        Fault(path=path, method="POST", status=0, delay=2.5, times=1)
    )  # slow, then answers
    bot.send_issue("opened", issue, delivery_id="slow-1")
    wait_for(lambda: bot.job_status("slow-1") == "done", what="the slow job", timeout=30)
    assert len(bot.fake.requests_to(path, "POST")) == 1
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]


@pytest.mark.parametrize("bot_settings", [{"worker_threads": 1, "job_lease_seconds": 1.0}])
def test_a_worker_outlives_the_store_failing_as_a_job_ends(bot: BotUnderTest) -> None:
    """The labels are written, then the store fails to record it: the job runs again after its
    lease, and the only worker goes on with the next one."""
    failures: list[str] = []

    def down(conn, cursor, statement, parameters, context, executemany):
        sql = statement.lower()
        if sql.startswith("update webhook_jobs") and "returning" not in sql and len(failures) < 2:
            failures.append(sql)  # the job's end goes unrecorded, on its first run and its second
            raise conn.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    first, second = bot.open_issue(), bot.open_issue()
    engine = bot.services.store.engine
    event.listen(engine, "before_cursor_execute", down)
    try:
        bot.send_issue("opened", first, delivery_id="s-1")
        wait_for(lambda: len(failures) == 2, what="the job to run again and the store to fail again")
    finally:
        event.remove(engine, "before_cursor_execute", down)
    wait_for(lambda: bot.job_status("s-1") == "done", what="the job run again after its lease", timeout=30)
    bot.send_issue("opened", second, delivery_id="s-2")
    wait_for(lambda: bot.job_status("s-2") == "done", what="the next job")
    assert bot.labels_on(first["number"]) == ["bug", "documentation"]
    assert bot.labels_on(second["number"]) == ["bug", "documentation"]


def test_the_labels_stamp_and_the_issue_commit_with_the_jobs_end(bot: BotUnderTest) -> None:
    """One commit records the labels written, keeps the issue for training and ends the job:
    when it fails, none of them is recorded, so the retried job writes the labels again (GitHub
    applies them once) and then records all three."""
    failed: list[str] = []

    def down(conn, cursor, statement, parameters, context, executemany):
        values = parameters.values() if isinstance(parameters, dict) else parameters
        ending = statement.lower().startswith("update webhook_jobs") and "done" in list(values)
        if ending and not failed:
            failed.append(statement)
            raise conn.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    issue = bot.open_issue()
    engine = bot.services.store.engine
    event.listen(engine, "before_cursor_execute", down)
    try:
        bot.send_issue("opened", issue, delivery_id="c-1")
        wait_for(lambda: bot.job_status("c-1") == "done", what="the job, retried once")
    finally:
        event.remove(engine, "before_cursor_execute", down)
    assert len(failed) == 1
    path = rf"/repos/{REPO}/issues/{issue['number']}/labels"
    assert [p.status for p in bot.fake.requests_to(path, "POST")] == [200, 200]
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    assert bot.stored_title(issue["number"]) == issue["title"]
    with bot.services.store.session() as session:
        (prediction,) = session.scalars(select(Prediction).where(Prediction.delivery_id == "c-1")).all()
        job = session.scalar(select(WebhookJob).where(WebhookJob.delivery_id == "c-1"))
        assert prediction.applied_at is not None and job is not None and job.attempts == 2


def test_a_delivery_the_store_cannot_take_is_refused_503_and_can_be_redelivered(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    def locked(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_JOBS"):
            # the database driver's own error, as a locked SQLite file or a lost server raises
            raise conn.dialect.loaded_dbapi.OperationalError("database is locked")

    issue = bot.open_issue()
    engine = bot.services.store.engine
    event.listen(engine, "before_cursor_execute", locked)
    try:
        with caplog.at_level(logging.ERROR, logger="bot.app"):
            refused = bot.send_issue("opened", issue, delivery_id="s-1")
    finally:
        event.remove(engine, "before_cursor_execute", locked)
    assert refused.status_code == 503 and "store is unavailable" in refused.json()["error"]
    assert any("s-1" in r.message and "database is locked" in r.message for r in caplog.records)
    assert bot.job_status("s-1") is None  # not acknowledged, so not half-stored either
    metrics = bot.deliver.client.get("/metrics").text
    assert 'issue_labeler_deliveries_total{event="issues",outcome="store_error"} 1.0' in metrics
    # the store is back and GitHub redelivers: labeled once
    assert bot.send_issue("opened", issue, delivery_id="s-1").status_code == 202
    wait_for(lambda: bot.job_status("s-1") == "done", what="the redelivered job")
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    assert len(bot.fake.requests_to(rf"/repos/{REPO}/issues/{issue['number']}/labels", "POST")) == 1


@contextmanager
def _bot_on_a_registry_copy(
    fake_github, app_keys, bundle_registry, database_url, real_issues, tmp_path: Path
) -> Iterator[tuple[BotUnderTest, Path]]:
    """A bot serving a copy of the test registry, which the test may change under it."""
    registry = tmp_path / "registry"
    shutil.copytree(bundle_registry, registry, symlinks=True)
    running = start_bot(fake_github, app_keys, registry, database_url, real_issues)
    try:
        yield running, registry
    finally:
        running.deliver.close()
        running.server.stop()


def test_promoted_bundle_is_hot_swapped(
    fake_github, app_keys, bundle_registry, database_url, real_issues, tmp_path: Path
) -> None:
    with _bot_on_a_registry_copy(
        fake_github, app_keys, bundle_registry, database_url, real_issues, tmp_path
    ) as (running, registry):
        first = running.services.models.versions()[REPO]
        new = build_bundle(
            registry,
            REPO,
            {
                "bug": {"threshold": 1.5, "node_id": "LA_bug"},
                "question": {"threshold": 0.0, "node_id": "LA_q"},
            },
        )
        issue = running.open_issue()
        running.send_issue("opened", issue, delivery_id="swap-1")
        wait_for(lambda: running.job_status("swap-1") == "done", what="the job")
        assert new != first and running.services.models.versions()[REPO] == new
        assert running.labels_on(issue["number"]) == ["question"]
        metrics = running.deliver.client.get("/metrics").text
        assert f'issue_labeler_model_info{{repository="{REPO}",version="{new}"}} 1.0' in metrics


def test_a_corrupted_bundle_put_in_service_is_refused_and_the_previous_one_keeps_labeling(
    fake_github, app_keys, bundle_registry, database_url, real_issues, tmp_path: Path
) -> None:
    with _bot_on_a_registry_copy(
        fake_github, app_keys, bundle_registry, database_url, real_issues, tmp_path
    ) as (running, registry_root):
        registry = Registry(registry_root)
        serving = running.services.models.versions()[REPO]
        broken = "29990101-000000"  # a copy damaged on disk, then switched to by hand
        shutil.copytree(registry.repo_dir(REPO) / serving, registry.repo_dir(REPO) / broken)
        (registry.repo_dir(REPO) / broken / "model.onnx").write_bytes(b"not an onnx graph")
        link = registry.repo_dir(REPO) / ".current.test"
        link.symlink_to(broken)
        os.replace(link, registry.repo_dir(REPO) / "current")

        issue = running.open_issue()
        running.send_issue("opened", issue, delivery_id="corrupt-1")
        wait_for(lambda: running.job_status("corrupt-1") == "done", what="the job")
        assert running.labels_on(issue["number"]) == ["bug", "documentation"]  # the previous bundle
        assert running.services.models.versions()[REPO] == serving
        status = running.deliver.client.get(
            "/status", headers={"Authorization": f"Bearer {API_TOKEN}"}
        ).json()
        error = status["repositories"][REPO]["bundle_error"]
        assert status["repositories"][REPO]["bundle"] == serving and error and "model.onnx" in error
        # still ready: out of the load balancer, every repository's deliveries would be refused
        ready = running.deliver.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["bundles"][REPO] == serving
        assert "model.onnx" in ready.json()["bundles_refused"][REPO]


def test_predictions_wait_for_the_shared_run_lock(bundle_registry: Path) -> None:
    """The bot's bundles share one lock, so one prediction at a time has every onnxruntime
    thread; a prediction started while another holds it waits, then completes."""
    registry = Registry(bundle_registry)
    version = registry.current_version(REPO)
    assert version is not None
    lock = threading.Lock()
    bundle = registry.load(REPO, version, threads=2, run_lock=lock)
    scores: list[np.ndarray] = []
    with lock:
        worker = threading.Thread(target=lambda: scores.append(bundle.probabilities(["Crash in fit"])))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not scores  # held back while another prediction runs
    worker.join(30)
    assert len(scores) == 1 and scores[0].shape == (1, len(bundle.labels))


def test_housekeeping_deletes_jobs_finished_before_the_retention(bot: BotUnderTest) -> None:
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id="old-1")
    wait_for(lambda: bot.job_status("old-1") == "done", what="the job")
    bot.send_issue("edited", issue, delivery_id="recent-1")
    wait_for(lambda: bot.job_status("recent-1") in {"done", "ignored"}, what="the second job")
    with bot.services.store.session() as session:  # the first ended 31 days ago
        session.execute(
            update(WebhookJob)
            .where(WebhookJob.delivery_id == "old-1")
            .values(finished_at=now() - timedelta(days=31))
        )
    assert bot.services.workers.housekeeping is not None
    bot.services.workers.housekeeping()  # what a worker runs every ten minutes
    assert bot.job_status("old-1") is None and bot.job_status("recent-1") is not None
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]  # what it did stays done
