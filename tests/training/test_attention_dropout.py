"""Attention dropout is a training argument that reaches PyTorch's attention while adapting and
fine-tuning, and leaves the other dropouts and the base model's own setting alone by default."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, PretrainedConfig

from tests.training.test_mixed_precision import SHORT, finetune_even_odd, titles  # noqa: F401 (fixture)
from training.adapt import adapt_encoder
from training.config import PACKAGED_MODEL, resolve_base_model
from training.dropout import set_attention_dropout


@contextmanager
def _attention_dropout_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[float]]:
    """The dropout probabilities PyTorch's attention is called with meanwhile."""
    seen: set[float] = set()
    attention = torch.nn.functional.scaled_dot_product_attention

    def recording(*args: object, dropout_p: float = 0.0, **kwargs: object) -> torch.Tensor:
        seen.add(dropout_p)
        return attention(*args, dropout_p=dropout_p, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        yield seen


@pytest.mark.parametrize("attention_dropout", [0.0, None])
def test_attention_dropout_reaches_training_attention(
    attention_dropout: float | None,
    titles: list[str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SHORT.model_copy(update={"attention_dropout": attention_dropout})
    base = resolve_base_model(PACKAGED_MODEL)
    base_config = AutoConfig.from_pretrained(base)
    assert base_config.attention_probs_dropout_prob > 0
    expected = base_config.attention_probs_dropout_prob if attention_dropout is None else attention_dropout
    with _attention_dropout_seen(monkeypatch) as seen:
        adapted = adapt_encoder(titles, base, tmp_path / "encoder", config)
        tuned = finetune_even_odd(adapted.encoder_dir, titles, tmp_path / "ckpt", config)
    # training steps with the configured dropout, evaluation passes with none
    assert seen == {expected, 0.0}
    assert tuned.model.config.attention_probs_dropout_prob == expected
    assert tuned.model.config.hidden_dropout_prob == base_config.hidden_dropout_prob


def test_a_config_without_attention_dropout_is_left_alone_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = PretrainedConfig()
    with caplog.at_level(logging.WARNING, logger="training.dropout"):
        set_attention_dropout(config, 0.0)
    assert "no attention dropout setting" in caplog.text
    assert not hasattr(config, "attention_probs_dropout_prob")
