"""The classifier head started from the label names: its arithmetic, and what it knows before
any training on real scikit-learn issues with the packaged encoder."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from transformers import AutoTokenizer

from training.classifier import load_classifier
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.finetune import classifier_inputs, finetune, predict_logits, start_head_from_label_names
from training.label_prior import head_from_label_names, label_text

LABELS = ["Metadata Routing", "Array API", "Build / CI"]


def test_label_text_is_the_words_of_the_name() -> None:
    assert label_text("module:linear_model") == "module linear model"
    assert label_text("Build / CI") == "build ci"
    assert label_text("Metadata Routing") == "metadata routing"


def test_each_row_standardises_its_logits_over_the_training_issues() -> None:
    generator = torch.Generator().manual_seed(0)
    issues = torch.randn(200, 16, generator=generator) * 3 + 1
    names = torch.randn(4, 16, generator=generator)
    names[3] = issues.mean(dim=0)  # a name no different from the average issue
    weight, bias = head_from_label_names(issues, names)
    logits = issues @ weight.T + bias
    assert torch.allclose(logits[:, :3].mean(dim=0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(logits[:, :3].std(dim=0), torch.ones(3), atol=1e-4)
    assert torch.isfinite(weight).all() and torch.isfinite(bias).all()
    # A text like the name scores above the average issue, the more so the nearer it is.
    own = (names[:3] @ weight[:3].T).diagonal() + bias[:3]
    assert (own > 0).all()


def test_label_topics_leave_out_what_every_label_name_shares() -> None:
    """Names are short texts: far from every issue in one shared direction. An issue further
    along it (a short one, say) is no likelier to carry any label, so the rows must not rank by it."""
    generator = torch.Generator().manual_seed(1)
    topics = torch.eye(8)[:4]  # one direction per label
    shared = torch.eye(8)[7]  # what names have and issues lack
    has = torch.rand(2000, 4, generator=generator) < 0.2
    issues = has.float() @ topics + torch.randn(2000, 8, generator=generator) * 0.5
    issues += torch.randn(2000, 1, generator=generator) * 2 * shared  # unrelated to any label
    names = topics + 6 * shared
    weight, bias = head_from_label_names(issues, names, shared_removed=True)
    logits = issues @ weight.T + bias
    for column in range(4):
        assert roc_auc_score(has[:, column].numpy(), logits[:, column].numpy()) > 0.85, column
    weight, bias = head_from_label_names(issues, names)  # the default keeps the shared part
    logits = issues @ weight.T + bias
    assert roc_auc_score(has[:, 0].numpy(), logits[:, 0].numpy()) < 0.6
    one_weight, _ = head_from_label_names(
        issues, names[:1], shared_removed=True
    )  # nothing to compare it with
    assert torch.isfinite(one_weight).all() and one_weight.norm() > 0


@pytest.fixture(scope="module")
def sklearn_issues(shared_data: Path) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in (shared_data / "sklearn_surya" / "issues.jsonl").open()][:400]
    texts = [f"{row['title']}\n\n{row['body'] or ''}" for row in rows]
    targets = np.array([[name in row["labels"] for name in LABELS] for row in rows], dtype=np.float32)
    return texts, targets


def test_the_head_ranks_real_issues_by_their_labels_before_training(
    sklearn_issues: tuple[list[str], np.ndarray],
) -> None:
    texts, targets = sklearn_issues
    torch.manual_seed(0)  # the random head compared against
    model = load_classifier(
        resolve_base_model(PACKAGED_MODEL), num_labels=len(LABELS), problem_type="multi_label_classification"
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(PACKAGED_MODEL))
    assert classifier_inputs(model, tokenizer, texts[:3], 64).shape == (3, model.config.hidden_size)
    random_logits = predict_logits(model, tokenizer, texts, 64)
    start_head_from_label_names(model, tokenizer, LABELS, texts, 64)
    logits = predict_logits(model, tokenizer, texts, 64)
    for column, name in enumerate(LABELS):
        known = roc_auc_score(targets[:, column], logits[:, column])
        guessed = roc_auc_score(targets[:, column], random_logits[:, column])
        assert known > 0.8 and known > guessed + 0.2, (name, known, guessed)


def test_finetune_starts_from_the_label_names_unless_told_otherwise(
    sklearn_issues: tuple[list[str], np.ndarray], tmp_path: Path
) -> None:
    texts, targets = sklearn_issues
    base = resolve_base_model(PACKAGED_MODEL)
    # One step at a negligible learning rate: the model that comes back is the one it started from.
    config = TrainingConfig(
        max_length=32, max_steps=1, batch_size=8, learning_rate=1e-9, head_learning_rate=1e-9
    )
    aucs = {}
    for head_init in ("label_names", "random"):
        run = config.model_copy(update={"head_init": head_init})
        validation = (texts[:16], targets[:16])
        tuned = finetune(base, base, LABELS, (texts, targets), validation, tmp_path / head_init, run)
        logits = predict_logits(tuned.model, tuned.tokenizer, texts, 32)
        aucs[head_init] = roc_auc_score(targets[:, 0], logits[:, 0])
    assert aucs["label_names"] > 0.8 and aucs["label_names"] > aucs["random"] + 0.2, aucs
