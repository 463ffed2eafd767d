"""The App uninstalled from a repository, or the repository deleted on GitHub: the bot stops
acting there at once; what it stored is kept for a reinstall, or deleted with
``forget_uninstalled``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import example, wait_for
from training.store.models import Feedback, Issue, Prediction, Repository, WebhookJob


@pytest.fixture
def bundle_registry(bundle_registry: Path, tmp_path: Path) -> Path:
    """The bot's registry, a copy of this test's own: forgetting a repository deletes its folder."""
    return Path(shutil.copytree(bundle_registry, tmp_path / "registry", symlinks=True))


@pytest.fixture(params=[False, True], ids=["kept", "forget_uninstalled"])
def bot_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"forget_uninstalled": request.param}


def _uninstall(bot: BotUnderTest, event: str) -> str:
    installation = {"id": INSTALLATION, "account": {"login": "octo-org"}}
    repository = {"id": bot.repo.id, "node_id": bot.repo.node_id, "full_name": REPO}
    if event == "installation":
        payload = example("installation", "deleted")
        payload.update(installation=installation, repositories=[repository])
    elif event == "repository":  # the repository deleted on GitHub
        payload = {"action": "deleted", "repository": bot.repository, "installation": installation}
        payload["sender"] = example("issues", "opened")["sender"]
    else:
        payload = example("installation_repositories", "removed")
        payload.update(installation=installation, repositories_added=[], repositories_removed=[repository])
    bot.deliver.send(event, payload, delivery_id="uninstall")
    wait_for(lambda: bot.job_status("uninstall") == "done", what="the uninstall job")
    with bot.services.store.session() as session:
        return str(session.scalar(select(WebhookJob.outcome).where(WebhookJob.delivery_id == "uninstall")))


def _count(bot: BotUnderTest, table: type, **where: object) -> int:
    with bot.services.store.session() as session:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(getattr(table, column) == value)
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize("event", ["installation", "installation_repositories", "repository"])
def test_uninstalling_stops_labeling_and_keeps_or_forgets_what_was_stored(
    bot: BotUnderTest, event: str
) -> None:
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id="before")
    wait_for(lambda: bot.job_status("before") == "done", what="the first issue")
    removed = dict(bot.fake.label_json(bot.repo, "bug"))
    bot.send_issue("unlabeled", issue, label=removed, delivery_id="correction")  # feedback
    wait_for(lambda: bot.job_status("correction") == "done", what="the correction")
    assert _count(bot, Prediction) == 1 and _count(bot, Feedback) == 1 and _count(bot, Issue) == 1
    repo_folder = bot.settings.registry_dir / REPO.replace("/", "__")
    assert (repo_folder / "current").is_symlink()

    outcome = _uninstall(bot, event)

    later = bot.open_issue()
    bot.send_issue("opened", later, delivery_id="after")
    wait_for(lambda: bot.job_status("after") == "ignored", what="the issue after uninstalling")
    assert bot.labels_on(later["number"]) == []
    forgotten = bot.settings.forget_uninstalled
    assert "stopped serving" in outcome or "removed ['octo-org/hello-world']" in outcome, outcome
    assert ("deleted their stored data and models" in outcome) == forgotten, outcome
    if forgotten:
        assert _count(bot, Repository, full_name=REPO) == 0
        assert _count(bot, Issue) == _count(bot, Prediction) == _count(bot, Feedback) == 0
        # the deliveries held issue text: the issue and label ones are gone
        with bot.services.store.session() as session:
            left = session.scalars(select(WebhookJob.delivery_id).where(WebhookJob.repository == REPO)).all()
        assert set(left) <= {"uninstall", "after"} and "after" in left, left
        assert not repo_folder.exists()
        assert REPO not in bot.services.models.versions()
    else:
        assert _count(bot, Issue) == 1 and _count(bot, Prediction) == 1 and _count(bot, Feedback) == 1
        assert (repo_folder / "current").is_symlink()
