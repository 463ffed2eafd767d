"""The webhook server: FastAPI routes over the bot's services.

A delivery is verified, persisted as a job and answered 202 within milliseconds; workers do
the work. Nothing here logs a secret or a request body.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool

from bot import feedback, signature
from bot.jobs import JOB_STATUSES, MAX_DELIVERY_ID, MAX_EVENT, Delivery
from bot.payload_shapes import RepositoryName
from bot.services import BotServices

log = logging.getLogger(__name__)


FORM = "application/x-www-form-urlencoded"
GITHUB_TITLE_MAX, GITHUB_BODY_MAX = 256, 65536  # characters GitHub allows an issue's title and body
# bytes a /predict request may send: the longest issue with every character JSON-escaped fits
PREDICT_MAX_BYTES, ADMIN_MAX_BYTES = 1024 * 1024, 16 * 1024


class MalformedDelivery(ValueError):
    """A body that carries no JSON document; the message says why without quoting it."""


def delivery_document(body: bytes, content_type: str | None) -> bytes:
    """A delivery's JSON document. A repository or organization webhook sends it as the body
    (content type ``json``) or, GitHub's default when such a webhook is created, as the form
    field ``payload``; the signature covers the body either way."""
    if content_type is None or content_type.split(";")[0].strip().lower() != FORM:
        return body
    try:
        form = body.decode("utf-8")
        fields = parse_qs(form, keep_blank_values=True, strict_parsing=True, max_num_fields=16)
    except ValueError:  # its message quotes the body
        raise MalformedDelivery("a form-encoded body that does not parse") from None
    if len(fields.get("payload", ())) != 1:
        raise MalformedDelivery("a form-encoded body without one 'payload' field")
    return fields["payload"][0].encode("utf-8")


class RefreshRequestBody(BaseModel):
    repository: RepositoryName | None = Field(
        default=None, description="owner/name; all installed repositories if absent"
    )
    # handed to the refresh's command line: bounded, one printable line
    reason: str = Field(
        default="requested through /admin/refresh",
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]+$",
    )


class PredictRequest(BaseModel):
    """An issue as GitHub would hold one: its limits bound what a call may make the bot tokenize."""

    repository: RepositoryName = Field(description="owner/name whose bundle in service scores the issue")
    title: str = Field(max_length=GITHUB_TITLE_MAX)
    body: str = Field(default="", max_length=GITHUB_BODY_MAX)

    @field_validator("body", mode="before")
    @classmethod
    def _no_body(cls, value: object) -> object:
        """GitHub's own issue JSON has ``"body": null`` for an empty body: pasted as it is."""
        return "" if value is None else value


def _known_spelling(name: str, known: Iterable[str]) -> str | None:
    """GitHub reads OWNER/NAME in any case; the store and the registry spell it as GitHub does."""
    return next((spelled for spelled in known if spelled.lower() == name.lower()), None)


