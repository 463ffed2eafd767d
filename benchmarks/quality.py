"""Quality: Naive Bayes vs TF-IDF + LR vs fine-tune vs fine-tune + domain adaptation.

On the real exports in ../shared/data: scikit-learn's hand-applied labels (form and workflow
labels excluded, as a refresh does) and each repository of oss_type_labels. ``--slices`` gives
chapter 9's learning curve (training slices of growing size; validation and test fixed).
Prints a table and writes JSON. Slow: each transformer fine-tune takes minutes on 2 cores.

    python benchmarks/quality.py --datasets sklearn --slices 64,128,all
    python benchmarks/quality.py --datasets sklearn --seeds 42,43,44   # the spread between runs
    # settings that act after adaptation, compared on the same adapted encoders
    python benchmarks/quality.py --seeds 42,43 --methods finetune_adapted --encoders-dir var/encoders \
        --config a.yml

For the transformer, micro / macro F1 are as served (labels it may not apply count as misses);
``every_label_*`` scores it on every label, as the baselines are scored. ``macro_ap`` (mean
average precision over the labels with a test positive) needs no threshold: it tells how well
each method ranks, apart from the thresholds tuned on a small validation split. With ``--int8``
each transformer is also exported, quantized and scored as a refresh would serve it in INT8
(``int8_*``; ``int8_changed_decisions`` counts the test decisions INT8 changes).

With the whole training set, a seed trains exactly what a refresh with that seed trains (same
dataset, same order), so a refresh's scores can be reproduced here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from training import baselines
from training.adapt import adapt_encoder
from training.allocator import keep_freed_memory
from training.bundle import Bundle, write_manifest, write_serving_files
from training.config import TrainingConfig, resolve_base_model
from training.dataset import DatasetConfig, IssueDataset, build_dataset
from training.export import export_onnx, quantize_as_configured
from training.finetune import FineTuneResult, finetune, predict_probabilities
from training.jsonl_import import import_jsonl
from training.machine import cpu_info
from training.metrics import Thresholds, decide, macro_average_precision, scores, tune_thresholds
from training.precision import training_precision
from training.quickstart import DEFAULT_DATA_DIR, sample_settings
from training.settings import load_settings
from training.store import Store

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {
    "sklearn": ("sklearn_surya/issues.jsonl", "scikit-learn/scikit-learn"),
    "bootstrap": ("oss_type_labels/issues.jsonl", "twbs/bootstrap"),
    "ohmyzsh": ("oss_type_labels/issues.jsonl", "ohmyzsh/ohmyzsh"),
    "vue": ("oss_type_labels/issues.jsonl", "vuejs/vue"),
}
METHODS = ("naive_bayes", "tfidf_logreg", "finetune", "finetune_adapted")
AFTER_ADAPTATION = {"mlm_interpolation"}  # settings read by the fine-tune, not by adaptation


def load_dataset(name: str, data_dir: Path, workdir: Path) -> IssueDataset:
    """The dataset a refresh would build from the export, through a throwaway store in ``workdir``."""
    path, repo = DATASETS[name]
    settings = sample_settings(
        load_settings(_env_file=None, database_url=f"sqlite:///{workdir / 'store.db'}")
    )
    store = Store(settings.database_url)
    try:
        import_jsonl(store, data_dir / path, repos={repo}, template_labels=settings.template_labels)
        with store.session() as session:
            return build_dataset(session, [repo], DatasetConfig.from_settings(settings))
    finally:
        store.close()


def _transformer(
    encoder: str,
    base: str,
    data: IssueDataset,
    train: tuple[list[str], np.ndarray],
    config: TrainingConfig,
    workdir: Path,
    scores_file: Path | None = None,
    with_int8: bool = False,
) -> dict[str, object]:
    labels = data.label_names
    validation = (data.texts("validation"), data.targets("validation"))
    tuned = finetune(encoder, base, labels, train, validation, workdir, config)
    val_probs = predict_probabilities(tuned.model, tuned.tokenizer, validation[0], config.max_length)
    thresholds = tune_thresholds(labels, validation[1], val_probs, **config.threshold_args())
    test_probs = predict_probabilities(tuned.model, tuned.tokenizer, data.texts("test"), config.max_length)
    decided = decide(test_probs, labels, thresholds)
    measured: dict[str, object] = dict(scores(labels, data.targets("test"), decided))
    every_label = replace(thresholds, reliable=dict.fromkeys(labels, True))
    every = scores(labels, data.targets("test"), decide(test_probs, labels, every_label))
    if scores_file is not None:  # for studies of thresholds and reliability without retraining
        scores_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            scores_file,
            labels=np.array(labels),
            validation_probabilities=val_probs,
            validation_targets=validation[1],
            test_probabilities=test_probs,
            test_targets=data.targets("test"),
        )
    if with_int8:
        test_texts = data.texts("test")
        int8 = int8_as_served(tuned, labels, thresholds, config, train[0], test_texts, workdir / "int8")
        served_int8 = scores(labels, data.targets("test"), int8)
        measured = measured | {
            "int8_micro_f1": served_int8["micro_f1"],
            "int8_macro_f1": served_int8["macro_f1"],
            "int8_changed_decisions": int((int8 != decided).sum()),
        }
    return measured | {
        "macro_ap": macro_average_precision(data.targets("test"), test_probs),
        "every_label_micro_f1": every["micro_f1"],
        "every_label_macro_f1": every["macro_f1"],
        "applied_labels": sum(thresholds.reliable.values()),
    }


def int8_as_served(
    tuned: FineTuneResult,
    labels: list[str],
    thresholds: Thresholds,
    config: TrainingConfig,
    train_texts: list[str],
    texts: list[str],
    folder: Path,
) -> np.ndarray:
    """The decisions of the fine-tuned model as a refresh would serve it in INT8: exported,
    quantized (smoothed on the training issues as the config says), wrapped as a bundle with the
    PyTorch model's thresholds, scored one issue at a time. The bundle is left in ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_serving_files(folder, tuned.tokenizer, labels, thresholds)
    fp32 = export_onnx(tuned.model, tuned.tokenizer, folder.parent / f"{folder.name}_fp32.onnx")
    quantize_as_configured(fp32, folder / "model.onnx", tuned.tokenizer, train_texts, config)
    info = {"version": "quality", "repo": "benchmark", "max_length": config.max_length, "precision": "int8"}
    write_manifest(folder, info)
    bundle = Bundle(folder, threads=torch.get_num_threads())
    return bundle.decide(bundle.probabilities(texts))


