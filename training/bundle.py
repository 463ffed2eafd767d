"""A model bundle: the contract between training (which writes it) and the bot (which serves it).

A bundle is a folder holding the ONNX classifier, the tokenizer, labels, thresholds, metrics,
the training config, a data manifest and a model card; ``bundle.json`` lists every file with
its SHA-256, so a truncated or altered bundle is refused instead of served.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from training.dataset import issue_text
from training.metrics import Thresholds, decide

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
# onnxruntime fusions that make the INT8 model slower on CPU: its SkipLayerNormalization kernel
# took 0.33 ms where Add + LayerNormalization took 0.12 (one 218 x 384 activation, 2 threads,
# call overhead included), so a 6-layer prediction ran 8-19% faster and used 11-18% less CPU
# without it (2026-12-01, Intel Xeon). Export leaves the pattern unfused too (training.export).
SLOW_FUSIONS = ["SkipLayerNormFusion"]


class BundleError(Exception):
    """A bundle that cannot be served; the message names the folder and what is wrong."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, info: dict[str, object]) -> None:
    files = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": BUNDLE_FORMAT, **info, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def write_serving_files(
    folder: Path,
    tokenizer: object,
    labels: list[str],
    thresholds: Thresholds,
    node_ids: dict[str, str] | None = None,
) -> None:
    """What a bundle serves besides its model: tokenizer, labels, thresholds (and the labels'
    GitHub node ids, to follow renames). ``tokenizer`` is a transformers tokenizer."""
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    (folder / "labels.json").write_text(json.dumps(labels, indent=2))
    (folder / "thresholds.json").write_text(json.dumps(thresholds.to_json(), indent=2))
    if node_ids is not None:
        (folder / "label_ids.json").write_text(json.dumps(node_ids, indent=2))


def inference_session(
    path: Path, threads: int, *, save_optimized_to: Path | None = None
) -> ort.InferenceSession:
    """The onnxruntime session a bundle's model is served with (``save_optimized_to`` writes
    the graph as onnxruntime runs it, after its own fusions)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Intra-op threads spin between the operators of a run (no wake-up per operator) and stop
    # at its end: spinning on between runs burns a core the rest of the process needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # An operator's work is claimed in shrinking blocks (half of what is left, then a quarter, ...)
    # instead of an equal share per thread: when a neighbour on the host slows one core, the
    # other takes more. INT8 predictions 6% faster in those stretches, 2% otherwise
    # (benchmarks/MEASUREMENTS.md, session 40).
    options.add_session_config_entry("session.dynamic_block_base", "1")
    if save_optimized_to is not None:
        options.optimized_model_filepath = str(save_optimized_to)
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS
    )


@dataclass(frozen=True)
class BundleSummary:
    """What a bundle says of its labels, read without starting its model: the bot checks every
    repository's labels hourly, and a bundle unloaded to bound memory must stay unloaded."""

    version: str
    labels: list[str]
    label_node_ids: dict[str, str]  # GitHub node ids at training time, to follow renames

    @classmethod
    def read(cls, folder: Path, *, verify: bool = False) -> BundleSummary:
        """``verify`` checks every file against the manifest, as loading the bundle does."""
        info = Bundle.verify(folder) if verify else json.loads((folder / MANIFEST).read_text())
        return cls.of(folder, info)

    @classmethod
    def of(cls, folder: Path, info: dict[str, Any]) -> BundleSummary:
        """The summary of a bundle whose manifest ``info`` was read already."""
        ids_path = folder / "label_ids.json"  # older bundles lack it
        return cls(
            version=str(info["version"]),
            labels=json.loads((folder / "labels.json").read_text()),
            label_node_ids=json.loads(ids_path.read_text()) if ids_path.is_file() else {},
        )


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    threshold: float
    applied: bool


class Bundle:
    """A verified bundle with an onnxruntime session, ready to score issue texts.

    ``run_lock``, shared by the bundles of one process, lets one prediction run at a time on
    all ``threads``: on a few cores, two predictions side by side each on every core fight over
    them, while one at a time finishes each sooner and leaves the other threads of the process
    (web server, store, GitHub calls) the cores between predictions.
    """

    def __init__(self, folder: Path, *, threads: int = 1, run_lock: threading.Lock | None = None) -> None:
        self.folder = folder
        self.info = self.verify(folder)
        self.summary = BundleSummary.of(folder, self.info)
        self.labels = self.summary.labels
        self.label_node_ids = self.summary.label_node_ids
        self.thresholds = Thresholds.from_json(json.loads((folder / "thresholds.json").read_text()))
        self.max_length = int(self.info["max_length"])
        self.quantized = self.info.get("precision") == "int8"
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        pad_token = self._pad_token(folder)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad_token) or 0, pad_token=pad_token)
        self._run_lock = run_lock if run_lock is not None else threading.Lock()
        try:
            self.session = inference_session(folder / "model.onnx", threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad graph
            raise BundleError(f"{folder}: model.onnx does not load in onnxruntime: {exc}") from None
        # DistilBERT and other encoders without segment embeddings export no token_type_ids
        self.input_names = {i.name for i in self.session.get_inputs()}

    @property
    def version(self) -> str:
        return str(self.info["version"])

    def _pad_token(self, folder: Path) -> str:
        """The padding token training used ([PAD] for BERT, <pad> for RoBERTa): transformers
        takes it from tokenizer_config.json, not from tokenizer.json's padding settings."""
        config_path = folder / "tokenizer_config.json"
        token = json.loads(config_path.read_text()).get("pad_token") if config_path.is_file() else None
        if isinstance(token, dict):  # an AddedToken, serialized
            token = token.get("content")
        if isinstance(token, str) and self.tokenizer.token_to_id(token) is not None:
            return token
        padding = self.tokenizer.padding
        return str(padding["pad_token"]) if padding else "[PAD]"

    @staticmethod
    def verify(folder: Path) -> dict[str, Any]:
        """The manifest of a complete, unaltered bundle; ``BundleError`` otherwise."""
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{folder}: no {MANIFEST}; not a model bundle (or an unfinished one)")
        try:
            info = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{folder}: {MANIFEST} is not valid JSON: {exc}") from None
        if info.get("format") != BUNDLE_FORMAT:
            raise BundleError(
                f"{folder}: bundle format {info.get('format')!r}, this code reads {BUNDLE_FORMAT}"
            )
        for name, expected in info.get("files", {}).items():
            path = folder / name
            if not path.is_file():
                raise BundleError(f"{folder}: {name} is missing")
            if sha256(path) != expected:
                raise BundleError(f"{folder}: {name} is corrupted (SHA-256 differs from {MANIFEST})")
        for required in ("model.onnx", "labels.json", "thresholds.json", "tokenizer.json"):
            if required not in info.get("files", {}):
                raise BundleError(f"{folder}: {required} is not part of the bundle")
        return info

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model's inputs for ``texts``: those of input ids, attention mask and token type ids
        that its graph takes."""
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {
            name: np.array(rows, dtype=np.int64) for name, rows in columns.items() if name in self.input_names
        }

    def probabilities(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Scores as the bot serves them. Dynamic INT8 scales each matrix product's input by its
        range over the whole batch, so an issue's INT8 scores move with what it is batched with
        (by up to 0.26 on the default bundle): an INT8 model scores one issue at a time unless
        the caller asks for batches (throughput); fp32 batches give the same scores."""
        batch_size = batch_size or (1 if self.quantized else 32)
        chunks = []
        for start in range(0, len(texts), batch_size):
            feed = self.encode(texts[start : start + batch_size])
            with self._run_lock:
                (logits,) = self.session.run(["logits"], feed)
            chunks.append(1 / (1 + np.exp(-logits)))
        if not chunks:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(chunks)

    def warm_up(self) -> None:
        """One prediction at full length: onnxruntime allocates its buffers on the first runs,
        which would otherwise slow the first real issues after a start or a swap."""
        self.probabilities(["warm up " * self.max_length])

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        return decide(probabilities, self.labels, self.thresholds)

    def predict(self, title: str, body: str) -> list[Prediction]:
        """Scores for one issue, best first; ``applied`` is the bundle's own decision."""
        probabilities = self.probabilities([issue_text(title, body)])
        applied = self.decide(probabilities)[0]
        result = [
            Prediction(label, float(probabilities[0, i]), self.thresholds.values[label], bool(applied[i]))
            for i, label in enumerate(self.labels)
        ]
        return sorted(result, key=lambda p: p.score, reverse=True)
