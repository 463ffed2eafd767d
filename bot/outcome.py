"""What a job ended with, as handlers report it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    text: str
    ignored: bool = False


class PermanentJobError(Exception):
    """A delivery that can never succeed (malformed payload): kept as failed at once, not retried."""
