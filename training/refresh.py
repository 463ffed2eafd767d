"""``python -m training.refresh``: stored issues in, a verified model bundle out, promoted if not worse.

fetch (or --from-jsonl) -> dataset -> adapt (MLM) -> fine-tune -> thresholds -> evaluate against
baselines -> export ONNX -> quantize INT8 -> verify -> register -> promotion gate. Any failure
leaves the bundle in service untouched and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import delete, select
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from training import baselines
from training.adapt import adapt_encoder
from training.allocator import keep_freed_memory
from training.bundle import Bundle, BundleError, write_manifest, write_serving_files
from training.config import ConfigError, TrainingConfig, resolve_base_model
from training.dataset import DatasetConfig, DatasetError, IssueDataset, build_dataset
from training.distill import distill_dataset
from training.export import export_onnx, quantize_as_configured
from training.fetch import (
    FetchError,
    UnknownRepository,
    fetch_repository,
    follow_github_rename,
    models_follow_rename,
)
from training.finetune import finetune, predict_probabilities
from training.github_client import GitHubAuthError, GitHubClients
from training.jsonl_import import import_jsonl
from training.logs import configure_logging
from training.machine import cpu_info
from training.metrics import (
    Thresholds,
    decide,
    exclusive_group,
    macro_average_precision,
    scores,
    tune_thresholds,
)
from training.model_card import model_card
from training.precision import training_precision
from training.records import repository_argument
from training.refresh_runs import (
    FAILED,
    PROMOTED,
    REJECTED,
    LockLease,
    RefreshBusy,
    RefreshRuns,
    SlotTaken,
    format_history,
)
from training.registry import Registry
from training.settings import Settings, SettingsError, load_settings
from training.store import Store, StoreUnavailable
from training.store.models import Installation, Issue, Repository
from training.store.upserts import get_repository, label_node_ids

log = logging.getLogger(__name__)


class RefreshError(Exception):
    """A refresh that could not produce a servable bundle; the model in service is untouched."""


class RefreshStopped(BaseException):
    """SIGTERM (the bot's time limit, a container stopping): recorded failed, lock freed.

    A BaseException, as KeyboardInterrupt is: the signal handler raises it wherever the refresh
    happens to be, and code there that catches Exception — logging's handlers, retry loops —
    must not take it for an error of its own and carry on."""


@contextmanager
def _sigterm_stops_the_refresh() -> Iterator[None]:
    """SIGTERM becomes an exception while the refresh runs, so that the run is recorded and its
    lock and work folder are released on the way out instead of the process vanishing mid-stage."""

    def stop(signum: int, frame: object) -> None:
        raise RefreshStopped("stopped by SIGTERM (a time limit, or the host shutting down)")

    if threading.current_thread() is not threading.main_thread():  # only the main thread may
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RefreshResult:
    repo: str
    version: str
    bundle_dir: Path
    promoted: bool
    reason: str
    metrics: dict[str, object]
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    log.info("stage %s ...", name)
    started = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - started, 2)
    log.info("stage %s done in %.1fs", name, timings[name])


def _split(dataset: IssueDataset, name: str) -> tuple[list[str], np.ndarray]:
    return dataset.texts(name), dataset.targets(name)


def _file_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def _candidate_vs_current(
    current: Bundle, dataset: IssueDataset, candidate_scores: dict[str, object]
) -> tuple[float, float]:
    """Both models' test micro-F1 on the candidate's test split, over the candidate's labels."""
    texts, targets = _split(dataset, "test")
    decided = current.decide(current.probabilities(texts))
    mapped = np.zeros_like(targets, dtype=np.int8)
    for column, name in enumerate(dataset.label_names):
        if name in current.labels:
            mapped[:, column] = decided[:, current.labels.index(name)]
    current_f1 = float(scores(dataset.label_names, targets, mapped)["micro_f1"])
    return float(candidate_scores["micro_f1"]), current_f1  # type: ignore[arg-type]


def _thresholds(
    labels: list[str],
    train: tuple[list[str], np.ndarray],
    validation: tuple[list[str], np.ndarray],
    validation_probs: np.ndarray,
    config: TrainingConfig,
) -> tuple[Thresholds, str]:
    """Per-label thresholds from validation, with an exclusive label set kept only if it helps."""
    thresholds = tune_thresholds(labels, validation[1], validation_probs, **config.threshold_args())
    if not config.exclusive_groups:
        return thresholds, "no exclusive label set in the data"
    group = exclusive_group(labels, np.vstack([train[1], validation[1]]))
    if not group:
        return thresholds, "no exclusive label set in the data"
    plain = scores(labels, validation[1], decide(validation_probs, labels, thresholds))
    thresholds.exclusive_groups = [group]
    grouped = scores(labels, validation[1], decide(validation_probs, labels, thresholds))
    if grouped["micro_f1"] <= plain["micro_f1"]:
        thresholds.exclusive_groups = []
        return thresholds, f"at most one of {group}: dropped, not better on validation"
    return thresholds, f"at most one of {group}: kept, better validation micro-F1"


def _distil(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    teacher_thresholds: Thresholds,
    teacher_group_note: str,
    dataset: IssueDataset,
    workdir: Path,
    config: TrainingConfig,
    pos_weight: list[float],
) -> tuple[PreTrainedModel, Thresholds, str, dict[str, object]]:
    """The student if it keeps the teacher's validation micro-F1 (within the allowed drop), else
    the teacher; both scores recorded, so the choice can be checked."""
    labels = dataset.label_names
    train, validation = _split(dataset, "train"), _split(dataset, "validation")
    student = distill_dataset(
        teacher,
        tokenizer,
        dataset,
        workdir / "student",
        config,
        torch.tensor(pos_weight) if pos_weight else None,
    )
    student_probs = predict_probabilities(student.model, tokenizer, validation[0], config.max_length)
    student_thresholds, student_group_note = _thresholds(labels, train, validation, student_probs, config)
    teacher_probs = predict_probabilities(teacher, tokenizer, validation[0], config.max_length)
    teacher_f1 = float(
        scores(labels, validation[1], decide(teacher_probs, labels, teacher_thresholds))["micro_f1"]
    )
    student_f1 = float(
        scores(labels, validation[1], decide(student_probs, labels, student_thresholds))["micro_f1"]
    )
    served = student_f1 >= teacher_f1 - config.distill_max_f1_drop
    reason = (
        f"{len(student.layers_kept)}-layer student, validation micro-F1 {student_f1:.3f} vs teacher "
        f"{teacher_f1:.3f}: "
        + ("served" if served else f"lost more than {config.distill_max_f1_drop}; the teacher is served")
    )
    log.info("%s", reason)
    info: dict[str, object] = {
        "teacher_layers": teacher.config.num_hidden_layers,
        "student_layers_kept": student.layers_kept,
        "texts": student.texts,
        "teacher_validation_micro_f1": round(teacher_f1, 4),
        "student_validation_micro_f1": round(student_f1, 4),
        "served": "student" if served else "teacher",
        "reason": reason,
    }
    if served:
        return student.model, student_thresholds, student_group_note, info
    return teacher, teacher_thresholds, teacher_group_note, info


def run_refresh(
    settings: Settings,
    store: Store,
    repo: str,
    config: TrainingConfig,
    *,
    registry: Registry,
    from_jsonl: list[Path] | None = None,
    clients: GitHubClients | None = None,
    force: bool = False,
    lease: LockLease | None = None,
) -> RefreshResult:
    """One full refresh of one repository. Under ``recorded_refresh`` a ``lease`` keeps its
    lock; a refresh that lost the lock registers nothing."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    base_model = resolve_base_model(config.base_model)
    try:
        # Read first, so that a base model that cannot load (a Hub name without network or cache,
        # a mistyped path) fails before the fetch and the data stage rather than after them.
        AutoConfig.from_pretrained(base_model)
    except (OSError, ValueError) as exc:
        raise RefreshError(f"the base model {config.base_model!r} cannot be loaded: {exc}") from None
    timings: dict[str, float] = {}
    with _stage(timings, "data"):
        if from_jsonl:
            found, others = False, set[str]()
            for path in from_jsonl:
                report = import_jsonl(store, path, repos={repo}, template_labels=settings.template_labels)
                log.info("%s: %s", path, report.counts.summary())
                found = found or repo in report.repositories
                others |= report.other_repositories
            if not found:
                held = sorted(others)
                raise UnknownRepository(
                    f"{', '.join(map(str, from_jsonl))} holds no issue of {repo}"
                    + (f" (it holds {', '.join(held[:5])}{' ...' if len(held) > 5 else ''})" if held else "")
                )
        else:
            if clients is None:
                raise RefreshError("fetching needs GitHub credentials (or give --from-jsonl)")
            fetched = fetch_repository(
                store,
                clients.for_repository(repo),
                repo,
                settings=settings,
                reconcile=settings.fetch_reconcile,
            )
            if fetched.renamed_from:  # renamed on GitHub while no bot ran
                models_follow_rename(registry, fetched.renamed_from, repo)
        with store.session() as session:
            dataset = build_dataset(
                session, [repo], DatasetConfig.from_settings(settings), persist_splits=True
            )
            node_ids = label_node_ids(session, repo, dataset.label_names)
            repository_id = get_repository(session, repo).id  # type: ignore[union-attr]
        for split in ("train", "validation", "test"):
            if not dataset.splits[split]:
                raise RefreshError(f"{repo}: the {split} split is empty; more labeled issues are needed")
    labels = dataset.label_names
    train, validation, test = (_split(dataset, name) for name in ("train", "validation", "test"))
    registry.drop_forward(repo)  # a link left by a rename is another repository's folder now
    repo_dir = registry.repo_dir(repo)
    repo_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".work-", dir=repo_dir))
    version, bundle_dir = registry.new_version(repo)
    finished = False
    try:
        encoder, adapt_info = base_model, None
        if config.adapt:
            with _stage(timings, "adapt"):
                previous, why = registry.adapted_encoder(repo, config.base_model)
                if previous is None:
                    log.info("%s: adapting %s afresh: %s", repo, config.base_model, why)
                start = str(previous) if previous is not None else base_model
                texts = [e.text for e in dataset.unlabeled] + train[0]
                adapted = adapt_encoder(texts, start, workdir / "encoder", config)
                encoder = str(adapted.encoder_dir)
                adapt_info = {
                    "started_from": why if previous is not None else config.base_model,
                    "texts": adapted.texts,
                    "held_out_mlm_loss_before": round(adapted.held_out_loss_before, 4),
                    "held_out_mlm_loss_after": round(adapted.held_out_loss_after, 4),
                    "tokens_trained": adapted.tokens_trained,
                    "tokens_viewed": adapted.tokens_viewed,
                    "steps": adapted.steps.total,
                    "steps_the_epochs_asked": adapted.steps.wanted,
                }
        with _stage(timings, "finetune"):
            tuned = finetune(encoder, base_model, labels, train, validation, workdir / "checkpoints", config)
            model, tokenizer = tuned.model, tuned.tokenizer
        with _stage(timings, "thresholds"):
            validation_probs = predict_probabilities(model, tokenizer, validation[0], config.max_length)
            thresholds, group_note = _thresholds(labels, train, validation, validation_probs, config)
        distillation = None
        if config.distill_layers:
            with _stage(timings, "distill"):
                model, thresholds, group_note, distillation = _distil(
                    model, tokenizer, thresholds, group_note, dataset, workdir, config, tuned.pos_weight
                )
        with _stage(timings, "evaluate"):
            test_probs = predict_probabilities(model, tokenizer, test[0], config.max_length)
            # Mean average precision ranks without thresholds: how much of a difference from the
            # baselines is the model and how much the thresholds tuned on a small validation split.
            ranking = {"macro_ap": macro_average_precision(test[1], test_probs)}
            test_scores = scores(labels, test[1], decide(test_probs, labels, thresholds)) | ranking
            # The model's quality over every label, as the baselines are scored; "test" is as served.
            every_label = replace(thresholds, reliable=dict.fromkeys(labels, True))
            test_all_labels = scores(labels, test[1], decide(test_probs, labels, every_label))
            naive_bayes = baselines.naive_bayes(labels, train, test)
            tfidf = baselines.tfidf_logreg(labels, train, validation, test)

        with _stage(timings, "export"):
            write_serving_files(bundle_dir, tokenizer, labels, thresholds, node_ids)
            fp32_path = export_onnx(model, tokenizer, workdir / "model_fp32.onnx")
            shutil.copy(fp32_path, bundle_dir / "model.onnx")
            info = {"version": version, "repo": repo, "max_length": config.max_length, "precision": "fp32"}
            write_manifest(bundle_dir, info)
            fp32_probs = Bundle(bundle_dir).probabilities(test[0])
            fp32_diff = float(np.abs(fp32_probs - test_probs).max()) if len(test[0]) else 0.0
            if fp32_diff > config.onnx_max_prob_diff:
                raise RefreshError(
                    f"ONNX fp32 differs from PyTorch by {fp32_diff:.2e} (> {config.onnx_max_prob_diff:.0e}); "
                    "the export is wrong, nothing was registered"
                )
        precision, precision_reason, int8_scores = "fp32", "quantization disabled", None
        if config.quantize:
            with _stage(timings, "quantize"):
                int8_path = quantize_as_configured(
                    fp32_path, workdir / "model_int8.onnx", tokenizer, train[0], config
                )
                shutil.copy(int8_path, bundle_dir / "model.onnx")
                write_manifest(bundle_dir, info | {"precision": "int8"})
                int8_bundle = Bundle(bundle_dir)
                int8_probs = int8_bundle.probabilities(test[0])
                int8_scores = scores(labels, test[1], int8_bundle.decide(int8_probs)) | {
                    "macro_ap": macro_average_precision(test[1], int8_probs)
                }
                change = float(int8_scores["micro_f1"]) - float(test_scores["micro_f1"])  # type: ignore[arg-type]
                if -change > config.int8_max_f1_drop:
                    shutil.copy(fp32_path, bundle_dir / "model.onnx")
                    precision_reason = (
                        f"INT8 lost {-change:.3f} test micro-F1 (> {config.int8_max_f1_drop}), "
                        "scored one issue at a time as served; serving fp32 ONNX"
                    )
                else:
                    precision = "int8"
                    precision_reason = (
                        f"INT8 test micro-F1 {change:+.3f} against PyTorch (a loss of at most "
                        f"{config.int8_max_f1_drop} allowed), scored one issue at a time as served"
                    )
                log.info("%s", precision_reason)

        metrics: dict[str, object] = {
            "version": version,
            "repo": repo,
            "created_at": datetime.now(UTC).isoformat(),
            "labels": labels,
            "test": test_scores,
            "test_all_labels": test_all_labels,
            "validation": {
                "best_checkpoint_micro_f1": tuned.best_validation_micro_f1,
                "fine_tune_steps": tuned.steps.total,
                "steps_the_epochs_asked": tuned.steps.wanted,
                "model_kept": f"mean of the weights of the last {config.average_last_epochs} epochs"
                if config.average_last_epochs
                else f"checkpoint best by validation {config.checkpoint_metric}",
            },
            "baselines": {"naive_bayes": naive_bayes, "tfidf_logreg": tfidf},
            "onnx_fp32": {"max_prob_diff_vs_pytorch": fp32_diff, "size_mb": _file_mb(fp32_path)},
            "onnx_int8": (int8_scores or {})
            | (
                {"size_mb": _file_mb(workdir / "model_int8.onnx"), "smoothing": config.int8_smoothing}
                if int8_scores
                else {}
            ),
            "served_precision": precision,
            "served_precision_reason": precision_reason,
            "exclusive_groups": group_note,
            "adaptation": adapt_info,
            "distillation": distillation,
            "counts": dataset.manifest()["counts"],
            "timings_s": timings,
            "cpu": cpu_info(),  # what the timings were taken on
            "training_precision": training_precision(config.mixed_precision),
        }
        if config.keep_pytorch_model:
            model.save_pretrained(bundle_dir / "pytorch")
            tokenizer.save_pretrained(bundle_dir / "pytorch")
            shutil.copy(fp32_path, bundle_dir / "model_fp32.onnx")
        (bundle_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (bundle_dir / "training_config.json").write_text(config.model_dump_json(indent=2))
        (bundle_dir / "data_manifest.json").write_text(json.dumps(dataset.manifest(), indent=2))
        (bundle_dir / "MODEL_CARD.md").write_text(model_card(metrics, dataset.manifest(), config, thresholds))
        write_manifest(bundle_dir, info | {"precision": precision})
        Bundle(bundle_dir)  # the bundle as written must load and verify
        finished = True
    finally:
        if not finished:
            shutil.rmtree(bundle_dir, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
            with suppress(Exception):  # the failure above is the one to report
                if _name_now(store, repository_id) is None:
                    registry.forget_repo(repo)
    if lease is not None and lease.lost:  # another refresh holds the repository now
        shutil.rmtree(bundle_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        lease.check()
    renamed_from = None
    name = _name_now(store, repository_id)
    if name is None:
        # Uninstalled with forget_uninstalled while this trained: the bot deleted its data and
        # models, and what this refresh wrote since goes too.
        registry.forget_repo(repo)
        raise RefreshError(f"{repo} left the store while it trained (uninstalled): nothing registered")
    if name != repo:
        # Renamed on GitHub while this trained: the bot moved the registry folder (this refresh's
        # paths reached it through the link left under the old name), or no bot runs and it moves now.
        log.warning("%s is %s on GitHub now: its bundle is registered under the new name", repo, name)
        registry.rename_repo(repo, name)
        renamed_from, repo, repo_dir = repo, name, registry.repo_dir(name)
        workdir, bundle_dir = repo_dir / workdir.name, repo_dir / version
    try:
        with _stage(timings, "promote"):
            promoted, reason = _gate(registry, repo, version, dataset, test_scores, config, force)
            if promoted and config.adapt:
                registry.keep_encoder(repo, workdir / "encoder", config.base_model)
            registry.prune(repo, config.keep_bundles)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if renamed_from is not None:
            registry.drop_forward(renamed_from)
    return RefreshResult(repo, version, bundle_dir, promoted, reason, metrics, timings)


def _name_now(store: Store, repository_id: int) -> str | None:
    """The repository's name in the store now (a rename on GitHub renames the row, found by its
    id); None once the row is deleted (the App uninstalled, with ``forget_uninstalled``)."""
    with store.session() as session:
        row = session.get(Repository, repository_id)
        return row.full_name if row is not None else None


def recorded_refresh(
    settings: Settings,
    store: Store,
    repo: str,
    config: TrainingConfig,
    *,
    registry: Registry,
    from_jsonl: list[Path] | None = None,
    force: bool = False,
    trigger: str = "manual",
    reason: str = "run by hand",
    slot: str | None = None,
) -> RefreshResult:
    """``run_refresh`` under the repository's refresh lock, recorded in the refresh history.

    Raises ``RefreshBusy`` or ``SlotTaken`` before anything runs; a failure is recorded with
    its reason and raised again.
    """
    clients = None
    if not from_jsonl and _unknown_to_github_yet(store, repo):
        clients, repo = _follow_rename_first(settings, store, repo, registry)
    new_here = _not_stored(store, repo)
    runs = RefreshRuns(store, lock_hours=settings.refresh_lock_hours)
    try:
        started = runs.start(repo, trigger=trigger, reason=reason, slot=slot)
    except BaseException:
        if clients is not None:
            clients.close()
        raise
    try:
        if stale := registry.remove_work_folders(repo):  # the lock is ours: no other refresh runs
            log.warning("%s: removed the work folders of refreshes that died: %s", repo, ", ".join(stale))
        if not from_jsonl and clients is None:
            clients = GitHubClients(settings)
        with LockLease(runs, started, repo) as lease:
            result = run_refresh(
                settings,
                store,
                repo,
                config,
                registry=registry,
                from_jsonl=from_jsonl,
                clients=clients,
                force=force,
                lease=lease,
            )
    except BaseException as exc:
        runs.finish(started, status=FAILED, outcome=str(exc) or type(exc).__name__)
        if new_here and isinstance(exc, UnknownRepository):
            _forget_if_nothing_arrived(store, repo)
        raise
    finally:
        if clients is not None:
            clients.close()
    test = result.metrics["test"]
    runs.finish(
        started,
        status=PROMOTED if result.promoted else REJECTED,
        outcome=result.reason,
        version=result.version,
        counts=result.metrics["counts"],  # type: ignore[arg-type]
        metrics={"micro_f1": test["micro_f1"], "macro_f1": test["macro_f1"]},  # type: ignore[index]
    )
    return result


def _not_stored(store: Store, repo: str) -> bool:
    with store.session() as session:
        return get_repository(session, repo) is None


def _forget_if_nothing_arrived(store: Store, repo: str) -> None:
    """A refresh of a name neither GitHub nor the JSONL knows (a typo) created the repository
    only to record its failure; kept, the bot would list it and retrain it on schedule."""
    with store.session() as session:
        repository = get_repository(session, repo)
        if repository is None:
            return
        for arrived in (Issue.repository_id, Installation.repository_id):  # meanwhile, by webhook
            if session.scalar(select(arrived).where(arrived == repository.id).limit(1)) is not None:
                return
        # its failed run and lock go with it (DB cascades); webhook jobs are left to run
        session.execute(delete(Repository).where(Repository.id == repository.id))
    log.warning("%s: not kept in the store, as no issue of it was found", repo)


def _unknown_to_github_yet(store: Store, repo: str) -> bool:
    """No stored row under this name holds GitHub's id: a new repository, or a renamed one."""
    with store.session() as session:
        row = get_repository(session, repo)
        return row is None or row.github_id is None


