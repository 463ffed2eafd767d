"""Maintainers' label changes become feedback; a label a human removed is never put back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bot import feedback
from tests.bot.conftest import REPO, BotUnderTest
from tests.bot.helpers import API_TOKEN, wait_for
from training.records import IssueRecord, LabelRecord
from training.store import Store
from training.store.models import Feedback, LabelEvent, Prediction
from training.store.upserts import LabelCatalogue, ensure_repository, upsert_issue


def _labeled_issue(bot: BotUnderTest, delivery_id: str) -> dict:
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id=delivery_id)
    wait_for(lambda: bot.job_status(delivery_id) == "done", what="the labeling job")
    # GitHub then reports the bot's own labeling; that is not feedback
    bot.send_issue(
        "labeled",
        bot.repo.issues[issue["number"]],
        sender_type="Bot",
        sender_login="issue-labeler[bot]",
        label=dict(bot.fake.label_json(bot.repo, "bug")),
        delivery_id=f"{delivery_id}-echo",
    )
    wait_for(lambda: bot.job_status(f"{delivery_id}-echo") == "done", what="the echo job")
    return bot.repo.issues[issue["number"]]


def _feedback(bot: BotUnderTest) -> list[tuple[int, str, str]]:
    with bot.services.store.session() as session:
        rows = session.scalars(select(Feedback).order_by(Feedback.id)).all()
        return [(row.issue_number, row.label_name, row.kind) for row in rows]


def test_human_removing_a_bot_label_is_a_false_positive_and_it_is_not_readded(bot: BotUnderTest) -> None:
    issue = _labeled_issue(bot, "fb-open")
    assert _feedback(bot) == []
    issue["labels"] = [item for item in issue["labels"] if item["name"] != "bug"]
    bot.send_issue("unlabeled", issue, label=dict(bot.fake.label_json(bot.repo, "bug")), delivery_id="fb-un")
    wait_for(lambda: bot.job_status("fb-un") == "done", what="the unlabeled job")
    assert _feedback(bot) == [(issue["number"], "bug", "false_positive")]
    # the maintainer also takes off the other label, then the issue is reopened: nothing comes back
    issue["labels"] = []
    bot.send_issue(
        "unlabeled", issue, label=dict(bot.fake.label_json(bot.repo, "documentation")), delivery_id="fb-un2"
    )
    bot.send_issue("reopened", issue, delivery_id="fb-reopen")
    wait_for(lambda: bot.job_status("fb-reopen") == "done", what="the reopened job")
    assert bot.labels_on(issue["number"]) == []
    with bot.services.store.session() as session:
        actors = session.scalars(select(LabelEvent.actor_type).where(LabelEvent.action == "unlabeled")).all()
    assert set(actors) == {"User"}
    status = bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    live = status["repositories"][REPO]["live_precision"]
    assert live["bug"]["removed_by_humans"] == 1 and live["bug"]["applied"] == 1


def test_human_adding_a_label_the_bot_missed_is_a_false_negative(bot: BotUnderTest) -> None:
    issue = _labeled_issue(bot, "fn-open")
    issue["labels"].append(dict(bot.fake.label_json(bot.repo, "enhancement")))
    bot.send_issue(
        "labeled", issue, label=dict(bot.fake.label_json(bot.repo, "enhancement")), delivery_id="fn-add"
    )
    wait_for(lambda: bot.job_status("fn-add") == "done", what="the labeled job")
    assert _feedback(bot) == [(issue["number"], "enhancement", "false_negative")]


def test_bot_labels_left_in_place_count_as_accepted_after_the_configured_days(bot: BotUnderTest) -> None:
    issue = _labeled_issue(bot, "acc-open")
    days = bot.settings.feedback_accept_days
    with bot.services.store.session() as session:
        early = feedback.sweep_accepted(session, at=datetime.now(UTC) + timedelta(days=days / 2), days=days)
        late = feedback.sweep_accepted(session, at=datetime.now(UTC) + timedelta(days=days + 1), days=days)
        again = feedback.sweep_accepted(session, at=datetime.now(UTC) + timedelta(days=days + 2), days=days)
    assert (early, late, again) == (0, 2, 0)
    assert sorted(_feedback(bot)) == [
        (issue["number"], "bug", "accepted"),
        (issue["number"], "documentation", "accepted"),
    ]


def test_replicas_sweeping_accepted_labels_at_once_record_each_once(store: Store) -> None:
    """Every replica of the bot runs the daily sweep; when two run it at the same moment neither
    may fail on the other's rows, and each accepted label is counted once."""
    applied = datetime(2025, 1, 1, tzinfo=UTC)
    with store.session() as session:
        repository = ensure_repository(session, REPO)
        catalogue = LabelCatalogue(session, repository)
        labels = tuple(LabelRecord(name) for name in ("bug", "documentation"))
        for number in range(1, 11):
            record = IssueRecord(
                repo=REPO, number=number, title="Crash when fitting", body="Traceback ...",
                labels=labels, state="open", created_at=applied, updated_at=applied,
            )  # fmt: skip
            upsert_issue(session, catalogue, record, source="bot")
            session.add(
                Prediction(
                    repository_id=repository.id, issue_number=number, bundle_version="v1", scores={},
                    labels=["bug", "documentation"], reason="applied", decided_at=applied, applied_at=applied,
                )
            )  # fmt: skip
    replicas = 4
    together = threading.Barrier(replicas)
    added: list[int] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        together.wait()
        try:
            with store.session() as session:
                added.append(feedback.sweep_accepted(session, at=applied + timedelta(days=30), days=7))
        except Exception as exc:  # noqa: BLE001 (collected for the assertion)
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:2]
    assert sum(added) == 20
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Feedback)) == 20
