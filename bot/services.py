"""The bot's parts wired together from the settings: built once at start, handed to the app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from bot import feedback
from bot.github_api import GitHubGateway
from bot.handlers import HANDLED_EVENTS, EventHandlers
from bot.jobs import ClaimedJob, JobQueue
from bot.labeling import Labeler
from bot.metrics import BotMetrics
from bot.outcome import Outcome
from bot.redelivery import Redeliverer
from bot.repo_config import RepoConfigCache
from bot.retraining import RefreshLauncher, RefreshRequest, Retrainer
from bot.served_models import ServedModels
from bot.worker import Workers
from training.github_client import GitHubClients
from training.registry import Registry
from training.settings import Settings
from training.store import Store
from training.store.upserts import now

log = logging.getLogger(__name__)


@dataclass
class BotServices:
    settings: Settings
    store: Store
    queue: JobQueue
    gateway: GitHubGateway
    models: ServedModels
    configs: RepoConfigCache
    handlers: EventHandlers
    workers: Workers
    metrics: BotMetrics
    retrainer: Retrainer
    redeliverer: Redeliverer

    @classmethod
    def build(
        cls,
        settings: Settings,
        clients: GitHubClients | None = None,
        launch: Callable[[RefreshRequest], int] | None = None,
    ) -> BotServices:
        store = Store(settings.database_url)
        if clients is None and not (settings.dry_run and not settings.has_github_credentials()):
            clients = GitHubClients(settings)
        gateway = GitHubGateway(clients)
        metrics = BotMetrics()
        models = ServedModels(
            Registry(settings.registry_dir),
            threads=settings.onnx_threads,
            check_seconds=settings.bundle_check_seconds,
            max_loaded=settings.max_loaded_bundles,
        )
        configs = RepoConfigCache(
            lambda repo, installation: gateway.file_text(repo, installation, settings.repo_config_path),
            settings.repo_config_path,
            settings.repo_config_ttl_seconds,
        )
        labeler = Labeler(
            store,
            gateway,
            models,
            configs,
            metrics,
            dry_run=settings.dry_run,
            recheck_seconds=settings.delivery_recheck_seconds,
        )
        handlers = EventHandlers(settings, store, gateway, configs, labeler, metrics)
        queue = JobQueue(
            store,
            max_attempts=settings.job_max_attempts,
            retry_seconds=settings.job_retry_seconds,
            retry_max_seconds=settings.job_retry_max_seconds,
            outage_hours=settings.job_outage_hours,
            lease_seconds=settings.job_lease_seconds,
        )

        def handle(job: ClaimedJob) -> Outcome:
            return handlers.handle(job.delivery)

        def housekeeping() -> None:
            with store.session() as session:
                added = feedback.sweep_accepted(session, at=now(), days=settings.feedback_accept_days)
            if added:
                log.info("%d bot labels left in place counted as accepted", added)
            if days := settings.job_retention_days:
                if forgotten := queue.forget_finished(before=now() - timedelta(days=days)):
                    log.info("%d finished webhook jobs older than %g days deleted", forgotten, days)

        workers = Workers(
            queue,
            handle,
            metrics,
            count=settings.worker_threads,
            poll_seconds=min(1.0, settings.job_retry_seconds),
            housekeeping=housekeeping,
        )
        retrainer = Retrainer(
            settings,
            store,
            models,
            handlers.installed_repositories,
            launch or RefreshLauncher(settings),
            on_finished=lambda repo, status: metrics.refreshes.labels(repo, status).inc(),
        )
        redeliverer = Redeliverer(
            gateway,
            queue,
            metrics,
            interval_minutes=settings.redeliver_minutes,
            window_hours=settings.redeliver_window_hours,
            max_attempts=settings.redeliver_max_attempts,
        )
        return cls(
            settings,
            store,
            queue,
            gateway,
            models,
            configs,
            handlers,
            workers,
            metrics,
            retrainer,
            redeliverer,
        )

    def start(self) -> None:
        repos = self.handlers.installed_repositories()
        self.models.load(repos)
        self.workers.start()
        self.retrainer.start()
        self.redeliverer.start()
        log.info(
            "serving %d repositories (%s); %d worker threads",
            len(repos),
            ", ".join(f"{r}: {self.models.versions().get(r, 'no bundle')}" for r in repos) or "none yet",
            self.settings.worker_threads,
        )

    def stop(self) -> None:
        self.redeliverer.stop()
        self.retrainer.stop()
        self.workers.stop()
        self.gateway.close()
        self.store.close()

    def handled(self, event: str) -> bool:
        return event in HANDLED_EVENTS
