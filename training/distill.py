"""Knowledge distillation: a shallower student learns the fine-tuned classifier's scores.

Chapter 8's recipe, for multi-label: the student starts from the teacher itself (embeddings,
every other layer, pooler and head), then learns from the teacher's temperature-softened
sigmoid scores on the training issues and on the unlabeled ones (which the teacher labels for
free), plus the maintainers' labels where there are some. Half the layers is about half the
serving time; the refresh serves the student only if it keeps the teacher's validation F1.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

from training.config import TrainingConfig
from training.dataset import IssueDataset
from training.finetune import (
    best_checkpoint_args,
    best_checkpoint_micro_f1,
    predict_logits,
    validation_metrics,
)
from training.precision import trained_model
from training.tokens import tokenized_dataset

log = logging.getLogger(__name__)


@dataclass
class DistillResult:
    model: PreTrainedModel
    layers_kept: list[int]
    texts: int
    best_validation_micro_f1: float
    seconds: float


def keep_layers(total: int, keep: int) -> list[int]:
    """Evenly spaced teacher layers ending with the last one (for 3 of 6: 1, 3, 5)."""
    if not 1 <= keep < total:
        raise ValueError(f"a student keeps between 1 and {total - 1} of {total} layers, not {keep}")
    step = total / keep
    return [round(total - 1 - step * i) for i in reversed(range(keep))]


def _layer_stack(model: PreTrainedModel) -> tuple[torch.nn.Module, str]:
    """The module holding the encoder's layers and the list's name: ``encoder.layer`` in BERT,
    RoBERTa and ELECTRA, ``transformer.layer`` in DistilBERT."""
    total = model.config.num_hidden_layers
    for module in model.base_model.modules():
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == total:
                return module, name
    raise ValueError(f"no list of {total} layers found in the {model.config.model_type} encoder to distil")


def shallow_copy(teacher: PreTrainedModel, keep: int) -> tuple[PreTrainedModel, list[int]]:
    """The teacher with only ``keep`` of its encoder layers: the student's starting point."""
    student = copy.deepcopy(teacher)
    owner, name = _layer_stack(student)
    layers = getattr(owner, name)
    kept = keep_layers(len(layers), keep)
    setattr(owner, name, torch.nn.ModuleList([layers[i] for i in kept]))
    student.config.num_hidden_layers = keep
    return student, kept


class DistillationTrainer(Trainer):
    """Loss: alpha x BCE on maintainers' labels (where known) + (1 - alpha) x T^2 x BCE against
    the teacher's scores at temperature T."""

    def __init__(
        self,
        *args: object,
        alpha: float,
        temperature: float,
        pos_weight: torch.Tensor | None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alpha = alpha
        self.temperature = temperature
        self.pos_weight = pos_weight

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop("teacher_logits", None)
        known = inputs.pop("labeled", None)
        outputs = model(**inputs)
        logits = outputs.logits.float()  # the loss in fp32 also under bf16 autocast
        if teacher_logits is None:  # evaluation on the validation split: plain BCE
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            return (loss, outputs) if return_outputs else loss
        t = self.temperature
        soft = torch.nn.functional.binary_cross_entropy_with_logits(
            logits / t, torch.sigmoid(teacher_logits / t)
        ) * (t * t)
        hard_each = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), pos_weight=self.pos_weight, reduction="none"
        ).mean(dim=1)
        mask = known.to(logits.dtype)  # type: ignore[union-attr]
        hard = (hard_each * mask).sum() / mask.sum().clamp(min=1.0)
        loss = self.alpha * hard + (1 - self.alpha) * soft
        return (loss, outputs) if return_outputs else loss


def distill(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: tuple[list[str], np.ndarray],
    unlabeled: list[str],
    validation: tuple[list[str], np.ndarray],
    workdir: Path,
    config: TrainingConfig,
    pos_weight: torch.Tensor | None,
) -> DistillResult:
    """A ``config.distill_layers``-layer student, best checkpoint on validation as in fine-tuning."""
    assert config.distill_layers is not None
    started = time.monotonic()
    set_seed(config.seed)
    extra = unlabeled[: config.distill_max_unlabeled]
    texts = train[0] + extra
    hard = np.vstack([train[1], np.zeros((len(extra), train[1].shape[1]), dtype=train[1].dtype)])
    labeled = [1] * len(train[0]) + [0] * len(extra)
    teacher_logits = predict_logits(teacher, tokenizer, texts, config.max_length)
    student, kept = shallow_copy(teacher, config.distill_layers)
    log.info(
        "distilling %d layers (teacher layers %s) on %d issues (%d unlabeled)",
        len(kept),
        kept,
        len(texts),
        len(extra),
    )
    train_set = (
        tokenized_dataset(tokenizer, texts, config.max_length)
        .add_column("labels", hard.tolist())
        .add_column("teacher_logits", teacher_logits.tolist())
        .add_column("labeled", labeled)
    )
    validation_set = tokenized_dataset(tokenizer, validation[0], config.max_length).add_column(
        "labels", validation[1].tolist()
    )
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = config.max_steps or math.ceil(steps_per_epoch * config.distill_epochs)
    eval_every = min(steps_per_epoch, total_steps)
    args = best_checkpoint_args(
        workdir,
        config,
        total_steps,
        eval_every,
        learning_rate=config.distill_learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=math.ceil(total_steps * config.warmup_ratio),
        remove_unused_columns=False,  # the teacher's logits and the labeled mask go to the loss
    )

    trainer = DistillationTrainer(
        model=student,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=validation_metrics,
        alpha=config.distill_alpha,
        temperature=config.distill_temperature,
        pos_weight=pos_weight,
    )
    trainer.train()
    model = trained_model(trainer)
    model.eval()
    return DistillResult(
        model=model,
        layers_kept=kept,
        texts=len(texts),
        best_validation_micro_f1=best_checkpoint_micro_f1(trainer),
        seconds=time.monotonic() - started,
    )


def distill_dataset(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: IssueDataset,
    workdir: Path,
    config: TrainingConfig,
    pos_weight: torch.Tensor | None,
) -> DistillResult:
    """``distill`` on a dataset's recorded splits: its training and unlabeled issues to learn
    from, its validation split to pick the best checkpoint."""
    return distill(
        teacher,
        tokenizer,
        (dataset.texts("train"), dataset.targets("train")),
        [example.text for example in dataset.unlabeled],
        (dataset.texts("validation"), dataset.targets("validation")),
        workdir,
        config,
        pos_weight,
    )
