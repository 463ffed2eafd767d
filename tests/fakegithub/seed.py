"""Fill the fake GitHub with real issues from ``../shared/data`` exports."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from tests.fakegithub.server import FakeGitHub, FakeRepo


def seed_from_jsonl(fake: FakeGitHub, path: Path, repo_name: str, *, limit: int | None = None) -> FakeRepo:
    """Serve the rows of a shared export as that repository's issues and pull requests.

    Rows carry no ``updated_at``; an issue is taken as last updated a minute after its
    creation, which keeps the update order of the real data.
    """
    repo = fake.repos.get(repo_name) or fake.add_repo(repo_name)
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows = [row for row in rows if row["repo"] == repo_name and row.get("number") is not None]
    rows.sort(key=lambda row: row["number"])
    for row in rows[:limit]:
        created = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
        fake.add_issue(
            repo,
            number=row["number"],
            title=row["title"],
            body=row.get("body"),
            labels=row.get("labels") or [],
            state=row.get("state") or "open",
            created_at=created,
            updated_at=created + timedelta(minutes=1),
            is_pull_request=bool(row.get("is_pull_request")),
        )
    return repo
