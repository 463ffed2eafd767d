"""Prometheus metrics of the bot, in a registry of its own (one per app, so tests stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BotMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "issue_labeler_deliveries",
            "Webhook deliveries by event and outcome at the door",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.previous_secret_deliveries = Counter(
            "issue_labeler_previous_secret_deliveries",
            "Deliveries signed with an earlier webhook secret (ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS, "
            "by its position from 1) rather than the current one",
            ["position"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "issue_labeler_jobs",
            "Jobs finished by event and status",
            ["event", "status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "issue_labeler_job_seconds",
            "Time from a delivery's arrival to its job's end",
            ["event"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.prediction_seconds = Histogram(
            "issue_labeler_prediction_seconds",
            "The model's part of labeling one issue: tokenizing, waiting for the run lock, running",
            ["repository"],
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.labels_applied = Counter(
            "issue_labeler_labels_applied",
            "Labels the bot applied",
            ["repository", "label"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "issue_labeler_feedback",
            "Maintainers' feedback on bot labels",
            ["repository", "kind"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "issue_labeler_refreshes",
            "Refreshes started by the bot, by their recorded status",
            ["repository", "status"],
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "issue_labeler_redeliveries",
            "Failed webhook deliveries the bot asked GitHub to send again",
            registry=self.registry,
        )
        self.jobs_in_store = Gauge(
            "issue_labeler_jobs_in_store",
            "Jobs in the store by status when scraped; a growing pending count means the bot is "
            "not keeping up with its deliveries",
            ["status"],
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "issue_labeler_models_loaded",
            "Repositories whose model is loaded now (ISSUE_LABELER_MAX_LOADED_BUNDLES bounds it)",
            registry=self.registry,
        )
        self.model_version = Gauge(
            "issue_labeler_model_info",
            "The bundle in service per repository (value 1)",
            ["repository", "version"],
            registry=self.registry,
        )
