"""Domain adaptation: masked-language modelling of the encoder on the repository's own text.

The packaged sentence encoder ships without an MLM head, so the head starts random: it is first
trained alone with the encoder frozen (otherwise its random gradients wreck the encoder), then the
whole model trains. Only unlabeled and training-split text is used, never validation or test.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from training.budget import Steps, training_steps
from training.config import TrainingConfig
from training.dropout import attention_dropout_of, restore_attention_dropout, set_attention_dropout
from training.precision import trained_model, training_precision
from training.pretrained import load_pretrained
from training.tokens import tokenized_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptResult:
    encoder_dir: Path
    texts: int
    held_out_loss_before: float
    held_out_loss_after: float
    seconds: float
    tokens_trained: int  # positions, padding included, that adaptation ran forward and backward
    tokens_viewed: int  # positions the contrastive term's unmasked views ran forward only
    steps: Steps


class MaskedOnlyTrainer(Trainer):
    """MLM loss with vocabulary logits computed only at masked positions.

    The vocabulary projection (30k outputs per token) dominates an MLM step of a small encoder;
    only the ~15% masked positions contribute to the loss, so the others are skipped. With
    ``frozen_encoder`` (the head warm-up) the encoder runs in eval mode without gradients: nothing
    of it is trained, and with its dropout and autograd a warm-up step took ~3 s instead of <1 s.
    """

    def __init__(
        self,
        *args: Any,
        frozen_encoder: bool = False,
        anchor: PreTrainedModel | None = None,
        keep_features: float = 0.0,
        keep_geometry: float = 0.0,
        contrastive: float = 0.0,
        temperature: float = 0.05,
        view_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.frozen_encoder = frozen_encoder
        self.anchor = anchor
        self.keep_features = keep_features
        self.keep_geometry = keep_geometry
        self.contrastive = contrastive
        self.temperature = temperature
        self.view_tokens = view_tokens
        self.tokens_trained = 0
        self.tokens_viewed = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        if not return_outputs:
            self.tokens_trained += inputs["input_ids"].numel()
        head = _mlm_head(model)
        if head is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        masked = labels != -100
        encoder = cast(PreTrainedModel, model).base_model
        # the encoder and head are called directly, past the autocast that wraps model.forward
        with self.accelerator.autocast():
            if self.frozen_encoder:
                encoder.eval()
                with torch.no_grad():
                    hidden = encoder(**inputs).last_hidden_state
            else:
                hidden = encoder(**inputs).last_hidden_state
            logits = head(hidden[masked])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[masked])
            if self.anchor is not None and (self.keep_features > 0 or self.keep_geometry > 0):
                with torch.no_grad():
                    target = self.anchor(**inputs).last_hidden_state
                real = inputs["attention_mask"].bool()
                if self.keep_features > 0:
                    loss = loss + self.keep_features * _feature_drift(target, hidden, real & ~masked)
                if self.keep_geometry > 0:
                    loss = loss + self.keep_geometry * _geometry_drift(target, hidden, real)
            if self.contrastive > 0 and not self.frozen_encoder:
                unmasked = {**inputs, "input_ids": torch.where(masked, labels, inputs["input_ids"])}
                if self.view_tokens is not None:
                    # a text's opening is enough to tell it from the others, at a fraction of the cost
                    unmasked = {name: value[:, : self.view_tokens] for name, value in unmasked.items()}
                self.tokens_viewed += unmasked["input_ids"].numel()
                with torch.no_grad():
                    view = encoder(**unmasked).last_hidden_state
                real = inputs["attention_mask"].bool()
                loss = loss + self.contrastive * _contrastive(hidden, view, real, self.temperature)
        return loss


def _feature_drift(target: torch.Tensor, hidden: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine between the encoder's and the anchor's (the base model's) last token states
    at the real, unmasked positions of the same input: what a classifier pools from."""
    if not kept.any():
        return hidden.new_zeros(())
    similarity = torch.nn.functional.cosine_similarity(hidden[kept].float(), target[kept].float(), dim=-1)
    return 1 - similarity.mean()


