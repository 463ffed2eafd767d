"""Dataset building on the real shared exports: labels learned, duplicates, splits."""

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from training.dataset import DatasetConfig, DatasetError, build_dataset
from training.jsonl_import import import_jsonl
from training.store import Store
from training.store.models import Label
from training.store.upserts import now

SKLEARN = "scikit-learn/scikit-learn"
SKLEARN_FORMS = ["Bug", "New Feature", "Documentation", "Needs Triage"]
WORKFLOW = (
    "needs *",
    "help wanted",
    "good first*",
    "spam",
    "wontfix",
    "easy",
    "moderate",
    "hard",
    "sprint",
    "blocker",
    "high priority",
    "low priority",
    "meta-issue",
    "rfc",
)


@pytest.fixture
def sklearn_store(store: Store, shared_data: Path) -> Store:
    import_jsonl(
        store, shared_data / "sklearn_surya" / "issues.jsonl", template_labels={SKLEARN: SKLEARN_FORMS}
    )
    return store


def test_sklearn_dataset_learns_what_maintainers_add_by_hand(sklearn_store: Store, shared_data: Path) -> None:
    config = DatasetConfig(exclude_labels=WORKFLOW, validation_split="time")
    with sklearn_store.session() as session:
        data = build_dataset(session, [SKLEARN], config)
    for form_label in SKLEARN_FORMS:
        assert form_label not in data.label_names
        assert data.not_learned[form_label] == "applied by an issue form"
    assert data.not_learned["help wanted"] == "excluded (workflow label)"
    assert data.not_learned["module:svm"] == "5 examples, fewer than 10"
    assert len(data.label_names) == 19  # the hand-added labels with >= 10 examples
    assert all(data.label_counts[name] >= 10 for name in data.label_names)

    rows = [json.loads(line) for line in (shared_data / "sklearn_surya" / "issues.jsonl").open()]
    texts = {f"{row['title']}\n\n{row['body']}" for row in rows}
    assert data.duplicates_dropped == len(rows) - len(texts)
    everything = [e for split in data.splits.values() for e in split] + data.unlabeled
    assert len(everything) == len(texts) and {e.text for e in everything} == texts
    assert all(e.labels for split in data.splits.values() for e in split)
    assert all(not e.labels for e in data.unlabeled)

    assert data.split_method == "time"
    n = sum(len(split) for split in data.splits.values())
    assert abs(len(data.splits["test"]) - 0.2 * n) <= 1 and abs(len(data.splits["validation"]) - 0.1 * n) <= 1
    newest_train = max(e.created_at for e in data.splits["train"])
    assert newest_train <= min(e.created_at for e in data.splits["validation"])
    assert max(e.created_at for e in data.splits["validation"]) <= min(
        e.created_at for e in data.splits["test"]
    )
    targets = data.targets("test")
    assert targets.shape == (len(data.splits["test"]), 19) and targets.sum(axis=1).min() >= 1


def test_stratified_validation_keeps_the_newest_issues_as_test(sklearn_store: Store) -> None:
    with sklearn_store.session() as session:
        by_time = build_dataset(
            session, [SKLEARN], DatasetConfig(exclude_labels=WORKFLOW, validation_split="time")
        )
        carved = build_dataset(
            session, [SKLEARN], DatasetConfig(exclude_labels=WORKFLOW, validation_split="stratified")
        )
    assert carved.split_method == "time+stratified-validation"
    keys = {name: {e.key for e in carved.splits[name]} for name in carved.splits}
    assert keys["test"] == {e.key for e in by_time.splits["test"]}
    assert len(keys["validation"]) == len(by_time.splits["validation"])
    assert keys["validation"] != {e.key for e in by_time.splits["validation"]}
    # the time split leaves labels that drifted out of recent issues without a validation positive
    assert (by_time.targets("validation").sum(axis=0) == 0).any()
    assert (carved.targets("validation").sum(axis=0) >= 1).all()
    assert max(e.created_at for e in carved.splits["validation"]) <= min(
        e.created_at for e in carved.splits["test"]
    )


def test_covered_validation_adds_the_newest_issue_of_each_label_it_lacks(sklearn_store: Store) -> None:
    with sklearn_store.session() as session:
        by_time = build_dataset(
            session, [SKLEARN], DatasetConfig(exclude_labels=WORKFLOW, validation_split="time")
        )
        covered = build_dataset(session, [SKLEARN], DatasetConfig(exclude_labels=WORKFLOW))  # the default
    assert covered.split_method == "time+covered-validation"
    keys = {name: {e.key for e in covered.splits[name]} for name in covered.splits}
    before = {name: {e.key for e in by_time.splits[name]} for name in by_time.splits}
    assert keys["test"] == before["test"]
    moved = keys["validation"] - before["validation"]
    assert before["validation"] < keys["validation"] and keys["train"] == before["train"] - moved
    lacking = {
        name
        for name, n in zip(by_time.label_names, by_time.targets("validation").sum(axis=0), strict=True)
        if n == 0
    }
    assert lacking and (covered.targets("validation").sum(axis=0) >= 1).all()
    # the newest training issue of each lacking label, and nothing else
    newest = {
        max(
            (e for e in by_time.splits["train"] if name in e.labels), key=lambda e: (e.created_at, e.issue_id)
        ).key
        for name in lacking
    }
    assert moved == newest


