"""Deliveries GitHub could not hand to the bot are asked for again, through the App's API."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from bot.metrics import BotMetrics
from bot.redelivery import Redeliverer
from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import API_TOKEN, SECRET, issue_delivery, wait_for
from tests.fakegithub.server import Fault
from training.store.upserts import now

CHECK_MINUTES = 0.01  # a look at the App's deliveries every 0.6 s
RECHECK_SECONDS = 2.0  # an issue delivery older than this has its labels read again


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    return {
        "redeliver_minutes": CHECK_MINUTES,
        "redeliver_max_attempts": 2,
        "delivery_recheck_seconds": RECHECK_SECONDS,
    }


@pytest.fixture(autouse=True)
def _webhook_to_the_bot(bot: BotUnderTest) -> None:
    """The fake GitHub delivers the App's webhook to this bot, signed with its secret."""
    bot.fake.hook_url, bot.fake.hook_secret = _hook(bot), SECRET


def _hook(bot: BotUnderTest) -> str:
    return f"{bot.server.url}/webhook"


def _opened(bot: BotUnderTest, issue: dict[str, Any]) -> dict[str, Any]:
    return issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION)


def _redeliverer(bot: BotUnderTest, clock: list[datetime], *, max_attempts: int) -> Redeliverer:
    """Another look at the bot's deliveries (a replica's, on the same store), on a clock the test
    moves: every 10 minutes back over a day."""
    return Redeliverer(
        bot.services.gateway,
        bot.services.queue,
        BotMetrics(),
        interval_minutes=10,
        window_hours=24,
        max_attempts=max_attempts,
        clock=lambda: clock[0],
    )


def _redeliveries(bot: BotUnderTest, guid: str) -> int:
    return sum(attempt["redelivery"] for attempt in bot.fake.attempts_of(guid))


def test_deliveries_that_never_reached_the_bot_are_asked_for_again_until_they_do(bot: BotUnderTest) -> None:
    fake = bot.fake
    missed, delivered = bot.open_issue(), bot.open_issue()

    fake.hook_url = None  # the bot down: GitHub cannot connect and does not try again by itself
    lost = fake.deliver("issues", _opened(bot, missed))
    fake.hook_url = _hook(bot)
    ok = fake.deliver("issues", _opened(bot, delivered))
    refused = fake.deliver("issues", body=b"{not json")  # answered 400 however often it comes
    assert (lost["status_code"], ok["status"], refused["status_code"]) == (0, "OK", 400)

    wait_for(
        lambda: bot.labels_on(missed["number"]) == ["bug", "documentation"], what="the missed issue labeled"
    )
    wait_for(lambda: bot.job_status(lost["guid"]) == "done", what="its job to finish")
    wait_for(lambda: _redeliveries(bot, refused["guid"]) == 2, what="the refused delivery tried twice more")
    time.sleep(CHECK_MINUTES * 60 * 4)  # a few more looks: nothing more is asked for
    assert _redeliveries(bot, refused["guid"]) == 2
    assert _redeliveries(bot, ok["guid"]) == 0
    assert _redeliveries(bot, lost["guid"]) >= 1 and fake.attempts_of(lost["guid"])[-1]["status"] == "OK"
    assert bot.labels_on(delivered["number"]) == ["bug", "documentation"]
    assert not fake.requests_to(rf"/repos/{REPO}/issues/{delivered['number']}")  # on time: not read again

    status = bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    assert status["redelivery"]["given_up"] == [refused["guid"]] and status["redelivery"]["error"] is None
    metrics = bot.deliver.client.get("/metrics").text
    assert f"issue_labeler_redeliveries_total {float(_redeliveries(bot, lost['guid']) + 2)}" in metrics