def _follow_rename_first(
    settings: Settings, store: Store, repo: str, registry: Registry
) -> tuple[GitHubClients | None, str]:
    """Before the refresh lock creates a row under a name the store does not know, ask GitHub
    whether it is a stored repository renamed while no bot ran; its history and models follow.
    Returned with the clients: the name as GitHub spells it (``--repo`` may differ in case).

    Where GitHub cannot answer now, the refresh goes on and its fetch reports the failure."""
    try:
        clients = GitHubClients(settings)
    except GitHubAuthError:
        return None, repo
    try:
        spelled, old = follow_github_rename(store, clients.for_repository(repo), repo)
    except (FetchError, GitHubAuthError) as exc:
        log.warning("%s: could not ask GitHub whether it was renamed (%s)", repo, exc)
        return clients, repo
    if spelled != repo:
        log.info("%s: GitHub spells it %s; refreshing under that name", repo, spelled)
    if old is not None:
        models_follow_rename(registry, old, spelled)
    return clients, spelled


def _gate(
    registry: Registry,
    repo: str,
    version: str,
    dataset: IssueDataset,
    test_scores: dict[str, object],
    config: TrainingConfig,
    force: bool,
) -> tuple[bool, str]:
    """Promote unless the candidate is worse than the bundle in service on the same test split."""
    try:
        current = registry.load_current(repo)
    except BundleError as exc:
        log.warning("the bundle in service cannot be loaded (%s); the candidate replaces it", exc)
        current = None
    if current is None:
        registry.promote(repo, version)
        return True, "no bundle in service"
    candidate_f1, current_f1 = _candidate_vs_current(current, dataset, test_scores)
    comparison = f"test micro-F1 {candidate_f1:.3f} vs {current_f1:.3f} for {current.version} in service"
    if candidate_f1 + config.promote_tolerance >= current_f1:
        registry.promote(repo, version)
        return True, comparison
    if force:
        registry.promote(repo, version)
        return True, comparison + "; promoted anyway (--force)"
    reason = comparison + f"; worse by more than {config.promote_tolerance}: not promoted"
    registry.reject(repo, version, reason)
    return False, reason


