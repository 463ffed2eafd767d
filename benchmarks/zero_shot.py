"""Zero-shot ranking: how well the classifier ranks before fine-tuning trains anything.

The head starts from the label names' features (``training.label_prior``), so an encoder whose
pooled features place an issue near the words of its label starts fine-tuning ahead, most of all
for rare labels. This measures that start — the labels' mean average precision (``macro_ap``)
on the validation and test issues of the untrained classifier, built exactly as fine-tuning builds
it — for the base encoder, optionally one adapted here with the config's MLM settings
(``--adapt``) and any others given, each with [CLS] + pooler and with mean pooling. It explains
differences, it does not predict them: fine-tuning moves every row of the head.

    python benchmarks/zero_shot.py --adapt
    python benchmarks/zero_shot.py --adapt --config gentler.yml --keep-encoder /tmp/adapted
    python benchmarks/zero_shot.py --encoder adapted=/tmp/adapted
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.quality import DATASETS, RESULTS, load_dataset, training_process
from training.adapt import adapt_encoder
from training.config import TrainingConfig, resolve_base_model
from training.dataset import IssueDataset
from training.finetune import classifier_inputs, initial_classifier
from training.machine import cpu_info
from training.metrics import macro_average_precision
from training.quickstart import DEFAULT_DATA_DIR

POOLINGS = ("cls", "mean")


def zero_shot(encoder: str, base: str, data: IssueDataset, config: TrainingConfig) -> dict[str, float]:
    """Macro AP on validation and test of the untrained classifier from ``encoder``, and the mean
    cosine between the validation issues' pooled features: near 1 when an encoder has pulled every
    issue together (what masked-language modelling does to a sentence encoder's features)."""
    model, tokenizer = initial_classifier(encoder, base, data.label_names, data.texts("train"), config)
    result, pooled = {}, {}
    for split in ("validation", "test"):
        pooled[split] = classifier_inputs(model, tokenizer, data.texts(split), config.max_length)
        with torch.no_grad():  # the classifier layer is all that is left of the forward pass
            logits = model.get_submodule("classifier")(pooled[split]).numpy()
        result[split] = round(macro_average_precision(data.targets(split), logits), 4)
    features = torch.nn.functional.normalize(pooled["validation"], dim=1)
    similarity = features @ features.T
    n = similarity.shape[0]
    result["pairwise_cosine"] = round(float((similarity.sum() - similarity.trace()) / (n * (n - 1))), 4)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="sklearn", choices=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--config", type=Path, help="training config (YAML/JSON): MLM settings, seed")
    parser.add_argument("--adapt", action="store_true", help="also adapt the base encoder here")
    parser.add_argument("--keep-encoder", type=Path, help="save the encoder adapted here to this folder")
    parser.add_argument(
        "--encoder", action="append", default=[], metavar="NAME=PATH", help="another encoder to measure"
    )
    parser.add_argument("--poolings", default=",".join(POOLINGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "zero_shot.json")
    args = parser.parse_args()
    config = training_process(args.config)
    base = resolve_base_model(config.base_model)
    encoders = {"base": base}
    for given in args.encoder:
        name, _, path = given.partition("=")
        if not path or not (Path(path) / "config.json").is_file():
            parser.error(f"--encoder {given!r}: expected NAME=PATH of a saved encoder folder")
        encoders[name] = path
    poolings = args.poolings.split(",")
    if unknown := set(poolings) - set(POOLINGS):
        parser.error(f"unknown pooling {sorted(unknown)}; choose from {', '.join(POOLINGS)}")

    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = load_dataset(args.dataset, args.data_dir, workdir)
        if args.adapt:
            started = time.monotonic()
            texts = [e.text for e in data.unlabeled] + data.texts("train")
            adapted = adapt_encoder(texts, base, args.keep_encoder or workdir / "adapted", config)
            print(
                f"adapted on {len(texts)} texts in {time.monotonic() - started:.0f}s, held-out MLM loss "
                f"{adapted.held_out_loss_before:.3f} -> {adapted.held_out_loss_after:.3f}",
                flush=True,
            )
            encoders["adapted"] = str(adapted.encoder_dir)
        print(f"{'encoder':<18} {'pooling':<8} {'validation AP':>14} {'test AP':>8} {'pairwise cosine':>17}")
        for name, path in encoders.items():
            for pooling in poolings:
                measured = zero_shot(path, base, data, config.model_copy(update={"pooling": pooling}))
                results.append({"encoder": name, "path": path, "pooling": pooling, **measured})
                print(
                    f"{name:<18} {pooling:<8} {measured['validation']:>14.3f} {measured['test']:>8.3f} "
                    f"{measured['pairwise_cosine']:>17.3f}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"dataset": args.dataset, "config": config.model_dump(), "cpu": cpu_info(), "results": results},
            indent=2,
        )
    )
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