def test_a_listed_delivery_without_its_time_is_skipped_and_the_rest_looked_at(bot: BotUnderTest) -> None:
    """Regression: a listed attempt without ``delivered_at`` (PyGithub gives None) made every look
    fail comparing None with a time, so no missed delivery was asked for again while GitHub
    listed it (three days)."""
    fake = bot.fake
    missed = bot.open_issue()
    bot.services.redeliverer.stop()
    fake.hook_url = None
    lost = fake.deliver("issues", _opened(bot, missed))
    partial = {key: value for key, value in lost.items() if key != "delivered_at"}
    fake.hook_deliveries.append(({**partial, "id": fake.next_id(), "guid": "partial-listing"}, b"{}"))
    fake.hook_url = _hook(bot)
    bot.services.redeliverer.start()  # back: it looks at once, the partial attempt listed first

    wait_for(lambda: bot.job_status(lost["guid"]) == "done", what="the missed delivery asked for and done")
    assert bot.labels_on(missed["number"]) == ["bug", "documentation"]
    assert _redeliveries(bot, "partial-listing") == 0


def test_a_late_delivery_sees_the_labels_a_maintainer_added_meanwhile(bot: BotUnderTest) -> None:
    fake = bot.fake
    issue = bot.open_issue()
    number = issue["number"]
    bot.services.redeliverer.stop()
    fake.hook_url = None  # the bot down while the issue is opened and a maintainer labels it
    opened = fake.deliver("issues", _opened(bot, issue))
    labeled_now = fake.edit_issue(bot.repo, number, datetime.now(UTC), labels=["enhancement"])
    labeled = fake.deliver(
        "issues",
        issue_delivery(
            "labeled",
            labeled_now,
            bot.repository,
            installation_id=INSTALLATION,
            label=fake.label_json(bot.repo, "enhancement"),
        ),
    )
    time.sleep(RECHECK_SECONDS + 1)  # down a while: the "opened" delivery is late when it comes
    fake.hook_url = _hook(bot)
    bot.services.redeliverer.start()  # back: it looks at once
    for record in (opened, labeled):
        wait_for(lambda r=record: bot.job_status(r["guid"]) == "done", what="the redelivered jobs")
    assert bot.labels_on(number) == ["enhancement"]  # the bot added nothing to a maintainer's labels
    assert not fake.requests_to(rf"/repos/{REPO}/issues/{number}/labels", "POST")
    assert fake.requests_to(rf"/repos/{REPO}/issues/{number}")  # read again before deciding


def test_a_late_delivery_whose_recheck_fails_is_retried_and_its_issue_kept(bot: BotUnderTest) -> None:
    issue = bot.open_issue()
    payload = _opened(bot, issue)
    time.sleep(RECHECK_SECONDS + 1)  # it arrives late (queued, or redelivered)
    path = rf"/repos/{REPO}/issues/{issue['number']}"
    bot.fake.faults.append(Fault(path=path, status=502, times=1))
    bot.deliver.send("issues", payload, delivery_id="late-1")
    wait_for(lambda: bot.job_status("late-1") == "done", what="the retried job")
    assert [r.status for r in bot.fake.requests_to(path)] == [502, 200]
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    assert bot.stored_title(issue["number"]) == issue["title"]


def test_a_late_delivery_of_an_issue_deleted_meanwhile_labels_nothing(bot: BotUnderTest) -> None:
    bot.services.redeliverer.stop()
    bot.fake.hook_url = None
    issue = bot.open_issue()
    opened = bot.fake.deliver("issues", _opened(bot, issue))
    del bot.repo.issues[issue["number"]]  # deleted on GitHub while the bot was down
    time.sleep(RECHECK_SECONDS + 1)
    bot.fake.hook_url = _hook(bot)
    bot.services.redeliverer.start()
    wait_for(lambda: bot.job_status(opened["guid"]) == "done", what="the redelivered job")
    assert not bot.fake.requests_to(rf"/repos/{REPO}/issues/{issue['number']}/labels", "POST")


def test_a_delivery_the_bot_stored_but_answered_too_late_is_not_asked_for_again(bot: BotUnderTest) -> None:
    """GitHub waits 10 s for an answer; a delivery stored by then runs, whatever GitHub recorded."""
    issue = bot.open_issue()
    payload = _opened(bot, issue)
    record = bot.fake.deliver("issues", payload)
    wait_for(lambda: bot.job_status(record["guid"]) == "done", what="the job")
    record["status"], record["status_code"] = "timed out", 0  # as GitHub would show a late answer
    checked = bot.services.redeliverer.check()
    assert checked.undelivered == 1 and checked.requested == [] and checked.error is None
    assert _redeliveries(bot, record["guid"]) == 0


