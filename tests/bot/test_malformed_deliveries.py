"""Deliveries GitHub signed but shaped otherwise (found by mutating the real ones field by field):
accepted, then failed for good at the first try with the field named — not answered as a store
failure, not retried as if GitHub were down, nothing written to GitHub or stored as it came."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import select

from bot.payload_shapes import MalformedPayload, check_shape
from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest
from tests.bot.helpers import PAYLOADS, example, issue_delivery, wait_for
from training.store.models import Label, Repository

FINAL = {"done", "ignored", "failed"}


def _failed_at_once(bot: BotUnderTest, delivery_id: str) -> str:
    """The job's error; it must have failed for good on its first try."""
    status = wait_for(
        lambda: (found := bot.job_status(delivery_id)) in FINAL and found, what=f"{delivery_id} to end"
    )
    assert status == "failed", status
    (job,) = [job for job in bot.services.queue.failed() if job["delivery_id"] == delivery_id]
    assert job["attempts"] == 1, job
    return str(job["error"])


def test_every_real_payload_has_its_events_shape() -> None:
    """The check must never refuse what GitHub really sends."""
    for path in sorted(PAYLOADS.glob("*/*.payload.json")):
        event = path.parent.name
        check_shape(event, example(event, path.name.removesuffix(".payload.json")))


@pytest.mark.parametrize(
    ("event", "name", "change", "named"),
    [
        ("issues", "opened", lambda p: p.update(issue="x"), "issue: Input should be a valid dictionary"),
        (
            "issues",
            "labeled",
            lambda p: p["label"].update(name=[]),
            "label.name: Input should be a valid string",
        ),
        ("issues", "opened", lambda p: p["issue"].update(number="7"), "issue.number"),
        ("issues", "opened", lambda p: p["issue"]["labels"].append({"name": True}), "issue.labels.1.name"),
        ("issues", "opened", lambda p: p.update(installation={"id": True}), "installation.id"),
        ("issues", "opened", lambda p: p["repository"].update(full_name="x"), "repository.full_name"),
        ("issues", "opened", lambda p: p.update(action="o" * 61), "action"),
        ("label", "created.with-installation", lambda p: p["label"].update(color="0" * 13), "label.color"),
        ("label", "edited", lambda p: p["changes"].update(name={"from": 5}), "changes.name.from"),
        ("push", "with-installation", lambda p: p.update(commits=[{"added": "a"}]), "commits.0.added"),
        ("installation", "created", lambda p: p["installation"].pop("id"), "installation.id: Field required"),
    ],
)
def test_a_wrong_field_is_named(event: str, name: str, change: Any, named: str) -> None:
    payload = copy.deepcopy(example(event, name))
    change(payload)
    with pytest.raises(MalformedPayload, match=rf"malformed {event} payload: .*{named}"):
        check_shape(event, payload)


def test_a_repository_name_of_another_type_is_accepted_then_fails_not_a_store_error(
    bot: BotUnderTest,
) -> None:
    issue = bot.open_issue()
    for delivery_id, full_name in [
        ("r-list", ["octo-org/hello-world"]),
        ("r-dict", {}),
        ("r-long", "o/" + "n" * 300),
    ]:
        payload = issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION)
        payload["repository"]["full_name"] = full_name
        answer = bot.deliver.send("issues", payload, delivery_id=delivery_id)
        assert answer.status_code == 202, answer.text  # was 503: the store could not bind a list
        assert "repository.full_name" in _failed_at_once(bot, delivery_id)
    assert not bot.fake.requests_to(rf"/repos/{REPO}/issues/{issue['number']}/labels", "POST")


def test_a_malformed_issue_fails_at_once_instead_of_being_retried(bot: BotUnderTest) -> None:
    payload = issue_delivery("opened", bot.open_issue(), bot.repository, installation_id=INSTALLATION)
    payload["issue"] = None  # was an AttributeError, retried as if GitHub were down
    bot.deliver.send("issues", payload, delivery_id="i-none")
    assert "issue: Input should be a valid dictionary" in _failed_at_once(bot, "i-none")

    issue = bot.open_issue()
    payload = issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION)
    payload["issue"]["state"] = ["open"]  # was stored as it came: the store refused, and it retried
    bot.deliver.send("issues", payload, delivery_id="i-state")
    assert "state: expected a string" in _failed_at_once(bot, "i-state")
    assert bot.stored_title(issue["number"]) is None


def test_a_malformed_repository_name_does_not_rename_the_stored_repository(bot: BotUnderTest) -> None:
    """Its id is the installed repository's: followed as a rename, it moved the store and the
    registry to a name GitHub cannot have."""
    payload = issue_delivery("opened", bot.open_issue(), bot.repository, installation_id=INSTALLATION)
    payload["repository"]["full_name"] = "x"
    bot.deliver.send("issues", payload, delivery_id="renamed-x")
    assert "repository.full_name: Value error, expected OWNER/NAME" in _failed_at_once(bot, "renamed-x")
    with bot.services.store.session() as session:
        stored = session.scalar(select(Repository.full_name).where(Repository.github_id == bot.repo.id))
    assert stored == REPO


def test_a_label_named_by_another_type_is_not_stored(bot: BotUnderTest) -> None:
    payload = example("label", "created.with-installation")
    payload.update(repository=bot.repository, installation={"id": INSTALLATION})
    payload["label"]["name"] = True  # was stored as a label named "1"
    bot.deliver.send("label", payload, delivery_id="label-true")
    assert "label.name: Input should be a valid string" in _failed_at_once(bot, "label-true")
    with bot.services.store.session() as session:
        assert not session.scalars(select(Label).where(Label.name.in_(["1", "True"]))).all()


def test_headers_longer_than_githubs_are_refused(bot: BotUnderTest) -> None:
    ping = example("ping", "with-app_id")
    assert bot.deliver.send("ping", ping, delivery_id="d" * 101).status_code == 400  # was 503 on PostgreSQL
    assert bot.deliver.send("p" * 61, ping, delivery_id="long-event").status_code == 400
    assert bot.deliver.send("ping", ping, delivery_id="d" * 100).status_code == 202


def test_a_body_nested_past_the_parsers_depth_is_refused(bot: BotUnderTest) -> None:
    deep = b'{"zen": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = bot.deliver.post("ping", deep, delivery_id="deep")  # was a 500 from a RecursionError
    assert answer.status_code == 400 and "nested too deeply" in answer.text
    assert bot.deliver.send("ping", example("ping", "with-app_id"), delivery_id="after").status_code == 202
