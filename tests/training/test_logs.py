"""The commands' log: migrations are worth a line, Alembic's context on every start is not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from training.logs import configure_logging
from training.store import Store


def test_opening_the_store_logs_the_migrations_run_and_not_alembics_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging()
    with caplog.at_level(logging.INFO):
        Store(f"sqlite:///{tmp_path / 'store.db'}").close()

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("alembic")]
    assert any(m.startswith("Running upgrade") for m in messages)
    assert not [m for m in messages if m.startswith(("Context impl", "Will assume"))]
