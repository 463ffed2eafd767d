"""Fetching over real HTTP from the fake GitHub: pagination, incremental runs, faults, auth."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from tests.conftest import make_settings
from tests.fakegithub import FakeGitHub, FakeRepo, Fault, secondary_rate_limit
from tests.fakegithub.seed import seed_from_jsonl
from training.fetch import FetchError, FetchReport, UnknownRepository, fetch_repository
from training.github_client import GitHubAuthError, GitHubClients
from training.refresh_runs import FAILED, RefreshRuns
from training.settings import Settings
from training.store import Store
from training.store.models import FetchCursor, Issue, Label, Repository, TemplateLabel
from training.store.upserts import Outcome

REPO = "rails/rails"
ISSUES_PATH = r"/repos/rails/rails/issues"


def _page(n: int) -> str:
    return rf"(^|&)page={n}(&|$)"


@pytest.fixture
def rails(fake_github: FakeGitHub, shared_data: Path) -> FakeRepo:
    """The real rails/rails items (issues and PRs) served by the fake, with an issue form."""
    repo = seed_from_jsonl(fake_github, shared_data / "rails_small" / "issues.jsonl", REPO, limit=200)
    repo.contents[".github/ISSUE_TEMPLATE/bug_report.yml"] = (
        "name: Bug report\ndescription: Report a bug\nlabels: ['needs triage']\nbody: []\n"
    )
    repo.contents[".github/ISSUE_TEMPLATE/config.yml"] = "blank_issues_enabled: false\n"
    return repo


def _fetch(store: Store, settings: Settings) -> FetchReport:
    return fetch_repository(store, GitHubClients(settings).for_repository(REPO), REPO, settings=settings)


def _stored(store: Store) -> dict[int | None, tuple[str, str | None, bool, list[str]]]:
    with store.session() as session:
        return {
            issue.number: (
                issue.title,
                issue.state,
                issue.is_pull_request,
                sorted(link.label.name for link in issue.labels),
            )
            for issue in session.scalars(select(Issue))
        }


def _served(repo: FakeRepo) -> dict[int, tuple[str, str, bool, list[str]]]:
    return {
        number: (
            item["title"],
            item["state"],
            "pull_request" in item,
            sorted(label["name"] for label in item["labels"]),
        )
        for number, item in repo.issues.items()
    }


def test_first_fetch_takes_everything_page_by_page(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    report = _fetch(store, settings)
    assert report.counts[Outcome.NEW] == 200
    assert _stored(store) == _served(rails)
    pages = [r.query.get("page", ["1"])[0] for r in fake_github.requests_to(ISSUES_PATH)]
    assert pages == [str(n) for n in range(1, 9)]  # 200 items, 25 a page, following Link headers
    first = fake_github.requests_to(ISSUES_PATH)[0].query
    assert first["sort"] == ["updated"] and first["direction"] == ["asc"] and first["state"] == ["all"]
    assert "since" not in first
    with store.session() as session:
        assert set(session.scalars(select(TemplateLabel.name))) == {"needs triage"}
        assert {label.name for label in session.scalars(select(Label))} == set(rails.labels)
        cursor = session.scalar(select(FetchCursor))
        newest = max(item["updated_at"] for item in rails.issues.values())
        assert cursor.since == datetime.fromisoformat(newest.replace("Z", "+00:00"))
        assert cursor.last_completed_at is not None and cursor.last_error is None


def test_issue_templates_that_cannot_be_read_are_skipped_not_the_fetch(
    store: Store, settings: Settings, rails: FakeRepo
) -> None:
    # over the contents API's 1 MB (an AssertionError in PyGithub) and nested past the YAML
    # parser's depth (a RecursionError): each stopped every fetch of the repository
    rails.contents[".github/ISSUE_TEMPLATE/huge.md"] = "---\nlabels: huge\n---\n" + "x" * (1024 * 1024)
    rails.contents[".github/ISSUE_TEMPLATE/deep.yml"] = "labels: " + "[" * 5000 + "]" * 5000 + "\n"
    report = _fetch(store, settings)
    assert report.counts[Outcome.NEW] == 200
    with store.session() as session:
        assert set(session.scalars(select(TemplateLabel.name))) == {"needs triage"}


def test_later_fetches_ask_only_for_changes(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    _fetch(store, settings)
    again = _fetch(store, settings)
    assert again.counts[Outcome.NEW] == 0 and again.counts[Outcome.UPDATED] == 0
    since = fake_github.requests_to(ISSUES_PATH)[-1].query["since"][0]
    assert since == max(item["updated_at"] for item in rails.issues.values())

    later = datetime.now(UTC)
    number = sorted(rails.issues)[3]
    fake_github.edit_issue(rails, number, later, title="Edited title", labels=["activerecord", "docs"])
    fake_github.add_issue(
        rails,
        number=99999,
        title="A new issue",
        body="body",
        labels=["railties"],
        created_at=later,
        updated_at=later + timedelta(seconds=1),
    )
    third = _fetch(store, settings)
    assert (third.counts[Outcome.NEW], third.counts[Outcome.UPDATED]) == (1, 1)
    assert _stored(store) == _served(rails)


def test_fetch_under_a_repositorys_new_name_continues_its_history(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    _fetch(store, settings)
    fake_github.rename_repo(rails, "rails/rails-renamed")
    report = fetch_repository(
        store, GitHubClients(settings).for_repository(rails.full_name), rails.full_name, settings=settings
    )
    assert report.counts[Outcome.NEW] == 0  # the same issues, already stored under the old name
    assert report.renamed_from == "rails/rails"
    assert "since" in fake_github.requests_to(r"/repos/rails/rails-renamed/issues")[-1].query
    with store.session() as session:
        assert session.scalars(select(Repository.full_name)).all() == ["rails/rails-renamed"]
        assert session.scalar(select(func.count()).select_from(Issue)) == len(rails.issues)


def test_a_name_typed_in_another_case_is_the_same_repository_spelled_as_github_does(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    """GitHub reads OWNER/NAME in any case: ``--repo Rails/Rails`` renamed the stored rails/rails
    to Rails/Rails (or, on a first fetch, stored it so), which the webhooks then renamed back."""
    first = _fetch(store, settings)
    typed = "Rails/RAILS"
    report = fetch_repository(store, GitHubClients(settings).for_repository(typed), typed, settings=settings)
    assert report.repo == REPO and report.renamed_from is None
    assert report.counts[Outcome.NEW] == 0 and first.counts[Outcome.NEW] == len(rails.issues)
    with store.session() as session:
        assert session.scalars(select(Repository.full_name)).all() == [REPO]


def test_a_row_made_under_the_new_name_before_the_rename_was_known_gives_way(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    """A refresh run by hand under the new name while GitHub could not be asked took its lock on
    a fresh row; the next fetch finds the stored history by id and that empty row goes."""
    _fetch(store, settings)
    fake_github.rename_repo(rails, "rails/rails-renamed")
    runs = RefreshRuns(store, lock_hours=1)
    runs.finish(
        runs.start("rails/rails-renamed", trigger="manual", reason="test"), status=FAILED, outcome="down"
    )
    report = fetch_repository(
        store, GitHubClients(settings).for_repository(rails.full_name), rails.full_name, settings=settings
    )
    assert report.renamed_from == "rails/rails" and report.counts[Outcome.NEW] == 0
    with store.session() as session:
        assert session.scalars(select(Repository.full_name)).all() == ["rails/rails-renamed"]
        assert session.scalar(select(func.count()).select_from(Issue)) == len(rails.issues)
    assert runs.history("rails/rails-renamed") == []  # the empty row's failed run went with it


def test_reconcile_removes_what_github_no_longer_lists_and_a_cut_listing_removes_nothing(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    _fetch(store, settings)
    deleted, transferred = sorted(rails.issues)[5], sorted(rails.issues)[150]
    rails.issues.pop(deleted)
    rails.issues.pop(transferred)
    client = GitHubClients(settings).for_repository(REPO)
    assert fetch_repository(store, client, REPO, settings=settings).removed is None
    assert len(_stored(store)) == 200  # what changed cannot show what is gone

    # GitHub fails from the listing's third page on, retries included: the listing is cut short
    fake_github.faults.append(Fault(path=ISSUES_PATH, status=502, skip=3, times=50))
    before = len(fake_github.requests_to(ISSUES_PATH))
    with pytest.raises(FetchError):
        fetch_repository(store, client, REPO, settings=settings, reconcile=True)
    listing = [r.status for r in fake_github.requests_to(ISSUES_PATH)[before:] if "since" not in r.query]
    assert listing[:3] == [200, 200, 502]
    assert len(_stored(store)) == 200
    fake_github.faults.clear()

    report = fetch_repository(store, client, REPO, settings=settings, reconcile=True)
    assert report.removed == 2
    assert _stored(store) == _served(rails)


def test_interrupted_fetch_resumes_and_loses_nothing(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    fake_github.faults.append(Fault(path=ISSUES_PATH, query=_page(5), status=502, times=1000))
    with pytest.raises(FetchError, match="run again to resume"):
        _fetch(store, settings)
    partial = _stored(store)
    assert len(partial) == 100  # the four pages before the failing one, committed
    with store.session() as session:
        cursor = session.scalar(select(FetchCursor))
        assert "502" in cursor.last_error and cursor.last_completed_at is None
        stored_newest = max(i.updated_at for i in session.scalars(select(Issue)))
        assert cursor.since == stored_newest

    fake_github.faults.clear()
    resumed = _fetch(store, settings)
    assert _stored(store) == _served(rails)
    assert resumed.counts[Outcome.NEW] == 100
    resumed_request = [r for r in fake_github.requests_to(ISSUES_PATH) if r.status == 200][-1]
    assert "since" in resumed_request.query


def test_secondary_rate_limit_is_waited_out(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    fake_github.faults.append(secondary_rate_limit(ISSUES_PATH, retry_after=1, query=_page(2)))
    started = time.monotonic()
    report = _fetch(store, settings)
    assert time.monotonic() - started >= 1.0
    assert report.counts[Outcome.NEW] == 200
    statuses = [r.status for r in fake_github.requests_to(ISSUES_PATH) if r.query.get("page") == ["2"]]
    assert statuses == [403, 200]


def test_server_errors_and_slow_answers_are_retried(
    rails: FakeRepo, fake_github: FakeGitHub, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url=database_url, github_api_url=fake_github.base_url, github_timeout=1)
    fake_github.faults += [
        Fault(path=ISSUES_PATH, query=_page(3), status=502, times=2),
        Fault(path=ISSUES_PATH, query=_page(6), status=0, delay=2.5),  # times out once
        Fault(path=r"/repos/rails/rails/labels", status=0, delay=0.4),  # slow but in time
    ]
    store = Store(settings.database_url)
    try:
        report = fetch_repository(
            store, GitHubClients(settings).for_repository(REPO), REPO, settings=settings
        )
        assert report.counts[Outcome.NEW] == 200
        assert _stored(store) == _served(rails)
    finally:
        store.close()
    page3 = [r.status for r in fake_github.requests_to(ISSUES_PATH) if r.query.get("page") == ["3"]]
    assert page3 == [502, 502, 200]
    assert len([r for r in fake_github.requests_to(ISSUES_PATH) if r.query.get("page") == ["6"]]) == 2


def test_primary_rate_limit_waits_for_the_reset(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    fake_github.set_rate_limit(limit=6, window_s=1.5)
    started = time.monotonic()
    report = _fetch(store, settings)
    assert report.counts[Outcome.NEW] == 200
    assert time.monotonic() - started >= 1.0  # 12 requests cannot fit in one 6-request window
    assert _stored(store) == _served(rails)


def test_renamed_and_deleted_labels_are_recognised(
    store: Store, settings: Settings, rails: FakeRepo, fake_github: FakeGitHub
) -> None:
    _fetch(store, settings)
    old_node = rails.labels["docs"]["node_id"]
    fake_github.rename_label(rails, "docs", "documentation")
    for item in rails.issues.values():
        if any(label["name"] == "documentation" for label in item["labels"]):
            item["updated_at"] = "2030-01-01T00:00:00Z"
    del rails.labels["actioncable"]
    _fetch(store, settings)
    with store.session() as session:
        renamed = session.scalar(select(Label).where(Label.node_id == old_node))
        assert renamed.name == "documentation" and renamed.deleted_at is None
        gone = session.scalar(select(Label).where(Label.name == "actioncable"))
        assert gone.deleted_at is not None
    assert _stored(store) == _served(rails)


def test_unknown_repository_and_missing_credentials(
    store: Store, settings: Settings, fake_github: FakeGitHub, database_url: str
) -> None:
    with pytest.raises(UnknownRepository, match="octo/missing: GitHub answered 404"):
        fetch_repository(
            store, GitHubClients(settings).for_repository("octo/missing"), "octo/missing", settings=settings
        )
    no_auth = make_settings(database_url=database_url, github_api_url=fake_github.base_url, github_token=None)
    with pytest.raises(GitHubAuthError, match="ISSUE_LABELER_GITHUB_TOKEN"):
        GitHubClients(no_auth)


def test_github_app_installation_auth(shared_data: Path, database_url: str, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path = tmp_path / "app.pem"
    key_path.write_bytes(pem)
    with FakeGitHub(app_id=4242, app_public_key=public.decode()) as fake:
        repo = seed_from_jsonl(fake, shared_data / "rails_small" / "issues.jsonl", REPO, limit=30)
        repo.installation_id = 77
        settings = make_settings(
            database_url=database_url,
            github_api_url=fake.base_url,
            github_token=None,
            github_app_id=4242,
            github_private_key_path=key_path,
        )
        store = Store(settings.database_url)
        clients = GitHubClients(settings)
        try:
            report = fetch_repository(store, clients.for_repository(REPO), REPO, settings=settings)
            assert report.counts[Outcome.NEW] == 30
            with pytest.raises(GitHubAuthError, match="not installed on octo/other"):
                fake.add_repo("octo/other")
                clients.for_repository("octo/other")
        finally:
            clients.close()
            store.close()
        assert fake.requests_to(r"/app/installations/77/access_tokens", method="POST")
        issue_auth = fake.requests_to(ISSUES_PATH)[0].headers["authorization"]
        assert issue_auth.startswith("token ghs_fake")
