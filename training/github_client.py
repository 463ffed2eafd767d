"""PyGithub clients built from settings: App installation or token, with retries and backoff."""

from __future__ import annotations

import logging
from typing import Any

from github import Auth, Github, GithubException, GithubIntegration, GithubRetry

from training.settings import Settings

log = logging.getLogger(__name__)


class GitHubAuthError(Exception):
    """No usable GitHub credentials, or the App is not installed on a repository."""


def make_retry(settings: Settings) -> GithubRetry:
    """Retries 5xx, connection errors and rate limits (waiting for Retry-After or the reset)."""
    return GithubRetry(
        total=settings.github_max_retries,
        backoff_factor=settings.github_backoff_factor,
        secondary_rate_wait=settings.github_secondary_rate_wait,
        max_rate_limit_wait=settings.github_max_rate_limit_wait,
    )


class GitHubClients:
    """Hands out a PyGithub client per repository (an App has one installation per owner)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        common: dict[str, Any] = dict(
            base_url=settings.github_api_url,
            per_page=settings.github_per_page,
            retry=make_retry(settings),
            timeout=settings.github_timeout,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._integration: GithubIntegration | None = None
        self._token_client: Github | None = None
        self._installation_clients: dict[int, Github] = {}
        pem = settings.private_key_pem()
        if settings.github_app_id is not None and pem is not None:
            self._integration = GithubIntegration(auth=Auth.AppAuth(settings.github_app_id, pem), **common)
        elif settings.github_token is not None:
            self._token_client = Github(auth=Auth.Token(settings.github_token.get_secret_value()), **common)
        else:
            raise GitHubAuthError(
                "no GitHub credentials: set ISSUE_LABELER_GITHUB_APP_ID with "
                "ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH (a GitHub App), or ISSUE_LABELER_GITHUB_TOKEN"
            )

    @property
    def is_app(self) -> bool:
        return self._integration is not None

    @property
    def app(self) -> GithubIntegration | None:
        """The App itself (JWT): its installations and its webhook deliveries. None with a token."""
        return self._integration

    def for_repository(self, full_name: str) -> Github:
        if self._token_client is not None:
            return self._token_client
        assert self._integration is not None
        owner, _, name = full_name.partition("/")
        try:
            installation = self._integration.get_repo_installation(owner, name)
        except GithubException as exc:
            if exc.status == 404:
                raise GitHubAuthError(
                    f"the GitHub App is not installed on {full_name}: install it from the App's "
                    "public page, or check the repository name"
                ) from None
            raise
        return self.for_installation(installation.id)

    def for_installation(self, installation_id: int) -> Github:
        """A client authenticated as one installation; PyGithub renews its token before expiry."""
        if self._integration is None:
            raise GitHubAuthError("installation clients need a GitHub App (ISSUE_LABELER_GITHUB_APP_ID)")
        client = self._installation_clients.get(installation_id)
        if client is None:
            client = self._integration.get_github_for_installation(installation_id)
            self._installation_clients[installation_id] = client
        return client

    def close(self) -> None:
        for client in [self._token_client, *self._installation_clients.values()]:
            if client is not None:
                client.close()
        if self._integration is not None:
            self._integration.close()
