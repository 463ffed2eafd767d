"""Adaptation with the vocabulary's embeddings kept: tied to the MLM output layer, they otherwise
move at every step, rows of words the text never contains included."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.conftest import SHARED_DATA
from tests.training.test_mixed_precision import SHORT, titles  # noqa: F401 (fixture)
from training.adapt import AdaptResult, adapt_encoder
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.finetune import initial_classifier


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
    # nothing left beside the adapted encoders (the trainers' scratch folders are removed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen-False", "frozen-True"]
    # the default: even a word absent from every text has moved, through the tied output layer
    assert not torch.equal(after[False][word][unseen], before[word][unseen])
    assert not torch.equal(after[False][layer], before[layer])
    # frozen: the vocabulary is the base model's to the bit, the layers still adapt
    assert torch.equal(after[True][word], before[word])
    assert not torch.equal(after[True][layer], before[layer])


# a learning rate large enough that ten steps move the features visibly; plain MLM, no term holding them
MOVING = SHORT.model_copy(update={"mlm_learning_rate": 3e-4, "mlm_max_steps": 10, "mlm_contrastive": 0.0})


@pytest.fixture(scope="module")
def freely_adapted(titles: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The encoder adapted with nothing holding its features: what both holds are measured against."""
    base = resolve_base_model(PACKAGED_MODEL)
    return adapt_encoder(titles, base, tmp_path_factory.mktemp("free") / "encoder", MOVING).encoder_dir


def _token_states(
    encoder: str | Path, base: str, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's and the base model's last token states on ``texts``, and the attention mask."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = (
            AutoModel.from_pretrained(path).eval()(**batch).last_hidden_state for path in (encoder, base)
        )
    return ours, theirs, batch["attention_mask"]


def _drift(encoder: str | Path, base: str, texts: list[str]) -> float:
    """Mean 1 - cosine between the encoder's and the base model's token states on ``texts``."""
    ours, theirs, mask = _token_states(encoder, base, texts)
    real = mask.bool()
    return float(1 - torch.nn.functional.cosine_similarity(ours[real], theirs[real], dim=-1).mean())


def _adaptation(texts: list[str], tmp_path: Path, config: TrainingConfig, **options: object) -> AdaptResult:
    """``config`` with ``options`` adapted on ``texts``, in a folder named for the options."""
    name = "-".join(f"{key}={value}" for key, value in options.items())
    base = resolve_base_model(PACKAGED_MODEL)
    return adapt_encoder(texts, base, tmp_path / name, config.model_copy(update=options))


def _adapted(texts: list[str], tmp_path: Path, **hold: float | int) -> Path:
    return _adaptation(texts, tmp_path, MOVING, **hold).encoder_dir


