"""The bundle in service per repository, swapped without downtime when a new one is promoted.

A prediction takes a reference to the current ``Bundle`` and keeps it to the end, so a swap
never changes the model under an in-flight prediction; the old session is freed when the last
reference goes. With ``max_loaded`` set, only the bundles of the repositories labeled most
recently keep a model loaded (40-60 MB each for INT8, 100-135 for fp32); the others stay
in service and load again on their next issue.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from training.bundle import Bundle, BundleError, BundleSummary
from training.registry import Registry

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None  # glibc only


def _return_freed_memory() -> None:
    """Give the memory of unloaded models back to the system: glibc keeps freed blocks for
    reuse, so with a bound of 2 over 4 repositories the process grew past what loading all 4
    took (459 against 427 MB); trimmed after each unload it stayed at 341-350 MB."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class ServedModels:
    def __init__(
        self, registry: Registry, *, threads: int, check_seconds: float, max_loaded: int = 0
    ) -> None:
        self.registry = registry
        self.threads = threads
        self.check_seconds = check_seconds
        self.max_loaded = max_loaded  # 0: no bound
        self._bundles: OrderedDict[str, Bundle] = OrderedDict()  # least recently used first
        self._unloaded: dict[str, BundleSummary] = {}  # in service, model unloaded for the bound
        self._checked: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._loading: dict[str, threading.Event] = {}  # set when a repository's load ends
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one prediction at a time, over every repository

    def load(self, repos: list[str]) -> None:
        """Load each repository's bundle (at start, on installation); beyond ``max_loaded``,
        verify it without starting its model, so a refused bundle still shows before the first
        issue."""
        for repo in repos:
            with self._lock:
                full = 0 < self.max_loaded <= len(self._bundles) and repo not in self._bundles
            if full:
                self._note_unloaded(repo)
            else:
                self.get(repo, force_check=True)

    def _note_unloaded(self, repo: str) -> None:
        version = self.registry.current_version(repo)
        if version is None:
            return
        try:
            summary = BundleSummary.read(self.registry.repo_dir(repo) / version, verify=True)
        except BundleError as exc:
            log.error("%s: bundle %s refused: %s", repo, version, exc)
            with self._lock:
                self._errors[repo] = str(exc)
            return
        with self._lock:
            self._unloaded[repo] = summary
            self._checked[repo] = time.monotonic()
            self._errors.pop(repo, None)
        log.info("%s: bundle %s in service, loaded on its first issue", repo, version)

    def get(self, repo: str, *, force_check: bool = False) -> Bundle | None:
        """The repository's bundle in service, reloaded when ``current`` points elsewhere.

        A new bundle is loaded and warmed outside the lock, so a promotion never holds up the
        lookups of other repositories; while it loads, the old bundle keeps serving, and a
        repository with none yet (or with its model unloaded) waits for it rather than going
        unlabeled.
        """
        with self._lock:
            bundle = self._bundles.get(repo)
            if bundle is not None:
                self._bundles.move_to_end(repo)
            loading = self._loading.get(repo)
            if loading is not None:
                if bundle is not None:
                    return bundle
            else:
                unloaded = self._unloaded.get(repo)
                due = (
                    force_check
                    or unloaded is not None
                    or time.monotonic() - self._checked.get(repo, -1e9) >= self.check_seconds
                )
                if not due:
                    return bundle
                self._checked[repo] = time.monotonic()
                version = self.registry.current_version(repo)
                if version is None or (bundle is not None and bundle.version == version):
                    if version is None and (bundle is not None or unloaded is not None):
                        log.warning("%s: no bundle in service any more; labeling stops", repo)
                        self._bundles.pop(repo, None)
                        self._unloaded.pop(repo, None)
                        bundle = None
                    return bundle
                self._loading[repo] = threading.Event()
        if loading is not None:
            loading.wait()
            with self._lock:
                return self._bundles.get(repo)
        assert version is not None  # no loading under way: the registry named one, or we returned
        reloading = unloaded is not None and unloaded.version == version
        return self._load(repo, version, bundle, reloading=reloading)

    def _load(self, repo: str, version: str, serving: Bundle | None, *, reloading: bool) -> Bundle | None:
        loaded: Bundle | None = None
        error: str | None = None
        unloaded: list[str] = []
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
                    self._bundles.move_to_end(repo)
                    self._errors.pop(repo, None)
                    unloaded = self._unload_beyond_bound()
                elif error is not None:
                    self._errors[repo] = error
                self._unloaded.pop(repo, None)  # loaded now, or refused: it cannot serve
                self._loading.pop(repo).set()
        for other in unloaded:
            log.info("%s: model unloaded (%d at most); loads again on its next issue", other, self.max_loaded)
        if unloaded:
            _return_freed_memory()
        if loaded is None:
            # Keep serving what was loaded before; the status endpoint shows why.
            log.error("%s: bundle %s refused: %s", repo, version, error)
            return serving
        if reloading:
            log.info("%s: bundle %s loaded again", repo, loaded.version)
        else:
            log.info(
                "%s: serving bundle %s%s",
                repo,
                loaded.version,
                f" (was {serving.version})" if serving is not None else "",
            )
        return loaded

    def _unload_beyond_bound(self) -> list[str]:
        """Unload the least recently used models beyond ``max_loaded`` (under the lock); an
        in-flight prediction keeps its reference and finishes."""
        unloaded = []
        while self.max_loaded > 0 and len(self._bundles) > self.max_loaded:
            repo, bundle = self._bundles.popitem(last=False)
            self._unloaded[repo] = bundle.summary
            unloaded.append(repo)
        return unloaded

    def summary(self, repo: str) -> BundleSummary | None:
        """The labels of the repository's bundle in service, without loading an unloaded model;
        a bundle promoted since it loaded is loaded first, as a lookup would."""
        with self._lock:
            bundle = self._bundles.get(repo)
            known = bundle.summary if bundle is not None else self._unloaded.get(repo)
        if known is not None and self.registry.current_version(repo) == known.version:
            return known
        bundle = self.get(repo, force_check=known is not None)
        return bundle.summary if bundle is not None else None

    def forget(self, repo: str) -> None:
        """Drop a name the repository no longer has (renamed on GitHub); its bundle is served
        under the new name, loaded from the registry on first use."""
        with self._lock:
            self._bundles.pop(repo, None)
            self._unloaded.pop(repo, None)
            self._checked.pop(repo, None)
            self._errors.pop(repo, None)

    def versions(self) -> dict[str, str]:
        """The bundle version in service per repository, its model loaded or not."""
        with self._lock:
            served = {repo: summary.version for repo, summary in self._unloaded.items()}
            served.update({repo: bundle.version for repo, bundle in self._bundles.items()})
            return dict(sorted(served.items()))

    def loaded(self) -> list[str]:
        """The repositories whose model is loaded, least recently used first."""
        with self._lock:
            return list(self._bundles)

    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._errors)
