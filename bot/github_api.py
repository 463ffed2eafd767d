"""The few GitHub calls the bot makes, as the App installation of each repository (and as the
App itself for its webhook deliveries)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from github import Github, GithubException, RateLimitExceededException, UnknownObjectException
from github.HookDelivery import HookDeliverySummary
from github.PaginatedList import PaginatedList

from bot.outcome import PermanentJobError
from training.fetch import sync_labels_and_templates
from training.github_client import GitHubAuthError, GitHubClients
from training.store import Store

log = logging.getLogger(__name__)

# Answers to a write that no retry changes: the issue or repository is gone (404, 410), the
# repository is archived or the App lacks a permission (403 other than a rate limit), the request
# is invalid (422). The job fails at once with GitHub's message; "Redeliver" runs it again.
PERMANENT_STATUSES = {403, 404, 410, 422}


@contextmanager
def _refusals_are_permanent(what: str) -> Iterator[None]:
    """GitHub's permanent refusals of a write become a ``PermanentJobError`` with its message."""
    try:
        yield
    except GithubException as exc:
        if isinstance(exc, RateLimitExceededException) or exc.status not in PERMANENT_STATUSES:
            raise
        message = exc.data.get("message") if isinstance(exc.data, dict) else exc.data
        raise PermanentJobError(f"GitHub refused {what} ({exc.status}): {message}") from None


class GitHubGateway:
    """Labels, comments, label catalogue and config file of a repository, through PyGithub.

    Clients come from ``GitHubClients``: per installation for a GitHub App (tokens renewed
    before they expire), or one token client. Transient failures are retried by PyGithub's
    retry policy; what still fails raises and the job is retried later.
    """

    def __init__(self, clients: GitHubClients | None) -> None:
        """``clients`` None: offline (a dry run without credentials): no config files, the stored
        label catalogue as it is, and any write refused."""
        self.clients = clients
        self._lazy: dict[int, Github] = {}
        self._lock = threading.Lock()

    @property
    def is_app(self) -> bool:
        return self.clients is not None and self.clients.is_app

    def _client(self, repo: str, installation_id: int | None) -> Github:
        """A lazy client: objects are addressed by URL without first being fetched (one request
        per write instead of two)."""
        if self.clients is None:
            raise GitHubAuthError("no GitHub credentials: the bot runs offline and writes nothing")
        client = (
            self.clients.for_installation(installation_id)
            if installation_id is not None and self.clients.is_app
            else self.clients.for_repository(repo)
        )
        with self._lock:
            lazy = self._lazy.get(id(client))
            if lazy is None:
                lazy = self._lazy[id(client)] = client.withLazy(True)
        return lazy

    def add_labels(self, repo: str, installation_id: int | None, number: int, names: list[str]) -> None:
        issue = self._client(repo, installation_id).get_repo(repo).get_issue(number)
        with _refusals_are_permanent(f"the labels of {repo}#{number}"):
            issue.add_to_labels(*names)

    def current_labels(self, repo: str, installation_id: int | None, number: int) -> list[str] | None:
        """The issue's labels on GitHub now; None when the issue is gone (deleted, transferred)."""
        issue = self._client(repo, installation_id).get_repo(repo).get_issue(number)
        try:
            return [label.name for label in issue.labels]  # the lazy issue is read here
        except GithubException as exc:
            if exc.status in (404, 410):
                return None
            raise

    def comment(self, repo: str, installation_id: int | None, number: int, body: str) -> None:
        issue = self._client(repo, installation_id).get_repo(repo).get_issue(number)
        with _refusals_are_permanent(f"a comment on {repo}#{number}"):
            issue.create_comment(body)

    def sync_labels(self, store: Store, repo: str, installation_id: int | None) -> int:
        """Refresh the stored label catalogue and issue-form labels from GitHub."""
        if self.clients is None:
            return 0
        gh_repo = self._client(repo, installation_id).get_repo(repo)
        count, _ = sync_labels_and_templates(store, gh_repo, repo)
        return count

    def file_text(self, repo: str, installation_id: int | None, path: str) -> str | None:
        """A file of the default branch, or None when it does not exist."""
        if self.clients is None:
            return None
        try:
            content = self._client(repo, installation_id).get_repo(repo).get_contents(path)
        except UnknownObjectException:
            return None
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise
        if isinstance(content, list):
            return None  # a folder of that name
        return content.decoded_content.decode("utf-8", errors="replace")

    def failed_app_deliveries(self, since: datetime) -> list[HookDeliverySummary]:
        """The App's failed webhook delivery attempts back to ``since``, newest first. GitHub lists
        each attempt, redeliveries included, for three days; a server that does not know the
        ``status`` filter lists every attempt, successful ones too."""
        app = self.clients.app if self.clients is not None else None
        if app is None:
            raise GitHubAuthError("webhook deliveries are listed for a GitHub App only")
        found = []
        query = {"per_page": 100, "status": "failure"}
        listing = PaginatedList(HookDeliverySummary, app.requester, "/app/hook/deliveries", query)
        for delivery in listing:
            if delivery.delivered_at < since:
                break
            found.append(delivery)
        return found

    def redeliver(self, delivery_id: int) -> None:
        """Ask GitHub to send one of the App's deliveries again (it answers at once, sends later)."""
        app = self.clients.app if self.clients is not None else None
        if app is None:
            raise GitHubAuthError("webhook deliveries are redelivered for a GitHub App only")
        app.requester.requestJsonAndCheck("POST", f"/app/hook/deliveries/{delivery_id}/attempts")

    def close(self) -> None:
        with self._lock:
            for client in self._lazy.values():
                client.close()
            self._lazy.clear()
        if self.clients is not None:
            self.clients.close()
