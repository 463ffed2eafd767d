"""What the store holds per repository, for people: counts of issues, labels and cursors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from training.store.models import FetchCursor, Issue, IssueLabel, Label, Repository, TemplateLabel


@dataclass(frozen=True)
class RepositorySummary:
    full_name: str
    issues: int
    pull_requests: int
    labeled: int
    labels: int
    deleted_labels: int
    template_labels: list[str]
    newest_issue: datetime | None
    cursor: datetime | None


def summarize(session: Session) -> list[RepositorySummary]:
    result = []
    for repo in session.scalars(select(Repository).order_by(Repository.full_name)):
        issues = select(func.count()).select_from(Issue).where(Issue.repository_id == repo.id)
        labeled = (
            select(func.count(func.distinct(IssueLabel.issue_id)))
            .join(Issue, Issue.id == IssueLabel.issue_id)
            .where(Issue.repository_id == repo.id)
        )
        labels = select(func.count()).select_from(Label).where(Label.repository_id == repo.id)
        cursor = session.get(FetchCursor, repo.id)
        result.append(
            RepositorySummary(
                full_name=repo.full_name,
                issues=session.scalar(issues.where(Issue.is_pull_request.is_(False))) or 0,
                pull_requests=session.scalar(issues.where(Issue.is_pull_request.is_(True))) or 0,
                labeled=session.scalar(labeled) or 0,
                labels=session.scalar(labels.where(Label.deleted_at.is_(None))) or 0,
                deleted_labels=session.scalar(labels.where(Label.deleted_at.is_not(None))) or 0,
                template_labels=sorted(
                    set(
                        session.scalars(
                            select(TemplateLabel.name).where(TemplateLabel.repository_id == repo.id)
                        )
                    )
                ),
                newest_issue=session.scalar(
                    select(func.max(Issue.created_at)).where(Issue.repository_id == repo.id)
                ),
                cursor=cursor.since if cursor else None,
            )
        )
    return result


def format_summaries(rows: list[RepositorySummary]) -> str:
    header = (
        f"{'repository':<28} {'issues':>7} {'PRs':>5} {'labeled':>8} {'labels':>7}  newest issue  form labels"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        newest = row.newest_issue.date().isoformat() if row.newest_issue else "-"
        lines.append(
            f"{row.full_name:<28} {row.issues:>7} {row.pull_requests:>5} {row.labeled:>8} {row.labels:>7}"
            f"  {newest:<12}  {', '.join(row.template_labels) or '-'}"
        )
    return "\n".join(lines)
