"""Logging set-up for the command-line entry points."""

from __future__ import annotations

import logging


class _MigrationContext(logging.Filter):
    """Alembic names its dialect and DDL mode each time a command opens the store; the
    migrations it runs ("Running upgrade ...") are what is worth a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Context impl") or message.startswith("Will assume"))


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # PyGithub logs every retry at INFO; keep them but one level quieter than ours.
    logging.getLogger("github").setLevel(max(logging.getLevelName(level), logging.WARNING))
    migrations = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _MigrationContext) for f in migrations.filters):
        migrations.addFilter(_MigrationContext())
