"""A repository that changes while its refresh trains.

Renamed on GitHub: the bundle lands under the new name. The bot moves the registry folder when it
learns of the rename; the refresh, still running, keeps writing to paths under the old name, which
reach the moved folder through a link left until it ends. Without a bot running, the refresh finds
the rename in the store and moves the folder itself.

Uninstalled with ``forget_uninstalled``: the bot deletes its data and models, and the refresh
fails cleanly without writing any back. And any refresh that fails while it trains leaves no
work folder (adapted encoder, checkpoints) behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import SHARED_DATA, make_settings
from tests.fakegithub.seed import seed_from_jsonl
from tests.fakegithub.server import FakeGitHub, Fault
from tests.training.test_refresh import REPO, TINY, _refresh, slice_path, small_settings  # noqa: F401
from training import refresh
from training.fetch import FetchError, UnknownRepository
from training.refresh import RefreshError, recorded_refresh
from training.refresh_runs import RefreshRuns
from training.registry import Registry
from training.settings import Settings
from training.store import Store
from training.store.models import Installation, RefreshRun, Repository
from training.store.upserts import ensure_repository, follow_rename, forget_repository, get_repository, now

NEW_NAME = "scikit-learn/scikit-learn-renamed"
GITHUB_ID = 25111


def _during_finetune(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Makes ``change`` happen once the refresh has adapted its encoder and starts fine-tuning."""
    finetune = refresh.finetune

    def changed_then_finetune(*args: Any, **kwargs: Any) -> object:
        change()
        return finetune(*args, **kwargs)

    monkeypatch.setattr(refresh, "finetune", changed_then_finetune)


def _in_store(settings: Settings, work: Callable[[Session], object]) -> None:
    store = Store(settings.database_url)
    try:
        with store.session() as session:
            work(session)
    finally:
        store.close()


def _rename_while_training(settings: Settings, monkeypatch: pytest.MonkeyPatch, *, bot_moves: bool) -> None:
    """Renames the repository as the bot would: the store row by GitHub id, then the registry folder."""

    def rename(session: Session) -> None:
        get_repository(session, REPO).github_id = GITHUB_ID
        assert follow_rename(session, NEW_NAME, GITHUB_ID) == REPO

    def change() -> None:
        _in_store(settings, rename)
        if bot_moves:
            assert Registry(settings.registry_dir).rename_repo(REPO, NEW_NAME)

    _during_finetune(monkeypatch, change)


@pytest.mark.parametrize("bot_moves", [True, False], ids=["bot-moved-the-folder", "no-bot-running"])
def test_a_repository_renamed_during_its_refresh_gets_the_bundle_under_its_new_name(
    small_settings: Settings,  # noqa: F811
    slice_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    bot_moves: bool,
) -> None:
    config = TINY.model_copy(update={"quantize": False})
    first = _refresh(small_settings, slice_path, config)
    registry = Registry(small_settings.registry_dir)
    _rename_while_training(small_settings, monkeypatch, bot_moves=bot_moves)

    second = _refresh(small_settings, slice_path, config, force=True)

    assert second.repo == NEW_NAME and second.promoted
    assert second.bundle_dir == registry.repo_dir(NEW_NAME) / second.version
    assert registry.current_version(NEW_NAME) == second.version
    assert registry.load_current(NEW_NAME) is not None  # the bundle is whole where it is served
    assert [v.version for v in registry.versions(NEW_NAME)] == [first.version, second.version]
    assert (registry.encoder_dir(NEW_NAME) / "config.json").is_file()
    old = registry.repo_dir(REPO)
    assert not old.exists() and not old.is_symlink()  # nothing left under the old name
    assert not list(registry.repo_dir(NEW_NAME).glob(".work-*"))


