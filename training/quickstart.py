"""``python -m training.quickstart``: the main job on embedded defaults, no GitHub needed.

Imports the real issue exports in ``../shared/data`` into the store (SQLite under ``var/`` by
default), shows what was stored and the dataset each repository would train on, and trains a
first bundle for scikit-learn with the fast profile (unless one is in service already), which
``python -m bot demo`` then serves.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.allocator import keep_freed_memory
from training.config import TrainingConfig
from training.dataset import DatasetConfig, DatasetError, build_dataset, format_manifest
from training.fetch import FetchError
from training.jsonl_import import import_jsonl
from training.logs import configure_logging
from training.refresh import RefreshError, recorded_refresh, summary_table
from training.refresh_runs import RefreshBusy
from training.registry import Registry
from training.settings import Settings, SettingsError, load_settings
from training.store import Store, StoreUnavailable
from training.store.summary import format_summaries, summarize
from training.store.upserts import Counts

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_FILES = ("sklearn_surya/issues.jsonl", "rails_small/issues.jsonl", "oss_type_labels/issues.jsonl")
# What the sample repositories' own configuration says; applied only where the operator set nothing.
SAMPLE_TEMPLATE_LABELS = {
    "scikit-learn/scikit-learn": ["Bug", "New Feature", "Documentation", "Needs Triage"]
}
DEMO_REPO = "scikit-learn/scikit-learn"
# The fast profile: minutes instead of the default's twenty, for a first look
# (benchmarks/MEASUREMENTS.md: quality).
FAST_PROFILE = TrainingConfig(
    max_length=128, mlm_max_length=128, mlm_head_warmup_steps=30, mlm_max_steps=40, epochs=6
)


def sample_settings(settings: Settings) -> Settings:
    """The sample data's issue-form labels, unless configured otherwise."""
    update: dict[str, object] = {}
    if "template_labels" not in settings.model_fields_set:
        update["template_labels"] = SAMPLE_TEMPLATE_LABELS
    return settings.model_copy(update=update)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.quickstart", description=__doc__)
    parser.add_argument("--no-train", action="store_true", help="import and show only; train nothing")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder of the shared issue exports (default: ../shared/data)",
    )
    args = parser.parse_args(argv)
    try:
        settings = sample_settings(load_settings())
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level)
    if not args.no_train and FAST_PROFILE.keep_freed_memory:
        keep_freed_memory()
    paths = [args.data_dir / name for name in SAMPLE_FILES]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        log.error(
            "sample data not found: %s (give --data-dir, see ../shared/data/README.md)", ", ".join(missing)
        )
        return 1
    try:
        store = Store(settings.database_url)
    except StoreUnavailable as exc:
        log.error("%s", exc)
        return 2
    try:
        total = Counts()
        for path in paths:
            report = import_jsonl(store, path, template_labels=settings.template_labels)
            total.merge(report.counts)
            log.info("%s: %s", path, report.counts.summary())
        log.info("imported issues: %s", total.summary())
        with store.session() as session:
            rows = summarize(session)
            print(format_summaries(rows))  # noqa: T201
            config = DatasetConfig.from_settings(settings)
            for row in rows:
                try:
                    dataset = build_dataset(session, [row.full_name], config)
                except DatasetError as exc:
                    print(f"\n{row.full_name}: {exc}")  # noqa: T201
                    continue
                print(f"\n{format_manifest(dataset.manifest())}")  # noqa: T201
        if not args.no_train:
            return _train_demo(settings, store, args.data_dir / SAMPLE_FILES[0])
    finally:
        store.close()
    return 0


def _train_demo(settings: Settings, store: Store, data: Path) -> int:
    """A first bundle for the demo repository with the fast profile, unless one is in service."""
    registry = Registry(settings.registry_dir)
    current = registry.current_version(DEMO_REPO)
    if current is not None:
        log.info("%s: bundle %s is in service; not training again", DEMO_REPO, current)
        return 0
    log.info("%s: training a first bundle with the fast profile (a few minutes)", DEMO_REPO)
    try:
        result = recorded_refresh(
            settings,
            store,
            DEMO_REPO,
            FAST_PROFILE,
            registry=registry,
            from_jsonl=[data],
            reason="quickstart",
        )
    except (RefreshError, DatasetError, FetchError, RefreshBusy) as exc:  # FetchError: a JSONL without it
        log.error("training the demo bundle failed: %s", exc)
        return 1
    print(summary_table(result))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
