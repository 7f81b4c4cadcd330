"""Divergence detection [ours]: stop a run whose training loss stays non-finite or far too high.

A step's training loss (the devices' weighted mean, the same on every rank) counts as diverged
when it is not finite (including a step the engine skipped for a non-finite gradient), above
`train.diverge_factor` times the run's first finite loss, or back at or above that first loss
after the run had brought it below RECOVERED times it: a learning rate too large for the model
often blows the loss up for a step or two and then leaves it at the untrained model's value
(ln C for C classes, every ReLU dead), which never exceeds the factor. `train.diverge_steps`
such steps in a row stop the run: the runner writes the summary with `diverged` set to the
message below and the command line exits with status 1 after printing it. `train.diverge_steps
= 0` turns it off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

RECOVERED = 0.8  # a loss below this times the first shows the run had learned something


@dataclass(slots=True)
class DivergenceWatch:
    """Count consecutive diverged steps; its fields are all its (checkpointed) state."""

    steps: int  # train.diverge_steps: diverged steps in a row that stop the run (0: never)
    factor: float  # train.diverge_factor: the bound, in multiples of the first finite loss
    first_loss: float | None = None
    best_loss: float = math.inf
    run: int = 0  # diverged steps in a row so far
    since: int = 0  # the step that began the run

    def update(self, step: int, loss: float | None, skipped: bool) -> bool:
        """Note step `step`'s loss (and whether its update was skipped); return whether the run
        must stop."""
        if loss is None or not math.isfinite(loss) or skipped:
            bad = True
        else:
            if self.first_loss is None:
                self.first_loss = loss
            self.best_loss = min(self.best_loss, loss)
            learned = self.best_loss < RECOVERED * self.first_loss
            bad = loss > self.bound or (learned and loss >= self.first_loss)
        if not bad:
            self.run = 0
            return False
        if self.run == 0:
            self.since = step
        self.run += 1
        return self.steps > 0 and self.run >= self.steps

    @property
    def bound(self) -> float:
        """Return the loss above which a step counts as diverged."""
        first = self.first_loss if self.first_loss is not None else math.inf
        return self.factor * max(first, 1e-12)

    def message(self, step: int, lr_scaled: bool, scale_max: float | None) -> str:
        """Return the one line saying what diverged and which setting to change."""
        if self.first_loss is None:
            what = "non-finite"
        else:
            what = (
                f"non-finite, above {self.bound:.3g} ({self.factor:g} x the first loss "
                f"{self.first_loss:.3g}) or back at the first loss after falling to "
                f"{self.best_loss:.3g}"
            )
        fix = "lower train.lr"
        if lr_scaled:
            cap = "uncapped" if scale_max is None else f"now {scale_max:g}"
            fix = f"set policy.lr_scale_max lower ({cap}) or lower train.lr"
        return (
            f"training diverged: the training loss was {what} for {self.run} steps in a row "
            f"(steps {self.since}-{step}); {fix}"
        )

    def state_dict(self) -> dict[str, Any]:
        """Return the watch's state for a checkpoint."""
        return asdict(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from state_dict's output."""
        self.first_loss, self.best_loss = d["first_loss"], float(d["best_loss"])
        self.run, self.since = int(d["run"]), int(d["since"])
