"""``python -m bot demo``: serve the bundles in the local registry on 127.0.0.1, writing nothing
to GitHub, and print a signed example delivery and a /predict call to try it with.

Needs no GitHub App: the bot runs as a dry run (decides and logs what it would apply).
"""

from __future__ import annotations

import json
import secrets
import shlex
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from bot.signature import sign
from training.registry import Registry
from training.settings import Settings
from training.store import Store
from training.store.models import Issue, Repository


def demo_settings(settings: Settings) -> Settings:
    """Dry run on loopback, with a webhook secret and API token made up when none is set."""
    update: dict[str, object] = {
        "dry_run": True,
        "bot_host": "127.0.0.1",
        "refresh_schedule": "",  # no retraining behind the visitor's back
        "refresh_check_minutes": 0.0,
    }
    if settings.webhook_secret is None:
        update["webhook_secret"] = SecretStr(secrets.token_urlsafe(24))
    if settings.api_token is None:
        update["api_token"] = SecretStr(secrets.token_urlsafe(24))
    return settings.model_copy(update=update)


def demo_repository(settings: Settings) -> str | None:
    registry = Registry(settings.registry_dir)
    if not registry.root.is_dir():
        return None
    for folder in sorted(registry.root.iterdir()):
        repo = folder.name.replace("__", "/", 1)
        if folder.is_dir() and not folder.is_symlink() and "/" in repo and registry.current_version(repo):
            return repo
    return None


def example_delivery(settings: Settings, repo: str, folder: Path, *, show_token: bool = True) -> str:
    """Writes an ``issues.opened`` delivery for the repository's newest stored issue and returns
    the curl commands that send it and that call /predict."""
    store = Store(settings.database_url)
    try:
        with store.session() as session:
            issue = session.scalars(
                select(Issue)
                .join(Repository, Repository.id == Issue.repository_id)
                .where(
                    Repository.full_name == repo, Issue.number.is_not(None), Issue.is_pull_request.is_(False)
                )
                .order_by(Issue.created_at.desc())
                .limit(1)
            ).first()
            title, body = (issue.title, issue.body) if issue else ("Example issue", "")
            # a new number: the delivery must not overwrite the stored issue (and its labels)
            number = 1 + (
                session.scalar(
                    select(func.max(Issue.number))
                    .join(Repository, Repository.id == Issue.repository_id)
                    .where(Repository.full_name == repo)
                )
                or 0
            )
    finally:
        store.close()
    owner, name = repo.split("/")
    payload = {
        "action": "opened",
        "issue": {
            "number": number,
            "title": title,
            "body": body,
            "labels": [],
            "state": "open",
            "user": {"login": "someone", "type": "User"},
            "created_at": "2026-11-23T12:00:00Z",
            "updated_at": "2026-11-23T12:00:00Z",
            "author_association": "NONE",
        },
        "repository": {"full_name": repo, "name": name, "owner": {"login": owner}, "default_branch": "main"},
        "sender": {"login": "someone", "type": "User"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "issues-opened.json"
    body_bytes = json.dumps(payload).encode()
    path.write_bytes(body_bytes)
    assert settings.webhook_secret is not None and settings.api_token is not None
    url = f"http://127.0.0.1:{settings.bot_port}"
    predict = json.dumps({"repository": repo, "title": title, "body": body[:500]})
    signature = sign(settings.webhook_secret.get_secret_value(), body_bytes)
    # a token the demo made up is shown; an operator's own is referred to, never printed
    token = settings.api_token.get_secret_value() if show_token else "$ISSUE_LABELER_API_TOKEN"
    bearer = f"Authorization: Bearer {token}"
    delivery = f"demo-{secrets.token_hex(4)}"
    return "\n".join(
        [
            f"Serving {repo} on {url} (dry run: decisions are logged, nothing is written to GitHub).",
            "",
            f"A signed issues.opened delivery (a real {repo} issue's text); this log shows the decision:",
            f"  curl -s {url}/webhook -H 'X-GitHub-Event: issues' -H 'X-GitHub-Delivery: {delivery}' \\",
            f"       -H 'X-Hub-Signature-256: {signature}' \\",
            f"       -H 'Content-Type: application/json' --data-binary @{path}",
            "",
            "Scores for any text:",
            f'  curl -s {url}/predict -H "{bearer}" \\',
            f"       -H 'Content-Type: application/json' -d {shlex.quote(predict)}",
            "",
            f'Status: curl -s {url}/status -H "{bearer}"',
            "Stop with Ctrl-C.",
        ]
    )
