"""The distillation benchmark's student bundle is a servable INT8 bundle, whatever its teacher served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from benchmarks.distillation import _save_student
from training.bundle import Bundle, write_manifest
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.export import export_onnx
from training.metrics import Thresholds

LABELS = ["Bug", "Documentation"]


def _thresholds(value: float) -> Thresholds:
    return Thresholds(
        values=dict.fromkeys(LABELS, value),
        reliable=dict.fromkeys(LABELS, True),
        validation_f1=dict.fromkeys(LABELS, 0.5),
        validation_support=dict.fromkeys(LABELS, 3),
    )


def test_student_bundle_is_int8_and_loads_though_the_teacher_served_fp32(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(PACKAGED_MODEL))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        problem_type="multi_label_classification",
    )
    config.num_labels = len(LABELS)  # a base config field, outside BertConfig's typed arguments
    model = BertForSequenceClassification(config)
    teacher = tmp_path / "teacher" / "owner__name" / "20261202T000000Z"
    export_onnx(model, tokenizer, teacher / "model.onnx")
    tokenizer.save_pretrained(teacher)
    (teacher / "labels.json").write_text(json.dumps(LABELS))
    (teacher / "thresholds.json").write_text(json.dumps(_thresholds(0.5).to_json()))
    write_manifest(
        teacher, {"version": teacher.name, "repo": "owner/name", "max_length": 32, "precision": "fp32"}
    )

    texts = ["Crash when fitting a pipeline", "Typo in the docs"]
    training = TrainingConfig(max_length=32)
    folder = _save_student(
        teacher, tmp_path / "students", model, tokenizer, _thresholds(0.3), training, texts
    )

    bundle = Bundle(tmp_path / "students" / "owner__name" / "current")
    assert bundle.folder.resolve() == folder.resolve()
    assert bundle.info["precision"] == "int8"
    assert bundle.thresholds.values == dict.fromkeys(LABELS, 0.3)
    nodes = onnx.load(str(folder / "model.onnx")).graph.node
    ops = {node.op_type for node in nodes}
    assert ops & {"MatMulInteger", "QAttention", "DynamicQuantizeMatMul"}, ops
    assert any(node.name.endswith("_smooth") for node in nodes)  # smoothed as a refresh quantizes
    probabilities = bundle.probabilities(texts)
    assert probabilities.shape == (2, len(LABELS)) and np.all((probabilities > 0) & (probabilities < 1))