def test_recorded_split_is_kept_when_new_issues_arrive(
    store: Store, shared_data: Path, tmp_path: Path
) -> None:
    rows = (shared_data / "sklearn_surya" / "issues.jsonl").read_text().splitlines()
    ordered = sorted(rows, key=lambda line: json.loads(line)["created_at"])
    older, newer = tmp_path / "older.jsonl", tmp_path / "newer.jsonl"
    older.write_text("\n".join(ordered[:1500]) + "\n")
    newer.write_text("\n".join(ordered[1500:]) + "\n")
    config = DatasetConfig(exclude_labels=WORKFLOW)

    import_jsonl(store, older, template_labels={SKLEARN: SKLEARN_FORMS})
    with store.session() as session:
        first = build_dataset(session, [SKLEARN], config, persist_splits=True)
    before = {e.key: name for name, split in first.splits.items() for e in split}

    import_jsonl(store, newer)
    with store.session() as session:
        second = build_dataset(session, [SKLEARN], config, persist_splits=True)
        third = build_dataset(session, [SKLEARN], config)
    after = {e.key: name for name, split in second.splits.items() for e in split}
    kept = {key: after[key] for key in before if key in after}
    assert kept == {key: before[key] for key in kept}
    assert len(kept) >= 0.95 * len(before)  # only issues whose learned labels changed can drop out
    assert len(after) > len(before)
    assert third.split_hash() == second.split_hash()


def test_without_dates_the_split_is_iteratively_stratified_and_seeded(
    store: Store, shared_data: Path
) -> None:
    import_jsonl(store, shared_data / "oss_type_labels" / "issues.jsonl", repos={"vuejs/vue"})
    with store.session() as session:
        a = build_dataset(session, ["vuejs/vue"], DatasetConfig())
        b = build_dataset(session, ["vuejs/vue"], DatasetConfig())
        c = build_dataset(session, ["vuejs/vue"], DatasetConfig(seed=7))
    assert a.split_method == "iterative-stratification"
    assert a.label_names == ["bug", "feature request"]
    assert a.split_hash() == b.split_hash() != c.split_hash()
    for column, name in enumerate(a.label_names):
        total = sum(a.targets(split)[:, column].sum() for split in ("train", "validation", "test"))
        assert abs(a.targets("test")[:, column].sum() / total - 0.2) < 0.03, name


def test_aliases_deleted_labels_and_pull_requests(store: Store, shared_data: Path) -> None:
    import_jsonl(store, shared_data / "rails_small" / "issues.jsonl")
    with store.session() as session:
        base = build_dataset(session, ["rails/rails"], DatasetConfig())
        assert "activerecord" in base.label_names
        assert any(e.is_pull_request for split in base.splits.values() for e in split)
        merged = build_dataset(
            session, ["rails/rails"], DatasetConfig(label_aliases={"activemodel": "activerecord"})
        )
        assert "activemodel" not in merged.label_names
        assert merged.label_counts["activerecord"] > base.label_counts["activerecord"]
        session.scalar(select(Label).where(Label.name == "docs")).deleted_at = now()
        session.flush()
        pruned = build_dataset(session, ["rails/rails"], DatasetConfig())
        assert (
            "docs" not in pruned.label_names and pruned.not_learned["docs"] == "deleted from the repository"
        )


def test_unknown_repository_and_nothing_to_learn(store: Store, shared_data: Path) -> None:
    import_jsonl(store, shared_data / "rails_small" / "issues.jsonl")
    with store.session() as session:
        with pytest.raises(DatasetError, match="unknown repository octo/nothing: fetch or import it first"):
            build_dataset(session, ["octo/nothing"], DatasetConfig())
        with pytest.raises(DatasetError, match="lower ISSUE_LABELER_MIN_LABEL_EXAMPLES"):
            build_dataset(session, ["rails/rails"], DatasetConfig(min_label_examples=1000))


def test_a_split_given_in_the_data_is_used_and_validation_carved_from_train(
    store: Store, shared_data: Path, tmp_path: Path
) -> None:
    """Published benchmarks carry their split: reproduce it exactly, carve validation from train."""
    rows = [json.loads(line) for line in (shared_data / "rails_small" / "issues.jsonl").open()]
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 4 == 0 else "train"
    path = tmp_path / "given.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_jsonl(store, path)
    with store.session() as session:
        data = build_dataset(session, ["rails/rails"], DatasetConfig(), persist_splits=True)
        again = build_dataset(session, ["rails/rails"], DatasetConfig())
    given = {f"#{row['number']}": row["split"] for row in rows}
    assert {e.key for e in data.splits["test"]} == {
        e.key for e in data.splits["test"] if given[e.key] == "test"
    }
    assert all(given[e.key] == "test" for e in data.splits["test"])
    assert all(given[e.key] == "train" for e in data.splits["train"] + data.splits["validation"])
    n_given_train = len(data.splits["train"]) + len(data.splits["validation"])
    assert abs(len(data.splits["validation"]) - n_given_train / 8) <= 1  # 0.1 / (0.7 + 0.1)
    assert data.split_method == "carved+given" and again.split_hash() == data.split_hash()
