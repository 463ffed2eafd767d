"""``python -m bot``: serve the webhook app with uvicorn; ``python -m bot check``: is it ready?"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from bot.app import create_app
from bot.check import report, run_checks
from bot.demo import demo_repository, demo_settings, example_delivery
from bot.services import BotServices
from training.github_client import GitHubAuthError
from training.logs import configure_logging
from training.settings import SettingsError, load_settings
from training.store import StoreUnavailable

log = logging.getLogger("bot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check", "demo"],
        help="serve (default); check settings, key, database, registry and installations; "
        "demo: serve the local bundles as a dry run with example requests",
    )
    parser.add_argument("--host", help="override ISSUE_LABELER_BOT_HOST")
    parser.add_argument("--port", type=int, help="override ISSUE_LABELER_BOT_PORT")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - logging is not set up yet
        return 2
    if args.command == "check":
        text, code = report(run_checks(settings))
        print(text)  # noqa: T201
        return code
    configure_logging(settings.log_level)
    if args.command == "demo":
        own_token = settings.api_token is not None
        settings = demo_settings(settings)
        repo = demo_repository(settings)
        if repo is None:
            log.error(
                "no bundle in %s: train one first (make run, or python -m training.quickstart)",
                settings.registry_dir,
            )
            return 1
        text = example_delivery(settings, repo, Path("var/demo"), show_token=not own_token)
        print(text, flush=True)  # noqa: T201
    try:
        services = BotServices.build(settings)
    except (StoreUnavailable, GitHubAuthError) as exc:
        log.error("%s", exc)
        return 2
    if settings.webhook_secret is None:
        log.error("ISSUE_LABELER_WEBHOOK_SECRET is not set: every delivery will be refused (503)")
    uvicorn.run(
        create_app(services),
        host=args.host or settings.bot_host,
        port=args.port or settings.bot_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
