"""The bundle in service per repository, swapped without downtime when a new one is promoted.

A prediction takes a reference to the current ``Bundle`` and keeps it to the end, so a swap
never changes the model under an in-flight prediction; the old session is freed when the last
reference goes.
"""

from __future__ import annotations

import logging
import threading
import time

from training.bundle import Bundle, BundleError
from training.registry import Registry

log = logging.getLogger(__name__)


class ServedModels:
    def __init__(self, registry: Registry, *, threads: int, check_seconds: float) -> None:
        self.registry = registry
        self.threads = threads
        self.check_seconds = check_seconds
        self._bundles: dict[str, Bundle] = {}
        self._checked: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one prediction at a time, over every repository

    def load(self, repos: list[str]) -> None:
        for repo in repos:
            self.get(repo, force_check=True)

    def get(self, repo: str, *, force_check: bool = False) -> Bundle | None:
        """The repository's bundle in service, reloaded when ``current`` points elsewhere."""
        with self._lock:
            bundle = self._bundles.get(repo)
            due = force_check or time.monotonic() - self._checked.get(repo, -1e9) >= self.check_seconds
            if not due:
                return bundle
            self._checked[repo] = time.monotonic()
            version = self.registry.current_version(repo)
            if version is None or (bundle is not None and bundle.version == version):
                if version is None and bundle is not None:
                    log.warning("%s: no bundle in service any more; labeling stops", repo)
                    self._bundles.pop(repo, None)
                    bundle = None
                return bundle
            try:
                loaded = self.registry.load(repo, version, threads=self.threads, run_lock=self._run_lock)
                loaded.warm_up()  # before it serves: no issue waits for a cold session
            except BundleError as exc:
                # Keep serving what was loaded before; the status endpoint shows why.
                self._errors[repo] = str(exc)
                log.error("%s: bundle %s refused: %s", repo, version, exc)
                return bundle
            self._errors.pop(repo, None)
            self._bundles[repo] = loaded
            log.info(
                "%s: serving bundle %s%s",
                repo,
                loaded.version,
                f" (was {bundle.version})" if bundle is not None else "",
            )
            return loaded

    def versions(self) -> dict[str, str]:
        with self._lock:
            return {repo: bundle.version for repo, bundle in self._bundles.items()}

    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._errors)
