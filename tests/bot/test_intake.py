"""The door: bad deliveries are refused with the right status, never crash, never leak secrets."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from tests.bot.conftest import INSTALLATION, REPO, BotUnderTest, start_bot
from tests.bot.helpers import SECRET, Deliverer, example, issue_delivery, repository_json, wait_for


def _ping() -> bytes:
    return json.dumps(example("ping", "with-app_id")).encode()


def test_missing_or_wrong_signature_is_401(bot: BotUnderTest) -> None:
    assert bot.deliver.post("ping", _ping(), delivery_id="s1", sign_it=False).status_code == 401
    wrong = Deliverer(bot.server.url, secret="not-the-secret")
    try:
        assert wrong.post("ping", _ping(), delivery_id="s2").status_code == 401
    finally:
        wrong.close()
    bad_header = bot.deliver.post(
        "ping", _ping(), delivery_id="s3", sign_it=False, headers={"X-Hub-Signature-256": "md5=abc"}
    )
    assert bad_header.status_code == 401
    assert bot.job_status("s1") is None and bot.job_status("s2") is None  # nothing stored


def test_a_secret_being_rotated_out_is_still_accepted_and_said(
    fake_github, app_keys, bundle_registry, database_url, real_issues, caplog: pytest.LogCaptureFixture
) -> None:
    """GitHub switches to a new webhook secret the moment it is saved there; the bot, deployed
    before or after, accepts both while the rotation lasts and says when the old one is still used."""
    new_secret = "the-new-webhook-secret"
    rotating = start_bot(
        fake_github,
        app_keys,
        bundle_registry,
        database_url,
        real_issues,
        webhook_secret=new_secret,
        webhook_previous_secrets=[SECRET],
    )
    caplog.set_level(logging.INFO)
    signed_new = Deliverer(rotating.server.url, secret=new_secret)
    signed_other = Deliverer(rotating.server.url, secret="neither-secret")
    try:
        issue = rotating.open_issue()
        old = rotating.send_issue("opened", issue, delivery_id="old-1")
        assert old.status_code == 202, old.text
        wait_for(lambda: rotating.job_status("old-1") == "done", what="the job signed with the old secret")
        assert rotating.fake.requests_to(rf"/repos/{REPO}/issues/{issue['number']}/labels", "POST")
        assert signed_new.post("ping", _ping(), delivery_id="new-1").status_code == 202
        assert rotating.deliver.post("ping", _ping(), delivery_id="old-2").status_code == 202
        assert signed_other.post("ping", _ping(), delivery_id="other-1").status_code == 401
        assert rotating.job_status("other-1") is None

        said = [
            r.getMessage()
            for r in caplog.records
            if "ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS" in r.getMessage()
        ]
        # Said once, naming the first such delivery: the installation start_bot sent.
        assert len(said) == 1 and "install-1" in said[0], said
        metrics = rotating.deliver.client.get("/metrics").text
        assert 'issue_labeler_previous_secret_deliveries_total{position="1"} 3.0' in metrics
        assert SECRET not in caplog.text and new_secret not in caplog.text
    finally:
        for deliverer in (signed_new, signed_other, rotating.deliver):
            deliverer.close()
        rotating.server.stop()


def test_malformed_json_and_missing_headers_are_400(bot: BotUnderTest) -> None:
    assert bot.deliver.post("issues", b"{not json", delivery_id="m1").status_code == 400
    assert bot.deliver.post("issues", b"[1, 2]", delivery_id="m2").status_code == 400
    assert bot.deliver.post(None, _ping(), delivery_id="m3").status_code == 400
    assert bot.deliver.post("ping", _ping(), delivery_id=None).status_code == 400
    assert bot.deliver.client.get("/healthz").status_code == 200  # still serving


def test_a_form_encoded_delivery_is_read_from_its_payload_field(bot: BotUnderTest) -> None:
    """GitHub's default content type for a repository webhook: the JSON in the ``payload`` field."""
    issue = bot.open_issue()
    document = json.dumps(issue_delivery("opened", issue, bot.repository, installation_id=INSTALLATION))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    sent = bot.deliver.post(
        "issues", urlencode({"payload": document}).encode(), delivery_id="form-1", headers=form
    )
    assert sent.status_code == 202, sent.text
    wait_for(lambda: bot.job_status("form-1") == "done", what="the form-encoded delivery's job")
    assert bot.fake.requests_to(rf"/repos/{REPO}/issues/{issue['number']}/labels", "POST")

    for delivery_id, body in [
        ("form-2", urlencode({"other": document}).encode()),  # no payload field
        ("form-3", urlencode([("payload", document), ("payload", document)]).encode()),
        ("form-4", b"payload=%7B&&the-secret-body"),  # does not parse: the refusal must not quote it
        ("form-5", urlencode({"payload": "{not json"}).encode()),
    ]:
        refused = bot.deliver.post("issues", body, delivery_id=delivery_id, headers=form)
        assert refused.status_code == 400, (delivery_id, refused.text)
        assert "the-secret-body" not in refused.text and bot.job_status(delivery_id) is None


def test_oversized_body_is_413(fake_github, app_keys, bundle_registry, database_url, real_issues) -> None:
    small = start_bot(
        fake_github, app_keys, bundle_registry, database_url, real_issues, webhook_max_bytes=4096
    )
    try:
        payload = example("ping", "with-app_id")
        payload["padding"] = "x" * 5000
        assert small.deliver.send("ping", payload, delivery_id="big").status_code == 413
        assert small.job_status("big") is None
    finally:
        small.deliver.close()
        small.server.stop()


def test_redelivery_is_applied_once(bot: BotUnderTest) -> None:
    issue = bot.open_issue()
    first = bot.send_issue("opened", issue, delivery_id="dup-1")
    second = bot.send_issue("opened", issue, delivery_id="dup-1")
    assert first.status_code == 202
    assert second.status_code == 200 and second.json()["status"] == "duplicate"
    wait_for(lambda: bot.job_status("dup-1") == "done", what="the job")
    posts = bot.fake.requests_to(rf"/repos/{REPO}/issues/{issue['number']}/labels", "POST")
    assert len(posts) == 1


def test_events_without_handlers_are_kept_as_ignored(bot: BotUnderTest) -> None:
    payload = {"action": "created", "repository": bot.repository, "installation": {"id": 77}}
    response = bot.deliver.send("star", payload, delivery_id="star-1")
    assert response.status_code == 202 and response.json()["status"] == "ignored"
    assert bot.job_status("star-1") == "ignored"


def test_uninstalled_repository_is_ignored(bot: BotUnderTest) -> None:
    other = bot.fake.add_repo("someone/else")
    issue = bot.fake.add_issue(other, number=1, title="t", body="b", labels=[], created_at=datetime.now(UTC))
    payload = issue_delivery(
        "opened", issue, repository_json(other.full_name, other.id, other.node_id), installation_id=99
    )
    bot.deliver.send("issues", payload, delivery_id="other-1")
    wait_for(lambda: bot.job_status("other-1") == "ignored", what="the job to be ignored")
    assert not bot.fake.applied


def test_logs_carry_no_secret(bot: BotUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bot.deliver.post("ping", _ping(), delivery_id="log-1", sign_it=False)
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id="log-2")
    wait_for(lambda: bot.job_status("log-2") == "done", what="the job")
    assert SECRET not in caplog.text
    assert "BEGIN PRIVATE KEY" not in caplog.text and "ghs_fake" not in caplog.text