def test_keeping_features_holds_token_states_near_the_base_models(
    titles: list[str],  # noqa: F811
    freely_adapted: Path,
    tmp_path: Path,
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    drift = {
        0.0: _drift(freely_adapted, base, titles),
        50.0: _drift(_adapted(titles, tmp_path, mlm_keep_features=50.0), base, titles),
    }
    assert drift[0.0] > 0.01, drift
    assert drift[50.0] < drift[0.0] / 2, drift


def _pairwise_cosine_gap(encoder: str | Path, base: str, texts: list[str]) -> float:
    """Mean |difference| between the cosines of every pair of ``texts`` (mean-pooled token states)
    under the encoder and under the base model."""
    ours, theirs, mask = _token_states(encoder, base, texts)
    cosines = [_cosines(states, mask) for states in (ours, theirs)]
    return float((cosines[0] - cosines[1]).abs().mean())


def _cosines(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine between every two texts' mean-pooled token states."""
    weights = mask.unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)
    return pooled @ pooled.T


def test_keeping_geometry_holds_the_texts_distances_but_not_their_features(
    titles: list[str],  # noqa: F811
    freely_adapted: Path,
    tmp_path: Path,
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    held = _adapted(titles, tmp_path, mlm_keep_geometry=50.0)
    gap = {
        0.0: _pairwise_cosine_gap(freely_adapted, base, titles),
        50.0: _pairwise_cosine_gap(held, base, titles),
    }
    drift = {50.0: _drift(held, base, titles)}
    assert gap[0.0] > 0.02, gap
    assert gap[50.0] < gap[0.0] / 2, gap
    # the token states themselves still move: this is not keep_features
    assert drift[50.0] > 0.01, drift


def _mean_pairwise_cosine(encoder: str | Path, base: str, texts: list[str]) -> float:
    """Mean cosine between every two of ``texts`` (mean-pooled token states): near 1 when an
    encoder no longer tells them apart."""
    ours, _, mask = _token_states(encoder, base, texts)
    similarity = _cosines(ours, mask)
    n = similarity.shape[0]
    return float((similarity.sum() - similarity.trace()) / (n * (n - 1)))


def test_the_contrastive_term_keeps_the_texts_apart(
    titles: list[str],  # noqa: F811
    freely_adapted: Path,
    tmp_path: Path,
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    cosine = {
        "base": _mean_pairwise_cosine(base, base, titles),
        "free": _mean_pairwise_cosine(freely_adapted, base, titles),
        "contrastive": _mean_pairwise_cosine(_adapted(titles, tmp_path, mlm_contrastive=5.0), base, titles),
        # the unmasked views cut to the titles' first 6 tokens, [CLS] included
        "opening": _mean_pairwise_cosine(
            _adapted(titles, tmp_path, mlm_contrastive=5.0, mlm_contrastive_view_tokens=6), base, titles
        ),
    }
    assert cosine["free"] > cosine["base"] + 0.05, cosine  # MLM alone pulls them together
    assert cosine["contrastive"] < cosine["free"] - 0.05, cosine
    assert cosine["opening"] < cosine["free"] - 0.05, cosine


def test_grouped_batches_and_short_views_compute_fewer_positions(tmp_path: Path) -> None:
    """The two savings of the contrastive adaptation's cost, counted in the positions the encoder ran."""
    source = SHARED_DATA / "sklearn_surya" / "issues.jsonl"
    if not source.is_file():
        pytest.fail(f"the shared issue data is missing: {source}", pytrace=False)
    issues = [json.loads(line) for line in source.read_text().splitlines()[:96]]
    # real texts of two lengths: titles alone (under 32 tokens) and issues cut at 32 tokens
    texts = [f"{i['title']}\n\n{i['body'] or ''}" if n % 2 else i["title"] for n, i in enumerate(issues)]
    # the sampler sorts by length within groups of at most a quarter of the texts: enough texts for groups
    steps, batch, width = 20, 4, SHORT.mlm_max_length
    update = {"mlm_max_steps": steps, "mlm_batch_size": batch, "mlm_contrastive": 3.0}
    config = SHORT.model_copy(update=update)
    shuffled = _adaptation(texts, tmp_path, config, mlm_group_by_length=False)
    grouped = _adaptation(texts, tmp_path, config, mlm_group_by_length=True, mlm_contrastive_view_tokens=8)
    # shuffled, most batches hold an issue as long as the limit; grouped, the titles share theirs
    assert shuffled.tokens_trained <= steps * batch * width
    assert grouped.tokens_trained < 0.9 * shuffled.tokens_trained
    assert shuffled.tokens_viewed == shuffled.tokens_trained  # the whole text viewed once more
    assert 0 < grouped.tokens_viewed <= steps * batch * 8  # only its opening


def test_fine_tuning_starts_the_chosen_share_of_the_way_from_the_base_model_to_the_adapted_one(
    freely_adapted: Path,
    titles: list[str],  # noqa: F811
) -> None:
    base = resolve_base_model(PACKAGED_MODEL)
    labels = ["Bug", "Documentation", "New Feature"]
    layer = "encoder.layer.3.output.dense.weight"
    adapted = _weights(freely_adapted)[layer]
    start = _weights(base)[layer]
    assert not torch.allclose(adapted, start)

    def classifier(encoder: str | Path, share: float) -> Any:  # its head is read
        config = MOVING.model_copy(update={"mlm_interpolation": share})
        model, _ = initial_classifier(str(encoder), base, labels, titles, config)
        return model

    encoders = {share: classifier(freely_adapted, share) for share in (0.0, 0.5, 1.0)}
    weights = {share: model.base_model.state_dict()[layer] for share, model in encoders.items()}
    assert torch.equal(weights[1.0], adapted)
    assert torch.allclose(weights[0.5], (start + adapted) / 2, atol=1e-6)
    assert torch.equal(weights[0.0], start)
    # the head is started from the label names' features of the encoder fine-tuning starts from:
    # at share 0 that is the base model's, exactly as a vanilla fine-tune starts
    vanilla = classifier(base, 1.0)
    assert torch.allclose(encoders[0.0].classifier.weight, vanilla.classifier.weight, atol=1e-5)
    assert not torch.allclose(encoders[1.0].classifier.weight, vanilla.classifier.weight, atol=1e-3)
