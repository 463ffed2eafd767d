"""The mean of a fine-tune's weights at its last epoch ends: the model kept instead of the
checkpoint that scored best on a small validation split.

Choosing among checkpoints by 52 validation issues picks noise as often as skill (on
scikit-learn it kept earlier checkpoints that scored lower on test); the last epochs of a
linearly decaying learning rate sit close together, and their mean is as good or better
(benchmarks/MEASUREMENTS.md, "Weights averaged over the last epochs").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class WeightAverage(TrainerCallback):
    """Keeps the floating-point weights at the last ``count`` epoch ends (every ``every``
    steps, and the final step; ``None``: all of them) for ``average``."""

    def __init__(self, count: int | None, every: int) -> None:
        if (count is not None and count < 1) or every < 1:
            raise ValueError(f"need count >= 1 and every >= 1, got {count} and {every}")
        self.every = every
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=count)
        self.steps: deque[int] = deque(maxlen=count)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        **kwargs: object,
    ) -> None:
        if model is None or (state.global_step % self.every and state.global_step < state.max_steps):
            return
        self.snapshots.append(
            {
                name: value.detach().clone()
                for name, value in model.state_dict().items()
                if value.is_floating_point()
            }
        )
        self.steps.append(state.global_step)

    def average(self) -> dict[str, torch.Tensor]:
        """The mean of the kept snapshots (load with ``strict=False``: integer buffers such as
        position ids are not averaged)."""
        return mean_weights(list(self.snapshots))


def mean_weights(snapshots: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys."""
    if not snapshots:
        raise RuntimeError("no weights were kept: the training ran no step")
    return {name: torch.stack([s[name] for s in snapshots]).mean(dim=0) for name in snapshots[0]}
