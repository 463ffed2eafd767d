"""What a job ended with, as handlers report it, and what a failure means for its retries."""

from __future__ import annotations

from dataclasses import dataclass

from github import GithubException, RateLimitExceededException
from requests import RequestException
from sqlalchemy.exc import OperationalError


@dataclass(frozen=True)
class Outcome:
    text: str
    ignored: bool = False


class PermanentJobError(Exception):
    """A delivery that can never succeed (malformed payload): kept as failed at once, not retried."""


def is_outage(exc: BaseException) -> bool:
    """A failure that waiting cures: GitHub down or overloaded (5xx), rate limits, the network,
    the store unreachable. Such a job is retried for hours, not a fixed number of tries."""
    if isinstance(exc, RateLimitExceededException | RequestException | OperationalError):
        return True
    return isinstance(exc, GithubException) and (exc.status >= 500 or exc.status == 429)