def training_process(config_path: Path | None) -> TrainingConfig:
    """The config of a benchmark that trains, and this process set up as a refresh sets up its own
    (quiet logs, freed memory kept, the config's threads)."""
    logging.basicConfig(level=logging.WARNING)
    config = TrainingConfig.from_file(config_path) if config_path else TrainingConfig()
    if config.keep_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(config.torch_threads or 2)
    return config


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="sklearn", help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--slices", default="all", help="training-set sizes, e.g. 32,64,128,all")
    parser.add_argument("--seeds", help="comma-separated training seeds (default: the config's)")
    parser.add_argument("--config", type=Path, help="training config (YAML/JSON) for the transformer runs")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    parser.add_argument(
        "--scores-dir", type=Path, help="also keep each transformer's validation and test scores (.npz) here"
    )
    parser.add_argument(
        "--encoders-dir",
        type=Path,
        help="keep each seed's adapted encoder here and reuse one adapted with the same settings "
        "(settings that act after adaptation, such as mlm_interpolation, can then be compared for "
        "the fine-tune's time alone)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also score each transformer as a refresh would serve it in INT8 (one issue at a time)",
    )
    args = parser.parse_args()
    config = training_process(args.config)
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [config.seed]
    base = resolve_base_model(config.base_model)
    results: list[dict[str, object]] = []
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            data = load_dataset(name, args.data_dir, workdir)
            n = len(data.texts("train"))
            sizes = [n if t == "all" else min(int(t), n) for t in args.slices.split(",")]
            for seed in seeds:
                seed_config = config.model_copy(update={"seed": seed})
                measured = _measure(
                    name,
                    data,
                    methods,
                    sizes,
                    base,
                    seed_config,
                    workdir,
                    args.scores_dir,
                    args.encoders_dir,
                    args.int8,
                )
                for row in measured:
                    results.append(row)
                    _write(args.out, config, results)  # a long run keeps what it measured
                    print(
                        f"{name:<10} {row['method']:<17} train {row['train_size']:>5}  seed {seed}  "
                        f"micro F1 {row['micro_f1']:.3f}  macro F1 {row['macro_f1']:.3f}  "
                        f"macro AP {row['macro_ap']:.3f}  "
                        + (f"INT8 micro F1 {row['int8_micro_f1']:.3f}  " if "int8_micro_f1" in row else "")
                        + f"({row['seconds']:.0f}s)",
                        flush=True,
                    )
    print(learning_curve_table(results))
    _write(args.out, config, results)
    print(f"written {args.out}")
    return 0


