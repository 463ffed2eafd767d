"""Base models other than BERT: an encoder without segment embeddings (DistilBERT) and a
tokenizer whose padding token is not BERT's [PAD] = 0 are exported and served as trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from training.bundle import Bundle, Thresholds, write_manifest, write_serving_files
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.distill import shallow_copy
from training.export import calibration_feeds, export_onnx, quantize_int8
from training.finetune import initial_classifier, predict_probabilities

LABELS = ["Bug", "New Feature"]


def _titles(shared_data: Path, n: int = 24) -> list[str]:
    with (shared_data / "sklearn_surya" / "issues.jsonl").open() as lines:
        return [json.loads(next(lines))["title"] for _ in range(n)]


def _bundle(folder: Path, model: torch.nn.Module, tokenizer: object, precision: str) -> Bundle:
    thresholds = Thresholds.from_json(
        {"thresholds": dict.fromkeys(LABELS, 0.5), "reliable": dict.fromkeys(LABELS, True)}
    )
    write_serving_files(folder, tokenizer, LABELS, thresholds)
    write_manifest(folder, {"version": "by-hand", "repo": "o/r", "max_length": 64, "precision": precision})
    return Bundle(folder)


def _distilbert(vocab_size: int, *, dim: int, layers: int, labels: int) -> DistilBertConfig:
    """A small random DistilBERT (two heads, FFN twice the width)."""
    config = DistilBertConfig(vocab_size=vocab_size, dim=dim, n_layers=layers, n_heads=2, hidden_dim=2 * dim)
    config.num_labels = labels  # a base config field, outside DistilBertConfig's typed arguments
    return config


def test_a_distilbert_classifier_without_token_type_ids_is_exported_quantized_and_served(
    shared_data: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(PACKAGED_MODEL))
    torch.manual_seed(0)
    config = _distilbert(tokenizer.vocab_size, dim=64, layers=2, labels=len(LABELS))
    config.problem_type = "multi_label_classification"
    model = DistilBertForSequenceClassification(config).eval()
    texts = _titles(shared_data)

    fp32 = tmp_path / "fp32"
    export_onnx(model, tokenizer, fp32 / "model.onnx")
    bundle = _bundle(fp32, model, tokenizer, "fp32")
    assert bundle.input_names == {"input_ids", "attention_mask"}  # DistilBERT has no segment embeddings
    expected = predict_probabilities(model, tokenizer, texts, max_length=64)
    assert np.abs(bundle.probabilities(texts) - expected).max() <= 1e-4

    # Smoothing measures the graph's activations with the calibration issues' encodings.
    int8 = tmp_path / "int8"
    int8.mkdir()
    feeds = calibration_feeds(tokenizer, texts[:8], 64)
    quantize_int8(fp32 / "model.onnx", int8 / "model.onnx", smoothing=0.8, calibration=feeds)
    served = _bundle(int8, model, tokenizer, "int8").probabilities(texts)
    assert served.shape == (len(texts), len(LABELS)) and np.abs(served - expected).max() < 0.1


def test_a_bundle_pads_with_the_padding_token_training_used(shared_data: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(PACKAGED_MODEL))
    tokenizer.pad_token = "[UNK]"  # as RoBERTa's <pad> is 1, not BERT's [PAD] 0
    model = DistilBertForSequenceClassification(
        _distilbert(tokenizer.vocab_size, dim=32, layers=1, labels=2)
    ).eval()
    export_onnx(model, tokenizer, tmp_path / "model.onnx")
    bundle = _bundle(tmp_path, model, tokenizer, "fp32")

    short, _ = bundle.encode(["a bug", "a longer title about a bug in trees"])["input_ids"]
    padded = tokenizer(["a bug", "a longer title about a bug in trees"], padding=True)["input_ids"][0]
    assert list(short) == padded and short[-1] == tokenizer.convert_tokens_to_ids("[UNK]") != 0


def test_a_distilbert_teacher_gives_a_shallower_student(shared_data: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(PACKAGED_MODEL))
    config = _distilbert(tokenizer.vocab_size, dim=32, layers=4, labels=2)
    teacher: Any = DistilBertForSequenceClassification(config).eval()  # its children are read
    student: Any
    student, kept = shallow_copy(teacher, 2)  # its layers are transformer.layer, not encoder.layer
    assert kept == [1, 3] and student.config.n_layers == 2 and len(student.distilbert.transformer.layer) == 2
    assert len(teacher.distilbert.transformer.layer) == 4
    assert torch.equal(
        student.distilbert.transformer.layer[0].ffn.lin2.weight,
        teacher.distilbert.transformer.layer[1].ffn.lin2.weight,
    )
    probabilities = predict_probabilities(student, tokenizer, _titles(shared_data, 4), max_length=32)
    assert probabilities.shape == (4, 2)


def test_fine_tuning_starts_from_the_base_models_pooler_not_a_random_one(
    shared_data: Path, tmp_path: Path
) -> None:
    """An adapted (MLM) checkpoint has no pooler; the classifier takes the base model's.
    (RoBERTa's and DistilBERT's classifiers have no pooler: their heads read the first token.)"""
    base = resolve_base_model(PACKAGED_MODEL)
    BertForMaskedLM.from_pretrained(base).save_pretrained(tmp_path / "adapted")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "adapted")

    model: Any
    model, _ = initial_classifier(
        str(tmp_path / "adapted"), base, LABELS, _titles(shared_data, 8), TrainingConfig(max_length=32)
    )
    assert torch.equal(model.bert.pooler.dense.weight, AutoModel.from_pretrained(base).pooler.dense.weight)
