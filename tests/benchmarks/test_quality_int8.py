"""The quality benchmark's INT8 scores are the decisions the bot would serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.quality import int8_as_served
from tests.training.test_refresh import TINY
from training.bundle import Bundle
from training.config import PACKAGED_MODEL, resolve_base_model
from training.dataset import issue_text
from training.finetune import finetune
from training.metrics import Thresholds


def test_int8_as_served_decides_as_the_bots_bundle_does(shared_data: Path, tmp_path: Path) -> None:
    with (shared_data / "sklearn_surya" / "issues.jsonl").open() as lines:
        rows = [json.loads(next(lines)) for _ in range(40)]
    texts = [issue_text(row["title"], row["body"]) for row in rows]
    labels = ["first half", "second half"]
    half = len(texts) // 2
    targets = np.array([[1, 0]] * half + [[0, 1]] * (len(texts) - half), dtype=np.float32)
    base = resolve_base_model(PACKAGED_MODEL)
    validation = (texts[:10], targets[:10])
    tuned = finetune(base, base, labels, (texts, targets), validation, tmp_path / "ckpt", TINY)
    thresholds = Thresholds.from_json(
        {"thresholds": dict.fromkeys(labels, 0.5), "reliable": dict.fromkeys(labels, True)}
    )

    decided = int8_as_served(tuned, labels, thresholds, TINY, texts, texts, tmp_path / "bundle")

    bundle = Bundle(tmp_path / "bundle")
    assert bundle.quantized and bundle.max_length == TINY.max_length
    served = np.array(
        [
            [{p.label: p.applied for p in bundle.predict(row["title"], row["body"])}[name] for name in labels]
            for row in rows
        ]
    )
    assert decided.shape == (len(rows), len(labels))
    assert np.array_equal(decided.astype(bool), served)
