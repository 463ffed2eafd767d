"""A step budget bounds a stage's training on a large repository and leaves a small one's alone."""

import logging
from pathlib import Path

import numpy as np
import pytest
from transformers import TrainerCallback

from tests.training.test_mixed_precision import SHORT, titles  # noqa: F401 (fixture)
from training.adapt import adapt_encoder
from training.budget import Steps, training_steps
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.finetune import finetune


def test_the_budget_bounds_only_what_the_epochs_would_exceed() -> None:
    defaults = TrainingConfig()
    # scikit-learn's 327 training issues: ten epochs, the budget far off
    sklearn = training_steps(327, 16, 10, exact=None, budget=defaults.step_budget, stage="t")
    assert sklearn == Steps(total=210, wanted=210, per_epoch=21) and not sklearn.bounded
    # 50,000 training issues: ten "epochs" of a tenth of the budget each, evaluated as often
    large = training_steps(50_000, 16, 10, exact=None, budget=2000, stage="t")
    assert large == Steps(total=2000, wanted=31_250, per_epoch=200) and large.bounded
    assert training_steps(100_000, 16, 0.5, exact=None, budget=2000, stage="t").per_epoch == 2000
    assert training_steps(50_000, 16, 10, exact=None, budget=None, stage="t").total == 31_250
    # an exact number of steps (tests, quick runs) is what it says, above the epochs too
    assert training_steps(40, 8, 1, exact=12, budget=2, stage="t") == Steps(12, 5, 5)


class StepsSeen(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_fine_tuning_stops_at_its_budget_and_averages_its_last_shares(
    titles: list[str],  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 24 titles in batches of 8: ten epochs would take 30 steps
    config = SHORT.model_copy(
        update={"max_steps": None, "epochs": 10, "step_budget": 4, "average_last_epochs": 2}
    )
    targets = np.array([[i % 2, 1 - i % 2] for i in range(len(titles))], dtype=np.float32)
    seen = StepsSeen()
    with caplog.at_level(logging.INFO):
        tuned = finetune(
            resolve_base_model(PACKAGED_MODEL),
            resolve_base_model(PACKAGED_MODEL),
            ["even", "odd"],
            (titles, targets),
            (titles[:8], targets[:8]),
            tmp_path / "ckpt",
            config,
            callbacks=[seen],
        )
    assert seen.steps == [1, 2, 3, 4]
    assert tuned.steps == Steps(total=4, wanted=30, per_epoch=1)
    assert "kept the mean of the weights after steps [3, 4]" in caplog.text
    assert "fine-tuning: 4 steps, the budget, instead of the 30" in caplog.text


def test_adaptation_stops_at_its_budget(titles: list[str], tmp_path: Path) -> None:  # noqa: F811
    base = resolve_base_model(PACKAGED_MODEL)
    unbounded = SHORT.model_copy(
        update={"mlm_max_steps": None, "mlm_step_budget": None, "mlm_contrastive": 0.0}
    )
    whole = adapt_encoder(titles, base, tmp_path / "whole", unbounded)
    bounded = adapt_encoder(
        titles, base, tmp_path / "bounded", unbounded.model_copy(update={"mlm_step_budget": 2})
    )
    # 22 texts (2 held out) in batches of 8: one epoch takes 3 steps
    assert whole.steps == Steps(total=3, wanted=3, per_epoch=3)
    assert bounded.steps == Steps(total=2, wanted=3, per_epoch=2)
    assert 0 < bounded.tokens_trained < whole.tokens_trained
