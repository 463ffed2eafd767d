"""/predict, /healthz, /readyz, /metrics and /status."""

from __future__ import annotations

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
    longer = body | {"body": "x" * 65_537}  # than GitHub lets an issue body be
    refused = bot.deliver.client.post(
        "/predict", json=longer, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert refused.status_code == 422 and "65536" in refused.text


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
