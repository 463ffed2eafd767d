"""JSONL import of the real shared exports, and of raw GitHub REST issue objects."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import REPO_ROOT
from tests.fakegithub import FakeGitHub
from tests.fakegithub.seed import seed_from_jsonl
from training.jsonl_import import import_jsonl
from training.store import Store
from training.store.models import Issue, IssueLabel, Label, TemplateLabel
from training.store.upserts import Outcome


def test_sklearn_export_imports_2000_issues_then_nothing_changes(store: Store, shared_data: Path) -> None:
    path = shared_data / "sklearn_surya" / "issues.jsonl"
    first = import_jsonl(store, path)
    assert first.counts[Outcome.NEW] == 2000
    assert first.malformed_lines == []
    second = import_jsonl(store, path)
    assert (second.counts[Outcome.NEW], second.counts[Outcome.UPDATED], second.counts[Outcome.UNCHANGED]) == (
        0,
        0,
        2000,
    )
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Issue)) == 2000
        issue = session.scalar(select(Issue).where(Issue.number == 32178))
        assert issue is not None
        assert issue.title.startswith("Trees: impurity decrease")
        assert sorted(link.label.name for link in issue.labels) == ["Bug", "Needs Triage"]
        assert session.scalar(select(func.count(func.distinct(Label.name)))) == 80


def test_malformed_lines_are_reported_by_number_and_skipped(
    store: Store, shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = (shared_data / "rails_small" / "issues.jsonl").read_text().splitlines()[:20]
    lines[4] = lines[4][:60]  # cut mid-object
    lines[9] = json.dumps({"repo": "rails/rails", "number": "x", "title": "t", "labels": []})
    # fields of another type or longer than GitHub's: the store refused them and the import stopped
    lines[11] = json.dumps({**json.loads(lines[11]), "state": ["open"]})
    lines[13] = json.dumps({**json.loads(lines[13]), "labels": [{"name": "bug", "color": "f" * 13}]})
    # a line that is not UTF-8 and one nested past the parser's depth stopped the whole import
    encoded = [line.encode() for line in lines]
    encoded[15] = encoded[15].replace(b'"title": "', b'"title": "\xff', 1)
    encoded[17] = b"[" * 100_000 + b"]" * 100_000
    encoded[0] = b"\xef\xbb\xbf" + encoded[0]  # a byte-order mark before the first line is no problem
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(encoded) + b"\n")
    report = import_jsonl(store, path)
    assert report.malformed_lines == [5, 10, 12, 14, 16, 18]
    assert report.counts[Outcome.NEW] == 14
    assert f"{path}:18: skipped malformed line: nested too deeply" in caplog.text
    assert f"{path}:16: skipped malformed line: 'utf-8' codec can't decode" in caplog.text
    assert f"{path}:12: skipped malformed line: state: expected a string" in caplog.text
    assert f"{path}:5:" in caplog.text and f"{path}:10: skipped malformed line: number" in caplog.text


def test_text_a_store_cannot_hold_is_cleaned_and_the_issue_kept(
    store: Store, shared_data: Path, tmp_path: Path
) -> None:
    rows = [
        json.loads(line)
        for line in (shared_data / "rails_small" / "issues.jsonl").read_text().splitlines()[:2]
    ]
    rows[0]["title"] = "crash \ud800 in the middle"  # half a surrogate pair: UTF-8 cannot encode it
    rows[1]["body"] = "a NUL \u0000 inside"  # PostgreSQL's text cannot hold one
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # json.dumps escapes both
    report = import_jsonl(store, path)
    assert report.malformed_lines == [] and report.counts[Outcome.NEW] == 2  # stopped the import before
    with store.session() as session:
        stored = {issue.number: issue for issue in session.scalars(select(Issue))}
        assert stored[rows[0]["number"]].title == "crash \ufffd in the middle"
        assert stored[rows[1]["number"]].body == "a NUL  inside"


def test_template_labels_come_from_config_for_imports(store: Store, shared_data: Path) -> None:
    import_jsonl(
        store,
        shared_data / "sklearn_surya" / "issues.jsonl",
        template_labels={"scikit-learn/scikit-learn": ["Bug", "New Feature"]},
    )
    with store.session() as session:
        assert sorted(session.scalars(select(TemplateLabel.name))) == ["Bug", "New Feature"]


def test_raw_github_rest_objects_import(store: Store, shared_data: Path, tmp_path: Path) -> None:
    """Issues as the REST API returns them: label objects, pull_request key, repository_url."""
    with FakeGitHub() as fake:
        repo = seed_from_jsonl(fake, shared_data / "rails_small" / "issues.jsonl", "rails/rails", limit=40)
        raw = list(repo.issues.values())
    path = tmp_path / "rest.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in raw))
    report = import_jsonl(store, path)
    assert report.counts[Outcome.NEW] == 40
    with store.session() as session:
        prs = session.scalar(select(func.count()).select_from(Issue).where(Issue.is_pull_request))
        assert prs == sum("pull_request" in item for item in raw) > 0
        node_ids = set(session.scalars(select(Label.node_id)))
        assert node_ids == {label["node_id"] for item in raw for label in item["labels"]}
        links = session.scalar(select(func.count()).select_from(IssueLabel))
        assert links == sum(len(item["labels"]) for item in raw)


def test_cli_import_ends_with_counts_line(tmp_path: Path, shared_data: Path) -> None:
    env = {"ISSUE_LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PATH": "/usr/bin:/bin"}
    command = [
        sys.executable,
        "-m",
        "training.fetch",
        "--from-jsonl",
        str(shared_data / "sklearn_surya" / "issues.jsonl"),
    ]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert first.stderr.strip().splitlines()[-1].endswith("imported issues: 2000 new, 0 updated, 0 unchanged")
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert (
        second.stderr.strip().splitlines()[-1].endswith("imported issues: 0 new, 0 updated, 2000 unchanged")
    )


def test_cli_reports_a_missing_file_and_bad_settings(tmp_path: Path) -> None:
    env = {"ISSUE_LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PATH": "/usr/bin:/bin"}
    missing = subprocess.run(
        [sys.executable, "-m", "training.fetch", "--from-jsonl", str(tmp_path / "nope.jsonl")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "no such JSONL file" in missing.stderr
    env["ISSUE_LABELER_GITHUB_APP_ID"] = "12"
    bad = subprocess.run(
        [sys.executable, "-m", "training.fetch", "--repo", "o/r"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH" in bad.stderr
    assert REPO_ROOT.is_dir()
