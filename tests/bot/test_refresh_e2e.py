"""Retraining end to end with real refresh processes (tiny training on a real slice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.retraining import STOPPED, TIMED_OUT, RefreshLauncher, RefreshRequest, Retrainer, settings_env
from bot.served_models import ServedModels
from tests.bot.conftest import REPO, start_bot
from tests.bot.helpers import API_TOKEN, slice_as, wait_for
from tests.conftest import make_settings
from tests.fakegithub import FakeGitHub
from tests.fakegithub.server import Fault
from training.refresh_runs import RefreshRuns
from training.registry import Registry
from training.settings import Settings
from training.store import Store

TINY = {
    "max_length": 32,
    "mlm_max_length": 32,
    "mlm_max_steps": 3,
    "mlm_head_warmup_steps": 2,
    "mlm_batch_size": 8,
    "max_steps": 10,
    "batch_size": 8,
    "torch_threads": 1,
}


def _config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "train.yml"
    path.write_text(yaml.safe_dump(TINY | extra))
    return path


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_scheduler_replicas_train_once_and_a_worse_model_is_not_promoted(
    database_url: str, tmp_path: Path, shared_data: Path
) -> None:
    repo = "scikit-learn/scikit-learn"
    config = _config(tmp_path)
    settings = make_settings(
        database_url=database_url,
        registry_dir=tmp_path / "models",
        min_label_examples=5,
        exclude_template_labels=False,
        refresh_schedule="0 3 * * 0",
        refresh_config=config,
        refresh_nice=5,
    )
    launcher = RefreshLauncher(settings, extra_args=("--from-jsonl", str(slice_as(tmp_path, repo))))
    stores = [Store(database_url), Store(database_url)]
    try:
        replicas = [
            Retrainer(
                settings,
                store,
                ServedModels(Registry(settings.registry_dir), threads=1, check_seconds=0),
                lambda: [repo],
                launcher,
            )
            for store in stores
        ]
        results: list[list[int]] = []
        threads = [threading.Thread(target=lambda r=r: results.append(r.scheduled())) for r in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        assert sorted(code for codes in results for code in codes) in ([0, 0], [0, 3])
        history = RefreshRuns(stores[0], lock_hours=1).history(repo)
        assert [(row["trigger"], row["status"]) for row in history] == [("schedule", "promoted")]
        first = Registry(settings.registry_dir).current_version(repo)
        assert first == history[0]["version"]

        # the same occasion again (a restart, a late replica): nothing runs
        assert replicas[0].scheduled() == [0]
        assert len(RefreshRuns(stores[0], lock_hours=1).history(repo)) == 1

        # an on-demand refresh of a model that applies nothing: trained, kept out of service
        config.write_text(yaml.safe_dump(TINY | {"min_validation_support": 10**6}))
        replicas[1].on_demand(repo, "a worse model").join(600)
        latest = RefreshRuns(stores[0], lock_hours=1).history(repo)[0]
        assert latest["trigger"] == "api" and latest["status"] == "rejected"
        assert "not promoted" in str(latest["outcome"])
        assert Registry(settings.registry_dir).current_version(repo) == first
    finally:
        for store in stores:
            store.close()


def test_the_server_keeps_answering_during_a_refresh(
    fake_github,
    app_keys,
    bundle_registry,
    database_url,
    real_issues,
    tmp_path: Path,
) -> None:
    import shutil

    registry = tmp_path / "registry"
    shutil.copytree(bundle_registry, registry, symlinks=True)
    running = start_bot(
        fake_github,
        app_keys,
        registry,
        database_url,
        real_issues,
        min_label_examples=5,
        exclude_template_labels=False,
        refresh_config=_config(tmp_path),
    )
    running.services.retrainer.launch = RefreshLauncher(
        running.settings, extra_args=("--from-jsonl", str(slice_as(tmp_path, REPO)), "--force")
    )
    before = running.services.models.versions()[REPO]
    try:
        started = running.deliver.client.post(
            "/admin/refresh", json={"repository": REPO}, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert started.status_code == 202 and started.json()["started"] == [REPO]
        assert running.deliver.client.post("/admin/refresh", json={"repository": REPO}).status_code == 401

        answered, deadline = 0, time.monotonic() + 600
        wait_for(lambda: running.services.retrainer.refreshing, what="the refresh to start")
        while running.services.retrainer.refreshing and time.monotonic() < deadline:
            issue = running.open_issue()
            delivery_id = f"during-{answered}"
            assert running.send_issue("opened", issue, delivery_id=delivery_id).status_code == 202
            wait_for(lambda: running.job_status(delivery_id) == "done", what="a job during the refresh")  # noqa: B023
            answered += 1
            time.sleep(0.5)
        assert answered >= 2
        status = running.deliver.client.get(
            "/status", headers={"Authorization": f"Bearer {API_TOKEN}"}
        ).json()
        (run,) = status["repositories"][REPO]["refreshes"]
        assert run["trigger"] == "api" and run["status"] == "promoted"  # forced in, over the test bundle
        assert running.services.models.versions()[REPO] == run["version"] != before
        metrics = running.deliver.client.get("/metrics").text
        assert f'issue_labeler_refreshes_total{{repository="{REPO}",status="promoted"}} 1.0' in metrics
    finally:
        running.deliver.close()
        running.server.stop()


HANGS = "octo-org/hangs"


def _hanging_refresh_settings(fake_github: FakeGitHub, tmp_path: Path, **overrides: Any) -> Settings:
    """A refresh that hangs once it holds the lock: GitHub never answers its fetch."""
    fake_github.add_repo(HANGS)
    fake_github.faults.append(Fault(path=rf"/repos/{HANGS}/issues", status=0, delay=300, times=100))
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        registry_dir=tmp_path / "models",
        github_api_url=fake_github.base_url,
        github_timeout=600,
        refresh_config=_config(tmp_path),
        **overrides,
    )


def _stopped_and_released(settings: Settings, tmp_path: Path) -> None:
    store = Store(settings.database_url)
    try:
        runs = RefreshRuns(store, lock_hours=1)
        (run,) = runs.history(HANGS)
        assert run["status"] == "failed" and "SIGTERM" in str(run["outcome"]), run
        assert runs.start(HANGS, trigger="api", reason="the next one") is not None  # the lock is free
    finally:
        store.close()
    assert not list((tmp_path / "models").glob("*/.work-*"))


def test_a_refresh_past_its_time_limit_is_stopped_recorded_and_frees_the_lock(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    """A refresh that hangs must not hold the repository for ever: the bot stops it at
    ISSUE_LABELER_REFRESH_TIMEOUT_HOURS, and the run says so."""
    settings = _hanging_refresh_settings(fake_github, tmp_path, refresh_timeout_hours=20 / 3600)
    started = time.monotonic()
    code = RefreshLauncher(settings)(RefreshRequest(HANGS, "api", "by hand"))
    assert code == TIMED_OUT and time.monotonic() - started < 60  # stopped by SIGTERM, not killed
    _stopped_and_released(settings, tmp_path)


def test_the_bot_stopping_stops_its_refresh_which_records_it(fake_github: FakeGitHub, tmp_path: Path) -> None:
    """A container's end would kill the refresh unrecorded, its lock held for an hour."""
    settings = _hanging_refresh_settings(fake_github, tmp_path)
    store = Store(settings.database_url)
    models = ServedModels(Registry(settings.registry_dir), threads=1, check_seconds=0)
    retrainer = Retrainer(settings, store, models, lambda: [HANGS], RefreshLauncher(settings))
    try:
        running = retrainer.on_demand(HANGS, "by hand")
        runs = RefreshRuns(store, lock_hours=1)
        wait_for(lambda: runs.history(HANGS), what="the refresh to take its lock", timeout=60)
        retrainer.stop()
        running.join(30)
        assert not running.is_alive()
        assert retrainer.launch(RefreshRequest(HANGS, "api", "after the stop")) == STOPPED  # none starts
    finally:
        store.close()
    _stopped_and_released(settings, tmp_path)


def test_a_refresh_interrupted_by_hand_says_so_in_one_line(fake_github: FakeGitHub, tmp_path: Path) -> None:
    """Ctrl-C at a refresh run by hand: recorded failed, lock freed, no traceback, status 130."""
    settings = _hanging_refresh_settings(fake_github, tmp_path)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ISSUE_LABELER_")}
    command = [sys.executable, "-m", "training.refresh", "--repo", HANGS]
    # A shell's background job ignores SIGINT, and an ignored signal stays ignored in the child:
    # handled here for the launch, it starts as Ctrl-C leaves it in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        child = subprocess.Popen(
            command, env=environment | settings_env(settings), stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    store = Store(settings.database_url)
    try:
        wait_for(lambda: RefreshRuns(store, lock_hours=1).history(HANGS), what="the lock", timeout=60)
    finally:
        store.close()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "interrupted, the bundle in service is unchanged" in stderr and "Traceback" not in stderr
    store = Store(settings.database_url)
    try:
        (run,) = RefreshRuns(store, lock_hours=1).history(HANGS)
        assert run["status"] == "failed" and run["outcome"] == "KeyboardInterrupt"
    finally:
        store.close()
