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


def _drift(encoder: str | Path, base: str, texts: list[str]) -> float:
    """Mean 1 - cosine between the encoder's and the base model's token states on ``texts``."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ours = AutoModel.from_pretrained(encoder).eval()(**batch).last_hidden_state[real]
        theirs = AutoModel.from_pretrained(base).eval()(**batch).last_hidden_state[real]
    return float(1 - torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).mean())


def test_keeping_features_holds_token_states_near_the_base_models(
    titles: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    # a learning rate large enough that two steps move the features visibly
    config = SHORT.model_copy(update={"mlm_learning_rate": 3e-4, "mlm_max_steps": 10})
    drift = {}
    for keep in (0.0, 50.0):
        adapted = adapt_encoder(
            titles, base, tmp_path / f"keep-{keep}", config.model_copy(update={"mlm_keep_features": keep})
        )
        drift[keep] = _drift(adapted.encoder_dir, base, titles)
    assert drift[0.0] > 0.01, drift
    assert drift[50.0] < drift[0.0] / 2, drift


def _pairwise_cosine_gap(encoder: str | Path, base: str, texts: list[str]) -> float:
    """Mean |difference| between the cosines of every pair of ``texts`` (mean-pooled token states)
    under the encoder and under the base model."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    weights = batch["attention_mask"].unsqueeze(-1).float()
    cosines = []
    for path in (encoder, base):
        with torch.no_grad():
            states = AutoModel.from_pretrained(path).eval()(**batch).last_hidden_state
        pooled = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)
        cosines.append(pooled @ pooled.T)
    return float((cosines[0] - cosines[1]).abs().mean())


def test_keeping_geometry_holds_the_texts_distances_but_not_their_features(
    titles: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    config = SHORT.model_copy(update={"mlm_learning_rate": 3e-4, "mlm_max_steps": 10})
    gap, drift = {}, {}
    for keep in (0.0, 50.0):
        adapted = adapt_encoder(
            titles, base, tmp_path / f"geometry-{keep}", config.model_copy(update={"mlm_keep_geometry": keep})
        )
        gap[keep] = _pairwise_cosine_gap(adapted.encoder_dir, base, titles)
        drift[keep] = _drift(adapted.encoder_dir, base, titles)
    assert gap[0.0] > 0.02, gap
    assert gap[50.0] < gap[0.0] / 2, gap
    # the token states themselves still move: this is not keep_features
    assert drift[50.0] > 0.01, drift
