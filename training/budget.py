"""How many optimizer steps a training stage runs: its epochs over the data, at most its step
budget, so that a repository with tens of thousands of issues still refreshes in hours, not
days (the refresh time limit would stop it otherwise, every time)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Steps:
    total: int
    wanted: int  # what the epochs alone ask for
    # steps between evaluations and weight-average snapshots: an epoch, or a share of the budget
    per_epoch: int

    @property
    def bounded(self) -> bool:
        return self.total < self.wanted


def training_steps(
    examples: int, batch_size: int, epochs: float, *, exact: int | None, budget: int | None, stage: str
) -> Steps:
    """``exact`` (tests, quick runs) replaces the epochs; ``budget`` only bounds them. When the
    budget binds, the evaluations keep their number: each "epoch" is a share of the budget."""
    per_epoch = max(1, math.ceil(examples / batch_size))
    wanted = math.ceil(per_epoch * epochs)
    if exact is not None:
        return Steps(exact, wanted, min(per_epoch, exact))
    if budget is None or wanted <= budget:
        return Steps(wanted, wanted, min(per_epoch, wanted))
    log.info(
        "%s: %d steps, the budget, instead of the %d that %g epochs of %d examples take",
        stage,
        budget,
        wanted,
        epochs,
        examples,
    )
    return Steps(budget, wanted, min(budget, max(1, math.ceil(budget / epochs))))
