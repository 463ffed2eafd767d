"""Shared fixtures: the real data, a fake GitHub over HTTP, SQLite and PostgreSQL stores."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.fakegithub import FakeGitHub
from tests.pg_server import PostgresServer
from training.settings import Settings, load_settings
from training.store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout: real issues, never copied into the repository."""
    if not (SHARED_DATA / "sklearn_surya" / "issues.jsonl").is_file():
        pytest.fail(
            f"the shared issue data is missing: expected {SHARED_DATA}/sklearn_surya/issues.jsonl "
            "(the folder ../shared/data beside the repository checkout, see its README)",
            pytrace=False,
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server: ISSUE_LABELER_TEST_POSTGRES_URL, or one started for this session."""
    if os.environ.get("ISSUE_LABELER_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests skipped on request (ISSUE_LABELER_SKIP_POSTGRES=1)")
    given = os.environ.get("ISSUE_LABELER_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = PostgresServer()
        url = server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        server.stop()


def _fresh_postgres_database(admin_url: str) -> tuple[str, str]:
    url = make_url(admin_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_database(admin_url: str, name: str) -> None:
    conninfo = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on a new SQLite file and on a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    url, name = _fresh_postgres_database(admin_url)
    try:
        yield url
    finally:
        _drop_postgres_database(admin_url, name)


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, fake_github: FakeGitHub, tmp_path: Path) -> Settings:
    """Settings for one test: no environment, no .env, the fake GitHub, quick backoff."""
    return make_settings(
        database_url=database_url, github_api_url=fake_github.base_url, registry_dir=tmp_path / "models"
    )


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "_env_file": None,
        "github_token": "test-token",
        "github_backoff_factor": 0.05,
        "github_secondary_rate_wait": 1.0,
        "github_max_rate_limit_wait": 30.0,
        "github_max_retries": 4,
        "github_per_page": 25,
    }
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store(settings.database_url)
    try:
        yield opened
    finally:
        opened.close()


def wait_for(condition, timeout: float = 15.0, what: str = "condition"):
    """Poll until ``condition()`` is truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
