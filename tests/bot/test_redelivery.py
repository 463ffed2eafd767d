"""Deliveries GitHub could not hand to the bot are asked for again, through the App's API."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.bot.conftest import INSTALLATION, BotUnderTest
from tests.bot.helpers import API_TOKEN, SECRET, issue_delivery, wait_for

CHECK_MINUTES = 0.01  # a look at the App's deliveries every 0.6 s


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    return {"redeliver_minutes": CHECK_MINUTES, "redeliver_max_attempts": 2}


def _redeliveries(bot: BotUnderTest, guid: str) -> int:
    return sum(attempt["redelivery"] for attempt in bot.fake.attempts_of(guid))


def test_deliveries_that_never_reached_the_bot_are_asked_for_again_until_they_do(bot: BotUnderTest) -> None:
    fake = bot.fake
    fake.hook_secret = SECRET
    missed, delivered = bot.open_issue(), bot.open_issue()

    fake.hook_url = None  # the bot down: GitHub cannot connect and does not try again by itself
    lost = fake.deliver(
        "issues", issue_delivery("opened", missed, bot.repository, installation_id=INSTALLATION)
    )
    fake.hook_url = f"{bot.server.url}/webhook"
    ok = fake.deliver(
        "issues", issue_delivery("opened", delivered, bot.repository, installation_id=INSTALLATION)
    )
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

    status = bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    assert status["redelivery"]["given_up"] == [refused["guid"]] and status["redelivery"]["error"] is None
    metrics = bot.deliver.client.get("/metrics").text
    assert f"issue_labeler_redeliveries_total {float(_redeliveries(bot, lost['guid']) + 2)}" in metrics


def test_a_delivery_the_bot_stored_but_answered_too_late_is_not_asked_for_again(bot: BotUnderTest) -> None:
    """GitHub waits 10 s for an answer; a delivery stored by then runs, whatever GitHub recorded."""
    issue = bot.open_issue()
    payload = issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION)
    bot.fake.hook_url = f"{bot.server.url}/webhook"
    bot.fake.hook_secret = SECRET
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
