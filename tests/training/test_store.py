"""The store on SQLite and PostgreSQL: schema by migrations, idempotent upserts, label history."""

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from training.records import IssueRecord, LabelRecord
from training.store import Store
from training.store.db import migrate
from training.store.models import Base, Issue, Label, LabelEvent
from training.store.upserts import LabelCatalogue, Outcome, ensure_repository, upsert_issue

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _issue(number: int | None = 1, labels: tuple[str, ...] = ("bug",), **kw: object) -> IssueRecord:
    fields: dict = dict(
        repo="octo/repo",
        number=number,
        title="Crash when fitting",
        body="Traceback ...",
        labels=tuple(LabelRecord(name) for name in labels),
        state="open",
        created_at=T0,
        updated_at=T0,
    )
    fields.update(kw)
    return IssueRecord(**fields)


def _store_one(store: Store, record: IssueRecord) -> Outcome:
    with store.session() as session:
        catalogue = LabelCatalogue(session, ensure_repository(session, record.repo))
        return upsert_issue(session, catalogue, record, source="import")


def test_migrations_match_the_models_and_rerun_cleanly(store: Store) -> None:
    migrate(store.engine)  # a second run is a no-op
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_upsert_is_idempotent_and_edits_update_in_place(store: Store) -> None:
    assert _store_one(store, _issue()) is Outcome.NEW
    assert _store_one(store, _issue()) is Outcome.UNCHANGED
    edited = _issue(
        title="Crash when fitting with NaN", labels=("bug", "module:tree"), updated_at=T0 + timedelta(hours=1)
    )
    assert _store_one(store, edited) is Outcome.UPDATED
    with store.session() as session:
        issues = session.scalars(select(Issue)).all()
        assert len(issues) == 1
        assert issues[0].title == "Crash when fitting with NaN"
        assert sorted(link.label.name for link in issues[0].labels) == ["bug", "module:tree"]
        assert issues[0].updated_at == T0 + timedelta(hours=1)


def test_an_older_copy_never_overwrites_a_newer_one(store: Store) -> None:
    _store_one(store, _issue(title="new title", updated_at=T0 + timedelta(days=1)))
    assert _store_one(store, _issue(title="old title", updated_at=T0)) is Outcome.UNCHANGED
    with store.session() as session:
        assert session.scalar(select(Issue.title)) == "new title"


def test_label_changes_are_recorded_as_events(store: Store) -> None:
    _store_one(store, _issue(labels=("bug",)))
    _store_one(store, _issue(labels=("API",), updated_at=T0 + timedelta(hours=2)))
    with store.session() as session:
        events = session.execute(
            select(LabelEvent.action, Label.name).join(Label).order_by(LabelEvent.id)
        ).all()
    assert [tuple(e) for e in events] == [("labeled", "bug"), ("labeled", "API"), ("unlabeled", "bug")]


def test_catalogue_follows_renames_and_knows_deleted_labels(store: Store) -> None:
    with store.session() as session:
        repo = ensure_repository(session, "octo/repo")
        LabelCatalogue(session, repo).replace_all(
            [LabelRecord("bug", node_id="LA_1", color="d73a4a"), LabelRecord("docs", node_id="LA_2")]
        )
    with store.session() as session:
        repo = ensure_repository(session, "octo/repo")
        LabelCatalogue(session, repo).replace_all([LabelRecord("type: bug", node_id="LA_1", color="d73a4a")])
    with store.session() as session:
        rows = {row.node_id: row for row in session.scalars(select(Label))}
        assert len(rows) == 2
        assert rows["LA_1"].name == "type: bug" and rows["LA_1"].deleted_at is None
        assert rows["LA_2"].name == "docs" and rows["LA_2"].deleted_at is not None


def test_issues_without_numbers_are_keyed_by_their_text(store: Store) -> None:
    a = _issue(number=None, title="A")
    b = _issue(number=None, title="B")
    assert _store_one(store, a) is Outcome.NEW
    assert _store_one(store, b) is Outcome.NEW
    assert _store_one(store, a) is Outcome.UNCHANGED
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Issue)) == 2


def test_sqlite_commits_flush_to_disk_unless_the_url_asks_for_normal(tmp_path) -> None:
    levels = {}
    for url in (f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db?synchronous=normal"):
        store = Store(url)
        try:
            with store.engine.connect() as connection:
                levels[url.rsplit("/", 1)[1]] = connection.exec_driver_sql("PRAGMA synchronous").scalar()
        finally:
            store.close()
    assert levels == {"a.db": 2, "b.db?synchronous=normal": 1}  # FULL, NORMAL
    assert (tmp_path / "b.db").is_file()  # the query is ours, not part of the file name


def test_a_repository_first_seen_by_several_processes_at_once_is_created_once(store: Store) -> None:
    """Two replicas' first refresh of a new repository start together: neither may fail."""
    names = [f"octo/new-{i}" for i in range(10)]
    together = threading.Barrier(4)
    ids: dict[str, set[int]] = {name: set() for name in names}
    errors: list[BaseException] = []

    def first_sight() -> None:
        for name in names:
            together.wait()
            try:
                with store.session() as session:
                    ids[name].add(ensure_repository(session, name).id)
            except Exception as exc:  # noqa: BLE001 (collected for the assertion)
                errors.append(exc)

    threads = [threading.Thread(target=first_sight) for _ in range(together.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:2]
    assert all(len(found) == 1 for found in ids.values()), ids


def _store_together(store: Store, records: list[IssueRecord], writers: int = 4) -> dict[int, list[Outcome]]:
    """Each record stored by ``writers`` threads at the same instant; their outcomes by number."""
    together = threading.Barrier(writers)
    outcomes: dict[int, list[Outcome]] = {record.number: [] for record in records}  # type: ignore[misc]
    errors: list[BaseException] = []

    def store_each() -> None:
        for record in records:
            together.wait()
            try:
                outcomes[record.number].append(_store_one(store, record))
            except Exception as exc:  # noqa: BLE001 (collected for the assertion)
                errors.append(exc)

    threads = [threading.Thread(target=store_each) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:2]
    return outcomes


def test_an_issue_stored_by_several_processes_at_once_is_stored_once(store: Store) -> None:
    """A refresh's fetch and the bot may store the same issue, with the same new labels, at the
    same instant: neither may fail, and each label goes on (and comes off) the issue once."""
    with store.session() as session:
        ensure_repository(session, "octo/repo")
    bug, api, docs = (LabelRecord(name, node_id=f"LA_{name}") for name in ("bug", "API", "docs"))
    first = [IssueRecord(**{**vars(_issue(number=n)), "labels": (bug, api)}) for n in range(1, 11)]
    outcomes = _store_together(store, first)
    assert all(sorted(found) == [Outcome.NEW] + [Outcome.UNCHANGED] * 3 for found in outcomes.values()), (
        outcomes
    )
    # An edit of stored issues: on PostgreSQL a writer may read the issue before another's edit
    # commits and store the same edit again; what counts is that no label change is doubled.
    later = T0 + timedelta(hours=1)
    _store_together(store, [replace(record, labels=(api, docs), updated_at=later) for record in first])
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Issue)) == 10
        assert session.scalar(select(func.count()).select_from(Label)) == 3
        events = session.execute(
            select(Label.name, LabelEvent.action, func.count())
            .join(Label)
            .group_by(Label.name, LabelEvent.action)
            .order_by(Label.name, LabelEvent.action)
        ).all()
    assert [tuple(e) for e in events] == [
        ("API", "labeled", 10),
        ("bug", "labeled", 10),
        ("bug", "unlabeled", 10),
        ("docs", "labeled", 10),
    ]
