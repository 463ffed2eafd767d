"""Multi-label fine-tuning: AutoModelForSequenceClassification, sigmoid + BCE.

Sparse labels make a plain BCE fine-tune collapse onto label frequencies, so positives are
weighted by the negative/positive ratio (capped), the fresh head starts from the label names'
features (``training.label_prior``) and learns faster than the encoder. The model kept is the
mean of the weights at the last ``average_last_epochs`` epoch ends, or (with 0) the checkpoint
best on validation by ``checkpoint_metric``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_linear_schedule_with_warmup,
    set_seed,
)
from transformers.utils import cached_file

from training.budget import Steps, training_steps
from training.classifier import load_classifier
from training.config import TrainingConfig
from training.label_prior import head_from_label_names, label_text
from training.metrics import best_global_threshold_f1, macro_average_precision
from training.precision import trained_model, training_precision
from training.pretrained import load_pretrained
from training.tokens import tokenized_dataset
from training.weight_average import WeightAverage

log = logging.getLogger(__name__)


@dataclass
class FineTuneResult:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    best_validation_micro_f1: float  # of the model kept, at the best single threshold
    seconds: float
    pos_weight: list[float]
    steps: Steps


class WeightedBCETrainer(Trainer):
    """BCE with per-label positive weights; the model's own loss has none."""

    def __init__(self, *args: object, pos_weight: torch.Tensor | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pos_weight = pos_weight

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        # in fp32 also under bf16 autocast: the loss of rare positives needs the precision
        logits = outputs.logits.float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), pos_weight=self.pos_weight
        )
        return (loss, outputs) if return_outputs else loss


def _copy_base_pooler(model: PreTrainedModel, base_model: str) -> bool:
    """An MLM checkpoint has no pooler; start from the base model's instead of a random one.

    A Hub name is read from the local cache that adaptation's download filled."""
    if not hasattr(model, "bert"):
        return False
    if Path(base_model).is_dir():
        weights: Path | None = Path(base_model) / "model.safetensors"
    else:
        cached = cached_file(base_model, "model.safetensors", _raise_exceptions_for_missing_entries=False)
        weights = Path(cached) if cached else None
    if weights is None or not weights.is_file():
        return False
    with safe_open(str(weights), "pt") as handle:
        keys = {key.removeprefix("bert."): key for key in handle.keys() if "pooler." in key}
        if not {"pooler.dense.weight", "pooler.dense.bias"} <= keys.keys():
            return False
        dense = _linear(model, "bert.pooler.dense")
        dense.weight.data.copy_(handle.get_tensor(keys["pooler.dense.weight"]))
        dense.bias.data.copy_(handle.get_tensor(keys["pooler.dense.bias"]))
    return True


def _linear(model: torch.nn.Module, name: str) -> torch.nn.Linear:
    layer = model.get_submodule(name)
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"{name} is a {type(layer).__name__}, not a linear layer")
    return layer


@torch.no_grad()
def interpolate_from_base(model: PreTrainedModel, base_model: str, share: float) -> int:
    """Set the classifier's encoder to base + ``share`` x (adapted - base), tensor by tensor.

    Adaptation buys the labels seen most often and costs the rarest their ranking (the issues'
    features drawn together); a point between the two encoders keeps part of each.
    """
    base = load_pretrained(AutoModel, base_model, add_pooling_layer=False).state_dict()
    moved = 0
    for name, tensor in model.base_model.state_dict().items():
        start = base.get(name)
        if start is None or not tensor.is_floating_point():
            continue  # the pooler, integer buffers
        if start.shape != tensor.shape:
            raise ValueError(f"{name}: the base model's {tuple(start.shape)} against {tuple(tensor.shape)}")
        tensor.copy_(start.to(tensor.dtype).lerp(tensor, share))
        moved += 1
    return moved


