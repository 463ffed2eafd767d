"""The held-out MLM loss computes vocabulary logits only at masked positions: the same loss as the
model's own over every position."""

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from tests.training.test_mixed_precision import titles  # noqa: F401 (fixture)
from training.adapt import masked_lm_loss
from training.config import PACKAGED_MODEL, resolve_base_model
from training.tokens import tokenized_dataset


def test_held_out_loss_equals_the_full_model_loss(titles: list[str]) -> None:  # noqa: F811
    base = resolve_base_model(PACKAGED_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)  # the fresh MLM head
    model = AutoModelForMaskedLM.from_pretrained(base)
    dataset = tokenized_dataset(tokenizer, titles, 64)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=7)

    loss = masked_lm_loss(model, dataset, collator, batch_size=8)

    fresh = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=7)
    total, count = 0.0, 0
    with torch.no_grad():
        model.eval()
        for start in range(0, len(dataset), 8):
            batch = fresh([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
            masked = int((batch["labels"] != -100).sum())
            total += float(model(**batch).loss) * masked
            count += masked
    assert count > 0
    assert loss == pytest.approx(total / count, rel=1e-4)
    assert loss > 5  # a random head over a 30k vocabulary, not a trivially equal zero
