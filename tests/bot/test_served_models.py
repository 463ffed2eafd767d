"""Loading a promoted bundle holds up no other repository, and no issue goes unlabeled meanwhile."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np

from bot.served_models import ServedModels
from tests.bot.conftest import REPO
from tests.bot.helpers import registry_copy
from training.bundle import MANIFEST, Bundle, write_manifest
from training.registry import PROMOTED, Registry

OTHER = "octo-org/other-repo"


class HeldRegistry(Registry):
    """The real registry, whose loads of ``held`` repositories wait until the test releases them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.held: set[str] = set()
        self.entered = threading.Event()
        self.release = threading.Event()

    def load(self, repo: str, version: str, **kw) -> Bundle:
        if repo in self.held:
            self.entered.set()
            assert self.release.wait(30), "the test never released the load"
        return super().load(repo, version, **kw)


def _in_thread(target) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


def _serving(
    bundle_registry: Path, root: Path, *other_repos: str
) -> tuple[HeldRegistry, ServedModels, Bundle]:
    """A copy of the test registry (``other_repos`` get REPO's bundle) with REPO's bundle loaded."""
    registry = registry_copy(bundle_registry, root, REPO, *other_repos, kind=HeldRegistry)
    models = ServedModels(registry, threads=1, check_seconds=0)
    models.load([REPO])
    serving = models.get(REPO)
    assert serving is not None
    return registry, models, serving


def _held_load(registry: HeldRegistry, models: ServedModels, repo: str) -> tuple[threading.Thread, list]:
    """A lookup of ``repo`` that is loading its bundle, held there until ``registry.release``."""
    registry.held.add(repo)
    loading = _in_thread(lambda: models.get(repo))
    assert registry.entered.wait(30)
    return loading


def _answered_at_once(lookup) -> list:
    """What ``lookup`` returns, asserting it does not wait for the held load."""
    thread, result = _in_thread(lookup)
    thread.join(10)
    assert not thread.is_alive()
    return result


def test_a_load_in_progress_blocks_no_other_repository(bundle_registry: Path, tmp_path: Path) -> None:
    registry, models, serving = _serving(bundle_registry, tmp_path / "registry", OTHER)

    first, first_result = _held_load(registry, models, OTHER)
    # another repository is looked up (and its current version checked) while OTHER loads
    assert _answered_at_once(lambda: models.get(REPO)) == [serving]
    # a second job for OTHER, which has no bundle yet, waits for the load instead of skipping
    second, second_result = _in_thread(lambda: models.get(OTHER))
    second.join(0.3)
    assert second.is_alive() and not second_result

    registry.release.set()
    first.join(30)
    second.join(30)
    assert first_result and first_result[0] is not None
    assert second_result == first_result
    assert models.versions() == {REPO: serving.version, OTHER: first_result[0].version}


def test_the_old_bundle_serves_while_the_promoted_one_loads(bundle_registry: Path, tmp_path: Path) -> None:
    registry, models, old = _serving(bundle_registry, tmp_path / "registry")
    repo_dir = registry.repo_dir(REPO)
    new_version = old.version + "-next"
    shutil.copytree(repo_dir / old.version, repo_dir / new_version)
    for marker in (PROMOTED, MANIFEST):
        (repo_dir / new_version / marker).unlink(missing_ok=True)
    write_manifest(repo_dir / new_version, {**old.info, "version": new_version})
    registry.promote(REPO, new_version)

    swap, swap_result = _held_load(registry, models, REPO)
    assert _answered_at_once(lambda: models.get(REPO)) == [old]

    registry.release.set()
    swap.join(30)
    assert swap_result and swap_result[0] is not None and swap_result[0].version == new_version
    assert models.get(REPO) is swap_result[0]


THIRD = "octo-org/third-repo"


def test_a_bound_keeps_the_models_of_recently_labeled_repositories_loaded(
    bundle_registry: Path, tmp_path: Path
) -> None:
    registry = registry_copy(bundle_registry, tmp_path / "registry", REPO, OTHER, THIRD)
    models = ServedModels(registry, threads=1, check_seconds=3600, max_loaded=2)
    models.load([REPO, OTHER, THIRD])
    # the bound reached, the third bundle is verified and in service but its model not started
    assert registry.loads == [REPO, OTHER]
    version = registry.current_version(REPO)
    assert models.versions() == {REPO: version, OTHER: version, THIRD: version}
    assert models.loaded() == [REPO, OTHER]
    models.load([OTHER])  # installed again: loaded already, it stays so
    assert registry.loads == [REPO, OTHER] and models.loaded() == [REPO, OTHER]

    held = models.get(REPO)  # REPO labeled again: OTHER is now the least recently used
    assert held is not None
    expected = held.probabilities(["Segfault in fit when X is sparse"])
    third = models.get(THIRD)  # an issue for THIRD loads its model and unloads OTHER's
    assert third is not None and third.version == version
    assert registry.loads == [REPO, OTHER, THIRD]
    assert models.loaded() == [REPO, THIRD]
    assert models.versions() == {REPO: version, OTHER: version, THIRD: version}
    assert models.get(THIRD) is third  # loaded models are not loaded again

    assert models.get(OTHER) is not None  # loads again on its next issue; REPO's goes
    assert registry.loads == [REPO, OTHER, THIRD, OTHER]
    assert models.loaded() == [THIRD, OTHER]
    # a prediction holding an unloaded bundle finishes on it, with the same scores
    assert np.array_equal(held.probabilities(["Segfault in fit when X is sparse"]), expected)


def test_labels_are_read_without_loading_an_unloaded_model(bundle_registry: Path, tmp_path: Path) -> None:
    registry = registry_copy(bundle_registry, tmp_path / "registry", REPO, OTHER)
    models = ServedModels(registry, threads=1, check_seconds=0, max_loaded=1)
    models.load([REPO, OTHER])
    summary = models.summary(OTHER)
    assert summary is not None and summary.labels == Bundle(registry.repo_dir(OTHER) / summary.version).labels
    assert registry.loads == [REPO] and models.loaded() == [REPO]

    # a bundle promoted since is loaded, as an issue's lookup would load it
    repo_dir = registry.repo_dir(OTHER)
    new_version = summary.version + "-next"
    shutil.copytree(repo_dir / summary.version, repo_dir / new_version)
    for marker in (PROMOTED, MANIFEST):
        (repo_dir / new_version / marker).unlink(missing_ok=True)
    manifest = Bundle.verify(repo_dir / summary.version)
    write_manifest(repo_dir / new_version, {**manifest, "version": new_version})
    registry.promote(OTHER, new_version)
    newer = models.summary(OTHER)
    assert newer is not None and newer.version == new_version
    assert registry.loads == [REPO, OTHER] and models.loaded() == [OTHER]


def test_a_corrupted_bundle_beyond_the_bound_is_refused_at_start(
    bundle_registry: Path, tmp_path: Path
) -> None:
    registry = registry_copy(bundle_registry, tmp_path / "registry", REPO, OTHER)
    version = registry.current_version(OTHER)
    assert version is not None
    with (registry.repo_dir(OTHER) / version / "labels.json").open("a") as handle:
        handle.write(" ")
    models = ServedModels(registry, threads=1, check_seconds=0, max_loaded=1)
    models.load([REPO, OTHER])
    assert registry.loads == [REPO]
    assert "labels.json is corrupted" in models.errors()[OTHER]
    assert models.versions() == {REPO: registry.current_version(REPO)}
    assert models.get(OTHER) is None and models.summary(OTHER) is None
