"""The classifier architecture: BERT's sequence classifier, pooled from [CLS] or by the mean.

all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling, so the mean of its token
states is a meaningful issue embedding from the first step; the [CLS] pooler of the original
MiniLM is not. Which works better is measured (benchmarks/quality.py), not assumed.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from training.dropout import set_attention_dropout
from training.pretrained import load_pretrained

log = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]


class MeanPooledBertForSequenceClassification(BertForSequenceClassification):
    """BertForSequenceClassification with the masked mean of the last hidden states as input."""

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: object,
    ) -> SequenceClassifierOutput:
        hidden = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_classifier(
    path: str, pooling: Pooling = "cls", attention_dropout: float | None = None, **kwargs: object
) -> PreTrainedModel:
    """A multi-label classifier from an encoder or a saved classifier folder.

    A saved classifier remembers its pooling in its config (``issue_labeler_pooling``).
    """
    config = AutoConfig.from_pretrained(path, **kwargs)
    set_attention_dropout(config, attention_dropout)
    pooling = getattr(config, "issue_labeler_pooling", None) or pooling
    if pooling == "mean" and config.model_type == "bert":
        config.issue_labeler_pooling = "mean"
        return load_pretrained(MeanPooledBertForSequenceClassification, path, config=config)
    if pooling == "mean":
        log.warning("mean pooling is implemented for BERT encoders only; %s uses its [CLS] pooler", path)
    config.issue_labeler_pooling = "cls"
    return load_pretrained(AutoModelForSequenceClassification, path, config=config)
