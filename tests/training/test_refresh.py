"""The model pipeline end to end on a slice of real sklearn issues, with the packaged weights.

Tiny on purpose (sequence length 32, a few steps) so it runs in CI in a few minutes; quality is
measured by benchmarks/, not here.
"""

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from sqlalchemy import func, select

from tests.conftest import make_settings, wait_for
from training.bundle import Bundle, BundleError, inference_session, write_manifest
from training.classifier import load_classifier
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.distill import keep_layers, shallow_copy
from training.export import export_onnx, quantize_int8
from training.fetch import UnknownRepository
from training.finetune import finetune, predict_probabilities
from training.precision import training_precision
from training.refresh import (
    RefreshError,
    RefreshStopped,
    _sigterm_stops_the_refresh,
    run_refresh,
    summary_table,
)
from training.refresh import main as refresh_main
from training.refresh_runs import LockLease, LockLost, RefreshRuns
from training.registry import ENCODER_BASE, Registry
from training.settings import Settings
from training.store import Store
from training.store.models import Issue

REPO = "scikit-learn/scikit-learn"
TINY = TrainingConfig(
    max_length=32,
    mlm_max_length=32,
    mlm_max_steps=3,
    mlm_head_warmup_steps=2,
    mlm_batch_size=8,
    max_steps=10,
    batch_size=8,
    torch_threads=2,
)


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SHARED_DATA

    source = SHARED_DATA / "sklearn_surya" / "issues.jsonl"
    if not source.is_file():
        pytest.fail(f"the shared issue data is missing: {source}", pytrace=False)
    path = tmp_path_factory.mktemp("data") / "slice.jsonl"
    path.write_text("".join(source.read_text().splitlines(keepends=True)[:80]))
    return path


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    # 80 issues hold few hand-applied labels with 10 examples: learn the form labels too, from 5.
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        registry_dir=tmp_path / "models",
        min_label_examples=5,
        exclude_template_labels=False,
    )


def _refresh(settings: Settings, slice_path: Path, config: TrainingConfig, **kw: Any):
    store = Store(settings.database_url)
    try:
        return run_refresh(
            settings,
            store,
            REPO,
            config,
            registry=Registry(settings.registry_dir),
            from_jsonl=[slice_path],
            **kw,
        )
    finally:
        store.close()


