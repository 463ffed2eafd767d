"""What a job ended with, as handlers report it, and what a failure means for its retries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from github import GithubException, RateLimitExceededException
from requests import RequestException
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Outcome:
    """``commit_with`` is store work done in the transaction that records the job's end (the
    issue kept for training, the stamp of labels written): one commit instead of several on
    every labeled issue, and the job is done exactly when its writes are."""

    text: str
    ignored: bool = False
    commit_with: Callable[[Session], object] | None = None


class PermanentJobError(Exception):
    """A delivery that can never succeed (malformed payload): kept as failed at once, not retried."""


def is_outage(exc: BaseException) -> bool:
    """A failure that waiting cures: GitHub down or overloaded (5xx), rate limits, the network,
    the store unreachable. Such a job is retried for hours, not a fixed number of tries."""
    if isinstance(exc, RateLimitExceededException | RequestException | OperationalError):
        return True
    return isinstance(exc, GithubException) and (exc.status >= 500 or exc.status == 429)
