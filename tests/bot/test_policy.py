"""The labeling policy is a pure function: each rule, one case."""

from __future__ import annotations

import re

import numpy as np

from bot.policy import choose_labels
from bot.repo_config import LabelFilter, RepoConfig, RepoConfigError, parse_repo_config
from tests.conftest import REPO_ROOT
from training.metrics import Thresholds

LABELS = ["bug", "feature", "docs", "question"]


def _decide(scores: list[float], config: RepoConfig | None = None, **kw):
    thresholds = Thresholds(
        values={"bug": 0.5, "feature": 0.5, "docs": 0.3, "question": 0.5},
        reliable={"bug": True, "feature": True, "docs": True, "question": False},
        validation_f1={},
        validation_support={},
        exclusive_groups=kw.pop("groups", []),
    )
    args = {
        "current_names": {name: name for name in LABELS},
        "issue_labels": set(),
        "template_labels": set(),
        "removed_by_humans": set(),
    } | kw
    return choose_labels(
        label_names=LABELS,
        probabilities=np.array(scores),
        thresholds=thresholds,
        config=config or RepoConfig(),
        **args,
    )


def test_thresholds_reliability_and_order() -> None:
    decision = _decide([0.6, 0.4, 0.9, 0.99])
    assert [name for name, _ in decision.labels] == ["docs", "bug"]  # question is unreliable


def test_exclusive_set_keeps_the_clearest_winner() -> None:
    decision = _decide([0.6, 0.9, 0.0, 0.0], groups=[["bug", "feature"]])
    assert [name for name, _ in decision.labels] == ["feature"]


def test_renamed_deleted_removed_and_config_rules() -> None:
    renamed = _decide([0.6, 0.0, 0.9, 0.0], current_names={"bug": "type: bug", "docs": None})
    assert [name for name, _ in renamed.labels] == ["type: bug"]
    assert _decide([0.6, 0.0, 0.9, 0.0], removed_by_humans={"Docs"}).labels == [("bug", 0.6)]
    config = RepoConfig(max_labels=1, thresholds={"bug": 0.7}, labels=LabelFilter(deny=["do*"]))
    assert _decide([0.65, 0.8, 0.9, 0.0], config).labels == [("feature", 0.8)]
    assert _decide([0.9, 0.0, 0.0, 0.0], RepoConfig(enabled=False)).labels == []


def test_threshold_overrides_name_labels_as_the_repository_does_in_any_case() -> None:
    strict = RepoConfig(thresholds={"BUG": 0.7})
    assert _decide([0.65, 0.0, 0.0, 0.0], strict).labels == []  # was ignored: "BUG" is not "bug"
    renamed = {"bug": "Type: Bug", "feature": "feature", "docs": "docs", "question": "question"}
    by_new_name = RepoConfig(thresholds={"type: bug": 0.95})
    assert _decide([0.9, 0.0, 0.0, 0.0], by_new_name, current_names=renamed).labels == []
    by_old_name = RepoConfig(thresholds={"bug": 0.2})
    assert _decide([0.3, 0.0, 0.0, 0.0], by_old_name, current_names=renamed).labels == [("Type: Bug", 0.3)]
    assert _decide([0.3, 0.0, 0.0, 0.0], current_names=renamed).labels == []  # the tuned 0.5 otherwise


def test_human_labels_stop_the_bot_but_form_labels_do_not() -> None:
    human = _decide([0.9, 0.0, 0.0, 0.0], issue_labels={"feature"})
    assert human.labels == [] and "already labeled" in human.reason
    form = _decide([0.9, 0.0, 0.0, 0.0], issue_labels={"Needs Triage"}, template_labels={"needs triage"})
    assert form.labels == [("bug", 0.9)]
    told = _decide([0.9, 0.0, 0.0, 0.0], RepoConfig(skip_if_labeled=False), issue_labels={"feature"})
    assert told.labels == [("bug", 0.9)]


def test_config_file_errors_name_the_field() -> None:
    for text, expected in [
        ("max_labels: -1", "max_labels"),
        ("labels: [bug]", "labels"),
        ("colour: red", "colour"),
        ("a: [unclosed", "not valid YAML"),
        ("- just\n- a list", "expected a mapping"),
        ("1: true", "1: Keys should be strings"),  # was a TypeError: the job retried, not the defaults
        ("labels: " + "[" * 5000 + "]" * 5000, "nested too deeply"),  # was a RecursionError
        ("thresholds: {bug: .nan}", "thresholds.bug: Input should be a finite number"),
        ("thresholds: {bug: 7}", "thresholds.bug: Input should be less than or equal to 1"),
        ("thresholds: {bug: -0.1}", "thresholds.bug: Input should be greater than or equal to 0"),
        ("thresholds: {Bug: 0.3, bug: 0.9}", "thresholds: Value error, a label named twice"),
    ]:
        try:
            parse_repo_config(text, ".github/issue-labeler.yml")
        except RepoConfigError as exc:
            assert expected in str(exc) and ".github/issue-labeler.yml" in str(exc)
        else:
            raise AssertionError(f"{text!r} was accepted")
    assert parse_repo_config(None, "x") == RepoConfig() == parse_repo_config("", "x")


def test_readme_config_example_is_valid() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"### Per-repository config.*?```yaml\n(.*?)```", readme, re.S)
    assert block is not None, "README lost its .github/issue-labeler.yml example"
    config = parse_repo_config(block.group(1), "README example")
    assert config.labels.deny == ["question"] and config.thresholds == {"bug": 0.7}
