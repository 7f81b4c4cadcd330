"""Step clocks: the simulator's virtual clock (modelled) and real mode's wall clock (measured).

A clock answers `now()` before a step and, given what the step did, its `Timing`: each phase's
seconds, the slowest device's, as a synchronous step is as slow as its slowest device.
  virtual   compute = overhead + seconds_per_sample * b_i, comm = the ring model of the payload
            in one message per parameter tensor (scadles.clock);
            step = max_i(wait_i + moved_i + compute_i) + compress + comm, where compress is
            the modelled compute of the compressors every device ran (`compress_time`)
  wall      measured on each rank (the collective times its communication) and reduced over
            ranks by max, so every rank reports the same numbers; compression is inside compute

Compression compute [ours], modelled on the paper's K80 (one GK210 chip: 240 GB/s memory,
4.37 TFLOPS fp32 peak, NVIDIA's K80 datasheet halved per chip), for P float32 parameters:
  topk / topk_layer   TOPK_PASSES = 4 passes over 4P bytes (a radix select reads its input a few
                      times; assumed, not measured)
  randk               one pass over 4P bytes; qsgd: read 4P, write P (codes) and draw 4P random
  fp16 / bf16         read 4P, write 2P bytes
  powersgd            6 * P * rank flops (M Q, M^T P and the decompression P Q^T, each 2 n m r)
  none / identity     free
The adaptive switch compresses with its most compressed level on every step and, when it picks
another level, with that one too (`Exchanged.compressors_run`); each run is charged.
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
    compress_s: float = 0.0  # modelled compression compute (virtual clock; wall: inside compute)


K80_MEMORY_BPS = 240e9  # bytes per second, one K80 chip [ours, datasheet]
K80_FLOPS = 4.37e12  # fp32 per second, one K80 chip [ours, datasheet]
TOPK_PASSES = 4  # reads of the input a Top-k selection makes [ours, assumed]
_BYTES_PER_PARAM = {  # memory traffic per parameter of each compressor
    "topk": 4.0 * TOPK_PASSES,
    "topk_layer": 4.0 * TOPK_PASSES,
    "randk": 4.0,
    "qsgd": 9.0,
    "fp16": 6.0,
    "bf16": 6.0,
}


def compress_time(name: str, params: float, rank: int = 1) -> float:
    """Return the modelled seconds one device spends running compressor `name` on a gradient of
    `params` float32 values (module docstring); unknown and dense names cost nothing."""
    if name == "powersgd":
        return 6.0 * params * rank / K80_FLOPS
    return _BYTES_PER_PARAM.get(name, 0.0) * params / K80_MEMORY_BPS


def compress_costs(params: float, rank: int = 1) -> dict[str, float]:
    """Return compressor name -> `compress_time` at this gradient size, for every charged name."""
    return {name: compress_time(name, params, rank) for name in (*_BYTES_PER_PARAM, "powersgd")}


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

    def begin(self, wait: torch.Tensor, b: torch.Tensor) -> float | None:
        """Mark the start of the step's computation (after the batch is there); return the
        step's seconds before its exchange (slowest device's wait + compute) if modelled."""
        ...

    def finish(
        self,
        wait: torch.Tensor,
        b: torch.Tensor,
        collective: str,
        nbytes: torch.Tensor,
        compressors: tuple[str, ...] = (),
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

    def __init__(
        self,
        profiles: clock.DeviceProfiles,
        messages: int = 1,
        compress_s: dict[str, float] | None = None,
    ) -> None:
        self.profiles = profiles
        self.messages = messages  # per collective: the charged model's parameter tensors
        self.compress_s = compress_s or {}  # compressor name -> seconds per device and step
        self.t = 0.0

    def now(self) -> float:
        """Return the simulated seconds so far."""
        return self.t

    def begin(self, wait: torch.Tensor, b: torch.Tensor) -> float | None:
        """Return the modelled seconds before the exchange: the slowest device's wait + compute."""
        return clock.step_time(wait, clock.compute_time(self.profiles, b), 0.0)

    def finish(
        self,
        wait: torch.Tensor,
        b: torch.Tensor,
        collective: str,
        nbytes: torch.Tensor,
        compressors: tuple[str, ...] = (),
    ) -> Timing:
        """Model the step: the slowest device's wait and compute, then the collective."""
        compute = clock.compute_time(self.profiles, b)  # (K,)
        comm = clock.comm_time(self.profiles, collective, nbytes, self.messages)
        squeeze = sum(self.compress_s.get(name, 0.0) for name in compressors)  # every device
        step_s = clock.step_time(wait, compute, comm) + squeeze
        self.t += step_s
        return Timing(float(wait.max()), float(compute.max()), comm, step_s, self.t, squeeze)

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

    def begin(self, wait: torch.Tensor, b: torch.Tensor) -> float | None:
        """Mark the start of the computation and zero the collective's timer; None: the step's
        compute is not known before it runs."""
        self._begin = time.monotonic()
        self.timed.reset()
        return None

    def finish(
        self,
        wait: torch.Tensor,
        b: torch.Tensor,
        collective: str,
        nbytes: torch.Tensor,
        compressors: tuple[str, ...] = (),
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
