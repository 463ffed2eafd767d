"""Loading a pretrained checkpoint into a model whose head we start ourselves: quiet, and checked.

transformers prints a table of every weight a checkpoint lacks or carries unused, and calls the
packaged MiniLM "corrupted" because it has no MLM head. Both are what adaptation and fine-tuning
expect: the MLM head, the classifier and a pooler start fresh; a pooler or an MLM head in the
checkpoint goes unused. One log line says so instead. An encoder weight that is missing is not
expected (a checkpoint of another architecture, a truncated file): that is a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# transformers logs the load report and the tied-weights notice here
_TRANSFORMERS_LOADER = "transformers.modeling_utils"


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _modules(keys: list[str], depth: int = 2) -> list[str]:
    """``cls.predictions.transform.dense.weight`` and its siblings as ``cls.predictions``."""
    return sorted({".".join(key.split(".")[:-1][:depth]) for key in keys})


def _encoder_keys(model: PreTrainedModel, keys: list[str]) -> list[str]:
    """The keys that belong to the encoder itself, its pooler left out."""
    if model.base_model is model:  # a bare encoder: its keys carry no prefix
        return [k for k in keys if not k.startswith("pooler.")]
    prefix = model.base_model_prefix
    return [k for k in keys if k.startswith(f"{prefix}.") and not k.startswith(f"{prefix}.pooler.")]


def load_pretrained(model_class: Any, name_or_path: str, **kwargs: Any) -> PreTrainedModel:
    """``model_class.from_pretrained(name_or_path, **kwargs)`` with transformers' load report
    replaced by a line of our own: which parts start fresh (info) and which encoder weights the
    checkpoint lacks (warning)."""
    loader = logging.getLogger(_TRANSFORMERS_LOADER)
    # A filter, not a level: transformers runs extra checks, with warnings of their own, when
    # this logger's level is set to WARNING or above.
    quiet = _BelowError()
    loader.addFilter(quiet)
    try:
        model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    finally:
        loader.removeFilter(quiet)
    missing = sorted(info.get("missing_keys", ()))
    lacking = _encoder_keys(model, missing)
    fresh = [k for k in missing if k not in lacking]
    name = type(model).__name__
    if lacking:
        shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        log.warning(
            "%s from %s: %d encoder weights are not in the checkpoint and start at random (%s); "
            "is it the model meant?",
            name,
            name_or_path,
            len(lacking),
            shown,
        )
    if fresh:
        log.info(
            "%s from %s: not in the checkpoint, started fresh: %s",
            name,
            name_or_path,
            ", ".join(_modules(fresh)),
        )
    return model
