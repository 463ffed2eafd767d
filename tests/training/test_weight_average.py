"""The model a fine-tune keeps: the mean of its weights at the last epoch ends."""

from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from training.weight_average import WeightAverage


class Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.register_buffer("position", torch.arange(3))  # an integer buffer, never averaged

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


class EveryStep(TrainerCallback):
    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_mean_of_the_last_epoch_ends_and_the_final_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(8)]
    averaging, every_step = WeightAverage(count=2, every=2), EveryStep()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=5,
        learning_rate=0.1,
        save_strategy="no",
        use_cpu=True,
        report_to=[],
        seed=0,
    )
    model = Regressor()
    Trainer(model=model, args=args, train_dataset=data, callbacks=[averaging, every_step]).train()

    # epoch ends every 2 steps (4 and earlier 2) and the final step 5; the last two are kept
    assert list(averaging.steps) == [4, 5]
    mean = averaging.average()
    assert set(mean) == {"linear.weight", "linear.bias"}
    for name in mean:
        expected = (every_step.weights[4][name] + every_step.weights[5][name]) / 2
        torch.testing.assert_close(mean[name], expected)
    assert not torch.equal(every_step.weights[4]["linear.weight"], every_step.weights[5]["linear.weight"])
    model.load_state_dict(mean, strict=False)
    torch.testing.assert_close(model.linear.bias, mean["linear.bias"])


def test_nothing_to_average_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no step"):
        WeightAverage(count=2, every=1).average()
    with pytest.raises(ValueError):
        WeightAverage(count=0, every=1)
