"""Issue texts to a tokenized ``datasets.Dataset``, the same way for adaptation and fine-tuning."""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedTokenizerBase


def tokenized_dataset(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> Dataset:
    return Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )
