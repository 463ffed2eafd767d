"""The one settings object, read from ``ISSUE_LABELER_*`` environment variables and ``.env``.

Settings are built once at start-up by the entry point (``load_settings``) and handed down
explicitly; nothing reads the environment from deep inside the code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError
from sqlalchemy.engine import make_url

from training.cron import cron_trigger
from training.store.db import sqlite_synchronous

DEFAULT_EXCLUDED_LABELS: tuple[str, ...] = (
    # Workflow labels say where an issue is in triage, not what it is about.
    "needs *",
    "needs-*",
    "help wanted",
    "good first issue",
    "good first pr*",
    "duplicate",
    "invalid",
    "wontfix",
    "won't fix",
    "stale",
    "spam",
    "triage*",
    # Planning labels: how hard, how urgent, which sprint; not what the issue is about.
    "easy",
    "moderate",
    "hard",
    "*priority*",
    "blocker",
    "sprint",
    "meta-issue",
    "rfc",
)


class SettingsError(Exception):
    """Settings that cannot work; the message names each problem and its fix."""


def _split_list(value: object) -> object:
    """Accept a comma-separated string as well as a JSON list from the environment."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can configure; see README.md for the reference."""

    model_config = SettingsConfigDict(
        env_prefix="ISSUE_LABELER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = Field(
        default="sqlite:///var/issue-labeler.db",
        description=(
            "SQLAlchemy URL of the store (SQLite file or postgresql+psycopg://...). A SQLite URL may "
            "end in ?synchronous=normal: faster commits that survive a crash of the bot but not a "
            "power loss (default full)."
        ),
    )
    github_api_url: str = Field(
        default="https://api.github.com",
        description="GitHub REST API base URL (GitHub Enterprise: https://HOST/api/v3).",
    )
    github_token: SecretStr | None = Field(
        default=None, description="Personal access or fine-grained token, used when no App is set."
    )
    github_app_id: int | None = Field(default=None, description="GitHub App id.")
    github_private_key_path: Path | None = Field(
        default=None, description="Path to the GitHub App's private key (PEM)."
    )
    github_private_key: SecretStr | None = Field(
        default=None, description="The GitHub App's private key itself (PEM text)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Secret GitHub signs webhook deliveries with."
    )
    webhook_previous_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Earlier webhook secrets still accepted while a new one is rolled out (JSON list); "
        "a delivery signed with one is logged and counted. Empty them once GitHub signs with the new one.",
    )
    registry_dir: Path = Field(default=Path("var/models"), description="Model bundle registry.")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token protecting /predict and /admin endpoints."
    )

    github_per_page: int = Field(default=100, ge=1, le=100, description="Items per API page.")
    github_max_retries: int = Field(
        default=8, ge=0, description="Retries of a GitHub request (5xx, connection, rate limit)."
    )
    github_backoff_factor: float = Field(
        default=1.0, ge=0, description="Exponential backoff factor in seconds between retries."
    )
    github_secondary_rate_wait: float = Field(
        default=60.0, ge=0, description="Seconds to wait on a secondary rate limit without Retry-After."
    )
    github_max_rate_limit_wait: float = Field(
        default=3600.0, ge=0, description="Longest wait for a rate-limit reset before giving up."
    )
    github_timeout: int = Field(default=30, ge=1, description="HTTP timeout in seconds.")
    fetch_reconcile: bool = Field(
        default=True,
        description="A refresh's fetch also lists every issue number and removes stored issues "
        "GitHub no longer has (deleted or transferred away), so they are not trained on.",
    )

    min_label_examples: int = Field(
        default=10, ge=1, description="A label is learned only with at least this many examples."
    )
    exclude_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED_LABELS),
        description="Labels never learned (case-insensitive glob patterns, comma-separated).",
    )
    label_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Old label name -> current name, as JSON: {"enhancement": "New Feature"}.',
    )
    template_labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Labels the issue forms apply, per repository, for JSONL imports (JSON object).",
    )
    exclude_template_labels: bool = Field(
        default=True, description="Leave labels applied by issue forms out of what is learned."
    )
    split_fractions: tuple[float, float, float] = Field(
        default=(0.7, 0.1, 0.2), description="Train, validation and test fractions."
    )
    validation_split: Literal["time", "stratified", "covered"] = Field(
        default="covered",
        description=(
            "With dates, test is always the newest issues; validation is the next newest (time), "
            "carved from the older ones by iterative stratification (stratified), or the next newest "
            "plus the newest older issue of each label they lack (covered) — the last two so that "
            "rare labels that drifted out of recent issues still have validation positives. Applies "
            "to issues not split yet."
        ),
    )
    seed: int = Field(default=42, description="Seed for splits and training.")

    bot_host: str = Field(default="127.0.0.1", description="Address the webhook server listens on.")
    bot_port: int = Field(default=8000, ge=1, le=65535, description="Port the webhook server listens on.")
    webhook_max_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1024, description="Largest delivery accepted (GitHub caps at 25 MB)."
    )
    worker_threads: int = Field(default=2, ge=0, description="In-process job workers (0: accept only).")
    onnx_threads: int = Field(
        default=2,
        ge=1,
        description="onnxruntime threads per prediction; predictions run one at a time, so use the cores.",
    )
    job_max_attempts: int = Field(
        default=6, ge=1, description="Tries of a webhook job before it is kept as failed."
    )
    job_retry_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay of a failed job; doubles on each try."
    )
    job_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two tries of a job."
    )
    job_outage_hours: float = Field(
        default=24.0,
        ge=0,
        description="A job failing because GitHub or the store is unavailable (5xx, timeouts, rate "
        "limits) is retried this long after its delivery, beyond job_max_attempts, before it is kept "
        "as failed.",
    )
    job_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A running job whose worker stopped renewing its lease this long ago (a crash) "
        "is run again.",
    )
    job_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Finished webhook jobs (done or ignored) are deleted this many days after they "
        "ended, their payloads with them; failed ones are kept. At least 3 (GitHub redelivers a "
        "delivery for 3 days, and a redelivered one must still be known); 0: kept for ever.",
    )
    feedback_accept_days: float = Field(
        default=7.0, ge=0, description="A bot label left in place this many days counts as accepted."
    )
    repo_config_path: str = Field(
        default=".github/issue-labeler.yml", description="Per-repository config file, read through the API."
    )
    repo_config_ttl_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long a repository's config file is cached (push events refresh it).",
    )
    max_loaded_bundles: int = Field(
        default=0,
        ge=0,
        description="Models kept loaded at once, those of the repositories labeled most recently "
        "(40-60 MB each for INT8, 100-135 for fp32); the others stay in service and load again "
        "on their next issue (0.15-0.19 s for the default INT8 bundle). 0: every repository's.",
    )
    bundle_check_seconds: float = Field(
        default=5.0, ge=0, description="How often the server looks for a newly promoted bundle."
    )
    delivery_recheck_seconds: float = Field(
        default=60.0,
        ge=0,
        description="An issue delivery this much older than the issue's last update (redelivered "
        "after the bot was down, or queued long) has the issue's labels read from GitHub again "
        "before the bot decides: a maintainer may have labeled it meanwhile.",
    )
    redeliver_minutes: float = Field(
        default=10.0,
        ge=0,
        description="How often the bot (a GitHub App) asks GitHub to redeliver the App's webhook "
        "deliveries that failed (the bot down, the store unreachable); also once at start. 0: off.",
    )
    redeliver_window_hours: float = Field(
        default=24.0,
        gt=0,
        le=72,
        description="How far back failed deliveries are looked for (GitHub keeps them 3 days).",
    )
    redeliver_max_attempts: int = Field(
        default=3, ge=1, description="Redeliveries asked for one delivery before it is left failed."
    )

    dry_run: bool = Field(
        default=False, description="The bot decides and logs but never writes to GitHub (to try it out)."
    )
    forget_uninstalled: bool = Field(
        default=False,
        description="When the App is uninstalled from a repository (the installation deleted, the "
        "repository removed from it or deleted on GitHub), delete everything stored about it: "
        "issues, feedback, predictions, deliveries, refresh history and its model bundles. Off: "
        "kept, so that a reinstall continues where it stopped.",
    )

    refresh_schedule: str = Field(
        default="0 3 * * 0",
        description="Cron schedule (UTC) of retraining every installed repository; empty: off.",
    )
    refresh_check_minutes: float = Field(
        default=60.0,
        ge=0,
        description="How often the bot checks whether a repository should retrain early (0: never).",
    )
    refresh_min_new_labeled: int = Field(
        default=50,
        ge=1,
        description="Retrain early after this many new labeled issues since the last refresh.",
    )
    refresh_precision_floor: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Retrain early when live precision of applied labels falls below this.",
    )
    refresh_min_feedback: int = Field(
        default=20, ge=1, description="Applied labels needed before live precision is trusted as a trigger."
    )
    refresh_lock_hours: float = Field(
        default=1.0,
        gt=0,
        description="A refresh lock left by a crashed process expires after this long; a running "
        "refresh renews its own every quarter of it, however long it trains.",
    )
    refresh_timeout_hours: float = Field(
        default=12.0,
        ge=0,
        description="A refresh the bot started that still runs after this long is stopped (SIGTERM, "
        "then SIGKILL a minute later) and recorded failed, freeing the repository for the next one; 0: "
        "no limit.",
    )
    refresh_nice: int = Field(
        default=10, ge=0, le=19, description="Scheduling niceness of refresh processes."
    )
    refresh_config: Path | None = Field(
        default=None, description="Training config file (YAML/JSON) for scheduled and on-demand refreshes."
    )

    log_level: str = Field(default="INFO", description="Python logging level.")

    @field_validator("exclude_labels", mode="before")
    @classmethod
    def _parse_exclude(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
            raise ValueError(
                f"not a database URL ({exc}); use e.g. sqlite:///var/issue-labeler.db "
                "or postgresql+psycopg://USER:PASSWORD@HOST/DB"
            ) from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite:// and postgresql+psycopg:// URLs are supported")
        if url.get_backend_name() == "sqlite":
            sqlite_synchronous(value)
        return value

    @field_validator("github_api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. https://api.github.com)")
        return value.rstrip("/")

    @field_validator("split_fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1.0) > 1e-6 or value[0] <= 0:
            raise ValueError("three non-negative fractions summing to 1 with train > 0, e.g. [0.7, 0.1, 0.2]")
        return value

    @field_validator("job_retention_days")
    @classmethod
    def _check_job_retention(cls, value: float) -> float:
        if 0 < value < 3:
            raise ValueError("0 (keep every job) or at least 3 days: GitHub redelivers for 3 days")
        return value

    @field_validator("refresh_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        if value.strip():
            try:
                cron_trigger(value)
            except ValueError as exc:  # the bot would stop at start with it
                raise ValueError(
                    f"{value!r} is not a crontab line ({exc}); e.g. '0 3 * * 0' (Sundays 03:00 UTC), "
                    "or empty for no scheduled retraining"
                ) from None
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()

    @model_validator(mode="after")
    def _check_app_credentials(self) -> Settings:
        has_key = self.github_private_key is not None or self.github_private_key_path is not None
        if self.github_private_key_path is not None and not self.github_private_key_path.is_file():
            raise ValueError(
                f"ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH={self.github_private_key_path} is not a "
                "readable file; point it at the App's .pem key downloaded from GitHub"
            )
        if self.github_app_id is not None and not has_key:
            raise ValueError(
                "ISSUE_LABELER_GITHUB_APP_ID is set but no private key: set "
                "ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH (or ISSUE_LABELER_GITHUB_PRIVATE_KEY)"
            )
        if has_key and self.github_app_id is None:
            raise ValueError(
                "a GitHub App private key is set but ISSUE_LABELER_GITHUB_APP_ID is not; "
                "set it to the App id shown on the App's settings page"
            )
        return self

    def has_github_credentials(self) -> bool:
        return self.github_app_id is not None or self.github_token is not None

    def private_key_pem(self) -> str | None:
        """The App's private key text, from the setting or the file it names."""
        if self.github_private_key is not None:
            return self.github_private_key.get_secret_value()
        if self.github_private_key_path is not None:
            return self.github_private_key_path.read_text()
        return None


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        env = f"ISSUE_LABELER_{field.upper()}" if item["loc"] else "settings"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {env}: {message}")
    return "invalid settings:\n" + "\n".join(lines)


def _describe_unparsed(error: PydanticSettingsError) -> str:
    """pydantic-settings' own error for a list or mapping setting that is not JSON names neither
    the variable nor the problem: say both."""
    found = re.search(r'field "(\w+)" from source "(\w+)"', str(error))
    if found is None:
        return f"invalid settings:\n  {error}"
    env = f"ISSUE_LABELER_{found.group(1).upper()}"
    where = " (in .env)" if found.group(2).startswith("DotEnv") else ""
    cause = error.__cause__
    why = f": {cause}" if isinstance(cause, json.JSONDecodeError) else ""
    return f"invalid settings:\n  {env}{where}: expected JSON (a list or an object){why}"


def load_settings(**overrides: object) -> Settings:
    """Build and validate settings, turning validation errors into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
    except PydanticSettingsError as error:
        raise SettingsError(_describe_unparsed(error)) from None
