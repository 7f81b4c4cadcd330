"""Device profiles and the simulated timing model: compute, communication and waiting per device.

Every function is pure and works on (K,) float64 tensors, one entry per device.

Profiles (`make_profiles(name, k)`):

- ``paper``: fitted to the paper's three sync times on 8 K80s over 5 Gbps Ethernet [paper, Fig.
  4b]: Transformer (46 MB) 0.12 s, ResNet152 (230 MB) 1.05 s, VGG19 (548 MB) 1.45 s. No
  ``a + b * bytes`` fits them within 10 % [ours]; the authors' code all-reduces one message per
  parameter tensor [authors' code, ``MPIOps.allreduce``], so a collective of m messages costs
  ``2(K-1)/K * 8N / bw + 2(K-1) * latency + m * message_s`` [ours]. With K = 8, the latency kept
  at 0.5 ms and N, m = 4 * params, tensors of ``PAPER_SYNC`` (torchvision's counts):

      ResNet152  1.75 * 8 * 240,771,232 / bw + 0.007 + 467 * message_s = 1.05
      VGG19_bn   1.75 * 8 * 574,712,992 / bw + 0.007 +  70 * message_s = 1.45

  solve to bw = ``PAPER_EFFECTIVE_BPS`` = 5.8607e9 bit/s and ``PAPER_MESSAGE_S`` = 1.0018 ms;
  the third equation is the check, Transformer 1.75 * 8 * 46e6 / bw + 0.007 + m_T * message_s
  = 0.1169 + 0.0010 * m_T s vs 0.12 s. Residuals: 0 %, 0 %, and for the Transformer (11.5M
  parameters, its tensor count unknown [paper]; we assume m_T = 12, one
  ``nn.TransformerEncoderLayer``'s tensors [ours]) +7.4 %; m_T = 0, 6, 13, 25, 75 give -2.6 %,
  +2.4 %, +8.3 %, +18 %, +60 %. Leaving the latency free instead (three unknowns, exact) makes
  it negative for m_T > 10. The fitted bandwidth is above the nominal 5 Gbps: at 5 Gbps a
  bandwidth-bound ring needs 1.61 s for VGG19 alone, so the constants describe the paper's
  measurements, not the wire [ours]. An iteration takes about 1.2 s at batch 64 (Table II), so
  compute(64) = 1.2 - 1.05 = 0.15 s = 0.02 s overhead + 64 * (0.13 / 64) s per sample.
  Devices are homogeneous.
- ``uniform``: a generic edge device: 100 Mbps links, 5 ms latency, 0.01 s + 2e-4 s/sample, no
  per-message cost (``message_s`` = 0, as for ``csv``).
- ``csv``: one row per device from a CSV file (``csv=PATH``; config key ``clock.csv``). The header
  names the five columns, in any order::

      seconds_per_sample,overhead_s,uplink_bps,downlink_bps,latency_s
      0.002,0.02,1e8,1e8,0.005
      0.004,0.02,5e7,1e8,0.010

  There must be K data rows, or exactly one row that every device shares. Times are in seconds
  (seconds_per_sample, overhead_s, latency_s: finite and >= 0); bandwidths are in bits per second
  (uplink_bps, downlink_bps: finite and > 0). Blank lines are ignored.

Overrides (``seconds_per_sample``, ``overhead_s``, ``bandwidth_bps`` for both links, ``latency_s``)
replace the profile's value for every device.

Collectives (alpha-beta model, bandwidth-bound, latency = the slowest device's):

- ring all-reduce of N bytes per device: 2(K-1) phases, each moving N/K bytes per device over the
  slowest link: ``2(K-1)/K * 8N / min_i min(up_i, down_i) + 2(K-1) * max_i latency_i``.
- ring all-gather of n_j bytes from device j: device i receives every block but its own on its
  downlink and sends every block but its successor's (i+1 mod K) on its uplink, so
  ``max_i max(8(sum n - n_i) / down_i, 8(sum n - n_{i+1}) / up_i) + (K-1) * max_i latency_i
  + m/2 * max_i message_s_i`` (half an all-reduce's phases per message).
  For equal blocks n = N/K this is exactly half a ring all-reduce; for fixed n it grows with K.
"""