def initial_classifier(
    encoder: str, base_model: str, label_names: list[str], train_texts: list[str], config: TrainingConfig
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The classifier as fine-tuning starts it: pooler and head set, nothing trained yet
    (``benchmarks/zero_shot.py`` measures how it ranks)."""
    set_seed(config.seed)  # the fresh head is initialised from the global generator
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = load_classifier(
        encoder,
        config.pooling,
        attention_dropout=config.attention_dropout,
        num_labels=len(label_names),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    if config.pooling == "cls" and encoder != base_model and _copy_base_pooler(model, base_model):
        log.info("pooler copied from the base model (the adapted checkpoint has none)")
    if encoder != base_model and config.mlm_interpolation < 1:
        moved = interpolate_from_base(model, base_model, config.mlm_interpolation)
        log.info(
            "encoder started %.2f of the way from the base model to the adapted one (%d tensors)",
            config.mlm_interpolation,
            moved,
        )
    from_names = config.head_init in ("label_names", "label_topics")
    if from_names and isinstance(getattr(model, "classifier", None), torch.nn.Linear):
        shared_removed = config.head_init == "label_topics"
        start_head_from_label_names(
            model, tokenizer, label_names, train_texts, config.max_length, shared_removed
        )
        log.info("classifier head started from the features of the label names")
    elif from_names:  # e.g. RoBERTa's two-layer head
        log.warning("%s has no single linear classifier layer: its head starts at random", encoder)
    return model, tokenizer


def positive_weights(targets: np.ndarray, cap: float) -> torch.Tensor:
    positives = targets.sum(axis=0)
    negatives = targets.shape[0] - positives
    return torch.tensor(np.clip(negatives / np.maximum(positives, 1), 1.0, cap), dtype=torch.float32)


def finetune(
    encoder: str,
    base_model: str,
    label_names: list[str],
    train: tuple[list[str], np.ndarray],
    validation: tuple[list[str], np.ndarray],
    workdir: Path,
    config: TrainingConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> FineTuneResult:
    """Train a classifier from ``encoder``: the mean of its last epochs' weights, or the
    checkpoint best on validation (``config.average_last_epochs``). ``callbacks`` watch the
    training (benchmarks)."""
    started = time.monotonic()
    model, tokenizer = initial_classifier(encoder, base_model, label_names, train[0], config)
    train_set = tokenized_dataset(tokenizer, train[0], config.max_length).add_column(
        "labels", train[1].tolist()
    )
    validation_set = tokenized_dataset(tokenizer, validation[0], config.max_length).add_column(
        "labels", validation[1].tolist()
    )
    steps = training_steps(
        len(train_set),
        config.batch_size,
        config.epochs,
        exact=config.max_steps,
        budget=config.step_budget,
        stage="fine-tuning",
    )
    total_steps, eval_every = steps.total, steps.per_epoch

    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": body, "lr": config.learning_rate, "weight_decay": config.weight_decay},
            {"params": head, "lr": config.head_learning_rate, "weight_decay": 0.0},
        ]
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(total_steps * config.warmup_ratio), total_steps
    )
    pos_weight = positive_weights(train[1], config.pos_weight_cap) if config.pos_weight == "auto" else None

    averaging = WeightAverage(config.average_last_epochs, eval_every) if config.average_last_epochs else None
    if averaging:
        args = plain_training_args(workdir, config, total_steps, logging_steps=max(1, eval_every // 2))
    else:
        args = best_checkpoint_args(workdir, config, total_steps, eval_every)
    trainer = WeightedBCETrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=validation_metrics,
        optimizers=(optimizer, scheduler),
        pos_weight=pos_weight,
        callbacks=([averaging] if averaging else []) + (callbacks or []),
    )
    trainer.train()
    model = trained_model(trainer)
    model.eval()
    if averaging:
        model.load_state_dict(averaging.average(), strict=False)
        log.info("kept the mean of the weights after steps %s", list(averaging.steps))
        probabilities = predict_probabilities(model, tokenizer, validation[0], config.max_length)
        validation_f1 = best_global_threshold_f1(validation[1], probabilities)
    else:
        validation_f1 = best_checkpoint_micro_f1(trainer)
    return FineTuneResult(
        model=model,
        tokenizer=tokenizer,
        best_validation_micro_f1=validation_f1,
        seconds=time.monotonic() - started,
        pos_weight=pos_weight.tolist() if pos_weight is not None else [],
        steps=steps,
    )


def plain_training_args(
    workdir: Path, config: TrainingConfig, total_steps: int, **extra: object
) -> TrainingArguments:
    """Trainer arguments for ``total_steps`` of training on the CPU, nothing evaluated or saved
    unless ``extra`` says so (fine-tuning and distillation alike)."""
    arguments: dict[str, object] = {
        "output_dir": str(workdir),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": 32,
        "max_steps": total_steps,
        "train_sampling_strategy": "group_by_length" if config.group_by_length else "random",
        "save_strategy": "no",
        "use_cpu": True,
        "bf16": training_precision(config.mixed_precision) == "bf16",
        "seed": config.seed,
        "report_to": [],
    }
    return TrainingArguments(**(arguments | extra))  # type: ignore[arg-type]


def best_checkpoint_args(
    workdir: Path, config: TrainingConfig, total_steps: int, eval_every: int, **extra: object
) -> TrainingArguments:
    """Trainer arguments that evaluate and checkpoint every ``eval_every`` steps and end on the
    checkpoint best on validation by ``config.checkpoint_metric`` (``validation_metrics``
    computes it)."""
    return plain_training_args(
        workdir,
        config,
        total_steps,
        eval_strategy="steps",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=eval_every,
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=config.checkpoint_metric,
        greater_is_better=True,
        logging_steps=max(1, eval_every // 2),
        **extra,
    )


def validation_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Checkpoint selection on the validation split: micro-F1 at the best single threshold and
    the labels' mean average precision (see ``TrainingConfig.checkpoint_metric``)."""
    logits = prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    probabilities = 1 / (1 + np.exp(-logits))
    targets = prediction.label_ids
    if isinstance(targets, tuple):
        targets = targets[0]
    return {
        "micro_f1": best_global_threshold_f1(targets, probabilities),
        "macro_ap": macro_average_precision(targets, probabilities),
    }


def best_checkpoint_micro_f1(trainer: Trainer) -> float:
    """Validation micro-F1 of the checkpoint the trainer ended on, whichever metric chose it."""
    for entry in trainer.state.log_history:
        if entry.get("step") == trainer.state.best_global_step and "eval_micro_f1" in entry:
            return float(entry["eval_micro_f1"])
    return float("nan")


def predict_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Sigmoid probabilities from the PyTorch model, in batches."""
    return 1 / (1 + np.exp(-predict_logits(model, tokenizer, texts, max_length, batch_size)))


@torch.no_grad()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    batch_size: int = 32,
) -> np.ndarray:
    """The PyTorch model's logits, in batches."""
    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        chunks.append(model(**encoded).logits.numpy())
    if not chunks:
        return np.zeros((0, model.config.num_labels or 0), dtype=np.float32)
    return np.concatenate(chunks)


def start_head_from_label_names(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    label_names: list[str],
    train_texts: list[str],
    max_length: int,
    shared_removed: bool = False,
) -> None:
    """Set the classifier head from the label names' features (``training.label_prior``)."""
    issues = classifier_inputs(model, tokenizer, train_texts, max_length)
    names = classifier_inputs(model, tokenizer, [label_text(n) for n in label_names], max_length)
    weight, bias = head_from_label_names(issues, names, shared_removed)
    head = _linear(model, "classifier")
    head.weight.data.copy_(weight)
    head.bias.data.copy_(bias)


@torch.no_grad()
def classifier_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """What the classifier layer receives for each text (the pooled issue), in eval mode."""
    captured: list[torch.Tensor] = []
    hook = model.get_submodule("classifier").register_forward_pre_hook(
        lambda _layer, args: captured.append(args[0].float())
    )
    try:
        predict_logits(model, tokenizer, texts, max_length, batch_size)
    finally:
        hook.remove()
    return torch.cat(captured)
