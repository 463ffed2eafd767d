"""Attention dropout for training, set on a model's config before the model is built.

On CPU, dropout on the attention probabilities (batch x heads x tokens x tokens random numbers per
layer) also keeps PyTorch's scaled-dot-product attention off its fused kernel: on two cores it
took about 40% of a training step of the 6-layer encoder at 256 tokens.
"""

from __future__ import annotations

import logging

from transformers import PretrainedConfig

log = logging.getLogger(__name__)

# what the attention-probability dropout is called in the configs of BERT-like encoders
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout")


def set_attention_dropout(config: PretrainedConfig, probability: float | None) -> None:
    """Override the config's attention dropout; ``None`` keeps the base model's."""
    if probability is None:
        return
    fields = [name for name in ATTENTION_DROPOUT_FIELDS if hasattr(config, name)]
    if not fields:
        log.warning("%s has no attention dropout setting; attention_dropout ignored", config.model_type)
    for name in fields:
        setattr(config, name, probability)


def attention_dropout_of(config: PretrainedConfig) -> dict[str, float]:
    """The config's attention dropout settings, to restore after training with another."""
    return {name: getattr(config, name) for name in ATTENTION_DROPOUT_FIELDS if hasattr(config, name)}


def restore_attention_dropout(config: PretrainedConfig, settings: dict[str, float]) -> None:
    for name, value in settings.items():
        setattr(config, name, value)
