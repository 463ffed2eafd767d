"""``kill -9`` of the server while a job runs: after a restart the job completes, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bot.conftest import APP_ID, BUNDLE_LABELS, INSTALLATION, REPO
from tests.bot.helpers import API_TOKEN, SECRET, Deliverer, example, issue_delivery, repository_json, wait_for
from tests.conftest import REPO_ROOT
from tests.fakegithub import FakeGitHub
from tests.fakegithub.ports import free_port
from tests.fakegithub.server import Fault
from training.store import Store
from training.store.models import WebhookJob


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )

    def alive() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the bot exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(alive, timeout=60, what="the bot to start")
    return process


def test_job_interrupted_by_kill_9_completes_after_restart(
    fake_github: FakeGitHub,
    app_keys: tuple[str, str],
    bundle_registry: Path,
    tmp_path: Path,
    real_issues: list[dict[str, Any]],
) -> None:
    fake_github.app_id, fake_github.app_public_key = APP_ID, app_keys[1]
    repo = fake_github.add_repo(REPO, installation_id=INSTALLATION)
    for name, spec in BUNDLE_LABELS.items():
        fake_github.label_json(repo, name)["node_id"] = spec["node_id"]
    database = tmp_path / "bot.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ISSUE_LABELER_")},
        "ISSUE_LABELER_DATABASE_URL": f"sqlite:///{database}",
        "ISSUE_LABELER_GITHUB_API_URL": fake_github.base_url,
        "ISSUE_LABELER_GITHUB_APP_ID": str(APP_ID),
        "ISSUE_LABELER_GITHUB_PRIVATE_KEY": app_keys[0],
        "ISSUE_LABELER_WEBHOOK_SECRET": SECRET,
        "ISSUE_LABELER_API_TOKEN": API_TOKEN,
        "ISSUE_LABELER_REGISTRY_DIR": str(bundle_registry),
        "ISSUE_LABELER_JOB_LEASE_SECONDS": "2",
        "ISSUE_LABELER_JOB_RETRY_SECONDS": "0.1",
        "ISSUE_LABELER_GITHUB_MAX_RETRIES": "0",
        "HF_HUB_OFFLINE": "1",
    }
    port, log = free_port(), tmp_path / "bot.log"
    process = _start(env, port, log)
    deliver = Deliverer(f"http://127.0.0.1:{port}")
    try:
        installed = example("installation", "created")
        installed["installation"].update(id=INSTALLATION)
        installed["repositories"] = [{"id": repo.id, "node_id": repo.node_id, "full_name": REPO}]
        assert deliver.send("installation", installed, delivery_id="install").status_code == 202
        wait_for(
            lambda: REPO in deliver.client.get("/readyz").json()["bundles"],
            what="the installation to register",
        )
        issue = fake_github.add_issue(
            repo,
            number=1,
            title=real_issues[0]["title"],
            body=real_issues[0]["body"],
            labels=[],
            created_at=datetime.now(UTC),
        )
        path = rf"/repos/{REPO}/issues/1/labels"
        # The labels request hangs long enough for the kill to land while the job is running.
        fake_github.faults.append(Fault(path=path, method="POST", status=502, delay=5.0, times=1))
        payload = issue_delivery(
            "opened", issue, repository_json(REPO, repo.id, repo.node_id), installation_id=INSTALLATION
        )
        assert deliver.send("issues", payload, delivery_id="crash-1").status_code == 202
        wait_for(lambda: fake_github.requests_to(path, "POST"), what="the bot to start labeling")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        store = Store(f"sqlite:///{database}")
        try:
            with store.session() as session:
                job = session.query(WebhookJob).filter_by(delivery_id="crash-1").one()
                assert job.status == "running"  # interrupted mid-job
        finally:
            store.close()
        time.sleep(0.5)
        process = _start(env, port, log)
        wait_for(lambda: repo.issues[1]["labels"], timeout=30, what="the labels after the restart")
        time.sleep(1.0)
        assert sorted(item["name"] for item in repo.issues[1]["labels"]) == ["bug", "documentation"]
        statuses = [r.status for r in fake_github.requests_to(path, "POST")]
        assert statuses[-1] == 200 and statuses.count(200) == 1
    finally:
        deliver.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail(f"the bot did not stop on SIGTERM:\n{log.read_text()}")
