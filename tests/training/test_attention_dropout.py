"""Attention dropout is a training argument of adaptation and of fine-tuning each, reaches PyTorch's
attention in that stage only, and leaves the other dropouts and the saved encoder's setting alone."""

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
def _attention_dropout_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bool, float]]]:
    """(gradients on, dropout probability) of each call of PyTorch's attention meanwhile."""
    seen: list[tuple[bool, float]] = []
    attention = torch.nn.functional.scaled_dot_product_attention

    def recording(*args: object, dropout_p: float = 0.0, **kwargs: object) -> torch.Tensor:
        seen.append((torch.is_grad_enabled(), dropout_p))
        return attention(*args, dropout_p=dropout_p, **kwargs)  # type: ignore[arg-type, misc]

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        yield seen


@pytest.mark.parametrize(("mlm_attention_dropout", "attention_dropout"), [(None, 0.0), (0.0, None)])
def test_attention_dropout_reaches_training_attention_of_each_stage(
    mlm_attention_dropout: float | None,
    attention_dropout: float | None,
    titles: list[str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SHORT.model_copy(
        update={"mlm_attention_dropout": mlm_attention_dropout, "attention_dropout": attention_dropout}
    )
    base = resolve_base_model(PACKAGED_MODEL)
    base_config = AutoConfig.from_pretrained(base)
    base_dropout = base_config.attention_probs_dropout_prob
    assert base_dropout > 0
    with _attention_dropout_seen(monkeypatch) as adapting:
        adapted = adapt_encoder(titles, base, tmp_path / "encoder", config)
    with _attention_dropout_seen(monkeypatch) as tuning:
        tuned = finetune_even_odd(adapted.encoder_dir, titles, tmp_path / "ckpt", config)
    # training steps (with gradients) use each stage's dropout; the MLM head warm-up (frozen
    # encoder) and the evaluation passes run the encoder without gradients and without dropout; the
    # contrastive term's unmasked views, also without gradients, take adaptation's dropout: it is
    # what makes a view differ from its masked text beyond the mask
    adapting_dropout = base_dropout if mlm_attention_dropout is None else 0.0
    assert config.mlm_contrastive > 0
    assert {p for grad, p in adapting if grad} == {adapting_dropout}
    assert {p for grad, p in tuning if grad} == {base_dropout if attention_dropout is None else 0.0}
    assert {p for grad, p in adapting if not grad} == {0.0, adapting_dropout}
    assert {p for grad, p in tuning if not grad} == {0.0}
    assert sum(grad for grad, _ in adapting) == base_config.num_hidden_layers * config.mlm_max_steps
    # the adapted encoder is saved with the base model's setting, whatever adaptation used
    assert AutoConfig.from_pretrained(adapted.encoder_dir).attention_probs_dropout_prob == base_dropout
    assert tuned.model.config.attention_probs_dropout_prob == (
        base_dropout if attention_dropout is None else attention_dropout
    )
    assert tuned.model.config.hidden_dropout_prob == base_config.hidden_dropout_prob


def test_a_config_without_attention_dropout_is_left_alone_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = PretrainedConfig()
    with caplog.at_level(logging.WARNING, logger="training.dropout"):
        set_attention_dropout(config, 0.0)
    assert "no attention dropout setting" in caplog.text
    assert not hasattr(config, "attention_probs_dropout_prob")
