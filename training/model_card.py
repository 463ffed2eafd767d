"""A short model card written into every bundle: what it learned, how well, on what data."""

from __future__ import annotations

from training.config import TrainingConfig
from training.metrics import Thresholds


def model_card(metrics: dict, manifest: dict, config: TrainingConfig, thresholds: Thresholds) -> str:
    test, base = metrics["test"], metrics["baselines"]
    counts = manifest["counts"]
    lines = [
        f"# Issue labeler model {metrics['version']} for {metrics['repo']}",
        "",
        f"Base model `{config.base_model}`, "
        + (
            "domain-adapted with masked-language modelling on the repository's issues, "
            if config.adapt
            else ""
        )
        + f"fine-tuned for multi-label classification (sigmoid + BCE), max {config.max_length} tokens. "
        f"Served as ONNX {metrics['served_precision']} ({metrics['served_precision_reason']}).",
        *(["", f"Distillation: {metrics['distillation']['reason']}."] if metrics.get("distillation") else []),
        "",
        f"Data: {counts['train']} training, {counts['validation']} validation and "
        f"{counts['test']} test issues "
        f"({manifest['split_method']} split, hash `{manifest['split_hash'][:16]}`), "
        f"{counts['unlabeled']} unlabeled issues for adaptation.",
        "",
        "| model | test micro F1 | test macro F1 | test macro AP (ranking, no threshold) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {row['micro_f1']:.3f} | {row['macro_f1']:.3f} | {row['macro_ap']:.3f} |"
            for name, row in (
                ("this model", test),
                ("Naive Bayes", base["naive_bayes"]),
                ("TF-IDF + logistic regression", base["tfidf_logreg"]),
            )
        ),
        "",
        "| label | threshold | applied by the bot | validation F1 | test precision | test recall "
        "| test support |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in test["per_label"].items():
        lines.append(
            f"| {name} | {thresholds.values[name]:.2f} | {'yes' if thresholds.reliable[name] else 'no'} | "
            f"{thresholds.validation_f1[name]:.2f} | {row['precision']:.2f} | {row['recall']:.2f} "
            f"| {row['support']} |"
        )
    lines += [
        "",
        "Labels marked 'no' had too little validation support or too low a validation F1: the bot never "
        f"applies them. Labels with fewer than {config.per_label_min_support} validation positives share "
        "one threshold and are judged together"
        + (
            f" (pooled validation F1 {thresholds.shared_group_f1:.2f})"
            if thresholds.shared_group_f1 is not None
            else ""
        )
        + ". Labels applied by issue forms and workflow labels are not learned: "
        + (", ".join(sorted(manifest["not_learned"])) or "none")
        + ".",
    ]
    return "\n".join(lines) + "\n"
