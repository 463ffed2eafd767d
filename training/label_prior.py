"""A classifier head that starts from what each label's name means to the encoder.

A random head learns a label from its training issues alone: a handful for a rare label, and
for a label that drifted (scikit-learn's Metadata Routing: 3 training issues, 10 test issues)
too few to find it again. The encoder already places an issue about metadata routing near the
words "metadata routing". So each label's row of the head starts as the direction from the mean
training issue to the features of the label's name, scaled so that its logits over the training
issues have mean 0 and standard deviation 1; fine-tuning then moves it as it would a random one.

What every label's name shares -- being a few words rather than an issue -- says nothing about
which label an issue has, yet it is much of each direction, the more so for an encoder that
masked-language modelling has pulled every text together with. ``shared_removed`` takes the part
of the directions common to all labels out first (``head_init: label_topics``): each row then
ranks issues by its own label's topic before training, clearly better, but after fine-tuning it
measured no better (benchmarks/MEASUREMENTS.md), so it is not the default.
"""

from __future__ import annotations

import re

import torch

_SEPARATORS = re.compile(r"[\s:_/\-]+")


def label_text(name: str) -> str:
    """The words of a label's name: ``module:linear_model`` -> ``module linear model``."""
    return _SEPARATORS.sub(" ", name).strip().lower()


def head_from_label_names(
    issues: torch.Tensor, names: torch.Tensor, shared_removed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (labels x features) and bias of a linear head from the classifier-layer inputs
    of the training issues (issues x features) and of the label names (labels x features)."""
    mean = issues.mean(dim=0)
    directions = names - mean
    if shared_removed and len(directions) > 1:  # a single label's direction is all shared
        shared = directions.mean(dim=0)
        shared = shared / shared.norm().clamp(min=1e-12)
        directions = directions - (directions @ shared).unsqueeze(1) * shared
    directions = directions / directions.norm(dim=1, keepdim=True).clamp(min=1e-12)
    spread = ((issues - mean) @ directions.T).std(dim=0).clamp(min=1e-6)
    weight = directions / spread.unsqueeze(1)
    return weight, -(weight @ mean)
