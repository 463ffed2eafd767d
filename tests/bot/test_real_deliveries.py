"""Every real delivery in ../shared/github-payloads, as GitHub sent it and aimed at the installed
repository, is accepted and ends done or ignored: no event or action the App may receive fails."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import PAYLOADS, example, wait_for

FINAL = {"done", "ignored", "failed"}
# Events that change which repositories are installed: sent last, so the others meet an installation.
INSTALLATION_EVENTS = {"installation", "installation_repositories"}
# Actions that label an unlabeled issue; their issue is sent unlabeled so that the bot labels it.
LABELING = {"opened", "reopened", "edited"}


def _real_deliveries() -> list[tuple[str, str]]:
    found = [
        (path.parent.name, path.name.removesuffix(".payload.json"))
        for path in PAYLOADS.glob("*/*.payload.json")
    ]
    if not found:
        raise AssertionError(f"the shared webhook payloads are missing: {PAYLOADS}")
    return sorted(found, key=lambda item: (item[0] in INSTALLATION_EVENTS, item))


def _aimed_at(bot: BotUnderTest, payload: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The delivery as it would come for the installed repository and a new issue of its own."""
    payload = copy.deepcopy(payload)
    if "repository" in payload:
        payload["repository"] = bot.repository
    if "installation" in payload:
        payload["installation"]["id"] = INSTALLATION
    ours = {"id": bot.repo.id, "node_id": bot.repo.node_id, "name": "hello-world", "full_name": REPO}
    for key in ("repositories", "repositories_added", "repositories_removed"):
        if payload.get(key):
            payload[key] = [ours]
    number = None
    for key in ("issue", "pull_request"):
        if key in payload:
            issue = bot.open_issue()
            number = issue["number"]
            payload[key].update(number=number, title=issue["title"], body=issue["body"])
            if key == "issue" and payload.get("action") in LABELING:
                payload[key]["labels"] = []
    return payload, number


def _settle(bot: BotUnderTest, delivery_id: str) -> str:
    return wait_for(
        lambda: (status := bot.job_status(delivery_id)) in FINAL and status, what=f"{delivery_id} to finish"
    )


def test_every_real_delivery_is_accepted_and_handled(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    outcomes: dict[str, str] = {}
    to_label: list[int] = []
    for event, name in _real_deliveries():
        real = example(event, name)
        installed, number = _aimed_at(bot, real)
        for variant, payload in (("as-sent", real), ("installed", installed)):
            delivery_id = f"{event}.{name}.{variant}"
            response = bot.deliver.send(event, payload, delivery_id=delivery_id)
            assert response.status_code == 202, (delivery_id, response.status_code, response.text)
            outcomes[delivery_id] = _settle(bot, delivery_id)
        if event == "issues" and real["action"] in LABELING and number is not None:
            to_label.append(number)
    failed = {k: v for k, v in outcomes.items() if v == "failed"}
    assert not failed, (failed, bot.services.queue.failed())
    errors = [r.getMessage() for r in caplog.records if r.name.startswith(("bot", "training"))]
    assert not errors, errors
    assert outcomes["issues.opened.as-sent"] == "ignored"  # a repository the App is not installed on
    # opened (twice: with a body and without), reopened and edited: each labeled by the test bundle
    assert len(to_label) == 4, to_label
    for number in to_label:
        assert bot.labels_on(number) == ["bug", "documentation"], number
