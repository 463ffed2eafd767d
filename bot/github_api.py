"""The few GitHub calls the bot makes, as the App installation of each repository (and as the
App itself for its webhook deliveries)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from github import Github, GithubException, RateLimitExceededException, UnknownObjectException
from github.HookDelivery import HookDeliverySummary
from github.PaginatedList import PaginatedList
from github.Requester import Requester
from requests import RequestException

from bot.outcome import PermanentJobError
from bot.repo_config import UnreadableConfig
from training.fetch import sync_labels_and_templates
from training.github_client import GitHubAuthError, GitHubClients
from training.store import Store

log = logging.getLogger(__name__)

# Answers to a write that no retry changes: the issue or repository is gone (404, 410), the
# repository is archived or the App lacks a permission (403 other than a rate limit), the request
# is invalid (422). The job fails at once with GitHub's message; "Redeliver" runs it again.
PERMANENT_STATUSES = {403, 404, 410, 422}
# what asking GitHub can raise other than a bug: its refusals, the network, no credentials
GITHUB_ERRORS = (GithubException, RequestException, GitHubAuthError)


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt at a webhook delivery as GitHub lists it: what looking for missed ones reads."""

    id: int
    guid: str
    delivered_at: datetime
    redelivery: bool
    status: str
    event: str
    action: str | None

    @classmethod
    def of(cls, summary: HookDeliverySummary) -> DeliveryAttempt | None:
        """None for a listing that lacks what identifies or orders the attempt."""
        if summary.id is None or not summary.guid or summary.delivered_at is None:
            return None
        return cls(
            id=summary.id,
            guid=summary.guid,
            delivered_at=summary.delivered_at,
            redelivery=bool(summary.redelivery),
            status=summary.status or "",
            event=summary.event or "",
            action=summary.action,
        )


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


APP_TARGET = "integration"  # X-GitHub-Hook-Installation-Target-Type of the App's own webhook
TOKEN_TARGETS = ("repository", "organization")  # webhooks a token user sets up


@dataclass(frozen=True)
class Webhook:
    """A webhook whose deliveries the bot can list: the App's, or (with a token) a repository's or
    an organization's, known by the ``X-GitHub-Hook-ID`` of a delivery it sent."""

    target: str  # integration | repository | organization
    hook_id: int | None = None
    owner: str | None = None  # OWNER/NAME of a repository webhook, the login of an organization's

    @property
    def path(self) -> str:
        if self.target == APP_TARGET:
            return "/app/hook"
        prefix = "/repos" if self.target == "repository" else "/orgs"
        return f"{prefix}/{self.owner}/hooks/{self.hook_id}"

    def __str__(self) -> str:
        return "the App's webhook" if self.target == APP_TARGET else f"{self.target} webhook {self.path}"


APP_WEBHOOK = Webhook(APP_TARGET)


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
        if content.encoding != "base64":
            raise UnreadableConfig(
                f"{path} is a {content.type} of {content.size} bytes that the API does not return as "
                "text (a symbolic link out of the repository, a submodule, or a file over 1 MB)"
            )
        return content.decoded_content.decode("utf-8", errors="replace")

    def failed_deliveries(self, hook: Webhook, since: datetime) -> list[DeliveryAttempt]:
        """A webhook's failed delivery attempts back to ``since``, newest first. GitHub lists each
        attempt, redeliveries included, for three days; a server that does not know the ``status``
        filter lists every attempt, successful ones too."""
        requester = self._hook_requester(hook)
        found = []
        query = {"per_page": 100, "status": "failure"}
        for summary in PaginatedList(HookDeliverySummary, requester, f"{hook.path}/deliveries", query):
            attempt = DeliveryAttempt.of(summary)
            if attempt is None:
                log.warning(
                    "%s: a listed delivery without its id, guid or time is skipped: %s",
                    hook,
                    summary.raw_data,
                )
                continue
            if attempt.delivered_at < since:
                break
            found.append(attempt)
        return found

    def redeliver(self, hook: Webhook, delivery_id: int) -> None:
        """Ask GitHub to send one of a webhook's deliveries again (it answers at once, sends later)."""
        attempts = f"{hook.path}/deliveries/{delivery_id}/attempts"
        self._hook_requester(hook).requestJsonAndCheck("POST", attempts)

    def _hook_requester(self, hook: Webhook) -> Requester:
        """The App's own (JWT) for its webhook; the token's for a repository or organization webhook."""
        if self.clients is None:
            raise GitHubAuthError("no GitHub credentials: webhook deliveries cannot be listed")
        if hook.target == APP_TARGET:
            if self.clients.app is None:
                raise GitHubAuthError("the App's webhook deliveries are listed for a GitHub App only")
            return self.clients.app.requester
        if self.clients.is_app:
            raise GitHubAuthError(f"{hook}: a GitHub App lists its own webhook's deliveries only")
        return self.clients.for_repository(hook.owner or "").requester

    def close(self) -> None:
        with self._lock:
            for client in self._lazy.values():
                client.close()
            self._lazy.clear()
        if self.clients is not None:
            self.clients.close()
