"""Per-repository settings from ``.github/issue-labeler.yml``, read through the GitHub API.

An invalid file never stops the bot: the defaults are used and the problem is kept for the
status endpoint and the log, so the maintainer can see why their settings were not taken.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from training.config import parse_model

log = logging.getLogger(__name__)


class LabelFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[str] = Field(default_factory=list, description="only these labels (globs); empty: all")
    deny: list[str] = Field(default_factory=list, description="never these labels (globs)")

    def permits(self, name: str) -> bool:
        lowered = name.lower()
        if any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.allow)


class RepoConfig(BaseModel):
    """What a maintainer can set for their repository; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    labels: LabelFilter = Field(default_factory=LabelFilter)
    thresholds: dict[str, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="per-label score thresholds replacing the tuned ones, by the label's name in the "
        "repository (any case)",
    )
    max_labels: int = Field(default=3, ge=0)
    skip_if_labeled: bool = Field(default=True, description="leave issues a human already labeled")
    comment: bool = Field(default=False, description="also comment with the suggestions")
    dry_run: bool = Field(default=False, description="decide and log, write nothing to GitHub")

    @field_validator("thresholds")
    @classmethod
    def _one_threshold_per_label(cls, value: dict[str, float]) -> dict[str, float]:
        lowered = [name.lower() for name in value]
        twice = sorted({name for name in lowered if lowered.count(name) > 1})
        if twice:
            raise ValueError(f"a label named twice (names match in any case): {', '.join(twice)}")
        return value

    def threshold_overrides(self) -> dict[str, float]:
        """The thresholds by lower-cased label name: labels match in any case, as allow and deny do."""
        return {name.lower(): value for name, value in self.thresholds.items()}


class RepoConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


class UnreadableConfig(RepoConfigError):
    """Something is at the config's path that the API does not return as a file's text (a
    symbolic link out of the repository, a submodule, a file over the API's 1 MB)."""


def parse_repo_config(text: str | None, path: str) -> RepoConfig:
    """The config in ``text`` (None or empty: defaults)."""
    if text is None or not text.strip():
        return RepoConfig()
    return parse_model(RepoConfig, text, path, what="settings", error=RepoConfigError)


@dataclass(frozen=True)
class LoadedConfig:
    config: RepoConfig
    error: str | None
    loaded_at: float


class RepoConfigCache:
    """Config per repository, fetched at most once per TTL, dropped when a push changes the file."""

    def __init__(self, fetch: Callable[[str, int | None], str | None], path: str, ttl_seconds: float) -> None:
        """``fetch`` returns the file's text, None where there is none, or raises ``UnreadableConfig``."""
        self._fetch = fetch
        self.path = path
        self.ttl = ttl_seconds
        self._entries: dict[str, LoadedConfig] = {}
        self._lock = threading.Lock()

    def get(self, repo: str, installation_id: int | None) -> RepoConfig:
        with self._lock:
            entry = self._entries.get(repo)
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry.config
        try:
            text = self._fetch(repo, installation_id)  # GitHub errors propagate: the job is retried
            entry = LoadedConfig(parse_repo_config(text, self.path), None, time.monotonic())
        except RepoConfigError as exc:
            log.warning("%s: %s; using the defaults", repo, exc)
            entry = LoadedConfig(RepoConfig(), str(exc), time.monotonic())
        with self._lock:
            self._entries[repo] = entry
        return entry.config

    def invalidate(self, repo: str) -> None:
        with self._lock:
            self._entries.pop(repo, None)

    def errors(self) -> dict[str, str]:
        with self._lock:
            return {repo: e.error for repo, e in self._entries.items() if e.error}
