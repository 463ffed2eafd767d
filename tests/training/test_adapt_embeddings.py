"""Adaptation with the vocabulary's embeddings kept: tied to the MLM output layer, they otherwise
move at every step, rows of words the text never contains included."""

from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from tests.training.test_mixed_precision import SHORT, titles  # noqa: F401 (fixture)
from training.adapt import adapt_encoder
from training.config import PACKAGED_MODEL, resolve_base_model


def _weights(path: str | Path) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in AutoModel.from_pretrained(path).state_dict().items()}


def test_frozen_word_embeddings_stay_while_the_layers_adapt(
    titles: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    before = _weights(base)
    unseen = AutoTokenizer.from_pretrained(base).convert_tokens_to_ids("zebra")
    assert not any("zebra" in title.lower() for title in titles)
    word = "embeddings.word_embeddings.weight"
    layer = "encoder.layer.0.attention.self.query.weight"
    after = {}
    for frozen in (False, True):
        config = SHORT.model_copy(update={"mlm_freeze_word_embeddings": frozen})
        adapted = adapt_encoder(titles, base, tmp_path / f"frozen-{frozen}", config)
        after[frozen] = _weights(adapted.encoder_dir)
    # the default: even a word absent from every text has moved, through the tied output layer
    assert not torch.equal(after[False][word][unseen], before[word][unseen])
    assert not torch.equal(after[False][layer], before[layer])
    # frozen: the vocabulary is the base model's to the bit, the layers still adapt
    assert torch.equal(after[True][word], before[word])
    assert not torch.equal(after[True][layer], before[layer])
