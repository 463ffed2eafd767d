"""/predict, /healthz, /readyz, /metrics and /status."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from sqlalchemy import event

from tests.bot.conftest import REPO, BotUnderTest
from tests.bot.helpers import API_TOKEN, wait_for


def test_predict_needs_the_api_token_and_scores_an_issue(bot: BotUnderTest) -> None:
    body = {"repository": REPO, "title": "KMeans crashes on sparse input", "body": "Traceback ..."}
    assert bot.deliver.client.post("/predict", json=body).status_code == 401
    assert (
        bot.deliver.client.post("/predict", json=body, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    answer = bot.deliver.client.post("/predict", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert answer.status_code == 200
    result = answer.json()
    assert result["labels"] == sorted(
        result["labels"], key=lambda n: -next(s["score"] for s in result["scores"] if s["label"] == n)
    )
    assert set(result["labels"]) == {"bug", "documentation"}
    assert {s["label"] for s in result["scores"]} == {"bug", "documentation", "enhancement", "question"}
    unknown = bot.deliver.client.post(
        "/predict", json=body | {"repository": "no/such"}, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert unknown.status_code == 404
    # as GitHub's issue JSON has it (was 422), and the name in another case, as GitHub reads it (was 404)
    for pasted in ({"body": None}, {"repository": REPO.upper()}):
        again = bot.deliver.client.post(
            "/predict", json=body | pasted, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert again.status_code == 200 and again.json()["repository"] == REPO, again.text
    longer = body | {"body": "x" * 65_537}  # than GitHub lets an issue body be
    refused = bot.deliver.client.post(
        "/predict", json=longer, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert refused.status_code == 422 and "65536" in refused.text


def test_requests_the_api_cannot_serve_are_refused_with_the_field_named(bot: BotUnderTest) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}

    def post(path: str, body: dict) -> httpx.Response:
        # json.dumps escapes an unpaired surrogate as \ud800, as any JSON client may send it
        return bot.deliver.client.post(path, content=json.dumps(body).encode(), headers=auth)

    issue = {"repository": REPO, "title": "KMeans crashes on sparse input"}
    for refused, named in [
        (issue | {"repository": "../../etc"}, "expected OWNER/NAME"),  # was a 500 from the registry
        (issue | {"title": "crash \ud800"}, "unicode string"),  # refused, then a 500 echoing it
        (issue | {"body": "\udfff"}, "unicode string"),
    ]:
        answer = post("/predict", refused)
        assert answer.status_code == 422 and named in answer.text, answer.text
    assert post("/predict", issue | {"body": "NUL \u0000 and 😀 are characters"}).status_code == 200
    longest = issue | {"title": "\U0001f600" * 256, "body": "\U0001f600" * 65_536}  # as long as allowed
    assert post("/predict", longest).status_code == 200  # each character escaped as 12 bytes: 790 KB
    padded = post("/predict", issue | {"padding": "x" * (1024 * 1024)})  # was read whole, however long
    assert padded.status_code == 413, padded.text
    for refused, named in [
        ({"repository": "not a name"}, "expected OWNER/NAME"),
        # the reason goes onto the refresh's command line: a NUL byte made the launch fail in its
        # thread after the API had answered 202 "started"
        ({"repository": REPO, "reason": "nightly\u0000"}, "reason"),
        ({"repository": REPO, "reason": "x" * 501}, "at most 500 characters"),
    ]:
        answer = post("/admin/refresh", refused)
        assert answer.status_code == 422 and named in answer.text, answer.text


def test_health_readiness_and_metrics(bot: BotUnderTest) -> None:
    assert bot.deliver.client.get("/healthz").json() == {"status": "alive"}
    ready = bot.deliver.client.get("/readyz").json()
    assert ready["ready"] is True and REPO in ready["bundles"]
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id="m-1")
    bot.deliver.post("issues", b"{}", delivery_id="m-bad", sign_it=False)
    wait_for(lambda: bot.job_status("m-1") == "done", what="the job")
    text = bot.deliver.client.get("/metrics").text
    assert 'issue_labeler_deliveries_total{event="issues",outcome="accepted"} 1.0' in text
    assert 'issue_labeler_deliveries_total{event="issues",outcome="bad_signature"} 1.0' in text
    assert f'issue_labeler_labels_applied_total{{label="bug",repository="{REPO}"}} 1.0' in text
    assert 'issue_labeler_job_seconds_count{event="issues"} 1.0' in text
    assert f'issue_labeler_prediction_seconds_count{{repository="{REPO}"}} 1.0' in text
    assert "issue_labeler_models_loaded 1.0" in text
    status = bot.deliver.client.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    assert status["repositories"][REPO]["model_loaded"] is True
    in_store = bot.services.queue.counts()
    assert in_store.get("done", 0) >= 1
    for job_status in ("pending", "running", "done", "failed"):
        assert (
            f'issue_labeler_jobs_in_store{{status="{job_status}"}} {float(in_store.get(job_status, 0))}'
            in text
        )


def test_status_and_admin_answer_503_while_the_store_is_down(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """They answered 500 with a traceback: a store outage read as a defect of the bot."""

    def down(conn, cursor, statement, parameters, context, executemany):
        raise conn.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    engine = bot.services.store.engine
    event.listen(engine, "before_cursor_execute", down)
    try:
        with caplog.at_level(logging.ERROR, logger="bot.app"):
            answers = [
                bot.deliver.client.get("/status", headers=auth),
                bot.deliver.client.post("/admin/refresh", headers=auth, json={"repository": REPO}),
            ]
    finally:
        event.remove(engine, "before_cursor_execute", down)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": "the store is unavailable; try again later"}
    assert "GET /status answered 503, the store failed: OperationalError" in caplog.text
    assert bot.deliver.client.get("/status", headers=auth).status_code == 200  # back


def test_admin_refresh_reads_the_repository_name_in_any_case(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As GitHub does; the refresh runs under the name the store knows (was 404)."""
    asked: list[str] = []
    monkeypatch.setattr(bot.services.retrainer, "on_demand", lambda repo, reason: asked.append(repo))
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    answer = bot.deliver.client.post("/admin/refresh", headers=auth, json={"repository": REPO.upper()})
    assert answer.status_code == 202 and answer.json()["started"] == [REPO], answer.text
    assert asked == [REPO]
    other = bot.deliver.client.post("/admin/refresh", headers=auth, json={"repository": "no/such"})
    assert other.status_code == 404 and asked == [REPO]
