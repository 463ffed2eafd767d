"""Idempotent writes: storing the same thing twice changes nothing, an edit updates in place."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from training.records import IssueRecord, LabelRecord
from training.store.models import (
    Base,
    FetchCursor,
    Issue,
    IssueLabel,
    Label,
    LabelEvent,
    Repository,
    SplitAssignment,
    TemplateLabel,
    WebhookJob,
)

Row = TypeVar("Row", bound=Base)
log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def now() -> datetime:
    return datetime.now(UTC)


def insert_unless_present(
    session: Session, model: type[Row], values: dict[str, Any], unique: list[str]
) -> Row | None:
    """Insert a row unless one with the same ``unique`` columns exists, committed by another
    process meanwhile included (the insert waits for that process's commit): the new row, or
    None when it was there. Two writers of the same new row then never fail on each other's."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(model).values(**values).on_conflict_do_nothing(index_elements=unique).returning(model)
    return session.scalars(statement).first()


def get_repository(session: Session, full_name: str) -> Repository | None:
    return session.scalar(select(Repository).where(Repository.full_name == full_name))


def follow_rename(session: Session, full_name: str, github_id: int) -> str | None:
    """A repository renamed or transferred on GitHub keeps its id: the row known by that id under
    another name takes the new one, history and all. The old name is returned (None: no rename).

    A row made under the new name before the rename was known (a refresh run by hand under the
    new name while GitHub could not be asked) holds no issues and no id: it gives way."""
    named = get_repository(session, full_name)
    if named is not None and not _placeholder(session, named):
        return None
    row = session.scalar(
        select(Repository).where(Repository.github_id == github_id, Repository.full_name != full_name)
    )
    if row is None:
        return None
    if named is not None:  # its refresh runs and lock go with it (DB cascades)
        session.execute(delete(Repository).where(Repository.id == named.id))
        session.expunge(named)
        log.warning("dropped the empty row of %s made before its rename was known", full_name)
    old, row.full_name = row.full_name, full_name
    session.flush()
    log.warning("repository %s is now %s on GitHub (id %d): its data follows", old, full_name, github_id)
    return old


def _placeholder(session: Session, repo: Repository) -> bool:
    has_issues = session.scalar(select(Issue.id).where(Issue.repository_id == repo.id).limit(1))
    return repo.github_id is None and has_issues is None


def ensure_repository(
    session: Session, full_name: str, *, github_id: int | None = None, node_id: str | None = None
) -> Repository:
    """The repository row, created on first sight; ids are filled in when GitHub tells them.

    Two processes may see a new repository at the same moment (two replicas' first scheduled
    refresh, a refresh beside the bot): the row is inserted unless it exists by then, so neither
    fails on the other's insert."""
    repo = get_repository(session, full_name)
    if repo is None and github_id is not None and follow_rename(session, full_name, github_id):
        repo = get_repository(session, full_name)
    if repo is None:
        values = {"full_name": full_name, "created_at": now()}
        repo = insert_unless_present(session, Repository, values, ["full_name"]) or get_repository(
            session, full_name
        )
        if repo is None:  # inserted here, or committed by the other process first: never so
            raise RuntimeError(f"the repository row for {full_name} is neither inserted nor found")
    if github_id is not None:
        repo.github_id = github_id
    if node_id is not None:
        repo.node_id = node_id
    session.flush()
    return repo


class LabelCatalogue:
    """The repository's labels, resolved by node id first (renames) and by name otherwise."""

    def __init__(self, session: Session, repository: Repository) -> None:
        self.session = session
        self.repository = repository
        self._loaded = False  # read on first use: most new issues carry no label at all
        self._by_node: dict[str, Label] = {}
        self._by_name: dict[str, Label] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        rows = self.session.scalars(select(Label).where(Label.repository_id == self.repository.id)).all()
        self._by_node = {row.node_id: row for row in rows if row.node_id}
        self._by_name = {row.name: row for row in rows if row.deleted_at is None}
        self._loaded = True

    def resolve(self, record: LabelRecord) -> Label:
        """The catalogue row for a label seen on an issue or in a listing, updated from it."""
        self._load()
        row = self._by_node.get(record.node_id) if record.node_id else None
        if row is None:
            row = self._by_name.get(record.name)
            if row is not None and row.node_id and record.node_id and row.node_id != record.node_id:
                # Same name, another node: the old label was deleted and a new one created.
                self._mark_deleted(row)
                row = None
        if row is None:
            row = self._new_label(record)
        changed = False
        if row.name != record.name:
            self._by_name.pop(row.name, None)
            row.name = record.name
            changed = True
        for attr in ("node_id", "github_id", "color", "description"):
            value = getattr(record, attr)
            if value is not None and getattr(row, attr) != value:
                setattr(row, attr, value)
                changed = True
        if row.deleted_at is not None:
            row.deleted_at = None
            changed = True
        if changed:
            row.updated_at = now()
        self._by_name[row.name] = row
        if row.node_id:
            self._by_node[row.node_id] = row
        self.session.flush()
        return row

    def _new_label(self, record: LabelRecord) -> Label:
        if record.node_id is None:  # nothing to recognise it by but its name
            row = Label(repository_id=self.repository.id, name=record.name, updated_at=now())
            self.session.add(row)
            return row
        # The bot and a fetch may meet the same new label at once.
        values = {"repository_id": self.repository.id, "node_id": record.node_id}
        found = insert_unless_present(
            self.session, Label, values | {"name": record.name, "updated_at": now()}, list(values)
        ) or self.session.scalar(
            select(Label)
            .where(Label.repository_id == self.repository.id, Label.node_id == record.node_id)
            .execution_options(populate_existing=True)
        )
        if found is None:  # inserted here, or committed by the other process first: never so
            raise RuntimeError(
                f"label {record.name} of {self.repository.full_name} is neither inserted nor found"
            )
        return found

    def delete(self, record: LabelRecord) -> None:
        self._load()
        row = self._by_node.get(record.node_id) if record.node_id else None
        row = row or self._by_name.get(record.name)
        if row is not None:
            self._mark_deleted(row)

    def _mark_deleted(self, row: Label) -> None:
        if row.deleted_at is None:
            row.deleted_at = now()
            row.updated_at = row.deleted_at
        self._by_name.pop(row.name, None)

    def replace_all(self, records: Iterable[LabelRecord]) -> None:
        """Apply a complete listing: labels absent from it are known to be gone."""
        self._load()
        seen = {self.resolve(record).id for record in records}
        for row in list(self._by_name.values()):
            if row.id not in seen:
                self._mark_deleted(row)
        self.session.flush()


def label_node_ids(session: Session, full_name: str, names: Iterable[str]) -> dict[str, str]:
    """Node ids of the repository's live labels with these names: a bundle keeps them so the
    bot can follow a label renamed after training."""
    repository = get_repository(session, full_name)
    if repository is None:
        return {}
    rows = session.scalars(
        select(Label).where(
            Label.repository_id == repository.id, Label.deleted_at.is_(None), Label.name.in_(list(names))
        )
    ).all()
    return {row.name: row.node_id for row in rows if row.node_id}


def upsert_issue(
    session: Session,
    catalogue: LabelCatalogue,
    record: IssueRecord,
    *,
    source: str,
    actor_login: str | None = None,
    actor_type: str | None = None,
    delivery_id: str | None = None,
) -> Outcome:
    """Store one issue and its current labels; label changes are kept as label events
    (with who made them, when a webhook says so)."""
    repository = catalogue.repository
    content_hash = record.content_hash()
    stamp = now()
    fields = {
        "number": record.number,
        "title": record.title,
        "body": record.body,
        "state": record.state,
        "is_pull_request": record.is_pull_request,
        "author_login": record.author_login,
        "author_association": record.author_association,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "closed_at": record.closed_at,
        "content_hash": content_hash,
        "source": source,
        "last_changed_at": stamp,
    }
    issue = _stored_issue(session, repository, record.key)
    inserted = None
    if issue is None:
        new_row = {"repository_id": repository.id, "key": record.key, "first_stored_at": stamp}
        new_row |= {"node_id": record.node_id, "github_id": record.github_id}
        inserted = insert_unless_present(session, Issue, fields | new_row, ["repository_id", "key"])
    if inserted is not None:
        issue, outcome = inserted, Outcome.NEW
    else:
        issue = issue or _stored_issue(session, repository, record.key)  # another process's, just now
        if issue is None:  # inserted by the other process or found: never so
            raise RuntimeError(f"issue {record.key} of {repository.full_name} is neither inserted nor found")
        if issue.content_hash == content_hash:
            return Outcome.UNCHANGED
        if (
            issue.updated_at is not None
            and record.updated_at is not None
            and record.updated_at < issue.updated_at
        ):
            return Outcome.UNCHANGED  # an older copy of what is stored: keep the newer one
        outcome = Outcome.UPDATED
        for name, value in fields.items():
            setattr(issue, name, value)
        issue.node_id = record.node_id or issue.node_id
        issue.github_id = record.github_id or issue.github_id
        session.flush()

    wanted = {catalogue.resolve(label).id for label in record.labels}
    current = {link.label_id for link in issue.labels}
    changes = [(label_id, "labeled") for label_id in sorted(wanted - current)]
    changes += [(label_id, "unlabeled") for label_id in sorted(current - wanted)]
    for label_id, action in changes:
        # A link another process put on or took off meanwhile is its change to record, not ours.
        if action == "labeled":
            link_row = {"issue_id": issue.id, "label_id": label_id}
            changed = insert_unless_present(session, IssueLabel, link_row, list(link_row)) is not None
        else:
            link = IssueLabel.issue_id == issue.id, IssueLabel.label_id == label_id
            changed = (
                session.execute(delete(IssueLabel).where(*link).returning(IssueLabel.label_id)).first()
                is not None
            )
        if changed:
            session.add(
                LabelEvent(
                    issue_id=issue.id,
                    label_id=label_id,
                    action=action,
                    source=source,
                    actor_login=actor_login,
                    actor_type=actor_type,
                    delivery_id=delivery_id,
                    occurred_at=record.updated_at or stamp,
                )
            )
    if changes:
        session.expire(issue, ["labels"])
    session.flush()
    return outcome


def forget_issue(session: Session, repository: Repository, key: str) -> bool:
    """Remove an issue that left the repository (deleted, or transferred elsewhere) with its
    labels, label events and split: a deleted issue's text is not trained on again. Whether it
    was stored at all is returned."""
    removed = session.execute(
        delete(Issue).where(Issue.repository_id == repository.id, Issue.key == key).returning(Issue.id)
    ).all()
    return bool(removed)


def forget_repository(session: Session, full_name: str) -> bool:
    """Remove everything stored about a repository: its issues, labels, feedback, predictions,
    refresh history (DB cascades) and its webhook deliveries, whose payloads hold issue text;
    a delivery being worked on now is left to finish. Whether it was stored at all is returned."""
    session.execute(
        delete(WebhookJob).where(WebhookJob.repository == full_name, WebhookJob.status != "running")
    )
    removed = session.execute(
        delete(Repository).where(Repository.full_name == full_name).returning(Repository.id)
    ).all()
    return bool(removed)


def _stored_issue(session: Session, repository: Repository, key: str) -> Issue | None:
    return session.scalar(
        select(Issue)
        .where(Issue.repository_id == repository.id, Issue.key == key)
        .execution_options(populate_existing=True)
    )


def set_template_labels(session: Session, repository: Repository, by_source: dict[str, list[str]]) -> None:
    """Record which labels each issue form applies; sources not given are left as they were."""
    for source, names in by_source.items():
        existing = {
            row.name: row
            for row in session.scalars(
                select(TemplateLabel).where(
                    TemplateLabel.repository_id == repository.id, TemplateLabel.source == source
                )
            )
        }
        for name in set(names) - existing.keys():
            session.add(
                TemplateLabel(repository_id=repository.id, name=name, source=source, updated_at=now())
            )
        for name in existing.keys() - set(names):
            session.delete(existing[name])
    session.flush()


def replace_template_sources(
    session: Session, repository: Repository, by_source: dict[str, list[str]], *, prefix: str
) -> None:
    """Replace every source under ``prefix`` (e.g. the template folder) with a fresh reading."""
    stale = session.scalars(
        select(TemplateLabel).where(
            TemplateLabel.repository_id == repository.id, TemplateLabel.source.startswith(prefix)
        )
    ).all()
    for row in stale:
        if row.source not in by_source:
            session.delete(row)
    set_template_labels(session, repository, by_source)


def record_given_split(session: Session, repository: Repository, key: str, split: str) -> None:
    """A split that the data itself prescribes (published benchmarks), used as given."""
    issue_id = session.scalar(select(Issue.id).where(Issue.repository_id == repository.id, Issue.key == key))
    assert issue_id is not None, "record the split after storing the issue"
    row = session.get(SplitAssignment, issue_id)
    if row is None:
        session.add(
            SplitAssignment(issue_id=issue_id, split=split, assigned_at=now(), meta={"method": "given"})
        )
    elif row.split != split:
        row.split, row.meta, row.assigned_at = split, {"method": "given"}, now()
    session.flush()


def cursor_of(session: Session, repository: Repository) -> FetchCursor:
    cursor = session.get(FetchCursor, repository.id)
    if cursor is None:
        cursor = FetchCursor(repository_id=repository.id)
        session.add(cursor)
        session.flush()
    return cursor


class Counts:
    """How many issues a sync stored as new, updated or unchanged, and what it had to skip."""

    def __init__(self) -> None:
        self.by_outcome: dict[Outcome, int] = {outcome: 0 for outcome in Outcome}
        self.skipped = 0

    def add(self, outcome: Outcome) -> None:
        self.by_outcome[outcome] += 1

    def merge(self, other: Counts) -> None:
        for outcome, n in other.by_outcome.items():
            self.by_outcome[outcome] += n
        self.skipped += other.skipped

    def __getitem__(self, outcome: Outcome) -> int:
        return self.by_outcome[outcome]

    def summary(self) -> str:
        text = ", ".join(f"{n} {outcome.value}" for outcome, n in self.by_outcome.items())
        return text + (f", {self.skipped} skipped" if self.skipped else "")