from __future__ import annotations

import csv as csvlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from scadles.errors import UserError
from scadles.registry import Registry
from scadles.textfile import read_text

CSV_COLUMNS = ("seconds_per_sample", "overhead_s", "uplink_bps", "downlink_bps", "latency_s")
_POSITIVE = frozenset({"uplink_bps", "downlink_bps"})

# name -> (parameters, parameter tensors, sync seconds on 8 devices) [paper, Fig. 4b]; counts are
# torchvision's resnet152 and vgg19_bn; the Transformer's 11.5M (46 MB) and 12 tensors are assumed
PAPER_SYNC: dict[str, tuple[int, int, float]] = {
    "transformer": (11_500_000, 12, 0.12),
    "resnet152": (60_192_808, 467, 1.05),
    "vgg19_bn": (143_678_248, 70, 1.45),
}
PAPER_LATENCY_S = 5e-4


def _fit_paper() -> tuple[float, float]:
    """Solve the ResNet152 and VGG19 equations (module docstring) for (bandwidth, message_s)."""
    (n1, m1, t1), (n2, m2, t2) = ((4 * p, m, t) for p, m, t in list(PAPER_SYNC.values())[1:])
    a1, a2 = 2 * 7 / 8 * 8 * n1, 2 * 7 / 8 * 8 * n2  # seconds * bit/s of the bandwidth term
    b1, b2 = t1 - 2 * 7 * PAPER_LATENCY_S, t2 - 2 * 7 * PAPER_LATENCY_S
    det = a1 * m2 - a2 * m1
    inv_bw, msg = (b1 * m2 - b2 * m1) / det, (a1 * b2 - a2 * b1) / det
    return 1 / inv_bw, msg


PAPER_EFFECTIVE_BPS, PAPER_MESSAGE_S = _fit_paper()
PAPER_OVERHEAD_S = 0.02
PAPER_SECONDS_PER_SAMPLE = (0.15 - PAPER_OVERHEAD_S) / 64  # compute(64) = 1.2 s - 1.05 s

_BUILTIN: dict[str, dict[str, float]] = {
    "paper": {
        "seconds_per_sample": PAPER_SECONDS_PER_SAMPLE,
        "overhead_s": PAPER_OVERHEAD_S,
        "uplink_bps": PAPER_EFFECTIVE_BPS,
        "downlink_bps": PAPER_EFFECTIVE_BPS,
        "latency_s": PAPER_LATENCY_S,
        "message_s": PAPER_MESSAGE_S,
    },
    "uniform": {
        "seconds_per_sample": 2e-4,
        "overhead_s": 0.01,
        "uplink_bps": 100e6,
        "downlink_bps": 100e6,
        "latency_s": 5e-3,
    },
}


@dataclass(frozen=True, slots=True)
class DeviceProfiles:
    """Compute speed and network links of K devices (one entry per device, float64)."""

    seconds_per_sample: torch.Tensor  # (K,)
    overhead_s: torch.Tensor  # (K,)
    uplink_bps: torch.Tensor  # (K,) bits per second
    downlink_bps: torch.Tensor  # (K,) bits per second
    latency_s: torch.Tensor  # (K,)
    message_s: torch.Tensor  # (K,) fixed seconds per message of a collective

    @property
    def k(self) -> int:
        """Return the number of devices."""
        return int(self.seconds_per_sample.shape[0])


def _check_value(name: str, value: float, where: str) -> None:
    """Raise UserError unless value is finite and in range for column name."""
    ok = math.isfinite(value) and (value > 0 if name in _POSITIVE else value >= 0)
    if not ok:
        allowed = "a finite number > 0" if name in _POSITIVE else "a finite number >= 0"
        raise UserError(f"{where}: {name} must be {allowed}, got {value!r}")


