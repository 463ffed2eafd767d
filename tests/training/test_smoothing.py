"""Activation smoothing before INT8, on the packaged MiniLM's real weights and real issues."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoTokenizer

from training.classifier import load_classifier
from training.config import PACKAGED_MODEL, resolve_base_model
from training.dataset import issue_text
from training.export import calibration_feeds, export_onnx, quantize_int8
from training.smoothing import smooth_activations


def _logits(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], feed)[0] for feed in feeds])


@pytest.fixture(scope="module")
def exported(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    """The packaged encoder with a seeded 19-label head, exported as a refresh exports it, and
    real issues encoded one at a time: 32 to calibrate, 32 others to compare on."""
    base = resolve_base_model(PACKAGED_MODEL)
    torch.manual_seed(0)
    model = load_classifier(base, num_labels=19, problem_type="multi_label_classification").eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    path = export_onnx(model, tokenizer, tmp_path_factory.mktemp("smoothing") / "model.onnx")
    with (shared_data / "sklearn_surya" / "issues.jsonl").open() as lines:
        rows = [json.loads(next(lines)) for _ in range(64)]
    feeds = calibration_feeds(tokenizer, [issue_text(r["title"], r["body"]) for r in rows], 128)
    return path, feeds[:32], feeds[32:]


def test_smoothing_keeps_the_fp32_model_and_brings_int8_nearer_to_it(
    exported: tuple[Path, list, list], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fp32, calibration, issues = exported
    smoothed = smooth_activations(fp32, tmp_path / "smoothed.onnx", calibration, alpha=0.8)

    # The same products, computed with each input channel divided and the weight's row multiplied.
    reference = _logits(fp32, issues)
    assert np.abs(_logits(smoothed, issues) - reference).max() <= 1e-4
    graph = onnx.load(str(smoothed)).graph
    divisions = [n for n in graph.node if n.op_type == "Mul" and n.name.endswith("_smooth")]
    # one per layer for attention's input and the FFN's two products; attention's output is even
    assert len(divisions) == 3 * 6
    attention_outputs = {o for n in graph.node if n.op_type == "Attention" for o in n.output}
    assert not any(n.input[0] in attention_outputs for n in divisions)

    plain = _logits(quantize_int8(fp32, tmp_path / "plain_int8.onnx"), issues)
    smoothed_int8 = quantize_int8(fp32, tmp_path / "int8.onnx", smoothing=0.8, calibration=calibration)
    nearer = _logits(smoothed_int8, issues)
    assert not (tmp_path / "int8_smoothed_fp32.onnx").exists()  # the intermediate graph is removed
    # the quantizer's advice to pre-process a graph that the fusion has already optimized is dropped
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    # The outlier channels of the layer-norm and GELU outputs no longer set INT8's one scale per input.
    assert np.abs(nearer - reference).mean() < 0.8 * np.abs(plain - reference).mean()


def test_smoothing_needs_calibration_issues(exported: tuple[Path, list, list], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(exported[0], tmp_path / "int8.onnx", smoothing=0.8, calibration=[])
