"""Fetch a repository's issues, pull requests, labels and issue templates from GitHub.

Incremental: the first run takes everything, later runs ask for what changed since the cursor.
Issues are requested sorted by ``updated`` ascending and stored page by page; the cursor moves
only past what is committed, so an interrupted fetch resumes where it stopped. What changed cannot
show what was deleted or transferred away: ``reconcile`` lists every issue number GitHub still has
and removes the stored ones it no longer lists (the bot does the same from webhooks as it happens).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from github import Github, GithubException
from github.GithubObject import GithubObject
from github.Repository import Repository as GhRepository
from sqlalchemy import select

from training.github_client import GitHubAuthError, GitHubClients
from training.issue_templates import TEMPLATE_DIR, template_labels
from training.jsonl_import import import_jsonl
from training.logs import configure_logging
from training.progress import Progress
from training.records import IssueRecord, LabelRecord, RecordError, parse_issue, repository_argument
from training.registry import Registry
from training.settings import Settings, SettingsError, load_settings
from training.store import Store, StoreUnavailable
from training.store.models import Issue
from training.store.upserts import (
    Counts,
    LabelCatalogue,
    cursor_of,
    ensure_repository,
    follow_rename,
    forget_issue,
    get_repository,
    now,
    replace_template_sources,
    upsert_issue,
)

log = logging.getLogger(__name__)


class FetchError(Exception):
    """A fetch that stopped early; what was stored before stays stored, the next run resumes."""


class UnknownRepository(FetchError):
    """GitHub does not know the repository, or the credentials cannot see it."""


@dataclass
class FetchReport:
    repo: str
    counts: Counts = field(default_factory=Counts)
    labels: int = 0
    template_labels: dict[str, list[str]] = field(default_factory=dict)
    since: datetime | None = None
    cursor: datetime | None = None
    removed: int | None = None  # issues GitHub no longer lists (None: not reconciled)
    renamed_from: str | None = None  # the stored name, when GitHub renamed or transferred it since


class RateLimitGuard:
    """Waits for the reset when a response says no requests remain (before GitHub refuses)."""

    def __init__(self, github: Github, max_wait: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.github = github
        self.max_wait = max_wait
        self.sleep = sleep

    def check(self) -> None:
        remaining, _limit = self.github.rate_limiting
        if remaining > 0:
            return
        wait = self.github.rate_limiting_resettime - time.time() + 1
        if wait <= 0:
            return
        if wait > self.max_wait:
            raise FetchError(
                f"GitHub rate limit exhausted for {wait:.0f}s, longer than "
                f"ISSUE_LABELER_GITHUB_MAX_RATE_LIMIT_WAIT={self.max_wait:.0f}; run again later"
            )
        log.info("rate limit exhausted: waiting %.1fs for the reset", wait)
        self.sleep(wait)


def _read_templates(gh_repo: GhRepository) -> dict[str, list[str]]:
    """Labels per issue template file; a repository without templates has none."""
    try:
        entries = gh_repo.get_contents(TEMPLATE_DIR)
    except GithubException as exc:
        if exc.status == 404:
            return {}
        raise
    if not isinstance(entries, list):
        entries = [entries]
    found: dict[str, list[str]] = {}
    for entry in entries:
        if entry.type != "file":
            continue
        if entry.encoding != "base64":  # the API sends no content over 1 MB: no issue form is that long
            log.warning(
                "issue template %s (%d bytes) is too large to read; its labels are ignored",
                entry.path,
                entry.size,
            )
            continue
        text = entry.decoded_content.decode("utf-8", errors="replace")
        found[entry.path] = template_labels(entry.path, text)
    return found


def listing_payload(item: GithubObject) -> dict[str, Any]:
    """The JSON an item arrived with in a listing.

    PyGithub's public ``raw_data`` first "completes" a listed object with one more request per
    item, which would turn a 100-item page into 101 requests; the listing already holds it all.
    """
    return item._rawData  # noqa: SLF001


def label_record(raw: dict[str, Any]) -> LabelRecord:
    return LabelRecord(
        name=raw["name"],
        node_id=raw.get("node_id"),
        github_id=raw.get("id"),
        color=raw.get("color"),
        description=raw.get("description"),
    )


def fetch_repository(
    store: Store,
    github: Github,
    full_name: str,
    *,
    settings: Settings,
    sleep: Callable[[float], None] = time.sleep,
    reconcile: bool = False,
) -> FetchReport:
    """Bring the store up to date with one repository (``reconcile``: and drop what GitHub no
    longer has)."""
    gh_repo = _github_repo(github, full_name)
    full_name = github_spelling(full_name, gh_repo)
    report = FetchReport(repo=full_name)
    with store.session() as session:
        report.renamed_from = follow_rename(session, full_name, gh_repo.id)
        repository = ensure_repository(session, full_name, github_id=gh_repo.id, node_id=gh_repo.node_id)
        cursor = cursor_of(session, repository)
        cursor.last_started_at = now()
        report.since = cursor.since

    try:
        _fetch_labels_and_templates(store, gh_repo, full_name, report)
        _fetch_issues(store, github, gh_repo, full_name, report, settings=settings, sleep=sleep)
        if reconcile:
            report.removed = _forget_unlisted(
                store, github, gh_repo, full_name, settings=settings, sleep=sleep
            )
    except (GithubException, requests.RequestException) as exc:
        detail = f"GitHub answered {exc.status}" if isinstance(exc, GithubException) else str(exc)
        message = f"{full_name}: fetch stopped ({detail}); stored so far: {report.counts.summary()}"
        _record_error(store, full_name, message)
        raise FetchError(message + "; run again to resume") from None
    except FetchError as exc:
        _record_error(store, full_name, str(exc))
        raise

    with store.session() as session:
        stored = get_repository(session, full_name)  # fetched above, in an earlier session
        assert stored is not None
        cursor = cursor_of(session, stored)
        cursor.last_completed_at = now()
        cursor.last_error = None
        report.cursor = cursor.since
    return report


def _github_repo(github: Github, full_name: str) -> GhRepository:
    try:
        return github.get_repo(full_name)
    except GithubException as exc:
        if exc.status in (401, 403, 404):
            raise UnknownRepository(
                f"{full_name}: GitHub answered {exc.status} — check the name and that the "
                "token or App installation can read it"
            ) from None
        raise FetchError(f"{full_name}: GitHub answered {exc.status}: {exc.data}") from None
    except requests.RequestException as exc:
        raise FetchError(f"{full_name}: GitHub could not be reached: {exc}") from None


def github_spelling(given: str, gh_repo: GhRepository) -> str:
    """GitHub reads OWNER/NAME in any case and answers with the name as spelled there; the
    store, the registry and every webhook use that spelling, so a name typed in another case
    must not become a second spelling (or a rename) of the same repository."""
    spelled = gh_repo.full_name
    return spelled if isinstance(spelled, str) and spelled.lower() == given.lower() else given


def follow_github_rename(store: Store, github: Github, full_name: str) -> tuple[str, str | None]:
    """Ask GitHub for the repository's id and, if the store knows that id under another name
    (renamed or transferred since), give the stored history the new name. Returned: the name as
    GitHub spells it, and the old name (None: no rename). Run before anything creates a row
    under the new name."""
    gh_repo = _github_repo(github, full_name)
    full_name = github_spelling(full_name, gh_repo)
    with store.session() as session:
        return full_name, follow_rename(session, full_name, gh_repo.id)


def _record_error(store: Store, full_name: str, message: str) -> None:
    with store.session() as session:
        repository = get_repository(session, full_name)
        if repository is not None:
            cursor_of(session, repository).last_error = message


def _fetch_labels_and_templates(
    store: Store, gh_repo: GhRepository, full_name: str, report: FetchReport
) -> None:
    report.labels, report.template_labels = sync_labels_and_templates(store, gh_repo, full_name)


def sync_labels_and_templates(
    store: Store, gh_repo: GhRepository, full_name: str
) -> tuple[int, dict[str, list[str]]]:
    """Replace the stored label catalogue and issue-form labels with what GitHub has now."""
    labels = [label_record(listing_payload(label)) for label in gh_repo.get_labels()]
    templates = _read_templates(gh_repo)
    with store.session() as session:
        repository = get_repository(session, full_name)
        assert repository is not None
        LabelCatalogue(session, repository).replace_all(labels)
        replace_template_sources(session, repository, templates, prefix=TEMPLATE_DIR + "/")
    log.info(
        "%s: %d labels; issue templates apply %s",
        full_name,
        len(labels),
        sorted({name for names in templates.values() for name in names}) or "none",
    )
    return len(labels), templates


def _fetch_issues(
    store: Store,
    github: Github,
    gh_repo: GhRepository,
    full_name: str,
    report: FetchReport,
    *,
    settings: Settings,
    sleep: Callable[[float], None],
) -> None:
    guard = RateLimitGuard(github, settings.github_max_rate_limit_wait, sleep)
    query: dict[str, object] = {"state": "all", "sort": "updated", "direction": "asc"}
    if report.since is not None:
        query["since"] = report.since
    batch: list[IssueRecord] = []

    def store_batch() -> None:
        with store.session() as session:
            repository = get_repository(session, full_name)
            assert repository is not None
            catalogue = LabelCatalogue(session, repository)
            for record in batch:
                report.counts.add(upsert_issue(session, catalogue, record, source="fetch"))
            stamps = [record.updated_at for record in batch if record.updated_at]
            cursor = cursor_of(session, repository)
            if stamps and (cursor.since is None or max(stamps) > cursor.since):
                cursor.since = max(stamps)
        batch.clear()

    with Progress(f"{full_name} issues", log=log) as progress:
        for item in gh_repo.get_issues(**query):  # type: ignore[arg-type]
            try:
                batch.append(parse_issue(listing_payload(item), full_name))
            except RecordError as exc:
                # Skipping would let the cursor pass it by for ever: stop and say which.
                raise FetchError(f"{full_name}#{item.number}: unreadable issue: {exc}") from None
            progress.update()
            if len(batch) >= settings.github_per_page:
                store_batch()
            guard.check()
        if batch:
            store_batch()


def _forget_unlisted(
    store: Store,
    github: Github,
    gh_repo: GhRepository,
    full_name: str,
    *,
    settings: Settings,
    sleep: Callable[[float], None],
) -> int:
    """Remove the stored issues GitHub no longer lists (deleted, or transferred to another
    repository). Only after the whole listing has been read: a listing cut short removes nothing."""
    guard = RateLimitGuard(github, settings.github_max_rate_limit_wait, sleep)
    listed: set[int] = set()
    with Progress(f"{full_name} issue numbers", log=log) as progress:
        for item in gh_repo.get_issues(state="all"):
            listed.add(item.number)
            progress.update()
            guard.check()
    with store.session() as session:
        repository = get_repository(session, full_name)
        assert repository is not None
        stored = session.execute(
            select(Issue.key, Issue.number).where(
                Issue.repository_id == repository.id, Issue.number.is_not(None)
            )
        ).all()
        gone = [key for key, number in stored if number not in listed]
        for key in gone:
            forget_issue(session, repository, key)
    if gone:
        log.info("%s: %d stored issues are no longer on GitHub; removed", full_name, len(gone))
    return len(gone)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.fetch``: fetch from GitHub, or import JSONL exports."""
    parser = argparse.ArgumentParser(prog="python -m training.fetch", description=__doc__)
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        type=repository_argument,
        metavar="OWNER/NAME",
        help="repository to fetch (repeatable); with --from-jsonl, keep only these",
    )
    parser.add_argument(
        "--from-jsonl",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="import a JSON Lines file instead of calling GitHub (repeatable)",
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="also list every issue number on GitHub and remove stored issues it no longer has "
        "(deleted or transferred away while no bot was receiving webhooks)",
    )
    args = parser.parse_args(argv)
    if args.reconcile and args.from_jsonl:
        parser.error("--reconcile compares with GitHub: it does not go with --from-jsonl")
    if not args.repo and not args.from_jsonl:
        parser.error("give --repo OWNER/NAME to fetch from GitHub, or --from-jsonl PATH")
    for name in args.repo:
        if name.count("/") != 1 or not all(name.split("/")):
            parser.error(f"--repo {name!r}: expected OWNER/NAME")

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - logging is not set up yet
        return 2
    configure_logging(settings.log_level)
    try:
        store = Store(settings.database_url)
    except StoreUnavailable as exc:
        log.error("%s", exc)
        return 2
    try:
        if args.from_jsonl:
            return _import_files(store, args.from_jsonl, set(args.repo), settings)
        return _fetch_repos(store, args.repo, settings, reconcile=args.reconcile)
    finally:
        store.close()