def create_app(services: BotServices) -> FastAPI:
    settings = services.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(title="issue-labeler", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def refuse_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own answer echoes each refused input: up to 64 KB of issue body sent back,
        and text it cannot encode (an unpaired surrogate) turned the 422 into a 500."""
        problems = [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in exc.errors()
        ]
        log.info("%s %s refused (422): %s", request.method, request.url.path, problems)
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The store down or locked while /status or /admin reads it: a passing condition, said
        as one, instead of a 500 and a traceback."""
        log.error(
            "%s %s answered 503, the store failed: %s",
            request.method,
            request.url.path,
            exc.__class__.__name__ + ": " + str(getattr(exc, "orig", None) or exc),
        )
        return JSONResponse({"error": "the store is unavailable; try again later"}, status_code=503)

    def require_token(authorization: str | None) -> None:
        if settings.api_token is None:
            raise HTTPException(503, "set ISSUE_LABELER_API_TOKEN to use this endpoint")
        expected = f"Bearer {settings.api_token.get_secret_value()}"
        if authorization is None or not secrets.compare_digest(authorization.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong bearer token")

    @app.post("/webhook", status_code=202)
    async def webhook(request: Request) -> JSONResponse:
        event = request.headers.get("x-github-event")
        delivery_id = request.headers.get("x-github-delivery")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.webhook_max_bytes:
            return _refuse(413, f"delivery larger than {settings.webhook_max_bytes} bytes", delivery_id)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > settings.webhook_max_bytes:
                return _refuse(413, f"delivery larger than {settings.webhook_max_bytes} bytes", delivery_id)
        if settings.webhook_secret is None:
            return _refuse(
                503, "ISSUE_LABELER_WEBHOOK_SECRET is not set; deliveries cannot be verified", delivery_id
            )
        secret_used = signature.matching_secret(
            [s.get_secret_value() for s in (settings.webhook_secret, *settings.webhook_previous_secrets)],
            bytes(body),
            request.headers.get("x-hub-signature-256"),
        )
        if secret_used is None:
            services.metrics.deliveries.labels(event or "unknown", "bad_signature").inc()
            return _refuse(401, "missing or wrong X-Hub-Signature-256", delivery_id)
        if secret_used > 0:
            _previous_secret_used(secret_used, delivery_id)
        if not event or not delivery_id:
            return _refuse(400, "X-GitHub-Event and X-GitHub-Delivery headers are required", delivery_id)
        if len(event) > MAX_EVENT or len(delivery_id) > MAX_DELIVERY_ID:
            return _refuse(
                400,
                f"X-GitHub-Event longer than {MAX_EVENT} or X-GitHub-Delivery longer than "
                f"{MAX_DELIVERY_ID} characters: not GitHub's",
                delivery_id[:MAX_DELIVERY_ID],
            )
        try:
            document = delivery_document(bytes(body), request.headers.get("content-type"))
            payload = json.loads(document)
        except MalformedDelivery as exc:
            return _refuse(400, f"body is not a webhook payload: {exc}", delivery_id)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _refuse(400, f"body is not JSON: {exc.__class__.__name__}", delivery_id)
        except RecursionError:
            return _refuse(400, "body is JSON nested too deeply to be a webhook payload", delivery_id)
        if not isinstance(payload, dict):
            return _refuse(400, "body is not a JSON object", delivery_id)
        hook_id = request.headers.get("x-github-hook-id", "")
        delivery = Delivery(
            delivery_id,
            event,
            payload,
            hook_id=int(hook_id) if hook_id.isdigit() and len(hook_id) < 19 else None,
            hook_target=request.headers.get("x-github-hook-installation-target-type", "")[:20] or None,
        )
        handled = services.handled(event)
        # The commit waits on the disk (and on SQLite's single writer): not on the event loop.
        try:
            accepted = await run_in_threadpool(services.queue.accept, delivery, document, handled=handled)
        except SQLAlchemyError as exc:
            # Not stored, so not acknowledged: GitHub lists the delivery as failed, and the bot
            # (a GitHub App) asks for it again later (bot/redelivery.py).
            services.metrics.deliveries.labels(event, "store_error").inc()
            log.error(
                "delivery %s (%s) not accepted, the store failed: %s; a GitHub App bot asks for it "
                "again once the store is back (else: the App's settings, Advanced, Recent Deliveries)",
                delivery_id,
                event,
                exc.__class__.__name__ + ": " + str(getattr(exc, "orig", exc)),
            )
            return JSONResponse(
                {"error": "the store is unavailable; the delivery was not accepted", "delivery": delivery_id},
                status_code=503,
            )
        if not accepted:
            services.metrics.deliveries.labels(event, "duplicate").inc()
            services.workers.wake()  # a failed job may have been put back by the redelivery
            return JSONResponse({"status": "duplicate", "delivery": delivery_id}, status_code=200)
        services.metrics.deliveries.labels(event, "accepted" if handled else "ignored").inc()
        if handled:
            services.workers.wake()
        return JSONResponse({"status": "accepted" if handled else "ignored", "delivery": delivery_id}, 202)

    previous_secrets_seen: set[int] = set()

    def _previous_secret_used(index: int, delivery_id: str | None) -> None:
        """Accepted, but the rotation is not finished: say so once per secret, count every one."""
        services.metrics.previous_secret_deliveries.labels(str(index)).inc()
        if index not in previous_secrets_seen:
            previous_secrets_seen.add(index)
            log.warning(
                "delivery %s is signed with ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS' secret %d, not "
                "ISSUE_LABELER_WEBHOOK_SECRET: GitHub still signs with an earlier secret (said once; "
                "counted in issue_labeler_previous_secret_deliveries_total). Set the new secret on "
                "GitHub, then drop the earlier one from the list.",
                delivery_id or "-",
                index,
            )

    def _refuse(status: int, reason: str, delivery_id: str | None) -> JSONResponse:
        log.warning("delivery %s refused (%d): %s", delivery_id or "-", status, reason)
        return JSONResponse({"error": reason}, status_code=status)

    @app.post("/predict", max_body_size=PREDICT_MAX_BYTES)
    def predict(
        request: PredictRequest, authorization: str | None = Header(default=None)
    ) -> dict[str, object]:
        require_token(authorization)
        repository = _known_spelling(request.repository, services.models.versions()) or request.repository
        bundle = services.models.get(repository)
        if bundle is None:
            raise HTTPException(404, f"{request.repository} has no model bundle in service")
        predictions = bundle.predict(request.title, request.body)
        return {
            "repository": repository,
            "bundle": bundle.version,
            "labels": [p.label for p in predictions if p.applied],
            "scores": [
                {
                    "label": p.label,
                    "score": round(p.score, 4),
                    "threshold": round(p.threshold, 4),
                    "applied": p.applied,
                }
                for p in predictions
            ],
        }

    @app.post("/admin/refresh", status_code=202, max_body_size=ADMIN_MAX_BYTES)
    def admin_refresh(
        request: RefreshRequestBody | None = None, authorization: str | None = Header(default=None)
    ) -> dict[str, object]:
        require_token(authorization)
        request = request or RefreshRequestBody()
        repos = services.handlers.installed_repositories()
        if request.repository is not None:
            spelled = _known_spelling(request.repository, repos)
            if spelled is None:
                raise HTTPException(404, f"{request.repository} is not a repository the App is installed on")
            repos = [spelled]
        for repo in repos:
            services.retrainer.on_demand(repo, request.reason)
        log.info("refresh requested through the API for %s", ", ".join(repos) or "no repository")
        return {"started": repos, "history": "GET /status shows each run when it ends"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready when deliveries can be kept: the store answers (bundles are loaded before the
        server starts). A refused bundle is reported, not a reason to be taken out of service:
        that would refuse every repository's deliveries for one repository's model."""
        problems = []
        try:
            with services.store.session() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means: not ready
            problems.append(f"store unreachable: {exc.__class__.__name__}")
        body = {
            "ready": not problems,
            "problems": problems,
            "bundles": services.models.versions(),
            "bundles_refused": services.models.errors(),
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        services.metrics.model_version.clear()
        for repo, version in services.models.versions().items():
            services.metrics.model_version.labels(repo, version).set(1)
        services.metrics.models_loaded.set(len(services.models.loaded()))
        services.metrics.jobs_in_store.clear()
        try:
            counts = services.queue.counts()
        except Exception as exc:  # the store is down: /readyz says so; the other metrics still serve
            log.warning("job counts left out of /metrics: store unreachable (%s)", exc.__class__.__name__)
        else:
            for job_status in JOB_STATUSES:
                services.metrics.jobs_in_store.labels(job_status).set(counts.get(job_status, 0))
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status")
    def status(authorization: str | None = Header(default=None)) -> dict[str, object]:
        require_token(authorization)
        repos = services.handlers.installed_repositories()
        versions = services.models.versions()
        loaded = set(services.models.loaded())
        with services.store.session() as session:
            precision = feedback.live_precision(session)
        return {
            "repositories": {
                repo: {
                    "bundle": versions.get(repo),
                    "labeling": repo in versions,
                    "model_loaded": repo in loaded,
                    "bundle_error": services.models.errors().get(repo),
                    "config_error": services.configs.errors().get(repo),
                    "live_precision": precision.get(repo, {}),
                    "refreshes": services.retrainer.runs.history(repo, limit=5),
                }
                for repo in sorted(set(repos) | set(versions))
            },
            "jobs": services.queue.counts(),
            "failed_jobs": services.queue.failed(),
            "retrying_jobs": services.queue.retrying(),
            "redelivery": services.redeliverer.last.summary() if services.redeliverer.last else None,
        }

    return app
