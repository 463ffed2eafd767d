"""Which weights to keep from a fine-tune: the checkpoint best on validation, or the mean of the
last epochs' weights.

One adapted fine-tune per seed (the dataset and training order of a refresh, as in quality.py)
with checkpoints chosen by ``checkpoint_metric``; its weights at every epoch end are kept, so
each candidate — the validation-best checkpoint, the mean of the last k epochs, the final
weights — is scored from the same training run: thresholds tuned on validation, test F1 as
served, and the labels' mean average precision. About 18 min per seed on 2 cores.

    python -m benchmarks.weight_averaging --seeds 42,43,44 --last 2,3,5
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.quality import DATASETS, load_dataset
from training.adapt import adapt_encoder
from training.allocator import keep_freed_memory
from training.config import TrainingConfig, resolve_base_model
from training.finetune import FineTuneResult, finetune, predict_probabilities
from training.machine import cpu_info
from training.metrics import decide, macro_average_precision, scores, tune_thresholds
from training.quickstart import DEFAULT_DATA_DIR
from training.weight_average import WeightAverage, mean_weights

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="sklearn", choices=list(DATASETS))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--last", default="2,3,5", help="numbers of last epochs to average")
    parser.add_argument("--config", type=Path, help="training config (YAML/JSON)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "weight_averaging.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = TrainingConfig.from_file(args.config) if args.config else TrainingConfig()
    config = config.model_copy(update={"average_last_epochs": 0})  # the best checkpoint, and watch
    if config.keep_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(config.torch_threads or 2)
    lasts = [int(k) for k in args.last.split(",")]
    base = resolve_base_model(config.base_model)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = load_dataset(args.dataset, args.data_dir, workdir)
        labels = data.label_names
        validation = (data.texts("validation"), data.targets("validation"))
        test = (data.texts("test"), data.targets("test"))
        for seed in (int(s) for s in args.seeds.split(",")):
            seed_config = config.model_copy(update={"seed": seed})
            started = time.monotonic()
            train = (data.texts("train"), data.targets("train"))  # a refresh's order
            texts = [e.text for e in data.unlabeled] + train[0]
            encoder = adapt_encoder(texts, base, workdir / f"encoder-{seed}", seed_config).encoder_dir
            steps_per_epoch = -(-len(train[0]) // config.batch_size)
            epochs = WeightAverage(count=None, every=steps_per_epoch)  # every epoch end
            tuned = finetune(
                str(encoder), base, labels, train, validation, workdir / f"ft-{seed}", seed_config, [epochs]
            )
            seconds = time.monotonic() - started
            candidates = {"best checkpoint": {k: v.clone() for k, v in tuned.model.state_dict().items()}}
            snapshots = list(epochs.snapshots)
            for k in lasts:
                candidates[f"mean of last {k}"] = mean_weights(snapshots[-k:])
            candidates["final"] = snapshots[-1]
            for name, weights in candidates.items():
                tuned.model.load_state_dict(weights, strict=False)
                row = _score(tuned, labels, validation, test, seed_config) | {
                    "seed": seed,
                    "kept": name,
                    "train_seconds": round(seconds, 1),
                }
                rows.append(row)
                print(
                    f"seed {seed} {name:<16} micro F1 {row['micro_f1']:.3f}  macro F1 {row['macro_f1']:.3f}  "
                    f"precision {row['micro_precision']:.3f}  macro AP {row['macro_ap']:.3f}",
                    flush=True,
                )
                _write(args.out, config, rows)
    print(table(rows))
    print(f"written {args.out}")
    return 0


def _score(
    tuned: FineTuneResult,
    labels: list[str],
    validation: tuple[list[str], np.ndarray],
    test: tuple[list[str], np.ndarray],
    config: TrainingConfig,
) -> dict[str, float]:
    model, tokenizer = tuned.model, tuned.tokenizer
    validation_probs = predict_probabilities(model, tokenizer, validation[0], config.max_length)
    thresholds = tune_thresholds(labels, validation[1], validation_probs, **config.threshold_args())
    test_probs = predict_probabilities(model, tokenizer, test[0], config.max_length)
    served = scores(labels, test[1], decide(test_probs, labels, thresholds))
    return {
        key: round(float(served[key]), 4)
        for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall")
    } | {
        "macro_ap": round(macro_average_precision(test[1], test_probs), 4),
        "validation_macro_ap": round(macro_average_precision(validation[1], validation_probs), 4),
    }


def table(rows: list[dict[str, object]]) -> str:
    """Micro / macro F1 as served per seed and kept weights, with the mean over seeds."""
    seeds = list(dict.fromkeys(int(r["seed"]) for r in rows))  # type: ignore[call-overload]
    lines = [f"{'kept':<18}" + "".join(f"{'seed ' + str(s):>14}" for s in seeds) + f"{'mean':>14}"]
    for kept in dict.fromkeys(str(r["kept"]) for r in rows):
        cells = {int(r["seed"]): r for r in rows if r["kept"] == kept}  # type: ignore[call-overload]
        line = f"{kept:<18}" + "".join(
            f"{cells[s]['micro_f1']:>7.3f}/{cells[s]['macro_f1']:.3f}" if s in cells else " " * 14
            for s in seeds
        )
        micro = np.mean([float(c["micro_f1"]) for c in cells.values()])  # type: ignore[arg-type]
        macro = np.mean([float(c["macro_f1"]) for c in cells.values()])  # type: ignore[arg-type]
        lines.append(line + f"{micro:>7.3f}/{macro:.3f}")
    return "\n".join(lines)


def _write(out: Path, config: TrainingConfig, rows: list[dict[str, object]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config.model_dump(), "cpu": cpu_info(), "results": rows}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
