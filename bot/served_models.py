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
        self._loading: dict[str, threading.Event] = {}  # set when a repository's load ends
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one prediction at a time, over every repository

    def load(self, repos: list[str]) -> None:
        for repo in repos:
            self.get(repo, force_check=True)

    def get(self, repo: str, *, force_check: bool = False) -> Bundle | None:
        """The repository's bundle in service, reloaded when ``current`` points elsewhere.

        A new bundle is loaded and warmed outside the lock, so a promotion never holds up the
        lookups of other repositories; while it loads, the old bundle keeps serving, and a
        repository with none yet waits for it rather than going unlabeled.
        """
        with self._lock:
            bundle = self._bundles.get(repo)
            loading = self._loading.get(repo)
            if loading is not None:
                if bundle is not None:
                    return bundle
            else:
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
                self._loading[repo] = threading.Event()
        if loading is not None:
            loading.wait()
            with self._lock:
                return self._bundles.get(repo)
        return self._load(repo, version, bundle)

    def _load(self, repo: str, version: str, serving: Bundle | None) -> Bundle | None:
        loaded: Bundle | None = None
        error: str | None = None
        try:
            candidate = self.registry.load(repo, version, threads=self.threads, run_lock=self._run_lock)
            candidate.warm_up()  # before it serves: no issue waits for a cold session
            loaded = candidate
        except BundleError as exc:
            error = str(exc)
        finally:
            with self._lock:
                if loaded is not None:
                    self._bundles[repo] = loaded
                    self._errors.pop(repo, None)
                elif error is not None:
                    self._errors[repo] = error
                self._loading.pop(repo).set()
        if loaded is None:
            # Keep serving what was loaded before; the status endpoint shows why.
            log.error("%s: bundle %s refused: %s", repo, version, error)
            return serving
        log.info(
            "%s: serving bundle %s%s",
            repo,
            loaded.version,
            f" (was {serving.version})" if serving is not None else "",
        )
        return loaded

    def forget(self, repo: str) -> None:
        """Drop a name the repository no longer has (renamed on GitHub); its bundle is served
        under the new name, loaded from the registry on first use."""
        with self._lock:
            self._bundles.pop(repo, None)
            self._checked.pop(repo, None)
            self._errors.pop(repo, None)

    def versions(self) -> dict[str, str]:
        with self._lock:
            return {repo: bundle.version for repo, bundle in self._bundles.items()}

    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._errors)
