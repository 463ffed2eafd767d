"""With a token instead of an App, missed deliveries of a repository's own webhook are asked for
again too: the webhook is known by the ``X-GitHub-Hook-ID`` of the deliveries it sent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import SECRET, example, issue_delivery, wait_for
from tests.fakegithub.server import ORG_ID, Fault

ORG = REPO.split("/")[0]


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    return {
        "github_app_id": None,
        "github_private_key": None,
        "github_token": "test-token",
        "redeliver_minutes": 0,  # each test looks when it wants
    }


@pytest.fixture(autouse=True)
def _repository_webhook(bot: BotUnderTest) -> None:
    fake = bot.fake
    fake.hook_url, fake.hook_secret, fake.hook_repo = f"{bot.server.url}/webhook", SECRET, REPO


def _opened(bot: BotUnderTest) -> tuple[dict[str, Any], dict[str, Any]]:
    issue = bot.open_issue()
    payload = issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION)
    del payload["installation"]  # a repository's webhook is no App installation's
    return issue, payload


def test_a_repository_webhook_that_delivered_before_has_its_missed_deliveries_asked_for(
    bot: BotUnderTest,
) -> None:
    fake = bot.fake
    redeliverer = bot.services.redeliverer
    before = redeliverer.check()  # no delivery from the repository's webhook yet: nothing to list
    assert before.attempts_listed == 0 and before.error is None
    assert not fake.requests_to(r"/repos/.*/hooks/.*")

    first, payload = _opened(bot)
    ok = fake.deliver("issues", payload)
    wait_for(lambda: bot.job_status(ok["guid"]) == "done", what="the delivered job")
    fake.hook_url = None  # the bot down
    missed, payload = _opened(bot)
    lost = fake.deliver("issues", payload)
    fake.hook_url = f"{bot.server.url}/webhook"

    back = redeliverer.check()
    assert back.requested == [lost["guid"]] and back.error is None
    wait_for(lambda: bot.job_status(lost["guid"]) == "done", what="the redelivered job")
    assert bot.labels_on(missed["number"]) == ["bug", "documentation"]
    assert [
        r.path for r in fake.requests_to(rf"/repos/{REPO}/hooks/500/deliveries/\d+/attempts", "POST")
    ] == [f"/repos/{REPO}/hooks/500/deliveries/{lost['id']}/attempts"]
    assert not fake.requests_to(r"/app/hook/deliveries")  # a token has no App webhook


def test_a_webhook_github_will_not_list_for_the_token_is_reported_not_raised(bot: BotUnderTest) -> None:
    _, payload = _opened(bot)
    ok = bot.fake.deliver("issues", payload)
    wait_for(lambda: bot.job_status(ok["guid"]) == "done", what="the delivered job")
    bot.fake.faults.append(Fault(path=rf"/repos/{REPO}/hooks/500/deliveries", status=404, times=1))
    checked = bot.services.redeliverer.check()  # a token without the repository's webhook permission
    assert checked.requested == [] and f"repository webhook /repos/{REPO}/hooks/500" in str(checked.error)
    assert "404" in str(checked.error)
    assert bot.services.redeliverer.check().error is None  # and looked at again the next time


def _as_organization_webhook(payload: dict[str, Any]) -> dict[str, Any]:
    """An organization webhook's delivery names the organization too."""
    return payload | {"organization": {"login": ORG, "id": ORG_ID, "node_id": "O_kgDOfake"}}


def _org_ping() -> dict[str, Any]:
    """An organization webhook's ping: the organization, no repository."""
    ping = example("ping", "with-app_id")
    del ping["repository"]
    ping["hook"] = ping["hook"] | {"type": "Organization", "id": 500}
    return _as_organization_webhook(ping)


def test_an_organization_webhook_known_from_its_ping_has_its_missed_deliveries_asked_for(
    bot: BotUnderTest,
) -> None:
    """An organization's webhook (token mode) whose only delivery so far was its ping: the bot
    down for the first issue events, they are asked for again from the organization's webhook."""
    fake = bot.fake
    fake.hook_repo, fake.hook_org = None, ORG
    ping = fake.deliver("ping", _org_ping())
    wait_for(lambda: bot.job_status(ping["guid"]) in {"done", "ignored"}, what="the ping")
    fake.hook_url = None  # the bot down
    missed, payload = _opened(bot)
    lost = fake.deliver("issues", _as_organization_webhook(payload))
    fake.hook_url = f"{bot.server.url}/webhook"

    back = bot.services.redeliverer.check()
    assert back.requested == [lost["guid"]] and back.error is None, back
    wait_for(lambda: bot.job_status(lost["guid"]) == "done", what="the redelivered job")
    assert bot.labels_on(missed["number"]) == ["bug", "documentation"]
    assert [r.path for r in fake.requests_to(rf"/orgs/{ORG}/hooks/500/deliveries/\d+/attempts", "POST")] == [
        f"/orgs/{ORG}/hooks/500/deliveries/{lost['id']}/attempts"
    ]