def _read_csv(path: str, k: int) -> dict[str, list[float]]:
    """Read per-device columns from a profile CSV with K rows (or one row, broadcast)."""
    text = read_text(path, "clock.csv")  # one line naming it when not UTF-8 text
    columns: dict[str, list[float]] = {c: [] for c in CSV_COLUMNS}
    with io.StringIO(text, newline="") as f:
        reader = csvlib.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if sorted(header) != sorted(CSV_COLUMNS):
            want, got = ",".join(CSV_COLUMNS), ",".join(header)
            raise UserError(f"{path}: header must name the columns {want}, got {got}")
        reader.fieldnames = header
        for raw in reader:
            where = f"{path} line {reader.line_num}"
            if None in raw or any(v is None for v in raw.values()):
                raise UserError(f"{where}: expected {len(CSV_COLUMNS)} comma-separated values")
            if all(not v.strip() for v in raw.values()):
                continue
            for name in CSV_COLUMNS:
                text = raw[name].strip()
                try:
                    value = float(text)
                except ValueError:
                    raise UserError(f"{where}: {name} must be a number, got {text!r}") from None
                _check_value(name, value, f"{where} column {name}")
                columns[name].append(value)
    rows = len(columns[CSV_COLUMNS[0]])
    if rows not in (1, k):
        raise UserError(
            f"{path}: needs {k} device rows (one per device) or 1 shared row, got {rows}"
        )
    return {name: vals * k if rows == 1 else vals for name, vals in columns.items()}


Columns = dict[str, list[float]]  # CSV_COLUMNS -> K values


def _builtin(name: str) -> Callable[[int, str | None], Columns]:
    """Return the profile `name` of _BUILTIN: every device alike."""
    return lambda k, csv: {c: [v] * k for c, v in _BUILTIN[name].items()}


def _csv_profile(k: int, csv: str | None) -> Columns:
    """Return one row per device from the CSV file clock.csv."""
    if csv is None:
        raise UserError("clock.profile = 'csv' needs a file: set clock.csv")
    return _read_csv(csv, k)


# name -> columns(k, clock.csv) of K devices; register a function to add a profile
PROFILES: Registry[Callable[[int, str | None], Columns]] = Registry(
    "profile",
    {"paper": _builtin("paper"), "uniform": _builtin("uniform"), "csv": _csv_profile},
    key="clock.profile",
)


def make_profiles(
    name: str,
    k: int,
    *,
    csv: str | None = None,
    seconds_per_sample: float | None = None,
    overhead_s: float | None = None,
    bandwidth_bps: float | None = None,
    latency_s: float | None = None,
) -> DeviceProfiles:
    """Build the profiles of k devices from a named profile, then apply the overrides."""
    if k < 1:
        raise UserError(f"devices.count must be >= 1, got {k}")
    columns = PROFILES.get(name)(k, csv)
    columns.setdefault("message_s", [0.0] * k)
    overrides = {
        "seconds_per_sample": seconds_per_sample,
        "overhead_s": overhead_s,
        "uplink_bps": bandwidth_bps,
        "downlink_bps": bandwidth_bps,
        "latency_s": latency_s,
    }
    for col, value in overrides.items():
        if value is not None:
            label = "bandwidth_bps" if col in _POSITIVE else col
            _check_value(col, float(value), f"clock.{label}")
            columns[col] = [float(value)] * k
    t = {c: torch.tensor(v, dtype=torch.float64) for c, v in columns.items()}  # each (K,)
    return DeviceProfiles(**t)


