"""Retraining: the schedule survives restarts, early triggers read the data, feedback reaches the dataset."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from bot.retraining import (
    JOBS_TABLE,
    SCHEDULED_JOB,
    RefreshRequest,
    Retrainer,
    previous_fire_time,
    settings_env,
)
from bot.served_models import ServedModels
from tests.bot.conftest import REPO, BotUnderTest
from tests.bot.helpers import registry_copy, wait_for
from tests.conftest import make_settings
from training.cron import cron_trigger
from training.dataset import DatasetConfig, build_dataset
from training.refresh_runs import PROMOTED, RefreshRuns
from training.registry import Registry
from training.settings import Settings, load_settings
from training.store import Store


class Launches:
    """Records refresh requests instead of training (the real launcher is tested end to end)."""

    def __init__(self) -> None:
        self.requests: list[RefreshRequest] = []

    def __call__(self, request: RefreshRequest) -> int:
        self.requests.append(request)
        return 0


def test_child_processes_see_the_same_settings(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        api_token="secret-token",
        exclude_labels=["needs *", "wontfix"],
        label_aliases={"enhancement": "New Feature"},
        split_fractions=(0.6, 0.2, 0.2),
    )
    env = settings_env(settings)
    assert env["ISSUE_LABELER_API_TOKEN"] == "secret-token"
    import os

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        again = load_settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert again.model_dump() == settings.model_dump() | {
        "api_token": again.api_token,
        "github_token": again.github_token,
    }
    assert again.api_token is not None and again.api_token.get_secret_value() == "secret-token"


def test_previous_fire_time_is_the_occasion_a_late_run_belongs_to() -> None:
    weekly = cron_trigger("0 3 * * 0")  # crontab: Sundays 03:00
    assert cron_trigger("0 3 * * 1-5").get_next_fire_time(
        None, datetime(2026, 11, 21, tzinfo=UTC)
    ) == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # Saturday -> Monday
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert previous_fire_time(weekly, wednesday) == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert previous_fire_time(weekly, datetime(2026, 11, 22, 3, 0, tzinfo=UTC)) == datetime(
        2026, 11, 22, 3, 0, tzinfo=UTC
    )


def _retrainer(
    settings: Settings, store: Store, launches: Launches, clock: datetime | None = None
) -> Retrainer:
    models = ServedModels(Registry(settings.registry_dir), threads=1, check_seconds=0)
    return Retrainer(
        settings, store, models, lambda: [REPO], launches, clock=(lambda: clock) if clock else datetime.now
    )


def _miss_the_next_occasion(store: Store) -> None:
    """Leave what a bot down across an occasion leaves: a stored next run time in the past.

    Written to the job store while no scheduler runs on it: a live scheduler, even paused, may be
    half-way through a look at due jobs and run the changed job at once.
    """
    jobs = SQLAlchemyJobStore(engine=store.engine, tablename=JOBS_TABLE)
    jobs.start(BackgroundScheduler(timezone=UTC), "default")  # never started; lends the store a scheduler
    job = jobs.lookup_job(SCHEDULED_JOB)
    assert job is not None
    job.next_run_time = datetime.now(UTC) - timedelta(minutes=5)
    jobs.update_job(job)


def test_the_schedule_survives_a_restart_and_a_missed_occasion_runs_once(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=database_url, registry_dir=tmp_path / "models", refresh_schedule="0 3 * * 0"
    )
    store = Store(database_url)
    occasion = previous_fire_time(cron_trigger("0 3 * * 0"), datetime.now(UTC))
    assert occasion is not None
    launches = Launches()
    try:
        first = _retrainer(settings, store, launches, clock=occasion + timedelta(hours=2))
        first.start()
        assert first.scheduler is not None
        planned = first.scheduler.get_job(SCHEDULED_JOB).next_run_time
        assert planned > datetime.now(UTC)
        first.stop()

        second = _retrainer(settings, store, launches, clock=occasion + timedelta(hours=2))
        second.start()
        assert second.scheduler is not None
        jobs = second.scheduler.get_jobs()
        assert sorted(job.id for job in jobs) == sorted([SCHEDULED_JOB, "issue-labeler-early-refresh-check"])
        assert second.scheduler.get_job(SCHEDULED_JOB).next_run_time == planned  # not pushed back
        second.stop()
        _miss_the_next_occasion(store)
        assert launches.requests == []

        third = _retrainer(settings, store, launches, clock=occasion + timedelta(hours=2))
        third.start()
        wait_for(lambda: launches.requests, what="the missed occasion to run")
        time.sleep(0.5)
        third.stop()
        assert len(launches.requests) == 1
        (request,) = launches.requests
        assert request.trigger == "schedule" and request.slot == f"schedule:{occasion:%Y-%m-%dT%H:%MZ}"
    finally:
        store.close()


def test_one_repository_failing_does_not_stop_the_others_refreshes(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url=database_url, registry_dir=tmp_path / "models", refresh_schedule="0 3 * * 0"
    )
    store = Store(database_url)
    launched: list[str] = []

    def launch(request: RefreshRequest) -> int:
        if request.repo == "octo-org/first":  # e.g. the store unreachable for a moment
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        launched.append(request.repo)
        return 0

    models = ServedModels(Registry(settings.registry_dir), threads=1, check_seconds=0)
    repos = ["octo-org/first", "octo-org/second", "octo-org/third"]
    retrainer = Retrainer(settings, store, models, lambda: repos, launch)
    try:
        assert retrainer.scheduled() == [0, 0]
        assert launched == ["octo-org/second", "octo-org/third"]
    finally:
        store.close()


def test_early_triggers_read_the_data(bot: BotUnderTest, tmp_path: Path) -> None:
    store, settings = bot.services.store, bot.services.settings
    launches = Launches()
    retrainer = Retrainer(
        settings.model_copy(
            update={"min_label_examples": 1, "refresh_min_new_labeled": 2, "refresh_min_feedback": 2}
        ),
        store,
        bot.services.models,
        bot.services.handlers.installed_repositories,
        launches,
    )
    runs = RefreshRuns(store, lock_hours=1)
    started = runs.start(REPO, trigger="manual", reason="test", at=datetime.now(UTC) - timedelta(days=30))
    runs.finish(started, status=PROMOTED, outcome="ok", at=datetime.now(UTC) - timedelta(days=30))
    assert retrainer.early_reasons(REPO) == []

    # maintainers label issues by hand, one with a label the bundle does not know
    for labels in (["bug"], ["documentation", "wontfix-me"]):
        issue = bot.open_issue(labels=labels)
        bot.send_issue("opened", issue, delivery_id=f"early-{labels[0]}")
        wait_for(lambda: bot.job_status(f"early-{labels[0]}") == "done", what="the job")  # noqa: B023
    reasons = retrainer.early_reasons(REPO)
    assert "2 new labeled issues since the last refresh" in reasons
    assert "new labels to learn: wontfix-me" in reasons

    # the bot labels two issues and maintainers remove all four labels: precision 0
    for n in range(2):
        issue = bot.open_issue()
        bot.send_issue("opened", issue, delivery_id=f"early-bot-{n}")
        wait_for(lambda: bot.job_status(f"early-bot-{n}") == "done", what="the job")  # noqa: B023
        for name in ("bug", "documentation"):
            issue = bot.repo.issues[issue["number"]]
            issue["labels"] = [item for item in issue["labels"] if item["name"] != name]
            bot.send_issue(
                "unlabeled",
                issue,
                label=dict(bot.fake.label_json(bot.repo, name)),
                delivery_id=f"rm-{n}-{name}",
            )
            wait_for(lambda: bot.job_status(f"rm-{n}-{name}") == "done", what="the job")  # noqa: B023
    assert any(r.startswith("live precision 0.00 below 0.5") for r in retrainer.early_reasons(REPO))

    retrainer.check_early()
    (request,) = launches.requests
    assert request.trigger == "early" and "new labels to learn" in request.reason


def test_the_early_check_leaves_an_unloaded_model_unloaded(bot: BotUnderTest, tmp_path: Path) -> None:
    """With ``max_loaded_bundles`` reached, the hourly check reads a repository's bundle labels
    from its files: loading every repository's model each hour would undo the bound."""
    settings = bot.services.settings.model_copy(update={"min_label_examples": 1})
    registry = registry_copy(settings.registry_dir, tmp_path / "registry", REPO, "octo-org/other-repo")
    models = ServedModels(registry, threads=1, check_seconds=0, max_loaded=1)
    models.load(["octo-org/other-repo", REPO])
    assert models.loaded() == ["octo-org/other-repo"]
    issue = bot.open_issue(labels=["documentation", "wontfix-me"])
    bot.send_issue("opened", issue, delivery_id="unloaded-early")
    wait_for(lambda: bot.job_status("unloaded-early") == "done", what="the job")
    retrainer = Retrainer(settings, bot.services.store, models, lambda: [REPO], Launches())

    assert "new labels to learn: wontfix-me" in retrainer.early_reasons(REPO)
    assert registry.loads == ["octo-org/other-repo"] and models.loaded() == ["octo-org/other-repo"]