def _measure(
    name: str,
    data: IssueDataset,
    methods: list[str],
    sizes: list[int],
    base: str,
    config: TrainingConfig,
    workdir: Path,
    scores_dir: Path | None = None,
    encoders_dir: Path | None = None,
    with_int8: bool = False,
) -> Iterator[dict[str, object]]:
    """One row per training-set size and method, trained with ``config.seed``."""
    labels = data.label_names
    train_full = (data.texts("train"), data.targets("train"))
    validation = (data.texts("validation"), data.targets("validation"))
    test = (data.texts("test"), data.targets("test"))
    encoder = None
    if "finetune_adapted" in methods:
        started = time.monotonic()
        texts = [e.text for e in data.unlabeled] + train_full[0]
        kept_encoder = encoders_dir / adapted_encoder_name(name, config) if encoders_dir else None
        if kept_encoder is not None and (kept_encoder / "config.json").is_file():
            encoder = str(kept_encoder)
            print(f"{name}: the adapted encoder of {kept_encoder}")
        else:
            adapted = adapt_encoder(texts, base, kept_encoder or workdir / f"encoder-{config.seed}", config)
            encoder = str(adapted.encoder_dir)
            print(
                f"{name}: adapted on {len(texts)} texts in {time.monotonic() - started:.0f}s, held-out MLM "
                f"loss {adapted.held_out_loss_before:.3f} -> {adapted.held_out_loss_after:.3f}"
            )
    for size in dict.fromkeys(sizes):  # a slice larger than the training set is all of it
        train = training_slice(train_full, size, config.seed)
        for method in methods:
            started = time.monotonic()
            kept = scores_dir / f"{name}_{method}_{size}_seed{config.seed}.npz" if scores_dir else None
            if method == "naive_bayes":
                result = baselines.naive_bayes(labels, train, test)
            elif method == "tfidf_logreg":
                result = baselines.tfidf_logreg(labels, train, validation, test)
            elif method == "finetune":
                result = _transformer(base, base, data, train, config, workdir / "ft", kept, with_int8)
            else:
                assert encoder is not None
                result = _transformer(encoder, base, data, train, config, workdir / "fta", kept, with_int8)
            row = {
                "dataset": name,
                "method": method,
                "train_size": size,
                "seed": config.seed,
                "labels": len(labels),
                "test_size": len(test[0]),
                "split": data.split_method,
                "seconds": round(time.monotonic() - started, 1),
            }
            for key in (
                "micro_f1",
                "macro_f1",
                "macro_ap",
                "every_label_micro_f1",
                "every_label_macro_f1",
                "int8_micro_f1",
                "int8_macro_f1",
            ):
                if key in result:
                    row[key] = round(float(result[key]), 4)
            for key in ("applied_labels", "int8_changed_decisions"):
                if key in result:
                    row[key] = result[key]
            yield row


def adapted_encoder_name(dataset: str, config: TrainingConfig) -> str:
    """A folder name that changes with every setting the adaptation depends on (and with no other)."""
    settings = {
        key: value
        for key, value in config.model_dump().items()
        if (key.startswith("mlm_") and key not in AFTER_ADAPTATION)
        or key in ("base_model", "seed", "mixed_precision", "torch_threads")
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{dataset}-seed{config.seed}-{digest}"


def training_slice(train: tuple[list[str], np.ndarray], size: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``size`` training issues drawn with ``seed``, kept in the dataset's order: the whole
    training set is then exactly what a refresh with that seed trains on (the trainer's batches
    depend on the order, so a shuffled copy would be another draw than the refresh's)."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(train[0]))[:size])
    return [train[0][i] for i in pick], train[1][pick]


def _write(out: Path, config: TrainingConfig, results: list[dict[str, object]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "config": config.model_dump(),
                "cpu": cpu_info(),
                "training_precision": training_precision(config.mixed_precision),
                "results": results,
            },
            indent=2,
        )
    )


def learning_curve_table(results: list[dict[str, object]]) -> str:
    """Micro / macro F1 per dataset and method, one column per training-set size (mean over seeds)."""
    lines = []
    for dataset in dict.fromkeys(str(r["dataset"]) for r in results):
        rows = [r for r in results if r["dataset"] == dataset]
        sizes = sorted({int(r["train_size"]) for r in rows})  # type: ignore[call-overload]
        seeds = len({r.get("seed") for r in rows})
        over = f", mean of {seeds} seeds" if seeds > 1 else ""
        lines.append(f"{dataset} (micro / macro F1 by training issues{over})")
        lines.append(f"{'method':<18}" + "".join(f"{size:>14}" for size in sizes))
        for method in dict.fromkeys(str(r["method"]) for r in rows):
            cells: dict[int, list[dict[str, object]]] = {}
            for r in rows:
                if r["method"] == method:
                    cells.setdefault(int(r["train_size"]), []).append(r)  # type: ignore[call-overload]
            lines.append(
                f"{method:<18}"
                + "".join(
                    f"{_mean(cells[size], 'micro_f1'):>7.3f}/{_mean(cells[size], 'macro_f1'):.3f}"
                    if size in cells
                    else " " * 14
                    for size in sizes
                )
            )
    return "\n".join(lines)


def _mean(rows: list[dict[str, object]], key: str) -> float:
    return float(np.mean([float(r[key]) for r in rows]))  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
