"""The refresh lock and history in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import wait_for
from training.refresh import main as refresh_main
from training.refresh_runs import FAILED, PROMOTED, LockLease, LockLost, RefreshBusy, RefreshRuns, SlotTaken
from training.store import Store
from training.store.models import RefreshLock

REPO = "octo-org/hello-world"


def test_one_refresh_per_repository_and_an_expired_lock_is_taken_over(store: Store) -> None:
    first = RefreshRuns(store, lock_hours=1, holder="replica-a:1")
    second = RefreshRuns(store, lock_hours=1, holder="replica-b:2")
    running = first.start(REPO, trigger="schedule", reason="weekly", slot="schedule:2026-11-22T03:00Z")
    with pytest.raises(RefreshBusy, match="replica-a:1"):
        second.start(REPO, trigger="api", reason="by hand")
    assert second.start("octo-org/other", trigger="api", reason="another repository") is not None
    first.finish(running, status=PROMOTED, outcome="better", version="v1", metrics={"micro_f1": 0.5})
    with pytest.raises(SlotTaken):
        second.start(REPO, trigger="schedule", reason="weekly", slot="schedule:2026-11-22T03:00Z")

    # a holder that died: its lock expires and the next refresh takes it over
    stale = first.start(REPO, trigger="api", reason="crashes", at=datetime.now(UTC) - timedelta(hours=2))
    taken = second.start(REPO, trigger="api", reason="after the crash")
    second.finish(taken, status=FAILED, outcome="RefreshError: the train split is empty")
    assert stale.run_id != taken.run_id
    history = second.history(REPO)
    assert [(h["trigger"], h["status"]) for h in history] == [
        ("api", "failed"),
        ("api", "running"),  # the crashed one stays visible as it was left
        ("schedule", "promoted"),
    ]
    assert history[0]["outcome"] == "RefreshError: the train split is empty"
    assert history[2]["test_micro_f1"] == 0.5 and history[2]["version"] == "v1"


def _expires_at(store: Store, repository_id: int) -> datetime:
    with store.session() as session:
        lock = session.get(RefreshLock, repository_id)
        assert lock is not None
        return lock.expires_at


def test_a_running_refresh_keeps_its_lock_past_the_expiry(store: Store) -> None:
    """A refresh of a large repository may train longer than a lock lives: it renews it."""
    first = RefreshRuns(store, lock_hours=1, holder="replica-a:1")
    second = RefreshRuns(store, lock_hours=1, holder="replica-b:2")
    # started long ago: unrenewed, its lock would have expired (see the takeover above)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    long_running = first.start(REPO, trigger="schedule", reason="weekly", at=long_ago)
    with LockLease(first, long_running, REPO, every=0.01) as lease:
        wait_for(lambda: _expires_at(store, long_running.repository_id) > datetime.now(UTC), what="a renewal")
        with pytest.raises(RefreshBusy, match="replica-a:1"):
            second.start(REPO, trigger="api", reason="by hand")
        lease.check()  # still held
    first.finish(long_running, status=PROMOTED, outcome="better")
    assert second.start(REPO, trigger="api", reason="by hand") is not None  # released at the end


def test_a_refresh_whose_expired_lock_was_taken_knows_it_lost_it(store: Store) -> None:
    first = RefreshRuns(store, lock_hours=1, holder="replica-a:1")
    second = RefreshRuns(store, lock_hours=1, holder="replica-b:2")
    frozen = first.start(REPO, trigger="api", reason="stalls", at=datetime.now(UTC) - timedelta(hours=2))
    taken = second.start(REPO, trigger="api", reason="after the expiry")
    held_until = _expires_at(store, taken.repository_id)
    with LockLease(first, frozen, REPO, every=0.01) as lease:
        wait_for(lambda: lease.lost, what="the lease to find its lock taken")
    with pytest.raises(LockLost, match="another refresh took it"):
        lease.check()
    assert _expires_at(store, taken.repository_id) == held_until  # the new holder's lock untouched
    first.finish(frozen, status=FAILED, outcome="LockLost")
    with pytest.raises(RefreshBusy, match="replica-b:2"):  # finishing the loser freed nothing
        first.start(REPO, trigger="api", reason="again")


def test_history_cli_prints_the_runs(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = RefreshRuns(store, lock_hours=1)
    started = runs.start(REPO, trigger="manual", reason="run by hand")
    runs.finish(started, status=PROMOTED, outcome="no bundle in service", version="20261123T100000Z")
    monkeypatch.setenv("ISSUE_LABELER_DATABASE_URL", database_url)
    assert refresh_main(["--history", REPO]) == 0
    out = capsys.readouterr().out
    assert "promoted" in out and "20261123T100000Z" in out and "run by hand" in out
    assert refresh_main(["--history", "no/such"]) == 0
    assert "no refresh recorded" in capsys.readouterr().out