def test_maintainers_corrections_through_webhooks_change_the_next_dataset(bot: BotUnderTest) -> None:
    config = DatasetConfig(min_label_examples=1, split_fractions=(0.5, 0.25, 0.25))

    def labels_of(number: int) -> tuple[str, ...] | None:
        with bot.services.store.session() as session:
            dataset = build_dataset(session, [REPO], config)
        for split in dataset.splits.values():
            for example in split:
                if example.key == f"#{number}":
                    return example.labels
        return None

    anchor = bot.open_issue(labels=["enhancement"])  # some human-labeled data to build a dataset at all
    bot.send_issue("opened", anchor, delivery_id="anchor")
    issue = bot.open_issue()
    bot.send_issue("opened", issue, delivery_id="corr-open")
    wait_for(lambda: bot.job_status("corr-open") == "done", what="the labeling job")
    bot.send_issue(
        "labeled",
        bot.repo.issues[issue["number"]],
        sender_type="Bot",
        label=dict(bot.fake.label_json(bot.repo, "bug")),
        delivery_id="corr-echo",
    )
    wait_for(lambda: bot.job_status("corr-echo") == "done", what="the echo")
    assert labels_of(issue["number"]) is None  # the bot's labels are not ground truth yet

    number = issue["number"]
    time.sleep(1.1)  # GitHub's timestamps have one-second resolution
    current = bot.fake.edit_issue(bot.repo, number, datetime.now(UTC), labels=["documentation"])
    bot.send_issue(
        "unlabeled", current, label=dict(bot.fake.label_json(bot.repo, "bug")), delivery_id="corr-rm"
    )
    current = bot.fake.edit_issue(
        bot.repo, number, datetime.now(UTC), labels=["documentation", "enhancement"]
    )
    bot.send_issue(
        "labeled", current, label=dict(bot.fake.label_json(bot.repo, "enhancement")), delivery_id="corr-add"
    )
    wait_for(lambda: bot.job_status("corr-add") == "done", what="the corrections")
    assert labels_of(issue["number"]) == ("documentation", "enhancement")
