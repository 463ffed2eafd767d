"""A fake GitHub REST server for the tests (real HTTP on 127.0.0.1)."""

from tests.fakegithub.server import FakeGitHub, FakeRepo, Fault, secondary_rate_limit

__all__ = ["FakeGitHub", "FakeRepo", "Fault", "secondary_rate_limit"]