def test_github_refusing_the_listing_is_reported_not_raised(bot: BotUnderTest) -> None:
    bot.fake.app_public_key = None  # the App's JWT not accepted: GitHub answers 401
    checked = bot.services.redeliverer.check()
    assert checked.error is not None and "401" in checked.error
    assert checked.requested == []


def test_nothing_is_asked_for_while_the_store_is_down_and_all_of_it_once_it_is_back(
    bot: BotUnderTest,
) -> None:
    def down(conn, cursor, statement, parameters, context, executemany):
        if "webhook_jobs" in statement.lower():
            raise conn.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    bot.services.redeliverer.stop()
    issue = bot.open_issue()
    engine = bot.services.store.engine
    event.listen(engine, "before_cursor_execute", down)
    try:
        refused = bot.fake.deliver("issues", _opened(bot, issue))
        assert refused["status_code"] == 503
        while_down = bot.services.redeliverer.check()
    finally:
        event.remove(engine, "before_cursor_execute", down)
    assert while_down.requested == [] and "store is unreachable" in str(while_down.error)
    assert _redeliveries(bot, refused["guid"]) == 0  # no attempt spent on a bot that would refuse it
    back = bot.services.redeliverer.check()
    assert back.requested == [refused["guid"]]
    wait_for(lambda: bot.job_status(refused["guid"]) == "done", what="the redelivered job")
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]


def test_a_later_look_goes_back_only_as_far_as_the_previous_one(bot: BotUnderTest) -> None:
    """A busy App has many deliveries a day: each look after the first lists only what is new."""
    bot.services.redeliverer.stop()
    bot.fake.hook_url = None
    failed = [bot.fake.deliver("issues", body=b"{}") for _ in range(3)]
    clock = [now()]
    redeliverer = _redeliverer(bot, clock, max_attempts=1)
    first = redeliverer.check()
    assert first.attempts_listed == 3 and sorted(first.requested) == sorted(r["guid"] for r in failed)
    wait_for(lambda: len(bot.fake.hook_deliveries) == 6, what="the redeliveries (failing again)")

    clock[0] = now() + timedelta(hours=1)
    second = redeliverer.check()  # back to the first look, where the redelivered ones began
    assert second.attempts_listed == 6 and sorted(second.given_up) == sorted(first.requested)
    clock[0] = now() + timedelta(hours=2)
    listings = len(bot.fake.requests_to(r"/app/hook/deliveries"))
    third = redeliverer.check()  # nothing asked for since: only the last hour is looked at
    assert third.attempts_listed == 0 and third.requested == [] and third.error is None
    assert len(bot.fake.requests_to(r"/app/hook/deliveries")) == listings + 1
    assert all(q.query["status"] == ["failure"] for q in bot.fake.requests_to(r"/app/hook/deliveries"))


def test_replicas_sharing_the_store_ask_for_a_missed_delivery_once_per_interval(bot: BotUnderTest) -> None:
    """Each request spends one of GitHub's attempts: three replicas must not spend three at once."""
    bot.services.redeliverer.stop()
    missed = bot.fake.deliver("issues", body=b"{not json")  # refused (400) every time it comes
    clock = [now()]
    replicas = [_redeliverer(bot, clock, max_attempts=3) for _ in range(3)]
    first = [replica.check() for replica in replicas]
    assert [look.requested for look in first] == [[missed["guid"]], [], []]
    assert [look.asked_already for look in first] == [[], [missed["guid"]], [missed["guid"]]]
    wait_for(lambda: _redeliveries(bot, missed["guid"]) == 1, what="the one redelivery")

    clock[0] += timedelta(minutes=5)  # another replica's look within the same interval
    assert replicas[1].check().asked_already == [missed["guid"]]
    clock[0] += timedelta(minutes=6)  # the next interval: one of them asks again
    second = [replica.check() for replica in reversed(replicas)]
    assert [look.requested for look in second] == [[missed["guid"]], [], []]
    wait_for(lambda: _redeliveries(bot, missed["guid"]) == 2, what="the second redelivery")
    time.sleep(0.5)
    assert _redeliveries(bot, missed["guid"]) == 2
