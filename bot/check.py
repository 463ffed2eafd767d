"""``python -m bot check``: is this installation ready to serve? Each problem with its fix."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from github import GithubException
from jwt import PyJWTError
from requests import RequestException

from bot.github_api import GITHUB_ERRORS, GitHubGateway
from bot.redelivery import token_webhooks
from training.bundle import BundleError
from training.config import ConfigError, TrainingConfig
from training.github_client import GitHubClients
from training.registry import CURRENT, Registry
from training.settings import Settings
from training.store import Store, StoreUnavailable
from training.store.upserts import now


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""
    warning: bool = False

    def line(self) -> str:
        mark = "ok  " if self.ok else ("warn" if self.warning else "FAIL")
        return f"{mark}  {self.what}" + (f"\n      fix: {self.fix}" if self.fix else "")


def check_private_key(settings: Settings) -> Finding:
    if settings.github_app_id is None:
        if settings.github_token is not None:
            return Finding(True, "GitHub: a token (no App); webhooks must be set on each repository by hand")
        return Finding(
            False,
            "GitHub: no credentials",
            "set ISSUE_LABELER_GITHUB_APP_ID and ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH (README: Installing)",
        )
    pem = settings.private_key_pem() or ""
    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return Finding(
            False,
            f"GitHub App {settings.github_app_id}: the private key does not load ({exc})",
            "download a new private key on the App's settings page and point "
            "ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH at the .pem file",
        )
    return Finding(True, f"GitHub App {settings.github_app_id}: private key loads")


def check_secrets(settings: Settings) -> list[Finding]:
    findings = [
        Finding(True, "webhook secret is set")
        if settings.webhook_secret is not None
        else Finding(
            False,
            "no webhook secret: every delivery would be refused",
            "set ISSUE_LABELER_WEBHOOK_SECRET to the secret of the App's webhook",
        )
    ]
    if settings.webhook_previous_secrets:
        findings.append(
            Finding(
                False,
                f"{len(settings.webhook_previous_secrets)} earlier webhook secret(s) accepted too",
                "once the App's webhook on GitHub has the new secret, empty "
                "ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS (the bot's log says when a delivery still "
                "came signed with an earlier one)",
                warning=True,
            )
        )
    if settings.api_token is None:
        findings.append(
            Finding(
                False,
                "no API token: /predict, /status and /admin/refresh answer 503",
                "set ISSUE_LABELER_API_TOKEN to a long random string",
                warning=True,
            )
        )
    return findings


def check_store(settings: Settings) -> Finding:
    try:
        store = Store(settings.database_url)
    except StoreUnavailable as exc:
        return Finding(False, str(exc), "start the database or correct ISSUE_LABELER_DATABASE_URL")
    store.close()
    return Finding(True, "store opens and its schema is current")


def check_registry(settings: Settings) -> list[Finding]:
    root = settings.registry_dir
    if root.exists() and not root.is_dir():
        return [
            Finding(
                False,
                f"model registry {root} is a file, not a folder: no bundle can be stored or served",
                "point ISSUE_LABELER_REGISTRY_DIR at a folder",
            )
        ]
    if not root.is_dir():
        return [
            Finding(
                False,
                f"model registry {root} does not exist: no repository can be labeled",
                "train a first bundle: python -m training.refresh --repo OWNER/NAME",
                warning=True,
            )
        ]
    if not os.access(root, os.W_OK):
        return [Finding(False, f"model registry {root} is not writable", "give the bot's user write access")]
    registry, findings = Registry(root), []
    # a folder that is itself a link is an old name left by a rename while a refresh ran
    for folder in sorted(p for p in root.iterdir() if not p.is_symlink() and (p / CURRENT).is_symlink()):
        repo = folder.name.replace("__", "/", 1)
        try:
            bundle = registry.load_current(repo)
        except BundleError as exc:
            findings.append(
                Finding(False, str(exc), f"roll back: python -m training.refresh --repo {repo} --rollback")
            )
            continue
        if bundle is not None:
            findings.append(
                Finding(True, f"{repo}: bundle {bundle.version} verifies ({len(bundle.labels)} labels)")
            )
    if not findings:
        findings.append(
            Finding(
                False,
                f"no bundle in service under {root}",
                "train one: python -m training.refresh --repo OWNER/NAME",
                warning=True,
            )
        )
    return findings


def check_refresh_config(settings: Settings) -> list[Finding]:
    """The training config every refresh the bot starts reads: a broken one fails them all, the
    first of them at the next scheduled time."""
    if settings.refresh_config is None:
        return []
    try:
        TrainingConfig.from_file(settings.refresh_config)
    except ConfigError as exc:
        return [Finding(False, f"refresh config: {exc}", "correct the file or ISSUE_LABELER_REFRESH_CONFIG")]
    return [Finding(True, f"refresh config {settings.refresh_config} is valid")]


def check_installations(settings: Settings) -> list[Finding]:
    """Where the App is installed, asked of GitHub; unreachable GitHub is a warning, not a failure."""
    if settings.github_app_id is None:
        return []
    try:
        clients = GitHubClients(settings)
        integration = clients.app
        assert integration is not None
        installations = list(integration.get_installations())
    except (GithubException, RequestException, OSError, PyJWTError) as exc:
        return [
            Finding(
                False,
                f"GitHub at {settings.github_api_url} not reachable or refused the App: {exc}",
                "check ISSUE_LABELER_GITHUB_API_URL, the App id and its key",
                warning=True,
            )
        ]
    if not installations:
        return [
            Finding(False, "the App is installed nowhere yet", "install it from the App's public page", True)
        ]
    return [Finding(True, f"installed for {len(installations)} account(s)")]


def check_webhook_access(settings: Settings) -> list[Finding]:
    """With a token: may it list the deliveries of each webhook that has delivered to the bot?
    Without that, deliveries missed while the bot was down are not asked for again."""
    if settings.github_app_id is not None or settings.github_token is None:
        return []
    try:
        store = Store(settings.database_url)
    except StoreUnavailable:
        return []  # check_store says so
    gateway = GitHubGateway(GitHubClients(settings))
    try:
        hooks = token_webhooks(store)
        if not hooks:
            return [Finding(True, "no repository webhook has delivered to the bot yet")]
        findings = []
        for hook in hooks:
            try:
                gateway.failed_deliveries(hook, since=now())
            except GITHUB_ERRORS as exc:
                findings.append(
                    Finding(
                        False,
                        f"{hook}: GitHub does not list its deliveries for the token ({exc}); missed "
                        "deliveries are not asked for again",
                        "give the token the Webhooks read & write permission (classic tokens: "
                        "admin:repo_hook), or redeliver by hand from the webhook's Recent Deliveries",
                        warning=True,
                    )
                )
            else:
                findings.append(Finding(True, f"{hook}: missed deliveries are asked for again"))
        return findings
    finally:
        gateway.close()
        store.close()


CHECKS: list[Callable[[Settings], Finding | list[Finding]]] = [
    check_private_key,
    check_secrets,
    check_store,
    check_registry,
    check_refresh_config,
    check_installations,
    check_webhook_access,
]


def run_checks(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        result = check(settings)
        findings.extend(result if isinstance(result, list) else [result])
    return findings


def report(findings: list[Finding]) -> tuple[str, int]:
    failed = [f for f in findings if not f.ok and not f.warning]
    text = "\n".join(f.line() for f in findings)
    verdict = f"\n{len(failed)} problem(s) to fix" if failed else "\nready to serve"
    return text + verdict, 1 if failed else 0