def test_refresh_writes_a_verified_bundle_and_serves_it(small_settings: Settings, slice_path: Path) -> None:
    result = _refresh(small_settings, slice_path, TINY)
    registry = Registry(small_settings.registry_dir)
    assert result.promoted and result.reason == "no bundle in service"
    assert registry.current_version(REPO) == result.version
    files = {p.name for p in result.bundle_dir.iterdir()}
    assert {
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "labels.json",
        "thresholds.json",
        "metrics.json",
        "training_config.json",
        "data_manifest.json",
        "MODEL_CARD.md",
        "bundle.json",
    } <= files

    metrics = json.loads((result.bundle_dir / "metrics.json").read_text())
    for key in ("micro_f1", "macro_f1", "macro_ap", "per_label"):
        assert key in metrics["test"]
    for baseline in ("naive_bayes", "tfidf_logreg"):
        assert 0 <= metrics["baselines"][baseline]["micro_f1"] <= 1
        assert 0 < metrics["baselines"][baseline]["macro_ap"] <= 1
    # The served INT8 model ranks the test issues as the PyTorch one does, give or take rounding.
    assert metrics["onnx_int8"]["macro_ap"] == pytest.approx(metrics["test"]["macro_ap"], abs=0.05)
    assert metrics["onnx_fp32"]["max_prob_diff_vs_pytorch"] <= 1e-4
    assert (
        "micro_f1" in metrics["onnx_int8"]
        and metrics["onnx_int8"]["size_mb"] < metrics["onnx_fp32"]["size_mb"] / 3
        and metrics["onnx_int8"]["smoothing"] == TINY.int8_smoothing > 0
    )
    assert metrics["served_precision"] in {"int8", "fp32"} and metrics["served_precision_reason"]
    change = metrics["onnx_int8"]["micro_f1"] - metrics["test"]["micro_f1"]
    if metrics["served_precision"] == "int8":  # the difference reads INT8 minus PyTorch: a loss is negative
        assert metrics["served_precision_reason"].startswith(
            f"INT8 test micro-F1 {change:+.3f} against PyTorch"
        )
    else:
        assert metrics["served_precision_reason"].startswith(f"INT8 lost {-change:.3f} test micro-F1")
    assert set(metrics["counts"]) >= {"train", "validation", "test", "unlabeled"}
    assert {"data", "adapt", "finetune", "evaluate", "export", "quantize"} <= set(metrics["timings_s"])
    assert metrics["cpu"]["cores"] == os.cpu_count() and metrics["cpu"]["arch"]  # what they were timed on
    assert metrics["training_precision"] == training_precision(TINY.mixed_precision)
    assert metrics["adaptation"]["started_from"] == PACKAGED_MODEL
    # what adaptation computed: its steps' padded batches, and the contrastive term's views of them
    most = TINY.mlm_max_steps * TINY.mlm_batch_size * TINY.mlm_max_length
    assert 0 < metrics["adaptation"]["tokens_viewed"] <= metrics["adaptation"]["tokens_trained"] <= most
    assert 0 <= metrics["validation"]["best_checkpoint_micro_f1"] <= 1
    assert metrics["validation"]["model_kept"] == "mean of the weights of the last 2 epochs"
    manifest = json.loads((result.bundle_dir / "data_manifest.json").read_text())
    assert len(manifest["split_hash"]) == 64
    card = (result.bundle_dir / "MODEL_CARD.md").read_text()
    assert "Bug" in card and f"| {metrics['test']['macro_ap']:.3f} |" in card
    table = summary_table(result)  # what the command prints at the end
    assert "macro AP" in table
    tfidf_row = next(line for line in table.splitlines() if line.startswith("TF-IDF + LR baseline"))
    assert tfidf_row.endswith(f"{metrics['baselines']['tfidf_logreg']['macro_ap']:.3f}")

    bundle = registry.load_current(REPO)
    assert bundle is not None and bundle.labels == metrics["labels"]
    predictions = bundle.predict(
        "Crash in DecisionTreeRegressor with NaN", "### Describe the bug\n\nTraceback"
    )
    assert {p.label for p in predictions} == set(bundle.labels)
    assert all(0 <= p.score <= 1 for p in predictions)
    assert (registry.encoder_dir(REPO) / "config.json").is_file()
    assert json.loads((registry.encoder_dir(REPO) / ENCODER_BASE).read_text()) == {
        "base_model": PACKAGED_MODEL
    }

    # A later refresh continues from the adapted encoder; a model that applies nothing is not promoted.
    useless = TINY.model_copy(update={"min_validation_support": 10**6})
    second = _refresh(small_settings, slice_path, useless)
    assert not second.promoted and "not promoted" in second.reason
    assert second.metrics["adaptation"]["started_from"] == "previous adapted encoder"
    # Another base model starts over from it: the adapted encoder descends from the packaged one.
    other_base = small_settings.registry_dir.parent / "another-base-model"
    other_base.symlink_to(resolve_base_model(PACKAGED_MODEL), target_is_directory=True)
    rebased = _refresh(small_settings, slice_path, useless.model_copy(update={"base_model": str(other_base)}))
    assert rebased.metrics["adaptation"]["started_from"] == str(other_base)
    assert registry.current_version(REPO) == result.version
    assert "not promoted" in (second.bundle_dir / "REJECTED").read_text()
    assert [v.status for v in registry.versions(REPO)] == ["current", "rejected", "rejected"]

    by_micro = useless.model_copy(
        update={"adapt": False, "average_last_epochs": 0, "checkpoint_metric": "micro_f1"}
    )
    forced = _refresh(small_settings, slice_path, by_micro, force=True)
    assert forced.promoted and "--force" in forced.reason and forced.metrics["adaptation"] is None
    assert 0 <= forced.metrics["validation"]["best_checkpoint_micro_f1"] <= 1
    assert forced.metrics["validation"]["model_kept"] == "checkpoint best by validation micro_f1"
    assert registry.rollback(REPO) == result.version
    assert registry.current_version(REPO) == result.version


