"""Fixtures of the bot tests: a fake GitHub with the App installed, a bundle, the server over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.services import BotServices
from tests.bot.helpers import (
    API_TOKEN,
    SECRET,
    Deliverer,
    ServerThread,
    build_bundle,
    example,
    issue_delivery,
    repository_json,
    wait_for,
)
from tests.conftest import SHARED_DATA, make_settings
from tests.fakegithub import FakeGitHub
from tests.fakegithub.app_keys import generate_app_keys
from tests.fakegithub.server import FakeRepo
from training.settings import Settings
from training.store.models import Issue, Repository

REPO = "octo-org/hello-world"
INSTALLATION = 77
APP_ID = 4242
# What the test bundle does: bug and documentation always apply, enhancement never scores high
# enough, question is marked unreliable.
BUNDLE_LABELS: dict[str, dict[str, Any]] = {
    "bug": {"threshold": 0.0, "node_id": "LA_bug"},
    "documentation": {"threshold": 0.0, "node_id": "LA_docs"},
    "enhancement": {"threshold": 1.5, "node_id": "LA_enh"},
    "question": {"threshold": 0.0, "reliable": False, "node_id": "LA_q"},
}


@pytest.fixture(scope="session")
def app_keys() -> tuple[str, str]:
    return generate_app_keys()


@pytest.fixture(scope="session")
def bundle_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_bundle(root, REPO, BUNDLE_LABELS)
    return root


@pytest.fixture(scope="session")
def real_issues(shared_data: Path) -> list[dict[str, Any]]:
    """Real scikit-learn issues (title and body) to open in the fake repository."""
    rows = []
    with (SHARED_DATA / "sklearn_surya" / "issues.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("body"):
                rows.append(row)
            if len(rows) == 40:
                break
    return rows


@dataclass
class BotUnderTest:
    fake: FakeGitHub
    repo: FakeRepo
    settings: Settings
    services: BotServices
    server: ServerThread
    deliver: Deliverer
    issues: list[dict[str, Any]]
    _next_number: int = 1

    @property
    def repository(self) -> dict[str, Any]:
        return repository_json(self.repo.full_name, self.repo.id, self.repo.node_id)

    def open_issue(self, labels: list[str] | None = None, **kw: Any) -> dict[str, Any]:
        """An issue in the fake GitHub with a real issue's text, as the REST API shows it."""
        source = self.issues[self._next_number % len(self.issues)]
        number = self._next_number
        self._next_number += 1
        return self.fake.add_issue(
            self.repo,
            number=number,
            title=kw.pop("title", source["title"]),
            body=kw.pop("body", source["body"]),
            labels=labels or [],
            created_at=datetime.now(UTC),
            **kw,
        )

    def send_issue(self, action: str, issue: dict[str, Any], **kw: Any):
        delivery_id = kw.pop("delivery_id", None)
        payload = issue_delivery(action, issue, self.repository, installation_id=INSTALLATION, **kw)
        return self.deliver.send("issues", payload, delivery_id=delivery_id)

    def labels_on(self, number: int) -> list[str]:
        return sorted(item["name"] for item in self.repo.issues[number]["labels"])

    def job_status(self, delivery_id: str) -> str | None:
        return self.services.queue.status_of(delivery_id)

    def stored_title(self, number: int) -> str | None:
        """The issue's title as the store keeps it for training; None when it is not stored."""
        with self.services.store.session() as session:
            return session.scalar(
                select(Issue.title)
                .join(Repository, Repository.id == Issue.repository_id)
                .where(Repository.full_name == self.repo.full_name, Issue.number == number)
            )


def start_bot(
    fake: FakeGitHub,
    app_keys: tuple[str, str],
    registry: Path,
    database_url: str,
    issues: list[dict[str, Any]],
    **overrides: Any,
) -> BotUnderTest:
    fake.app_id = APP_ID
    fake.app_public_key = app_keys[1]
    repo = fake.repos.get(REPO) or fake.add_repo(REPO, installation_id=INSTALLATION)
    for name, spec in BUNDLE_LABELS.items():
        fake.label_json(repo, name)["node_id"] = spec["node_id"]
    settings = make_settings(
        **{
            "database_url": database_url,
            "github_api_url": fake.base_url,
            "github_token": None,
            "github_app_id": APP_ID,
            "github_private_key": app_keys[0],
            "webhook_secret": SECRET,
            "api_token": API_TOKEN,
            "registry_dir": registry,
            "job_retry_seconds": 0.05,
            "job_max_attempts": 3,
            "bundle_check_seconds": 0.0,
            "repo_config_ttl_seconds": 60.0,
            "github_max_retries": 0,
            **overrides,
        }
    )
    services = BotServices.build(settings)
    server = ServerThread(create_app(services)).start()
    bot = BotUnderTest(fake, repo, settings, services, server, Deliverer(server.url), issues)
    installation = {"id": INSTALLATION, "account": {"login": REPO.split("/")[0]}}
    payload = example("installation", "created")
    payload["installation"].update(installation)
    payload["repositories"] = [
        {"id": repo.id, "node_id": repo.node_id, "name": "hello-world", "full_name": REPO}
    ]
    response = bot.deliver.send("installation", payload, delivery_id="install-1")
    assert response.status_code == 202, response.text
    wait_for(lambda: bot.job_status("install-1") == "done", what="the installation to be registered")
    return bot


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    """Settings of the bot fixture beyond the tests' defaults; a test module overrides this."""
    return {}


@pytest.fixture
def bot(
    fake_github: FakeGitHub,
    app_keys: tuple[str, str],
    bundle_registry: Path,
    database_url: str,
    real_issues: list[dict[str, Any]],
    bot_settings: dict[str, Any],
) -> Iterator[BotUnderTest]:
    running = start_bot(fake_github, app_keys, bundle_registry, database_url, real_issues, **bot_settings)
    try:
        yield running
    finally:
        running.deliver.close()
        running.server.stop()
