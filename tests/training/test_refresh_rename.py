"""A repository renamed on GitHub while its refresh trains: the bundle lands under the new name.

The bot moves the registry folder when it learns of the rename; the refresh, still running, keeps
writing to paths under the old name, which reach the moved folder through a link left until it
ends. Without a bot running, the refresh finds the rename in the store and moves the folder itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.test_refresh import REPO, TINY, _refresh, slice_path, small_settings  # noqa: F401
from training import refresh
from training.registry import Registry
from training.settings import Settings
from training.store import Store
from training.store.upserts import follow_rename, get_repository

NEW_NAME = "scikit-learn/scikit-learn-renamed"
GITHUB_ID = 25111


def _rename_while_training(settings: Settings, monkeypatch: pytest.MonkeyPatch, *, bot_moves: bool) -> None:
    """Renames the repository as the bot would (store row by GitHub id, then the registry folder)
    once the refresh has adapted its encoder and starts fine-tuning."""
    finetune = refresh.finetune

    def renamed_then_finetune(*args: object, **kwargs: object) -> object:
        store = Store(settings.database_url)
        try:
            with store.session() as session:
                get_repository(session, REPO).github_id = GITHUB_ID  # type: ignore[union-attr]
                assert follow_rename(session, NEW_NAME, GITHUB_ID) == REPO
        finally:
            store.close()
        if bot_moves:
            assert Registry(settings.registry_dir).rename_repo(REPO, NEW_NAME)
        return finetune(*args, **kwargs)

    monkeypatch.setattr(refresh, "finetune", renamed_then_finetune)


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
