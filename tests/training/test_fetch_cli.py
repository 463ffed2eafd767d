"""``python -m training.fetch --repo`` as an operator runs it, against the fake GitHub over HTTP."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakegithub import FakeGitHub, Fault
from tests.fakegithub.seed import seed_from_jsonl

REPO = "rails/rails"


def _env(fake: FakeGitHub, db: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "ISSUE_LABELER_DATABASE_URL": f"sqlite:///{db}",
        "ISSUE_LABELER_GITHUB_API_URL": fake.base_url,
        "ISSUE_LABELER_GITHUB_TOKEN": "test-token",
        "ISSUE_LABELER_GITHUB_PER_PAGE": "20",
        "ISSUE_LABELER_GITHUB_BACKOFF_FACTOR": "0.05",
    }


def _stored_numbers(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT number FROM issues")}


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.fetch", *args], env=env, cwd=cwd, capture_output=True, text=True
    )


def test_fetch_cli_reports_counts_and_runs_incrementally(tmp_path: Path, shared_data: Path) -> None:
    with FakeGitHub() as fake:
        seed_from_jsonl(fake, shared_data / "rails_small" / "issues.jsonl", REPO, limit=120)
        env = _env(fake, tmp_path / "store.db")
        first = _run(env, tmp_path, "--repo", REPO)
        assert first.returncode == 0, first.stderr
        assert (
            first.stderr.strip().splitlines()[-1].endswith("fetched issues: 120 new, 0 updated, 0 unchanged")
        )
        second = _run(env, tmp_path, "--repo", REPO)
        assert "fetched issues: 0 new, 0 updated" in second.stderr.strip().splitlines()[-1]
        missing = _run(env, tmp_path, "--repo", "octo/missing", "--repo", REPO)
        assert missing.returncode == 1
        assert "octo/missing: GitHub answered 404" in missing.stderr
        assert "failed: octo/missing" in missing.stderr.strip().splitlines()[-1]


def test_fetch_cli_under_a_new_name_moves_the_stored_history_and_the_models(
    tmp_path: Path, shared_data: Path
) -> None:
    with FakeGitHub() as fake:
        served = seed_from_jsonl(fake, shared_data / "rails_small" / "issues.jsonl", REPO, limit=40)
        env = _env(fake, tmp_path / "store.db") | {"ISSUE_LABELER_REGISTRY_DIR": str(tmp_path / "models")}
        assert _run(env, tmp_path, "--repo", REPO).returncode == 0
        bundle = tmp_path / "models" / "rails__rails" / "20261201-000000"  # what a refresh left
        bundle.mkdir(parents=True)
        fake.rename_repo(served, "rails/rails-renamed")
        renamed = _run(env, tmp_path, "--repo", "rails/rails-renamed")
        assert renamed.returncode == 0, renamed.stderr
        assert "rails/rails is rails/rails-renamed on GitHub now: its models follow it" in renamed.stderr
        assert "fetched issues: 0 new, 0 updated" in renamed.stderr.strip().splitlines()[-1]
        assert (tmp_path / "models" / "rails__rails-renamed" / bundle.name).is_dir()
        assert not (tmp_path / "models" / "rails__rails").exists()
        assert _stored_numbers(tmp_path / "store.db") == set(served.issues)


def test_fetch_killed_mid_way_resumes_to_exactly_the_servers_issues(
    tmp_path: Path, shared_data: Path
) -> None:
    """kill -9 between pages: what was committed stays, the next run fetches the rest."""
    db = tmp_path / "store.db"
    with FakeGitHub() as fake:
        repo = seed_from_jsonl(fake, shared_data / "rails_small" / "issues.jsonl", REPO, limit=200)
        fake.faults.append(Fault(path=rf"/repos/{REPO}/issues", status=0, delay=0.4, times=1000))
        env = _env(fake, db)
        process = subprocess.Popen(
            [sys.executable, "-m", "training.fetch", "--repo", REPO],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        stored: set[int] = set()
        while time.monotonic() < deadline and len(stored) < 60:
            time.sleep(0.1)
            if db.exists():
                try:
                    stored = _stored_numbers(db)
                except sqlite3.OperationalError:
                    continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert 60 <= len(stored) < 200, "the fetch should have been killed part-way"
        fake.faults.clear()
        resumed = _run(env, tmp_path, "--repo", REPO)
        assert resumed.returncode == 0, resumed.stderr
        assert _stored_numbers(db) == set(repo.issues)


@pytest.mark.parametrize("args", [[], ["--repo", "not-a-repo"]])
def test_fetch_cli_rejects_bad_arguments(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.fetch", *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2 and "error:" in result.stderr