def _geometry_drift(target: torch.Tensor, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the cosines of every pair of texts in the batch, under the
    encoder and under the anchor: each text's [CLS] state and its mean token state. Unlike
    ``_feature_drift`` the features may move anywhere as long as the texts keep their distances
    from each other, which MLM alone shrinks (a sentence encoder's issues all end up alike)."""
    if hidden.shape[0] < 2:
        return hidden.new_zeros(())
    weights = real.unsqueeze(-1).to(hidden.dtype)
    drift = hidden.new_zeros((), dtype=torch.float32)
    for pooled, anchored in (
        (hidden[:, 0], target[:, 0]),
        ((hidden * weights).sum(1) / weights.sum(1), (target * weights).sum(1) / weights.sum(1)),
    ):
        drift = drift + torch.nn.functional.mse_loss(_pairwise_cosines(pooled), _pairwise_cosines(anchored))
    return drift / 2


def _contrastive(
    hidden: torch.Tensor, view: torch.Tensor, real: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE with the other texts of the batch as negatives: each masked text's pooled state
    ([CLS] and mean of tokens, averaged) must be nearer its own unmasked view (the same encoder,
    its own dropout, no gradient) than any other text's. MLM alone pulls every issue's features
    together; this keeps them apart where the texts differ, without holding them to the base's.
    The view may cover only the first positions of the texts; its mean is over those."""
    if hidden.shape[0] < 2:
        return hidden.new_zeros(())
    weights = real.unsqueeze(-1).to(hidden.dtype)
    view_weights = weights[:, : view.shape[1]]
    targets = torch.arange(hidden.shape[0], device=hidden.device)
    loss = hidden.new_zeros((), dtype=torch.float32)
    for pooled, viewed in (
        (hidden[:, 0], view[:, 0]),
        ((hidden * weights).sum(1) / weights.sum(1), (view * view_weights).sum(1) / view_weights.sum(1)),
    ):
        query = torch.nn.functional.normalize(pooled.float(), dim=-1)
        key = torch.nn.functional.normalize(viewed.float(), dim=-1)
        loss = loss + torch.nn.functional.cross_entropy(query @ key.T / temperature, targets)
    return loss / 2


def _pairwise_cosines(features: torch.Tensor) -> torch.Tensor:
    normalized = torch.nn.functional.normalize(features.float(), dim=-1)
    similarity = normalized @ normalized.T
    n = similarity.shape[0]
    return similarity[~torch.eye(n, dtype=torch.bool, device=similarity.device)]


def _mlm_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The prediction head of the usual MLM architectures (BERT ``cls``, RoBERTa ``lm_head``)."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    return None


def _train(
    model: PreTrainedModel,
    dataset: Dataset,
    collator: DataCollatorForLanguageModeling,
    workdir: Path,
    config: TrainingConfig,
    *,
    epochs: float,
    max_steps: int | None,
    frozen_encoder: bool = False,
    anchor: PreTrainedModel | None = None,
) -> MaskedOnlyTrainer:
    args = TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=config.mlm_batch_size,
        learning_rate=config.mlm_learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps is not None else -1,
        warmup_steps=0.06,
        weight_decay=0.01,
        save_strategy="no",
        logging_steps=50,
        use_cpu=True,
        bf16=training_precision(config.mixed_precision) == "bf16",
        seed=config.seed,
        report_to=[],
        disable_tqdm=False,
        train_sampling_strategy="group_by_length" if config.mlm_group_by_length else "random",
    )
    trainer = MaskedOnlyTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        frozen_encoder=frozen_encoder,
        anchor=anchor,
        keep_features=config.mlm_keep_features,
        keep_geometry=config.mlm_keep_geometry,
        contrastive=config.mlm_contrastive,
        temperature=config.mlm_contrastive_temperature,
        view_tokens=config.mlm_contrastive_view_tokens,
    )
    trainer.train()
    trained_model(trainer)  # the same model object, its forward back to fp32
    return trainer


def _anchor(base_model: str) -> PreTrainedModel:
    """The base encoder, frozen in eval mode, whose features adaptation is held near."""
    anchor = load_pretrained(AutoModel, base_model, add_pooling_layer=False)
    anchor.eval()
    for parameter in anchor.parameters():
        parameter.requires_grad = False
    return anchor


@torch.no_grad()
def masked_lm_loss(
    model: PreTrainedModel, dataset: Dataset, collator: DataCollatorForLanguageModeling, batch_size: int
) -> float:
    """Mean MLM loss on a fixed masking of held-out text (the collator is seeded); like training,
    vocabulary logits only at the masked positions."""
    model.eval()
    head = _mlm_head(model)
    losses, weights = [], []
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        labels = batch.pop("labels")
        masked = labels != -100
        count = int(masked.sum())
        if count == 0:
            continue
        if head is None:
            loss = model(**batch, labels=labels).loss
        else:
            hidden = model.base_model(**batch).last_hidden_state
            loss = torch.nn.functional.cross_entropy(head(hidden[masked]), labels[masked])
        losses.append(float(loss) * count)
        weights.append(count)
    model.train()
    return sum(losses) / max(sum(weights), 1)


def adapt_encoder(texts: list[str], base_model: str, output_dir: Path, config: TrainingConfig) -> AdaptResult:
    """MLM on ``texts``; the adapted encoder (with tokenizer) is saved to ``output_dir``."""
    started = time.monotonic()
    set_seed(config.seed)  # the fresh MLM head is initialised from the global generator
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model_config = AutoConfig.from_pretrained(base_model)
    base_dropout = attention_dropout_of(model_config)
    set_attention_dropout(model_config, config.mlm_attention_dropout)
    model = load_pretrained(AutoModelForMaskedLM, base_model, config=model_config)
    held_out_n = max(1, min(200, len(texts) // 10))
    train_texts, held_out_texts = texts[held_out_n:], texts[:held_out_n]
    train_set = tokenized_dataset(tokenizer, train_texts, config.mlm_max_length)
    held_out = tokenized_dataset(tokenizer, held_out_texts, config.mlm_max_length)
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=config.mlm_probability, seed=config.seed
    )

    def held_out_loss() -> float:
        # a fresh seeded collator each time, so that before and after see the same masking
        eval_collator = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=config.mlm_probability, seed=config.seed + 1
        )
        return masked_lm_loss(model, held_out, eval_collator, config.mlm_batch_size)

    workdir = output_dir.parent / f"{output_dir.name}.work"

    if config.mlm_head_warmup_steps:
        encoder = model.base_model
        for parameter in encoder.parameters():
            parameter.requires_grad = False
        _train(
            model,
            train_set,
            collator,
            workdir,
            config,
            epochs=1,
            max_steps=config.mlm_head_warmup_steps,
            frozen_encoder=True,
        )
        for parameter in encoder.parameters():
            parameter.requires_grad = True
    if config.mlm_freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad = False
    before = held_out_loss()
    log.info("MLM held-out loss after head warm-up: %.3f", before)

    steps = training_steps(
        len(train_set),
        config.mlm_batch_size,
        config.mlm_epochs,
        exact=config.mlm_max_steps,
        budget=config.mlm_step_budget,
        stage="adaptation",
    )
    anchor = _anchor(base_model) if config.mlm_keep_features > 0 or config.mlm_keep_geometry > 0 else None
    adapting = _train(
        model,
        train_set,
        collator,
        workdir,
        config,
        epochs=config.mlm_epochs,
        max_steps=steps.total,
        anchor=anchor,
    )
    after = held_out_loss()
    log.info("MLM held-out loss after adaptation: %.3f (was %.3f)", after, before)

    # the saved encoder keeps the base model's dropout: fine-tuning decides its own
    restore_attention_dropout(model.config, base_dropout)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(workdir, ignore_errors=True)  # the trainers' scratch, nothing kept there
    return AdaptResult(
        encoder_dir=output_dir,
        texts=len(texts),
        held_out_loss_before=before,
        held_out_loss_after=after,
        seconds=time.monotonic() - started,
        tokens_trained=adapting.tokens_trained,
        tokens_viewed=adapting.tokens_viewed,
        steps=steps,
    )