def test_a_rename_leaves_a_link_only_while_a_refresh_writes(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    (registry.repo_dir("o/a") / "v1").mkdir(parents=True)
    assert registry.rename_repo("o/a", "o/b")
    assert not registry.repo_dir("o/a").is_symlink() and not registry.repo_dir("o/a").exists()

    (registry.repo_dir("o/b") / ".work-x").mkdir()
    assert registry.rename_repo("o/b", "o/c")
    assert registry.repo_dir("o/b").is_symlink() and (registry.repo_dir("o/b") / "v1").is_dir()
    assert not registry.rename_repo("o/b", "o/d")  # a link is not a repository's folder to move
    # renamed back while the refresh still runs: the link gives way to the folder
    assert registry.rename_repo("o/c", "o/b")
    assert not registry.repo_dir("o/b").is_symlink() and (registry.repo_dir("o/b") / "v1").is_dir()
    registry.drop_forward("o/b")  # a real folder stays
    assert registry.repo_dir("o/b").is_dir()


@pytest.mark.parametrize("models_too", [True, False], ids=["bot-deleted-the-models", "store-rows-only"])
def test_a_repository_forgotten_during_its_refresh_gets_nothing_back(
    small_settings: Settings,  # noqa: F811
    slice_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    models_too: bool,
) -> None:
    config = TINY.model_copy(update={"quantize": False})
    _refresh(small_settings, slice_path, config)
    registry = Registry(small_settings.registry_dir)

    def forget() -> None:  # what the bot does when the App is uninstalled, with forget_uninstalled
        _in_store(small_settings, lambda session: forget_repository(session, REPO))
        if models_too:
            assert registry.forget_repo(REPO)

    _during_finetune(monkeypatch, forget)
    store = Store(small_settings.database_url)
    try:
        with pytest.raises(Exception) as failure:
            recorded_refresh(small_settings, store, REPO, config, registry=registry, from_jsonl=[slice_path])
    finally:
        store.close()
    if models_too:  # fine-tuning lost the encoder it was to start from: that failure is reported
        assert not isinstance(failure.value, AssertionError), failure.value
    else:
        assert isinstance(failure.value, RefreshError) and "left the store" in str(failure.value)
    assert not registry.repo_dir(REPO).exists()  # nothing of the repository written back


def test_a_refresh_failing_while_it_trains_leaves_no_work_behind(
    small_settings: Settings,  # noqa: F811
    slice_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = TINY.model_copy(update={"quantize": False})
    first = _refresh(small_settings, slice_path, config)
    registry = Registry(small_settings.registry_dir)

    def fail() -> None:
        raise MemoryError("the machine ran out of memory while fine-tuning")

    _during_finetune(monkeypatch, fail)
    with pytest.raises(MemoryError):
        _refresh(small_settings, slice_path, config)
    # the adapted encoder and checkpoints of the failed run are gone, the bundle in service stays
    assert not list(registry.repo_dir(REPO).glob(".work-*"))
    assert [v.version for v in registry.versions(REPO)] == [first.version]
    assert registry.current_version(REPO) == first.version


def test_the_next_refresh_removes_what_a_killed_one_left(
    small_settings: Settings,  # noqa: F811
    slice_path: Path,  # noqa: F811
) -> None:
    registry = Registry(small_settings.registry_dir)
    left = registry.repo_dir(REPO) / ".work-killed"  # a refresh killed for memory cleans nothing
    (left / "encoder").mkdir(parents=True)
    (left / "encoder" / "model.safetensors").write_bytes(b"\0" * 1024)
    store = Store(small_settings.database_url)
    try:
        config = TINY.model_copy(update={"adapt": False, "quantize": False})
        result = recorded_refresh(
            small_settings, store, REPO, config, registry=registry, from_jsonl=[slice_path]
        )
    finally:
        store.close()
    assert result.promoted
    assert not left.exists() and not list(registry.repo_dir(REPO).glob(".work-*"))


def test_a_refresh_that_fails_before_training_is_recorded_failed_and_frees_the_lock(
    small_settings: Settings,  # noqa: F811
    slice_path: Path,  # noqa: F811
) -> None:
    """Even before its first stage (here the registry refusing a name that is not OWNER/NAME,
    given through the Python API), a refresh that fails leaves no run "running" and no lock held."""
    registry = Registry(small_settings.registry_dir)
    store = Store(small_settings.database_url)
    try:
        for _ in range(2):  # the second try is not refused as busy: the first freed the lock
            with pytest.raises(ValueError, match="expected OWNER/NAME"):
                recorded_refresh(
                    small_settings, store, "not-a-name", TINY, registry=registry, from_jsonl=[slice_path]
                )
        history = RefreshRuns(store, lock_hours=1).history("not-a-name")
    finally:
        store.close()
    assert [run["status"] for run in history] == ["failed", "failed"]


def _fetching_settings(tmp_path: Path, fake_github: FakeGitHub) -> Settings:
    """The test's own store and registry, fetching from the fake GitHub; 80 issues hold few
    hand-applied labels with 10 examples, so the form labels are learned too, from 5."""
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        github_api_url=fake_github.base_url,
        registry_dir=tmp_path / "models",
        min_label_examples=5,
        exclude_template_labels=False,
    )


@pytest.mark.parametrize("github_down_first", [False, True], ids=["github-up", "github-down-at-first"])
def test_a_refresh_by_the_new_name_after_a_rename_continues_the_repositorys_history(
    tmp_path: Path,
    fake_github: FakeGitHub,
    slice_path: Path,  # noqa: F811
    github_down_first: bool,
) -> None:
    """Renamed on GitHub while no bot ran: ``training.refresh --repo NEW`` finds the stored history
    and the registry folder by the repository's GitHub id instead of starting a second repository;
    also when a first try under the new name could not reach GitHub and left an empty row."""
    served = seed_from_jsonl(fake_github, slice_path, REPO)
    settings = _fetching_settings(tmp_path, fake_github)
    config = TINY.model_copy(update={"quantize": False})
    registry = Registry(settings.registry_dir)
    store = Store(settings.database_url)
    try:
        first = recorded_refresh(settings, store, REPO, config, registry=registry)
        fake_github.rename_repo(served, NEW_NAME)
        if github_down_first:
            fake_github.faults.append(Fault(path=rf"/repos/{NEW_NAME}", status=502, times=100))
            with pytest.raises(FetchError):
                recorded_refresh(settings, store, NEW_NAME, config, registry=registry)
            assert [r["status"] for r in RefreshRuns(store, lock_hours=1).history(NEW_NAME)] == ["failed"]
            fake_github.faults.clear()
        second = recorded_refresh(settings, store, NEW_NAME, config, registry=registry, force=True)

        assert second.metrics["adaptation"]["started_from"] == "previous adapted encoder"
        assert second.metrics["counts"] == first.metrics["counts"]  # the same issues, not fetched twice
        assert any("since" in r.query for r in fake_github.requests_to(rf"/repos/{NEW_NAME}/issues"))
        assert [v.version for v in registry.versions(NEW_NAME)] == [first.version, second.version]
        assert not registry.repo_dir(REPO).exists()
        with store.session() as session:
            assert session.scalars(select(Repository.full_name)).all() == [NEW_NAME]
        history = RefreshRuns(store, lock_hours=1).history(NEW_NAME)
        assert [row["version"] for row in history] == [second.version, first.version]
    finally:
        store.close()


@pytest.mark.parametrize("source", ["github", "jsonl"])
def test_a_refresh_of_a_name_nobody_knows_leaves_no_repository_behind(
    tmp_path: Path,
    fake_github: FakeGitHub,
    slice_path: Path,  # noqa: F811
    source: str,
) -> None:
    """A typo in ``--repo`` recorded its failed run, and so created the repository: the bot then
    listed it ("no bundle") and retrained it on schedule, failing every time."""
    seed_from_jsonl(fake_github, slice_path, REPO)
    settings = _fetching_settings(tmp_path, fake_github)
    typo = "scikit-learn/scikit-lern"
    from_jsonl = [slice_path] if source == "jsonl" else None
    registry = Registry(settings.registry_dir)
    store = Store(settings.database_url)
    try:
        with pytest.raises(UnknownRepository, match=typo):
            recorded_refresh(settings, store, typo, TINY, registry=registry, from_jsonl=from_jsonl)
        with store.session() as session:
            assert get_repository(session, typo) is None
            assert session.scalar(select(func.count()).select_from(RefreshRun)) == 0
        assert RefreshRuns(store, lock_hours=1).history(typo) == []
        assert not registry.repo_dir(typo).exists()
        if source == "jsonl":  # a stored repository the file lacks keeps its history
            with store.session() as session:
                ensure_repository(session, REPO)
            rails = SHARED_DATA / "rails_small" / "issues.jsonl"
            with pytest.raises(UnknownRepository, match=f"holds no issue of {REPO}"):
                recorded_refresh(settings, store, REPO, TINY, registry=registry, from_jsonl=[rails])
            with store.session() as session:
                assert get_repository(session, REPO) is not None
            assert [r["status"] for r in RefreshRuns(store, lock_hours=1).history(REPO)] == ["failed"]
    finally:
        store.close()


def test_a_repository_that_an_installation_reached_meanwhile_is_kept(tmp_path: Path) -> None:
    """The failed refresh made the row, then the App was installed there before it failed:
    deleting the row would have lost the installation."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with store.session() as session:
            repository = ensure_repository(session, "octo-org/new-repo")
            session.add(
                Installation(repository_id=repository.id, installation_id=7, active=True, updated_at=now())
            )
        refresh._forget_if_nothing_arrived(store, "octo-org/new-repo")
        with store.session() as session:
            assert get_repository(session, "octo-org/new-repo") is not None
            assert session.get(Installation, repository.id) is not None
    finally:
        store.close()


def test_a_refresh_by_a_name_in_another_case_runs_under_githubs_spelling(
    tmp_path: Path,
    fake_github: FakeGitHub,
    slice_path: Path,  # noqa: F811
) -> None:
    """The history, the store and the registry stay under the name every webhook uses."""
    seed_from_jsonl(fake_github, slice_path, REPO)
    settings = _fetching_settings(tmp_path, fake_github)
    config = TINY.model_copy(update={"quantize": False})
    registry = Registry(settings.registry_dir)
    store = Store(settings.database_url)
    try:
        result = recorded_refresh(settings, store, REPO.upper(), config, registry=registry)
        assert registry.current_version(REPO) == result.version
        assert [p.name for p in registry.root.iterdir()] == [registry.repo_dir(REPO).name]
        with store.session() as session:
            assert session.scalars(select(Repository.full_name)).all() == [REPO]
        assert [r["version"] for r in RefreshRuns(store, lock_hours=1).history(REPO)] == [result.version]
    finally:
        store.close()
