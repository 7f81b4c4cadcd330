"""Step clocks: the simulator's virtual clock (modelled) and real mode's wall clock (measured).

A clock answers `now()` before a step and, given what the step did, its `Timing`: each phase's
seconds, the slowest device's, as a synchronous step is as slow as its slowest device.
  virtual   compute = overhead + seconds_per_sample * b_i, comm = the ring model of the payload
            (scadles.clock); step = max_i(wait_i + moved_i + compute_i) + comm
  wall      measured on each rank (the collective times its communication) and reduced over
            ranks by max, so every rank reports the same numbers
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from scadles import clock
from scadles.comm import Collective


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds of one step (the slowest device's) and the clock after it."""

    wait_s: float
    compute_s: float
    comm_s: float
    step_s: float
    t: float


class Timed(Protocol):
    """A collective that measures the seconds it spent communicating."""

    def reset(self) -> tuple[float, float]:
        """Return (comm_s, throttle_s) since the last reset and zero them."""
        ...


class StepClock(Protocol):
    """Time as the engine sees it."""

    def now(self) -> float:
        """Return the run's time in seconds."""
        ...

    def begin(self) -> None:
        """Mark the start of the step's computation (after the batch is there)."""
        ...

    def finish(
        self, wait: torch.Tensor, b: torch.Tensor, collective: str, nbytes: torch.Tensor
    ) -> Timing:
        """Return the step's timing and advance the clock past it."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Return the clock's resumable state."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from state_dict's output."""
        ...


class VirtualClock:
    """The simulator's clock: every phase is modelled from the device profiles."""

    def __init__(self, profiles: clock.DeviceProfiles) -> None:
        self.profiles = profiles
        self.t = 0.0

    def now(self) -> float:
        """Return the simulated seconds so far."""
        return self.t

    def begin(self) -> None:
        """Nothing to measure."""

    def finish(
        self, wait: torch.Tensor, b: torch.Tensor, collective: str, nbytes: torch.Tensor
    ) -> Timing:
        """Model the step: the slowest device's wait and compute, then the collective."""
        compute = clock.compute_time(self.profiles, b)  # (K,)
        comm = clock.comm_time(self.profiles, collective, nbytes)
        step_s = clock.step_time(wait, compute, comm)
        self.t += step_s
        return Timing(float(wait.max()), float(compute.max()), comm, step_s, self.t)

    def state_dict(self) -> dict[str, Any]:
        """Return the simulated time."""
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the saved simulated time."""
        self.t = float(state["t"])


class WallClock:
    """Real mode's clock: wall seconds since the run began, across resumes."""

    def __init__(self, coll: Collective, timed: Timed, start_s: float = 0.0) -> None:
        self.coll, self.timed = coll, timed
        self._elapsed0 = start_s  # wall seconds of earlier lives of this run (resume)
        self._start = time.monotonic()
        self._step0 = self._begin = self._start

    def now(self) -> float:
        """Return the wall seconds of the run; marks the start of a step."""
        self._step0 = time.monotonic()
        return self._elapsed0 + self._step0 - self._start

    def begin(self) -> None:
        """Mark the start of the computation and zero the collective's timer."""
        self._begin = time.monotonic()
        self.timed.reset()

    def finish(
        self, wait: torch.Tensor, b: torch.Tensor, collective: str, nbytes: torch.Tensor
    ) -> Timing:
        """Measure this rank's phases and take the slowest rank's (one all-gather)."""
        end = time.monotonic()
        comm, _ = self.timed.reset()
        compute = end - self._begin - comm
        t = self._elapsed0 + end - self._start
        mine = torch.tensor([float(wait.max()), compute, comm, end - self._step0, t])
        slowest = self.coll.all_gather(mine.double()).max(dim=0).values.tolist()
        return Timing(*slowest)

    def state_dict(self) -> dict[str, Any]:
        """Return the wall seconds so far."""
        return {"elapsed": self._elapsed0 + time.monotonic() - self._start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue counting from the saved wall seconds."""
        self._elapsed0, self._start = float(state["elapsed"]), time.monotonic()
