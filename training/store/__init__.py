"""The store: repositories, issues, labels, label events, cursors and splits (SQLAlchemy)."""

from training.store.db import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
