"""Issues that leave a repository (deleted, or transferred to another) leave its training data."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from tests.bot.conftest import INSTALLATION, BotUnderTest
from tests.bot.helpers import example, issue_delivery, repository_json, wait_for
from training.store.models import Issue, LabelEvent, Repository, WebhookJob


def _outcome(bot: BotUnderTest, delivery_id: str) -> str:
    wait_for(lambda: bot.job_status(delivery_id) == "done", what=delivery_id)
    with bot.services.store.session() as session:
        return str(session.scalar(select(WebhookJob.outcome).where(WebhookJob.delivery_id == delivery_id)))


def _stored(bot: BotUnderTest, repo: str, number: int) -> str | None:
    with bot.services.store.session() as session:
        return session.scalar(
            select(Issue.title).join(Repository).where(Repository.full_name == repo, Issue.number == number)
        )


def _labeled_and_stored(bot: BotUnderTest, delivery_id: str) -> dict:
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id=delivery_id)
    assert _outcome(bot, delivery_id).startswith("applied")
    assert _stored(bot, bot.repo.full_name, issue["number"]) == issue["title"]
    return issue


def test_deleted_issue_is_removed_with_its_label_events(bot: BotUnderTest) -> None:
    issue = _labeled_and_stored(bot, "open-1")
    bot.send_issue(
        "labeled", issue, label=dict(bot.fake.label_json(bot.repo, "enhancement")), delivery_id="lab-1"
    )
    _outcome(bot, "lab-1")
    with bot.services.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LabelEvent)) > 0
    deleted = example("issues", "deleted")
    deleted.update(issue=dict(deleted["issue"], number=issue["number"]), repository=bot.repository)
    deleted["installation"]["id"] = INSTALLATION
    bot.deliver.send("issues", deleted, delivery_id="del-1")
    assert _outcome(bot, "del-1") == "deleted: removed from the store"
    assert _stored(bot, bot.repo.full_name, issue["number"]) is None
    with bot.services.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LabelEvent)) == 0
    bot.deliver.send("issues", deleted, delivery_id="del-2")  # GitHub may send it again
    assert _outcome(bot, "del-2") == "deleted: was not in the store"


def test_transferred_issue_moves_to_its_new_repository_when_served_there(bot: BotUnderTest) -> None:
    issue = _labeled_and_stored(bot, "open-2")
    other = bot.fake.add_repo("octo-org/other", installation_id=INSTALLATION)
    added = example("installation_repositories", "added")
    added.update(installation={"id": INSTALLATION, "account": {"login": "octo-org"}})
    added["repositories_added"] = [{"id": other.id, "node_id": other.node_id, "full_name": other.full_name}]
    bot.deliver.send("installation_repositories", added, delivery_id="ir-2")
    _outcome(bot, "ir-2")
    moved = bot.fake.add_issue(
        other, number=12, title=issue["title"], body=issue["body"], labels=[], created_at=datetime.now(UTC)
    )
    transferred = example("issues", "transferred")
    transferred.update(
        issue=issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION)["issue"],
        repository=bot.repository,
        installation={"id": INSTALLATION},
    )
    transferred["changes"]["new_issue"] = moved
    transferred["changes"]["new_repository"] = repository_json(other.full_name, other.id, other.node_id)
    bot.deliver.send("issues", transferred, delivery_id="tr-1")
    assert _outcome(bot, "tr-1") == "transferred: removed from the store; stored as octo-org/other#12"
    assert _stored(bot, bot.repo.full_name, issue["number"]) is None
    assert _stored(bot, other.full_name, 12) == issue["title"]

    elsewhere = _labeled_and_stored(bot, "open-3")
    transferred["issue"] = issue_delivery("opened", elsewhere, bot.repository, installation_id=INSTALLATION)[
        "issue"
    ]
    transferred["changes"]["new_repository"] = repository_json("someone/else", 999, "R_else")
    transferred["changes"]["new_issue"] = dict(
        moved,
        number=3,
        url=f"{bot.fake.base_url}/repos/someone/else/issues/3",
        repository_url=f"{bot.fake.base_url}/repos/someone/else",
        html_url="https://github.com/someone/else/issues/3",
    )
    bot.deliver.send("issues", transferred, delivery_id="tr-2")
    assert _outcome(bot, "tr-2") == "transferred: removed from the store; someone/else is not served here"
    assert _stored(bot, bot.repo.full_name, elsewhere["number"]) is None