def _import_files(store: Store, paths: list[Path], repos: set[str], settings: Settings) -> int:
    total = Counts()
    for path in paths:
        try:
            report = import_jsonl(store, path, repos=repos or None, template_labels=settings.template_labels)
        except (FileNotFoundError, UnicodeDecodeError) as exc:
            log.error("%s: %s", path, exc)
            return 1
        if report.malformed_lines:
            lines = ", ".join(str(n) for n in report.malformed_lines[:20])
            log.warning("%s: %d malformed lines skipped (line %s)", path, len(report.malformed_lines), lines)
        total.merge(report.counts)
    log.info("imported issues: %s", total.summary())
    return 0


def _fetch_repos(store: Store, repos: list[str], settings: Settings, *, reconcile: bool = False) -> int:
    try:
        clients = GitHubClients(settings)
    except GitHubAuthError as exc:
        log.error("%s", exc)
        return 2
    total = Counts()
    failed = []
    try:
        for full_name in repos:
            try:
                report = fetch_repository(
                    store,
                    clients.for_repository(full_name),
                    full_name,
                    settings=settings,
                    reconcile=reconcile,
                )
            except (FetchError, GitHubAuthError) as exc:
                log.error("%s", exc)
                failed.append(full_name)
                continue
            if report.renamed_from:
                models_follow_rename(Registry(settings.registry_dir), report.renamed_from, full_name)
            log.info(
                "%s: %s (%d labels; cursor now %s)%s",
                full_name,
                report.counts.summary(),
                report.labels,
                report.cursor.isoformat() if report.cursor else "unset",
                "" if report.removed is None else f"; {report.removed} no longer on GitHub, removed",
            )
            total.merge(report.counts)
    finally:
        clients.close()
    log.info("fetched issues: %s%s", total.summary(), f"; failed: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


def models_follow_rename(registry: Registry, old: str, new: str) -> None:
    """The bundles and adapted encoder follow a rename the store followed, as the bot's would."""
    if registry.rename_repo(old, new):
        log.warning("%s is %s on GitHub now: its models follow it", old, new)


if __name__ == "__main__":
    sys.exit(main())
