"""``python -m bot check`` names each problem and its fix."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.check import report, run_checks
from tests.bot.conftest import APP_ID, INSTALLATION, REPO
from tests.bot.helpers import API_TOKEN, SECRET
from tests.conftest import make_settings
from tests.fakegithub import FakeGitHub


def test_a_ready_installation_passes_and_each_problem_names_its_fix(
    fake_github: FakeGitHub, app_keys: tuple[str, str], bundle_registry: Path, tmp_path: Path
) -> None:
    fake_github.app_id, fake_github.app_public_key = APP_ID, app_keys[1]
    fake_github.add_repo(REPO, installation_id=INSTALLATION)
    registry = tmp_path / "registry"
    shutil.copytree(bundle_registry, registry, symlinks=True)
    good = {
        "database_url": f"sqlite:///{tmp_path / 'bot.db'}",
        "github_api_url": fake_github.base_url,
        "github_token": None,
        "github_app_id": APP_ID,
        "github_private_key": app_keys[0],
        "webhook_secret": SECRET,
        "api_token": API_TOKEN,
        "registry_dir": registry,
        "github_max_retries": 0,
    }
    text, code = report(run_checks(make_settings(**good)))
    assert code == 0 and "ready to serve" in text and "FAIL" not in text, text
    assert f"{REPO}: bundle" in text and "installed for 1 account(s)" in text

    bundle_dir = next((registry / REPO.replace("/", "__")).glob("2*"))
    (bundle_dir / "labels.json").write_text('["tampered"]')
    broken = good | {
        "github_private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    }
    broken |= {"webhook_secret": None, "database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    text, code = report(run_checks(make_settings(**broken)))
    assert code == 1
    assert "private key does not load" in text and "download a new private key" in text
    assert "no webhook secret" in text and "ISSUE_LABELER_WEBHOOK_SECRET" in text
    assert "cannot open the store" in text
    assert "labels.json is corrupted" in text and "--rollback" in text
    assert SECRET not in text and app_keys[0] not in text
