"""Estimate a run's memory before its model is allocated; refuse a run that cannot fit.

[ours] A run whose model, per-device state or batch cannot fit fails with one line naming the
estimate, what is available and the key to change, instead of a traceback from torch's allocator
(`--set model.width=10000000` asked torch for 1.2 PB while building the first layer). The
estimate counts, in the model's element size (float32: 4 bytes), with P parameters and K_l
devices on this process:

  parameters       P, counted on the meta device (no weights allocated or drawn)
  optimizer state  P momentum buffers (SGD with momentum); K_l x P velocities under momentum
                   correction (scadles.compress.momentum), where the optimizer keeps none
  gradients        dense exchange: the flat (P,) gradient its p.grad views share, and the
                   all-reduce's copy: 2 P. Compressed, at the error-feedback update: the
                   per-device gradients g (K_l, P), the residual e, acc = g + e, its decompressed
                   payload and the new residual, 5 K_l x P (scadles.exchange; 3 K_l x P with
                   compress.error_feedback = false); the vmapped calls' gradients are freed by
                   then (scadles.grads)
  activations      at the largest batch the config allows (b_max, or policy.batch for a
                   fixed-batch policy, on every device): the packed batch's input and, for the
                   largest forward and backward (a chunk of whole devices, scadles.chunking, or
                   the whole union batch when a torch BatchNorm forbids chunking), every leaf
                   module's output per row, measured by a forward of two rows on the meta device;
                   or the evaluation batch's forward, if larger

Temporaries of compressors and autograd are left out, so a run that passes may still need more;
a refusal says the run cannot fit once its batches reach the largest the config allows. The data
set is loaded first and is not counted: it is already out of the memory available when this looks.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from scadles.chunking import CHUNK_ELEMENTS, chunkable
from scadles.comm import Collective, device_slice
from scadles.config.load import Config
from scadles.data.datasets import Dataset
from scadles.errors import UserError
from scadles.nn import build_model
from scadles.training import build

log = logging.getLogger(__name__)

COMPRESSED_COPIES = 5  # (K_l, P) tensors alive at a compressed step's peak (see the docstring)
UNCORRECTED_COPIES = 3  # the same without error feedback: g, the zero residual, decompressed
DENSE_COPIES = 2  # (P,) gradient tensors of the dense exchange: flat, all-reduced copy


@dataclass(frozen=True, slots=True)
class Estimate:
    """The bytes a run needs, by what holds them, and the keys that change each term."""

    parameters: float
    optimizer: float
    gradients: float
    activations: float
    keys: dict[str, str]  # term -> the key (with its value) that makes that term smaller

    @property
    def total(self) -> float:
        """Return the sum of the terms."""
        return self.parameters + self.optimizer + self.gradients + self.activations

    def terms(self) -> dict[str, float]:
        """Return the terms by name, in the order the refusal lists them."""
        return {
            "parameters": self.parameters,
            "optimizer state": self.optimizer,
            "gradients": self.gradients,
            "activations": self.activations,
        }


def size_text(n: float) -> str:
    """Format a byte count in decimal units with three significant digits ('12.8 TB')."""
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"


def activation_elements(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """Return (sum, max) over model's leaf modules of output elements per input row, from a
    forward of two rows on the meta device (nothing allocated, the model's own tensors left as
    they are); None when the model cannot run there."""
    rows, outs = 2, []

    def record(_m: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, torch.Tensor) and out.dim() and out.shape[0] == rows:
            outs.append(out.numel() // rows)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(record) for m in leaves]
    named = chain(model.named_parameters(), model.named_buffers())
    meta = {n: torch.empty_like(t, device="meta") for n, t in named}
    dtype = next((t.dtype for t in meta.values() if t.is_floating_point()), torch.float32)
    try:
        with torch.no_grad():
            functional_call(
                model, meta, (torch.empty(rows, *input_shape, dtype=dtype, device="meta"),)
            )
    except Exception as err:  # a model meta tensors cannot run (data-dependent code, say)
        log.info("memory: activations not measured (%s: %s)", type(err).__name__, err)
        return None
    finally:
        for h in hooks:
            h.remove()
    return sum(outs), max(outs, default=0)


def _largest_batch(cfg: Config) -> tuple[int, str]:
    """Return the most rows one device trains on in a step and the key that sets it."""
    rule = build.batch_rule(cfg)
    return (rule.batch, "policy.batch") if rule.fixed else (rule.b_max, "policy.b_max")


def estimate(cfg: Config, data: Dataset, devices: int, model: nn.Module | None = None) -> Estimate:
    """Return the memory estimate of a run of cfg on data with `devices` devices in this
    process; `model` is the user's module (else cfg.model, built on the meta device)."""
    m = cfg.model
    net = model
    if net is None:
        net = build_model(
            m.name, data.input_shape, data.num_classes, norm=m.norm, width=m.width,
            groups=m.groups, meta=True,
        )  # fmt: skip
    params = [p for p in net.parameters() if p.requires_grad]
    p_count = sum(p.numel() for p in params)
    elem = params[0].element_size() if params else 4
    stored = sum(t.numel() * t.element_size() for t in chain(net.parameters(), net.buffers()))
    compresses = build.compresses(cfg)
    corrected = compresses and cfg.compress.momentum_correction
    if corrected:
        optimizer = devices * p_count * elem
    else:
        optimizer = p_count * elem if cfg.train.momentum > 0 else 0
    b, b_key = _largest_batch(cfg)
    per_row_in = max(1, math.prod(data.input_shape))
    per_call = max(1, CHUNK_ELEMENTS // per_row_in)  # rows of one chunk (scadles.chunking)
    union = devices * b
    if compresses:
        copies = UNCORRECTED_COPIES if cfg.compress.error_feedback is False else COMPRESSED_COPIES
        gradients = copies * devices * p_count * elem
        rows = min(union, max(per_call, b))  # one vmapped call (or one device in the loop)
    else:
        gradients = DENSE_COPIES * p_count * elem
        rows = min(union, per_call + b - 1) if chunkable(net) else union
    sums = activation_elements(net, data.input_shape)
    layer_sum, layer_max = sums if sums is not None else (0, 0)
    train = (union * per_row_in + rows * layer_sum) * elem
    evaluate = cfg.eval.batch_size * (per_row_in + 2 * layer_max) * elem
    size_key = "the model's size" if model is not None else f"model.width (now {m.width})"
    keys = {
        "parameters": size_key,
        "optimizer state": size_key,
        "gradients": size_key,
        "activations": f"{b_key} (now {b})",
    }
    if compresses:
        keys["gradients"] = f"devices.count (now {cfg.devices.count}) or compress.name = 'none'"
    if evaluate > train:
        keys["activations"] = f"eval.batch_size (now {cfg.eval.batch_size})"
    return Estimate(
        float(stored), float(optimizer), float(gradients), float(max(train, evaluate)), keys
    )


def _cgroup_room() -> int | None:
    """Return the bytes this process's cgroup (v2) may still take, or None without a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = (root / "memory.current").read_text().strip()
    except OSError:
        return None
    if not (limit.isdigit() and used.isdigit()):
        return None  # "max": no limit
    return max(0, int(limit) - int(used))


def host_available() -> tuple[int, str] | None:
    """Return the bytes of host memory available and where that number comes from
    (/proc/meminfo's MemAvailable, within a cgroup limit; else psutil), or None if unknown."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        lines = []
    kb = next((ln.split()[1] for ln in lines if ln.startswith("MemAvailable:")), None)
    if kb is not None and kb.isdigit():
        room, free = _cgroup_room(), int(kb) * 1024
        if room is not None and room < free:
            return room, "under this cgroup's memory.max"
        return free, "MemAvailable in /proc/meminfo"
    try:
        psutil = importlib.import_module("psutil")
    except ImportError:
        return None
    return int(psutil.virtual_memory().available), "psutil's available memory"


def available(device: torch.device) -> tuple[int, str] | None:
    """Return the bytes free where the run trains (cuda: torch.cuda.mem_get_info; else the
    host's) and where that number comes from, or None when it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device} (torch.cuda.mem_get_info)"
    return host_available()


def refuse_if_too_large(
    est: Estimate, room: tuple[int, str] | None, where: str, already: float = 0.0
) -> None:
    """Raise UserError (one line: the estimate, what is available, the key to change) when
    est.total less `already` (bytes the run holds already: a user's model) exceeds room."""
    if room is None:
        log.info("memory: %s needed, availability unknown", size_text(est.total))
        return
    free, source = room
    need = est.total - already
    log.info("memory: about %s needed, %s available %s", size_text(need), size_text(free), where)
    if need <= free:
        return
    terms = est.terms()
    parts = ", ".join(f"{name} {size_text(v)}" for name, v in terms.items())
    largest = max(terms, key=lambda name: terms[name])
    raise UserError(
        f"memory: the run needs about {size_text(est.total)} ({parts}) but "
        f"{size_text(free)} is available {where} ({source}); lower {est.keys[largest]}"
    )


def check(
    cfg: Config, data: Dataset, coll: Collective | None = None, model: nn.Module | None = None
) -> None:
    """Refuse (UserError) a run of cfg that cannot fit in memory, before its model is built.

    On cuda the weights are first drawn on the host, so the parameters must fit there too.
    """
    device = build.run_device(cfg.run.device)
    rank, world = (coll.rank, coll.world) if coll is not None else (0, 1)
    lo, hi = device_slice(cfg.devices.count, rank, world)
    est = estimate(cfg, data, hi - lo, model)
    placed = model is not None and build.device_of(model).type == device.type
    user = est.parameters if placed else 0.0  # a user's model is allocated there already
    on_host = device.type != "cuda"
    refuse_if_too_large(est, available(device), "here" if on_host else f"on {device}", user)
    if not on_host and model is None:
        only = Estimate(est.parameters, 0.0, 0.0, 0.0, est.keys)
        refuse_if_too_large(only, host_available(), "on the host (weights are drawn there)")
