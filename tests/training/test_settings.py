"""Settings: the documented environment names, .env files, and errors that say the fix."""

from pathlib import Path

import pytest

from training.settings import Settings, SettingsError, load_settings


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("ISSUE_LABELER_"):
            monkeypatch.delenv(name)
    settings = load_settings(_env_file=None)
    assert settings.database_url == "sqlite:///var/issue-labeler.db"
    assert settings.github_api_url == "https://api.github.com"
    assert settings.registry_dir == Path("var/models")
    assert settings.min_label_examples == 10
    assert "needs *" in settings.exclude_labels


def test_documented_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----\n")
    env = {
        "ISSUE_LABELER_DATABASE_URL": "postgresql+psycopg://u:p@db/labeler",
        "ISSUE_LABELER_GITHUB_API_URL": "https://ghe.example.com/api/v3/",
        "ISSUE_LABELER_GITHUB_TOKEN": "ghp_x",
        "ISSUE_LABELER_GITHUB_APP_ID": "1234",
        "ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH": str(key),
        "ISSUE_LABELER_WEBHOOK_SECRET": "s3cret",
        "ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS": '["0ld, with a comma"]',
        "ISSUE_LABELER_REGISTRY_DIR": str(tmp_path / "models"),
        "ISSUE_LABELER_API_TOKEN": "api",
        "ISSUE_LABELER_EXCLUDE_LABELS": "Needs Triage, wontfix",
        "ISSUE_LABELER_LABEL_ALIASES": '{"enhancement": "New Feature"}',
        "ISSUE_LABELER_TEMPLATE_LABELS": '{"o/r": ["Bug"]}',
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.database_url.endswith("@db/labeler")
    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.github_token is not None and settings.github_token.get_secret_value() == "ghp_x"
    assert settings.github_app_id == 1234
    assert settings.private_key_pem() == key.read_text()
    assert settings.webhook_secret is not None
    assert settings.registry_dir == tmp_path / "models"
    assert settings.exclude_labels == ["Needs Triage", "wontfix"]
    assert settings.label_aliases == {"enhancement": "New Feature"}
    assert settings.template_labels == {"o/r": ["Bug"]}
    assert [s.get_secret_value() for s in settings.webhook_previous_secrets] == ["0ld, with a comma"]
    assert "s3cret" not in repr(settings) and "0ld" not in repr(settings)


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISSUE_LABELER_MIN_LABEL_EXAMPLES", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("ISSUE_LABELER_MIN_LABEL_EXAMPLES=3\nISSUE_LABELER_LOG_LEVEL=debug\n")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]  # pydantic-settings' init option
    assert settings.min_label_examples == 3
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"github_app_id": 7}, "ISSUE_LABELER_GITHUB_PRIVATE_KEY_PATH"),
        ({"github_private_key": "PEM"}, "set it to the App id"),
        ({"github_app_id": 7, "github_private_key_path": "/nonexistent/key.pem"}, "is not a readable file"),
        ({"database_url": "mysql://x/y"}, "ISSUE_LABELER_DATABASE_URL"),
        ({"database_url": "not a url"}, "sqlite:///var/issue-labeler.db"),
        ({"database_url": "sqlite:///x.db?synchronous=off"}, "use full or normal"),
        ({"github_api_url": "api.github.com"}, "must start with http"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "summing to 1"),
        ({"validation_split": "random"}, "ISSUE_LABELER_VALIDATION_SPLIT"),
        ({"min_label_examples": 0}, "ISSUE_LABELER_MIN_LABEL_EXAMPLES"),
        ({"job_retention_days": 1}, "GitHub redelivers for 3 days"),
        # the bot stopped at start with APScheduler's traceback, and bot check said nothing
        ({"refresh_schedule": "weekly"}, "ISSUE_LABELER_REFRESH_SCHEDULE: 'weekly' is not a crontab line"),
        ({"refresh_schedule": "61 * * * *"}, "higher than the maximum value (59)"),
        ({"refresh_schedule": "0 3 * * 8"}, "weekday 8 is not 0-7"),  # was read as Monday
        ({"refresh_schedule": "0 3 31 2 *"}, "no date matches it, so it would never run"),
    ],
)
def test_invalid_settings_say_the_fix(overrides: dict, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **overrides)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ISSUE_LABELER_TEMPLATE_LABELS", "{bad", "ISSUE_LABELER_TEMPLATE_LABELS: expected JSON"),
        (
            "ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS",
            "old-secret",
            "ISSUE_LABELER_WEBHOOK_PREVIOUS_SECRETS: expected JSON",
        ),
    ],
)
def test_a_list_or_mapping_setting_that_is_not_json_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)  # was pydantic-settings' traceback, naming neither the variable nor JSON
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert expected in str(caught.value) and str(caught.value).startswith("invalid settings:")


def test_a_dotenv_line_that_is_not_json_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('ISSUE_LABELER_TEMPLATE_LABELS={"a/b": [x]}\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=env_file)
    assert "ISSUE_LABELER_TEMPLATE_LABELS (in .env): expected JSON" in str(caught.value)


def test_a_crontab_schedule_is_kept_and_empty_turns_it_off() -> None:
    assert load_settings(_env_file=None, refresh_schedule=" 0 3 * * 7 ").refresh_schedule == "0 3 * * 7"
    assert load_settings(_env_file=None, refresh_schedule="").refresh_schedule == ""
