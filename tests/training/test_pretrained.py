"""Loading the packaged encoder under a head of our own: one line of ours, not transformers' report."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from transformers import AutoModel, AutoModelForMaskedLM

from training.classifier import load_classifier
from training.config import PACKAGED_MODEL, resolve_base_model
from training.pretrained import load_pretrained


def _ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "training.pretrained" and r.levelno == level]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_heads_that_start_fresh_are_one_line_not_a_load_report(caplog: pytest.LogCaptureFixture) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    # transformers' loggers do not propagate to the root logger that caplog listens on
    printed = _Records()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(printed)
    try:
        with caplog.at_level(logging.INFO):
            model = load_pretrained(AutoModelForMaskedLM, base)
            load_classifier(base, num_labels=3, problem_type="multi_label_classification")
    finally:
        transformers_logger.removeHandler(printed)

    assert model.cls.predictions.decoder.weight.shape[0] == model.config.vocab_size
    # transformers' table of missing and unused weights, and its "checkpoint seem corrupted" notice
    assert not [r.getMessage() for r in printed.records if r.levelno >= logging.WARNING]
    assert not _ours(caplog, logging.WARNING)
    fresh = _ours(caplog, logging.INFO)
    assert len(fresh) == 2
    assert fresh[0].startswith("BertForMaskedLM from") and fresh[0].endswith("started fresh: cls.predictions")
    assert fresh[1].startswith("BertForSequenceClassification from") and fresh[1].endswith(
        "started fresh: classifier"
    )


def test_an_encoder_weight_missing_from_the_checkpoint_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = AutoModel.from_pretrained(resolve_base_model(PACKAGED_MODEL), add_pooling_layer=False)
    weights = encoder.state_dict()
    del weights["encoder.layer.0.attention.self.query.weight"]
    encoder.save_pretrained(tmp_path, state_dict=weights)

    with caplog.at_level(logging.INFO):
        load_pretrained(AutoModelForMaskedLM, str(tmp_path))

    (warning,) = _ours(caplog, logging.WARNING)
    assert "1 encoder weights are not in the checkpoint" in warning
    assert "bert.encoder.layer.0.attention.self.query.weight" in warning
