"""A repository renamed or transferred on GitHub keeps its id: labeling, bundles and training data
follow it to the new name instead of stopping there."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.bot.conftest import INSTALLATION, REPO, start_bot
from tests.bot.helpers import example, wait_for
from tests.fakegithub import FakeGitHub
from training.store.models import Issue, Repository

NEW_NAME = "octo-org/renamed-world"


def test_labeling_bundles_and_history_follow_a_renamed_repository(
    fake_github: FakeGitHub,
    app_keys: tuple[str, str],
    bundle_registry: Path,
    database_url: str,
    real_issues: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(bundle_registry, registry, symlinks=True)  # this test moves its folders
    bot = start_bot(fake_github, app_keys, registry, database_url, real_issues)
    try:
        before = bot.open_issue()
        bot.send_issue("opened", before, delivery_id="before")
        wait_for(lambda: bot.job_status("before") == "done", what="the first job")
        assert bot.labels_on(before["number"]) == ["bug", "documentation"]

        fake_github.rename_repo(bot.repo, NEW_NAME)
        after = bot.open_issue()
        bot.send_issue("opened", after, delivery_id="after")  # the delivery names the new repository
        wait_for(lambda: bot.job_status("after") == "done", what="the job after the rename")
        assert bot.labels_on(after["number"]) == ["bug", "documentation"]

        with bot.services.store.session() as session:
            rows = session.execute(select(Repository.full_name, Repository.github_id)).all()
            assert [tuple(row) for row in rows] == [(NEW_NAME, bot.repo.id)]
            numbers = session.scalars(select(Issue.number).join(Repository)).all()
            assert sorted(numbers) == [before["number"], after["number"]]  # the history came along
        assert (registry / NEW_NAME.replace("/", "__") / "current").is_symlink()
        assert not (registry / REPO.replace("/", "__")).exists()
        assert list(bot.services.models.versions()) == [NEW_NAME]
    finally:
        bot.deliver.close()
        bot.server.stop()


def test_an_installation_event_under_the_new_name_moves_the_bundles_too(
    fake_github: FakeGitHub,
    app_keys: tuple[str, str],
    bundle_registry: Path,
    database_url: str,
    real_issues: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(bundle_registry, registry, symlinks=True)
    bot = start_bot(fake_github, app_keys, registry, database_url, real_issues)
    try:
        fake_github.rename_repo(bot.repo, NEW_NAME)
        added = example("installation_repositories", "added")
        added.update(installation={"id": INSTALLATION, "account": {"login": "octo-org"}})
        added["repositories_added"] = [
            {"id": bot.repo.id, "node_id": bot.repo.node_id, "full_name": NEW_NAME}
        ]
        bot.deliver.send("installation_repositories", added, delivery_id="ir-renamed")
        wait_for(lambda: bot.job_status("ir-renamed") == "done", what="the installation job")
        assert (registry / NEW_NAME.replace("/", "__") / "current").is_symlink()
        issue = bot.open_issue()
        bot.send_issue("opened", issue, delivery_id="after")
        wait_for(lambda: bot.job_status("after") == "done", what="the job after the rename")
        assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    finally:
        bot.deliver.close()
        bot.server.stop()