def summary_table(result: RefreshResult) -> str:
    m = result.metrics
    test, base = m["test"], m["baselines"]
    int8 = m.get("onnx_int8") or {}
    every = m.get("test_all_labels") or {}
    rows = [
        ("fine-tuned transformer (PyTorch)", test),
        ("  every label, unreliable included", every),
        ("  served ONNX INT8", int8),
        ("Naive Bayes baseline", base["naive_bayes"]),  # type: ignore[index]
        ("TF-IDF + LR baseline", base["tfidf_logreg"]),  # type: ignore[index]
    ]
    lines = [f"{'model':<34} {'micro F1':>9} {'macro F1':>9} {'macro AP':>9}", "-" * 64]
    for name, row in rows:
        if row.get("micro_f1") is None:
            continue
        ap = row.get("macro_ap")
        lines.append(
            f"{name:<34} {row['micro_f1']:>9.3f} {row['macro_f1']:>9.3f} "
            + (f"{ap:>9.3f}" if ap is not None else f"{'-':>9}")
        )
    lines.append("(macro AP: mean average precision over the test labels, threshold-free)")
    counts = m["counts"]
    lines += [
        "",
        f"data: train {counts['train']}, validation {counts['validation']}, test {counts['test']}, "  # type: ignore[index]
        f"unlabeled {counts['unlabeled']}",  # type: ignore[index]
        "stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items()),
        f"served: {m['served_precision']} ({m['served_precision_reason']})",
        *([f"distillation: {m['distillation']['reason']}"] if m.get("distillation") else []),  # type: ignore[index]
        f"bundle {result.version}: {'PROMOTED' if result.promoted else 'NOT PROMOTED'} — {result.reason}",
        f"  {result.bundle_dir}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.refresh", description=__doc__)
    parser.add_argument(
        "--repo", type=repository_argument, metavar="OWNER/NAME", help="the repository to retrain"
    )
    parser.add_argument(
        "--history",
        type=repository_argument,
        metavar="OWNER/NAME",
        help="print the repository's refresh history and exit",
    )
    parser.add_argument(
        "--from-jsonl",
        action="append",
        type=Path,
        metavar="PATH",
        help="train from a JSONL export instead of fetching (only --repo's rows)",
    )
    parser.add_argument(
        "--registry", type=Path, help="model registry folder (default: ISSUE_LABELER_REGISTRY_DIR)"
    )
    parser.add_argument("--config", type=Path, help="YAML or JSON file of training arguments")
    parser.add_argument("--no-adapt", action="store_true", help="skip domain adaptation (vanilla fine-tune)")
    parser.add_argument(
        "--force", action="store_true", help="promote even if worse than the bundle in service"
    )
    parser.add_argument(
        "--rollback",
        nargs="?",
        const="",
        metavar="VERSION",
        help="serve VERSION, or the previously promoted bundle, and exit",
    )
    parser.add_argument(
        "--trigger", default="manual", choices=["manual", "schedule", "early", "api"], help=argparse.SUPPRESS
    )
    parser.add_argument("--reason", default="run by hand", help="why, for the refresh history")
    parser.add_argument("--slot", help=argparse.SUPPRESS)  # a scheduled occasion: run once across replicas
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority by N")
    args = parser.parse_args(argv)
    if not args.repo and not args.history:
        parser.error("give --repo OWNER/NAME (or --history OWNER/NAME)")
    if args.nice:
        os.nice(args.nice)
    try:
        settings = load_settings()
        config_path = args.config or settings.refresh_config
        config = TrainingConfig.from_file(config_path) if config_path else TrainingConfig()
    except (SettingsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.no_adapt:
        config = config.model_copy(update={"adapt": False})
    configure_logging(settings.log_level)
    registry = Registry(args.registry or settings.registry_dir)
    if config.keep_freed_memory and args.rollback is None and args.history is None:
        keep_freed_memory()
    if args.rollback is not None:
        try:
            version = registry.rollback(args.repo, args.rollback or None)
        except BundleError as exc:
            log.error("%s", exc)
            return 1
        log.info("%s: now serving %s", args.repo, version)
        return 0
    try:
        store = Store(settings.database_url)
    except StoreUnavailable as exc:
        log.error("%s", exc)
        return 2
    runs = RefreshRuns(store, lock_hours=settings.refresh_lock_hours)
    if args.history:
        print(format_history(args.history, runs.history(args.history)))  # noqa: T201
        store.close()
        return 0
    try:
        with _sigterm_stops_the_refresh():
            result = recorded_refresh(
                settings,
                store,
                args.repo,
                config,
                registry=registry,
                from_jsonl=args.from_jsonl,
                force=args.force,
                trigger=args.trigger,
                reason=args.reason,
                slot=args.slot,
            )
    except SlotTaken as exc:
        log.info("not run: %s", exc)
        return 0
    except RefreshBusy as exc:
        log.error("%s: not run, %s", args.repo, exc)
        return 3
    except (
        RefreshError,
        RefreshStopped,
        DatasetError,
        FetchError,
        GitHubAuthError,
        BundleError,
        OSError,  # the registry a file, no rights or no space: the OS names the path
    ) as exc:
        log.error("refresh of %s failed, the bundle in service is unchanged: %s", args.repo, exc)
        return 1
    except KeyboardInterrupt:  # recorded failed and the lock freed on the way out
        log.error("refresh of %s interrupted, the bundle in service is unchanged", args.repo)
        return 130
    finally:
        store.close()
    print(summary_table(result))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
