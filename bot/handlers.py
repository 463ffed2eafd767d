"""What the bot does with each webhook event, once its job is claimed by a worker."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import feedback
from bot.github_api import GitHubGateway
from bot.jobs import Delivery
from bot.labeling import Labeler
from bot.metrics import BotMetrics
from bot.outcome import Outcome, PermanentJobError
from bot.payload_shapes import MalformedPayload, check_shape
from bot.repo_config import RepoConfigCache
from training.issue_templates import TEMPLATE_DIR
from training.records import IssueRecord, LabelRecord, RecordError, parse_datetime, parse_issue
from training.settings import Settings
from training.store import Store
from training.store.models import Installation, Repository
from training.store.upserts import (
    LabelCatalogue,
    ensure_repository,
    follow_rename,
    forget_issue,
    forget_repository,
    get_repository,
    now,
    upsert_issue,
)

log = logging.getLogger(__name__)

# Events and the actions of them that the bot acts on; the App manifest subscribes to these.
HANDLED_EVENTS = (
    "ping",
    "installation",
    "installation_repositories",
    "issues",
    "label",
    "push",
    "repository",
)


class EventHandlers:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        gateway: GitHubGateway,
        configs: RepoConfigCache,
        labeler: Labeler,
        metrics: BotMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.gateway = gateway
        self.configs = configs
        self.labeler = labeler
        self.metrics = metrics
        self.app_mode = gateway.is_app

    def handle(self, delivery: Delivery) -> Outcome:
        handler = getattr(self, f"_on_{delivery.event}", None)
        if handler is None:
            return Outcome(f"no handler for {delivery.event}", ignored=True)
        try:
            check_shape(delivery.event, delivery.payload)
        except MalformedPayload as exc:
            raise PermanentJobError(str(exc)) from None
        if delivery.event not in {"ping", "installation", "installation_repositories"}:
            repo = delivery.repository
            if repo is None:
                raise PermanentJobError(f"{delivery.event} delivery without a repository")
            if self.app_mode:
                if not self._installed(repo) and not (
                    self._follow_rename(delivery) and self._installed(repo)
                ):
                    return Outcome(f"{repo}: the App is not installed there", ignored=True)
            else:
                self._follow_rename(delivery)
        try:
            return handler(delivery)
        except RecordError as exc:  # anything else is a defect of ours, not the payload's
            raise PermanentJobError(f"malformed {delivery.event} payload: {exc}") from None

    # -- installation --------------------------------------------------------------------------
    def _installed(self, repo: str) -> bool:
        with self.store.session() as session:
            return bool(
                session.scalar(
                    select(Installation.active)
                    .join(Repository, Repository.id == Installation.repository_id)
                    .where(Repository.full_name == repo)
                )
            )

    def _follow_rename(self, delivery: Delivery) -> bool:
        """A delivery naming a repository the store knows by its id under another name (renamed,
        or transferred to another owner): the store and the registry take the new name, so the
        bundle in service and the training data stay with it. Whether it was renamed."""
        raw = delivery.payload.get("repository") or {}
        return self._follow_rename_of(raw.get("full_name"), raw.get("id"))

    def _follow_rename_of(self, name: object, github_id: object) -> bool:
        if not isinstance(github_id, int) or not isinstance(name, str):
            return False
        with self.store.session() as session:
            old = follow_rename(session, name, github_id)
        if old is None:
            return False
        if self.labeler.models.registry.rename_repo(old, name):
            log.warning("%s: its bundles moved to the new name", name)
        self.labeler.models.forget(old)
        return True

    def installed_repositories(self) -> list[str]:
        """The repositories the bot serves: where the App is installed, or (with a token instead
        of an App) every repository in the store."""
        with self.store.session() as session:
            if not self.app_mode:
                return list(
                    session.scalars(select(Repository.full_name).order_by(Repository.full_name)).all()
                )
            return list(
                session.scalars(
                    select(Repository.full_name)
                    .join(Installation, Installation.repository_id == Repository.id)
                    .where(Installation.active.is_(True))
                ).all()
            )

    def _register(self, installation: dict, repos: list[dict], active: bool) -> list[str]:
        names = []
        for item in repos:
            self._follow_rename_of(item.get("full_name"), item.get("id"))
        with self.store.session() as session:
            for item in repos:
                repository = ensure_repository(
                    session, item["full_name"], github_id=item.get("id"), node_id=item.get("node_id")
                )
                row = session.get(Installation, repository.id)
                if row is None:
                    row = Installation(repository_id=repository.id, installation_id=installation["id"])
                    session.add(row)
                row.installation_id = installation["id"]
                row.account_login = (installation.get("account") or {}).get("login")
                row.active = active
                row.updated_at = now()
                names.append(item["full_name"])
        if active:
            for name in names:
                # a link under this name left by another repository's rename is not its folder
                self.labeler.models.registry.drop_forward(name)
                self.labeler.models.load([name])
                self._read_ahead(name, installation["id"])
        return names

    def _read_ahead(self, repo: str, installation_id: int) -> None:
        """Read the repository's labels and config file now rather than while its first issue
        waits. The registration above is what the delivery is for: if GitHub cannot answer (down,
        or the repository gone since), the first issue reads them, and retries, instead."""
        reads = (
            ("labels", lambda: self.gateway.sync_labels(self.store, repo, installation_id)),
            (self.settings.repo_config_path, lambda: self.configs.get(repo, installation_id)),
        )
        for what, read in reads:
            try:
                read()
            except Exception as exc:
                log.warning("%s: %s not read yet: %s", repo, what, exc)

    def _on_ping(self, delivery: Delivery) -> Outcome:
        return Outcome(f"pong (zen: {delivery.payload.get('zen', '')!s:.60})")

    def _on_installation(self, delivery: Delivery) -> Outcome:
        payload, action = delivery.payload, delivery.action
        repos = payload.get("repositories") or []
        if action in {"created", "new_permissions_accepted", "unsuspend"}:
            names = self._register(payload["installation"], repos, active=True)
            return Outcome(f"installed on {', '.join(names) or 'no repositories'}")
        if action in {"deleted", "suspend"}:
            names = self._deactivate_installation(payload["installation"]["id"])
            outcome = f"{action}: stopped serving {', '.join(names) or 'no repositories'}"
            if action == "deleted":  # a suspension is undone by unsuspending: nothing goes
                outcome += self._forget_uninstalled(names)
            return Outcome(outcome)
        return Outcome(f"installation.{action}: nothing to do", ignored=True)

    def _deactivate_installation(self, installation_id: int) -> list[str]:
        with self.store.session() as session:
            rows = session.scalars(
                select(Installation).where(Installation.installation_id == installation_id)
            ).all()
            for row in rows:
                row.active = False
                row.updated_at = now()
            return [session.get(Repository, row.repository_id).full_name for row in rows]  # type: ignore[union-attr]

    def _on_installation_repositories(self, delivery: Delivery) -> Outcome:
        payload = delivery.payload
        added = self._register(payload["installation"], payload.get("repositories_added") or [], active=True)
        removed = self._register(
            payload["installation"], payload.get("repositories_removed") or [], active=False
        )
        forgotten = self._forget_uninstalled(removed)
        return Outcome(f"added {added or 'none'}, removed {removed or 'none'}{forgotten}")

    def _forget_uninstalled(self, names: list[str]) -> str:
        """With ``forget_uninstalled``, delete what is stored about repositories the App left:
        store rows and deliveries, bundles and encoder. Said in the job's outcome."""
        if not self.settings.forget_uninstalled or not names:
            return ""
        for name in names:
            with self.store.session() as session:
                forget_repository(session, name)
            self.labeler.models.registry.forget_repo(name)
            self.labeler.models.forget(name)
            self.configs.invalidate(name)
            log.warning("%s: the App was uninstalled; its stored data and models are deleted", name)
        return "; deleted their stored data and models (forget_uninstalled)"

    # -- repository ----------------------------------------------------------------------------
    def _on_repository(self, delivery: Delivery) -> Outcome:
        """A rename or transfer is followed before this runs (``handle``), so the store and the
        registry take the new name at once rather than with the next issue. A repository deleted
        on GitHub is served no more, as if the App had been removed from it."""
        repo, action = delivery.repository, delivery.action
        if action in {"renamed", "transferred"}:
            return Outcome(f"{action}: served as {repo}")
        if action == "deleted" and repo is not None:
            with self.store.session() as session:
                repository = get_repository(session, repo)
                row = session.get(Installation, repository.id) if repository is not None else None
                if row is not None:
                    row.active = False
                    row.updated_at = now()
            return Outcome(f"deleted on GitHub: stopped serving {repo}{self._forget_uninstalled([repo])}")
        return Outcome(f"repository.{action}: nothing to do", ignored=True)

    # -- issues --------------------------------------------------------------------------------
    def _store_issue(self, delivery: Delivery, session: Session, record: IssueRecord) -> Repository:
        payload = delivery.payload
        repo = payload["repository"]
        repository = ensure_repository(
            session, repo["full_name"], github_id=repo.get("id"), node_id=repo.get("node_id")
        )
        sender = payload.get("sender") or {}
        upsert_issue(
            session,
            LabelCatalogue(session, repository),
            record,
            source="webhook",
            actor_login=sender.get("login"),
            actor_type=sender.get("type"),
            delivery_id=delivery.delivery_id,
        )
        return repository

    def _on_issues(self, delivery: Delivery) -> Outcome:
        payload, action = delivery.payload, delivery.action
        issue = payload["issue"]
        labeling = not issue.get("pull_request") and (
            action in {"opened", "reopened"} or (action == "edited" and not issue.get("labels"))
        )
        # Parsed first: a malformed issue fails its job before anything is written to GitHub.
        record = parse_issue(issue, default_repo=payload["repository"]["full_name"])
        if labeling:
            return self.labeler.label(delivery, lambda session: self._store_issue(delivery, session, record))
        if action in {"deleted", "transferred"}:
            return self._issue_left(delivery, record)
        with self.store.session() as session:
            repository = self._store_issue(delivery, session, record)
            if action in {"labeled", "unlabeled"} and isinstance(payload.get("label"), dict):
                kind = self._feedback(delivery, session, repository)
                if kind:
                    return Outcome(
                        f"{action} {payload['label']['name']!r}: {kind.replace('_', ' ')} recorded"
                    )
        if action in {"labeled", "unlabeled"}:
            return Outcome(f"{action}: stored")
        if issue.get("pull_request"):
            return Outcome("pull request: stored, not labeled")
        return Outcome(f"{action}: stored")

    def _issue_left(self, delivery: Delivery, record: IssueRecord) -> Outcome:
        """A deleted or transferred issue is removed from this repository's training data; a
        transferred one is stored in its new repository when the bot serves that one too."""
        payload, action = delivery.payload, str(delivery.action)
        with self.store.session() as session:
            repository = get_repository(session, payload["repository"]["full_name"])
            removed = repository is not None and forget_issue(session, repository, record.key)
        what = f"{action}: {'removed from' if removed else 'was not in'} the store"
        changes = payload.get("changes") or {}
        target, new_issue = changes.get("new_repository") or {}, changes.get("new_issue")
        if action != "transferred" or not target.get("full_name") or not isinstance(new_issue, dict):
            return Outcome(what)
        moved = parse_issue(new_issue, default_repo=target["full_name"])
        elsewhere = f"{what}; {moved.repo} is not served here"
        if self.app_mode and not self._installed(moved.repo):
            return Outcome(elsewhere)
        with self.store.session() as session:
            # With a token, every repository whose webhooks reach the bot is served: one known here.
            known = get_repository(session, moved.repo)
            if known is None:
                return Outcome(elsewhere)
            upsert_issue(session, LabelCatalogue(session, known), moved, source="webhook")
        return Outcome(f"{what}; stored as {moved.repo}#{moved.number}")

    def _feedback(self, delivery: Delivery, session: Session, repository: Repository) -> str | None:
        sender = delivery.payload.get("sender") or {}
        if sender.get("type") != "User":
            return None  # this App, or another bot: not a maintainer's verdict
        label = delivery.payload["label"]
        at = parse_datetime(delivery.payload["issue"].get("updated_at"), "updated_at") or now()
        kind = feedback.record_human_change(
            session,
            repository,
            int(delivery.payload["issue"]["number"]),
            action=str(delivery.action),
            label=label["name"],
            node_id=label.get("node_id"),
            actor=sender.get("login"),
            delivery_id=delivery.delivery_id,
            at=at,
        )
        if kind:
            self.metrics.feedback.labels(repository.full_name, kind).inc()
        return kind

    # -- labels and config ---------------------------------------------------------------------
    def _on_label(self, delivery: Delivery) -> Outcome:
        payload, action = delivery.payload, delivery.action
        raw = payload["label"]
        record = LabelRecord(
            name=raw["name"],
            node_id=raw.get("node_id"),
            github_id=raw.get("id"),
            color=raw.get("color"),
            description=raw.get("description"),
        )
        with self.store.session() as session:
            repo = payload["repository"]
            repository = ensure_repository(session, repo["full_name"], github_id=repo.get("id"))
            catalogue = LabelCatalogue(session, repository)
            if action == "deleted":
                catalogue.delete(record)
                return Outcome(f"label {record.name!r} deleted")
            catalogue.resolve(record)
        renamed = ((payload.get("changes") or {}).get("name") or {}).get("from")
        if renamed:
            return Outcome(f"label {renamed!r} renamed to {record.name!r}")
        return Outcome(f"label {record.name!r} {action}")

    def _on_push(self, delivery: Delivery) -> Outcome:
        payload = delivery.payload
        touched = {
            path
            for commit in payload.get("commits") or []
            for key in ("added", "modified", "removed")
            for path in commit.get(key) or []
        }
        default_ref = f"refs/heads/{(payload.get('repository') or {}).get('default_branch', '')}"
        if payload.get("ref") != default_ref:
            return Outcome("push to another branch", ignored=True)
        repo, done = str(delivery.repository), []
        if self.settings.repo_config_path in touched:
            self.configs.invalidate(repo)
            done.append(f"{self.settings.repo_config_path} reloaded on next use")
        if any(path.startswith(TEMPLATE_DIR + "/") for path in touched):
            self.gateway.sync_labels(self.store, repo, delivery.installation_id)
            done.append("issue-form labels re-read")
        if done:
            return Outcome("; ".join(done))
        return Outcome("push: neither config nor issue forms changed", ignored=True)
