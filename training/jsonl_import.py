"""Import issues from JSON Lines: the shared data exports and raw GitHub REST issue objects."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.records import IssueRecord, RecordError, parse_issue
from training.store import Store
from training.store.upserts import (
    Counts,
    LabelCatalogue,
    ensure_repository,
    record_given_split,
    set_template_labels,
    upsert_issue,
)

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class ImportReport:
    path: Path
    counts: Counts = field(default_factory=Counts)
    repositories: set[str] = field(default_factory=set)
    other_repositories: set[str] = field(default_factory=set)  # in the file, not asked for
    malformed_lines: list[int] = field(default_factory=list)


def read_jsonl(path: Path, report: ImportReport, default_repo: str | None = None) -> Iterator[IssueRecord]:
    """Parsed records; a malformed line is logged with its number, counted and skipped."""
    with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is one malformed line, not the file
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield parse_issue(json.loads(raw.decode("utf-8-sig")), default_repo)
            except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as exc:
                log.warning("%s:%d: skipped malformed line: %s", path, number, exc)
                report.malformed_lines.append(number)
            except RecursionError:
                log.warning("%s:%d: skipped malformed line: nested too deeply", path, number)
                report.malformed_lines.append(number)


def import_jsonl(
    store: Store,
    path: Path,
    *,
    repos: set[str] | None = None,
    template_labels: dict[str, list[str]] | None = None,
    default_repo: str | None = None,
) -> ImportReport:
    """Store every issue of the file (only those of ``repos`` when given), in batches."""
    if not path.is_file():
        raise FileNotFoundError(f"no such JSONL file: {path}")
    report = ImportReport(path=path)
    template_labels = template_labels or {}
    batch: list[IssueRecord] = []

    def flush() -> None:
        with store.session() as session:
            catalogues: dict[str, LabelCatalogue] = {}
            for record in batch:
                catalogue = catalogues.get(record.repo)
                if catalogue is None:
                    repository = ensure_repository(session, record.repo)
                    if record.repo in template_labels:
                        set_template_labels(session, repository, {"config": template_labels[record.repo]})
                    catalogue = catalogues[record.repo] = LabelCatalogue(session, repository)
                report.counts.add(upsert_issue(session, catalogue, record, source="import"))
                report.repositories.add(record.repo)
                if record.split is not None:
                    record_given_split(session, catalogue.repository, record.key, record.split)
        batch.clear()

    for record in read_jsonl(path, report, default_repo):
        if repos and record.repo not in repos:
            report.other_repositories.add(record.repo)
            continue
        batch.append(record)
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    report.counts.skipped = len(report.malformed_lines)
    return report
