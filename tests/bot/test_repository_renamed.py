"""A repository renamed or transferred on GitHub keeps its id: labeling, bundles and training data
follow it to the new name instead of stopping there."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import example, wait_for
from training.store.models import Issue, Repository

NEW_NAME = "octo-org/renamed-world"


@pytest.fixture
def bundle_registry(bundle_registry: Path, tmp_path: Path) -> Path:
    """The bot's registry, a copy of this test's own: following a rename moves its folders."""
    return Path(shutil.copytree(bundle_registry, tmp_path / "registry", symlinks=True))


def _labels_new_issue(bot: BotUnderTest, delivery_id: str) -> dict[str, Any]:
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id=delivery_id)  # the delivery names the repository now
    wait_for(lambda: bot.job_status(delivery_id) == "done", what=delivery_id)
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    return issue


def test_labeling_bundles_and_history_follow_a_renamed_repository(bot: BotUnderTest) -> None:
    before = _labels_new_issue(bot, "before")
    bot.fake.rename_repo(bot.repo, NEW_NAME)
    after = _labels_new_issue(bot, "after")

    with bot.services.store.session() as session:
        rows = session.execute(select(Repository.full_name, Repository.github_id)).all()
        assert [tuple(row) for row in rows] == [(NEW_NAME, bot.repo.id)]
        numbers = session.scalars(select(Issue.number).join(Repository)).all()
        assert sorted(numbers) == [before["number"], after["number"]]  # the history came along
    registry = bot.settings.registry_dir
    assert (registry / NEW_NAME.replace("/", "__") / "current").is_symlink()
    assert not (registry / REPO.replace("/", "__")).exists()
    assert list(bot.services.models.versions()) == [NEW_NAME]


def test_an_installation_event_under_the_new_name_moves_the_bundles_too(bot: BotUnderTest) -> None:
    bot.fake.rename_repo(bot.repo, NEW_NAME)
    added = example("installation_repositories", "added")
    added.update(installation={"id": INSTALLATION, "account": {"login": "octo-org"}})
    added["repositories_added"] = [{"id": bot.repo.id, "node_id": bot.repo.node_id, "full_name": NEW_NAME}]
    bot.deliver.send("installation_repositories", added, delivery_id="ir-renamed")
    wait_for(lambda: bot.job_status("ir-renamed") == "done", what="the installation job")
    assert (bot.settings.registry_dir / NEW_NAME.replace("/", "__") / "current").is_symlink()
    _labels_new_issue(bot, "after")


def test_a_repository_event_moves_the_bundles_before_any_issue_arrives(bot: BotUnderTest) -> None:
    bot.fake.rename_repo(bot.repo, NEW_NAME)
    renamed = {
        "action": "renamed",
        "changes": {"repository": {"name": {"from": REPO.split("/")[1]}}},
        "repository": bot.repository,  # under its new name
        "installation": {"id": INSTALLATION},
        "sender": example("issues", "opened")["sender"],
    }
    bot.deliver.send("repository", renamed, delivery_id="repo-renamed")
    wait_for(lambda: bot.job_status("repo-renamed") == "done", what="the repository job")
    assert (bot.settings.registry_dir / NEW_NAME.replace("/", "__") / "current").is_symlink()
    assert not (bot.settings.registry_dir / REPO.replace("/", "__")).exists()
    with bot.services.store.session() as session:
        assert session.scalars(select(Repository.full_name)).all() == [NEW_NAME]
    _labels_new_issue(bot, "after")
