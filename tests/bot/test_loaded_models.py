"""``max_loaded_bundles``: the bot labels every installed repository while only the models of
those labeled most recently stay loaded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.bot.conftest import BUNDLE_LABELS, INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import API_TOKEN, example, issue_delivery, registry_copy, repository_json, wait_for

OTHER = "octo-org/other-repo"


@pytest.fixture
def bundle_registry(bundle_registry: Path, tmp_path: Path) -> Path:
    """The bot's registry, where OTHER has REPO's bundle too."""
    return registry_copy(bundle_registry, tmp_path / "registry", REPO, OTHER).root


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    return {"max_loaded_bundles": 1}


def _status(bot: BotUnderTest) -> dict[str, Any]:
    answer = bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"})
    return {
        repo: (state["bundle"], state["model_loaded"])
        for repo, state in answer.json()["repositories"].items()
    }


def test_every_repository_is_labeled_with_one_model_loaded(bot: BotUnderTest) -> None:
    other = bot.fake.add_repo(OTHER, installation_id=INSTALLATION)
    for name in BUNDLE_LABELS:
        bot.fake.label_json(other, name)
    added = example("installation_repositories", "added")
    added["installation"].update(id=INSTALLATION, account={"login": "octo-org"})
    added["repositories_added"] = [{"id": other.id, "node_id": other.node_id, "full_name": OTHER}]
    added["repositories_removed"] = []
    bot.deliver.send("installation_repositories", added, delivery_id="add-other")
    wait_for(lambda: bot.job_status("add-other") == "done", what="the repository to be added")
    version = bot.services.models.versions()[REPO]
    # installed beyond the bound: its bundle verified and in service, its model not loaded yet
    assert _status(bot) == {REPO: (version, True), OTHER: (version, False)}

    source = bot.issues[0]
    issue = bot.fake.add_issue(
        other, number=1, title=source["title"], body=source["body"], labels=[], created_at=datetime.now(UTC)
    )
    payload = issue_delivery(
        "opened", issue, repository_json(OTHER, other.id, other.node_id), installation_id=INSTALLATION
    )
    bot.deliver.send("issues", payload, delivery_id="other-1")
    wait_for(lambda: bot.job_status("other-1") == "done", what="OTHER's issue")
    assert sorted(item["name"] for item in other.issues[1]["labels"]) == ["bug", "documentation"]
    assert _status(bot) == {REPO: (version, False), OTHER: (version, True)}

    issue = bot.open_issue()  # REPO's model loads again and OTHER's is unloaded
    bot.send_issue("opened", issue, delivery_id="repo-1")
    wait_for(lambda: bot.job_status("repo-1") == "done", what="REPO's issue")
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    assert _status(bot) == {REPO: (version, True), OTHER: (version, False)}
    assert "issue_labeler_models_loaded 1.0" in bot.deliver.client.get("/metrics").text
