"""``python -m bot demo``: the local bundle served as a dry run, with a signed example that works."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sqlalchemy import func, select

from bot.app import create_app
from bot.demo import demo_repository, demo_settings, example_delivery
from bot.services import BotServices
from tests.bot.conftest import REPO
from tests.bot.helpers import Deliverer, ServerThread, slice_as, wait_for
from tests.conftest import make_settings
from training.jsonl_import import import_jsonl
from training.records import LabelRecord
from training.store import Store
from training.store.models import Issue, WebhookJob
from training.store.upserts import LabelCatalogue, get_repository


def test_demo_serves_offline_and_its_printed_delivery_is_decided_as_a_dry_run(
    bundle_registry: Path, tmp_path: Path, shared_data: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(bundle_registry, registry, symlinks=True)
    data = slice_as(tmp_path, REPO, rows=20)
    settings = demo_settings(
        make_settings(
            database_url=f"sqlite:///{tmp_path / 'demo.db'}",
            registry_dir=registry,
            github_token=None,
            github_api_url="http://127.0.0.1:9",  # nothing listens: any GitHub call would fail
        )
    )
    assert (
        settings.dry_run and settings.webhook_secret and settings.api_token and not settings.refresh_schedule
    )
    store = Store(settings.database_url)
    try:
        import_jsonl(store, data)
        with store.session() as session:
            repository = get_repository(session, REPO)
            assert repository is not None
            for name in ("bug", "documentation"):
                LabelCatalogue(session, repository).resolve(LabelRecord(name))
            stored = session.scalar(select(func.count()).select_from(Issue))
    finally:
        store.close()

    assert demo_repository(settings) == REPO
    text = example_delivery(settings, REPO, tmp_path / "demo")
    signature = re.search(r"X-Hub-Signature-256: (sha256=[0-9a-f]+)", text)
    assert signature and "dry run" in text and "/predict" in text
    body = (tmp_path / "demo" / "issues-opened.json").read_bytes()

    services = BotServices.build(settings)
    server = ServerThread(create_app(services)).start()
    deliverer = Deliverer(server.url, secret=settings.webhook_secret.get_secret_value())
    try:
        response = deliverer.post(
            "issues",
            body,
            delivery_id="demo-1",
            sign_it=False,
            headers={"X-Hub-Signature-256": signature.group(1)},
        )
        assert response.status_code == 202, response.text
        wait_for(lambda: services.queue.status_of("demo-1") == "done", what="the demo delivery")
        with services.store.session() as session:
            outcome = session.scalar(select(WebhookJob.outcome).where(WebhookJob.delivery_id == "demo-1"))
            count = session.scalar(select(func.count()).select_from(Issue))
        assert outcome is not None and outcome.startswith("dry run: would apply [")
        assert "'bug'" in outcome and "'documentation'" in outcome
        assert count == stored + 1  # a new issue; the stored one it was copied from is untouched
    finally:
        deliverer.close()
        server.stop()