def test_a_corrupted_bundle_is_refused_and_the_current_one_keeps_serving(
    small_settings: Settings, slice_path: Path
) -> None:
    config = TINY.model_copy(update={"adapt": False, "quantize": False})
    first = _refresh(small_settings, slice_path, config)
    registry = Registry(small_settings.registry_dir)
    second = _refresh(small_settings, slice_path, config.model_copy(update={"min_validation_support": 10**6}))
    assert not second.promoted
    model = second.bundle_dir / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(BundleError, match="model.onnx is corrupted"):
        registry.promote(REPO, second.version)
    assert registry.current_version(REPO) == first.version
    assert registry.load_current(REPO) is not None
    (first.bundle_dir / "labels.json").write_text('["tampered"]')
    with pytest.raises(BundleError, match="labels.json is corrupted"):
        registry.load_current(REPO)


def test_a_refresh_that_lost_its_lock_registers_nothing(small_settings: Settings, slice_path: Path) -> None:
    config = TINY.model_copy(update={"adapt": False, "quantize": False})
    first = _refresh(small_settings, slice_path, config)
    store = Store(small_settings.database_url)
    try:
        stalled = RefreshRuns(store, lock_hours=1, holder="replica-a:1")
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        started = stalled.start(REPO, trigger="api", reason="stalls", at=long_ago)
        RefreshRuns(store, lock_hours=1, holder="replica-b:2").start(REPO, trigger="api", reason="took over")
        with LockLease(stalled, started, REPO, every=0.01) as lease:
            wait_for(lambda: lease.lost, what="the lease to find its lock taken")
            with pytest.raises(LockLost):
                _refresh(small_settings, slice_path, config, lease=lease)
    finally:
        store.close()
    registry = Registry(small_settings.registry_dir)
    assert registry.current_version(REPO) == first.version
    repo_dir = registry.repo_dir(REPO)
    assert sorted(p.name for p in repo_dir.iterdir() if p.name[0].isdigit()) == [first.version]
    assert not list(repo_dir.glob(".work-*"))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_stages_compose_by_hand_and_onnx_matches_pytorch(
    pooling: str, small_settings: Settings, slice_path: Path, tmp_path: Path
) -> None:
    """Each stage is usable on its own: fine-tune, export, wrap as a bundle, compare outputs."""
    texts = [json.loads(line)["title"] for line in slice_path.read_text().splitlines()]
    labels = ["first half", "second half"]
    targets = np.array(
        [[1, 0] if i < len(texts) // 2 else [0, 1] for i in range(len(texts))], dtype=np.float32
    )
    base = resolve_base_model(PACKAGED_MODEL)
    config = TINY.model_copy(update={"pooling": pooling})
    tuned = finetune(
        base, base, labels, (texts, targets), (texts[:10], targets[:10]), tmp_path / "ckpt", config
    )
    assert tuned.model.config.issue_labeler_pooling == pooling
    folder = tmp_path / "bundle"
    folder.mkdir()
    export_onnx(tuned.model, tuned.tokenizer, folder / "model.onnx")
    tuned.tokenizer.save_pretrained(folder)
    (folder / "labels.json").write_text(json.dumps(labels))
    thresholds = {"thresholds": {n: 0.5 for n in labels}, "reliable": {n: True for n in labels}}
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    write_manifest(folder, {"version": "by-hand", "repo": REPO, "max_length": 32, "precision": "fp32"})
    onnx_probs = Bundle(folder).probabilities(texts)
    torch_probs = predict_probabilities(tuned.model, tuned.tokenizer, texts, max_length=32)
    assert onnx_probs.shape == (len(texts), 2)
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4
    # Fused attention, but Add + LayerNormalization left apart (faster than onnxruntime's
    # SkipLayerNormalization), in the file and in the graph onnxruntime runs.
    exported = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    assert {"Attention", "LayerNormalization"} <= exported and "SkipLayerNormalization" not in exported
    inference_session(folder / "model.onnx", 1, save_optimized_to=tmp_path / "as_run.onnx")
    as_run = {n.op_type for n in onnx.load(str(tmp_path / "as_run.onnx")).graph.node}
    assert "LayerNormalization" in as_run and "SkipLayerNormalization" not in as_run

    # INT8 scores each issue on its own, as the bot serves it: dynamic quantization scales a
    # batch by its whole range, so in a batch an issue's scores would move with its neighbours.
    quantize_int8(folder / "model.onnx", tmp_path / "int8.onnx")
    shutil.copy(tmp_path / "int8.onnx", folder / "model.onnx")
    write_manifest(folder, {"version": "by-hand", "repo": REPO, "max_length": 32, "precision": "int8"})
    int8 = Bundle(folder)
    alone = np.vstack([int8.probabilities([text]) for text in texts])
    assert np.array_equal(int8.probabilities(texts), alone)
    assert not np.array_equal(int8.probabilities(texts, batch_size=len(texts)), alone)


def test_refresh_cli_rejects_a_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "train.yml"
    bad.write_text("epoch: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "training.refresh", "--repo", REPO, "--config", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "epoch: Extra inputs are not permitted" in result.stderr


def test_refresh_cli_fails_cleanly_and_leaves_the_registry_untouched(
    tmp_path: Path, slice_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ISSUE_LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "HF_HUB_OFFLINE": "1",
        "ISSUE_LABELER_TEMPLATE_LABELS": json.dumps(
            {REPO: ["Bug", "New Feature", "Documentation", "Needs Triage"]}
        ),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.refresh",
            "--repo",
            REPO,
            "--from-jsonl",
            str(slice_path),
            "--registry",
            str(tmp_path / "models"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    # 80 issues have no hand-applied label with 10 examples once the form labels are excluded.
    assert result.returncode == 1
    assert "the bundle in service is unchanged" in result.stderr
    assert not any((tmp_path / "models").rglob("bundle.json"))


def test_a_registry_that_is_a_file_fails_the_refresh_with_one_line_and_records_it(
    tmp_path: Path, slice_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("a file where the registry should be\n")
    for name, value in {
        "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "MIN_LABEL_EXAMPLES": "5",
        "EXCLUDE_TEMPLATE_LABELS": "false",
    }.items():
        monkeypatch.setenv(f"ISSUE_LABELER_{name}", value)
    args = ["--repo", REPO, "--from-jsonl", str(slice_path), "--registry", str(not_a_folder)]
    assert refresh_main(args) == 1  # was a NotADirectoryError traceback
    assert (
        f"refresh of {REPO} failed, the bundle in service is unchanged: [Errno 20] Not a directory"
        in caplog.text
    )
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        (run,) = RefreshRuns(store, lock_hours=1).history(REPO)
        assert run["status"] == "failed" and "Not a directory" in str(run["outcome"])
    finally:
        store.close()


def test_a_base_model_that_cannot_load_fails_the_refresh_before_its_data_stage(
    small_settings: Settings, slice_path: Path, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    config = TINY.model_copy(update={"base_model": str(not_a_model)})
    with pytest.raises(RefreshError, match=f"the base model '{not_a_model}' cannot be loaded: .*config.json"):
        _refresh(small_settings, slice_path, config)
    store = Store(small_settings.database_url)
    try:
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Issue)) == 0  # nothing imported
    finally:
        store.close()


def test_a_jsonl_without_the_repositorys_issues_fails_the_refresh_naming_what_it_holds(
    small_settings: Settings, slice_path: Path
) -> None:
    store = Store(small_settings.database_url)
    try:
        with pytest.raises(
            UnknownRepository, match=f"{slice_path} holds no issue of other/none \\(it holds {REPO}\\)"
        ):
            run_refresh(
                small_settings,
                store,
                "other/none",
                TINY,
                registry=Registry(small_settings.registry_dir),
                from_jsonl=[slice_path],
            )
    finally:
        store.close()


@pytest.mark.parametrize("option", ["--repo", "--history"])  # --history printed "no refresh recorded"
def test_refresh_cli_refuses_a_repository_that_is_not_owner_slash_name(tmp_path: Path, option: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.refresh", option, "../models"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        f"argument {option}: expected OWNER/NAME (e.g. scikit-learn/scikit-learn), got '../models'"
        in result.stderr
    )


def test_a_distilled_student_keeps_every_other_teacher_layer() -> None:
    assert keep_layers(6, 3) == [1, 3, 5]
    assert keep_layers(6, 2) == [2, 5]
    assert keep_layers(12, 4) == [2, 5, 8, 11]
    with pytest.raises(ValueError, match="between 1 and 5"):
        keep_layers(6, 6)
    teacher: Any = load_classifier(resolve_base_model(PACKAGED_MODEL), num_labels=2)  # children read
    student: Any
    student, kept = shallow_copy(teacher, 3)
    assert kept == [1, 3, 5] and student.config.num_hidden_layers == 3
    assert len(teacher.bert.encoder.layer) == 6  # the teacher is left whole
    for position, layer in enumerate(kept):
        own = student.bert.encoder.layer[position].output.dense.weight
        assert torch.equal(own, teacher.bert.encoder.layer[layer].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_refresh_serves_a_distilled_student_that_keeps_the_teachers_f1(
    small_settings: Settings, slice_path: Path
) -> None:
    config = TINY.model_copy(
        update={"adapt": False, "distill_layers": 2, "distill_max_unlabeled": 20, "distill_max_f1_drop": 1.0}
    )
    result = _refresh(small_settings, slice_path, config)
    distillation = result.metrics["distillation"]
    assert distillation["served"] == "student" and distillation["student_layers_kept"] == [2, 5]
    assert 0 <= distillation["student_validation_micro_f1"] <= 1
    assert "distill" in result.metrics["timings_s"]
    model = onnx.load(str(result.bundle_dir / "model.onnx"))
    attention = [n for n in model.graph.node if n.op_type in {"Attention", "QAttention"}]
    assert len(attention) == 2  # the served graph is the 2-layer student
    assert result.metrics["onnx_fp32"]["max_prob_diff_vs_pytorch"] <= 1e-4
    assert "2-layer student" in (result.bundle_dir / "MODEL_CARD.md").read_text()
    assert Registry(small_settings.registry_dir).load_current(REPO) is not None


def test_a_refresh_continues_only_an_encoder_adapted_from_its_base_model(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    assert registry.adapted_encoder(REPO, PACKAGED_MODEL) == (None, "no adapted encoder yet")
    adapted = tmp_path / "adapted"
    adapted.mkdir()
    (adapted / "config.json").write_text("{}")
    registry.keep_encoder(REPO, adapted, PACKAGED_MODEL)
    kept = registry.encoder_dir(REPO)
    assert not adapted.exists() and (kept / "config.json").is_file()

    assert registry.adapted_encoder(REPO, PACKAGED_MODEL) == (kept, "previous adapted encoder")
    assert registry.adapted_encoder(REPO, "bert-base-uncased") == (
        None,
        f"the adapted encoder descends from {PACKAGED_MODEL}, not bert-base-uncased",
    )
    (kept / ENCODER_BASE).write_text("{not json")
    folder, why = registry.adapted_encoder(REPO, PACKAGED_MODEL)
    assert folder is None and why.startswith(f"the adapted encoder's {ENCODER_BASE} is unreadable")
    # kept before the base model was recorded: what it descends from is not known
    (kept / ENCODER_BASE).unlink()
    assert registry.adapted_encoder(REPO, PACKAGED_MODEL) == (
        None,
        f"the adapted encoder does not record its base model ({ENCODER_BASE})",
    )


def test_sigterm_during_a_log_line_still_stops_the_refresh() -> None:
    """Regression: SIGTERM arriving while a stage logged raised the stop inside logging's
    handler, which took it for a formatting error of its own, printed it and went on: the
    refresh never stopped and its run stayed "running" (seen in CI, 2026-12-04)."""

    class SignalledWhileFormatting(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before this returns, inside the handler
            return super().format(record)

    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(SignalledWhileFormatting())
    logger = logging.getLogger("tests.refresh.sigterm")
    logger.addHandler(handler)
    logger.propagate = False
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RefreshStopped, match="SIGTERM"), _sigterm_stops_the_refresh():
            logger.warning("stage data ...")
    finally:
        logger.removeHandler(handler)
    assert signal.getsignal(signal.SIGTERM) == before  # the refresh's handler is gone again
