"""Logging set-up for the command-line entry points."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # PyGithub logs every retry at INFO; keep them but one level quieter than ours.
    logging.getLogger("github").setLevel(max(logging.getLevelName(level), logging.WARNING))