def compute_time(p: DeviceProfiles, batch: torch.Tensor) -> torch.Tensor:
    """Return each device's compute seconds for its batch size; an empty batch costs nothing."""
    b = batch.to(torch.float64)  # (K,)
    t = p.overhead_s + p.seconds_per_sample * b  # (K,)
    return torch.where(b > 0, t, torch.zeros_like(t))


def allreduce_time(p: DeviceProfiles, nbytes: float, messages: int = 1) -> float:
    """Return the seconds of a dense ring all-reduce of nbytes per device among all K devices,
    sent as `messages` messages (one per parameter tensor)."""
    k = p.k
    if k == 1:
        return 0.0
    link = torch.minimum(p.uplink_bps, p.downlink_bps).min().item()
    lat = p.latency_s.max().item()
    per_message = messages * p.message_s.max().item()
    return 2 * (k - 1) / k * nbytes * 8 / link + 2 * (k - 1) * lat + per_message


def allgather_time(p: DeviceProfiles, nbytes: torch.Tensor, messages: int = 1) -> float:
    """Return the seconds of a ring all-gather where device j contributes nbytes[j] bytes in
    `messages` messages."""
    k = p.k
    if k == 1:
        return 0.0
    n = nbytes.to(torch.float64)  # (K,)
    total = n.sum()
    recv = (total - n) * 8 / p.downlink_bps  # (K,) every block but its own
    send = (total - n.roll(-1)) * 8 / p.uplink_bps  # (K,) every block but its successor's
    bandwidth = torch.maximum(recv, send).max().item()
    per_message = messages * p.message_s.max().item() / 2
    return bandwidth + (k - 1) * p.latency_s.max().item() + per_message


def transfer_time(p: DeviceProfiles, recv: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """Return per-device seconds to download recv[i] and upload sent[i] bytes, links in parallel."""
    down = recv.to(torch.float64) * 8 / p.downlink_bps  # (K,)
    up = sent.to(torch.float64) * 8 / p.uplink_bps  # (K,)
    busy = (recv > 0) | (sent > 0)
    return torch.where(busy, torch.maximum(down, up) + p.latency_s, 0.0)


def step_time(wait: torch.Tensor, compute: torch.Tensor, comm: float) -> float:
    """Return a synchronous step's seconds: the slowest device's wait + compute, then the sync."""
    return (wait.to(torch.float64) + compute.to(torch.float64)).max().item() + comm


def emulated_bytes(real_params: int, emulate_params: int | None, bytes_per_param: int = 4) -> float:
    """Return the gradient bytes to charge: the emulated model's if given, else the real one's.

    emulate_params is a parameter count; a model name (clock.emulate_params = "resnet152") is
    resolved to one by `scadles.training.build.comm_size` (`scadles.nn.emulated_size`) first.
    """
    if emulate_params is not None and emulate_params < 1:
        raise UserError(f"clock.emulate_params must be a positive integer, got {emulate_params}")
    if bytes_per_param < 1:
        raise UserError(f"bytes_per_param must be a positive integer, got {bytes_per_param}")
    params = real_params if emulate_params is None else emulate_params
    return float(params * bytes_per_param)


def wire_bytes(collective: str, nbytes: torch.Tensor) -> float:
    """Return the bytes all K devices put on the wire in one ring collective, summed.

    nbytes[j] is device j's payload. A ring all-reduce sends 2(K-1)/K of each device's payload
    from every device; a ring all-gather forwards every block but one from every device, so
    each block crosses K-1 links. This is the summary's `bytes_sent`, in both modes.
    """
    k = int(nbytes.numel())
    total = float(nbytes.double().sum())
    if collective == "allreduce":
        return 2.0 * (k - 1) / k * total
    return (k - 1) * total


def comm_time(p: DeviceProfiles, collective: str, nbytes: torch.Tensor, messages: int = 1) -> float:
    """Return the modelled seconds of one step's collective of `messages` messages."""
    if collective == "allreduce":
        return allreduce_time(p, float(nbytes.max()), messages)
    return allgather_time(p, nbytes, messages)
