"""Config -> objects: the only place that reads the config tree and looks names up in the
registries (each registry lives beside what it names; see scadles.registry)."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from scadles import clock
from scadles.comm import Collective, LocalCollective, device_slice
from scadles.compress import ErrorFeedback, PowerSGD, make_compressor
from scadles.compress.base import Compressor
from scadles.compress.momentum import LocalMomentum
from scadles.compress.registry import DENSE
from scadles.compress.switches import SWITCHES, SwitchArgs, exchange_style
from scadles.compress.timeaware import CostModel, MeasuredCosts, SimCosts, parse_candidate
from scadles.config.load import Config
from scadles.config.schema import resolved_buffer_policy, resolved_lr_scaling
from scadles.data.augment import make_augment
from scadles.data.buffer import StreamBuffer
from scadles.data.datasets import Dataset, load_dataset
from scadles.data.injection import Injection
from scadles.data.injectors import INJECTIONS
from scadles.data.partition import partition
from scadles.data.rates import RateSchedule, distribution_rates, preset_rates, read_trace
from scadles.data.streams import Arrivals, ReplayOrder
from scadles.engine import Engine, Schedule
from scadles.errors import UserError
from scadles.exchange import DenseExchange, Exchange
from scadles.feeds import Feed
from scadles.feeds.live import LiveFeed
from scadles.feeds.live_buffer import LiveBuffer
from scadles.feeds.sim import SimFeed
from scadles.grads import PerDeviceGrads, layer_shapes, layer_sizes
from scadles.live.bucket import ThrottledCollective, TokenBucket
from scadles.live.source import LiveSource, open_source, stream_names
from scadles.nn import build_model, emulated_size, param_count, tensor_size
from scadles.policies import POLICIES, BatchRule
from scadles.timing import StepClock, VirtualClock, WallClock, compress_costs, compress_time

log = logging.getLogger(__name__)


def generator(seed: int, purpose: str) -> torch.Generator:
    """Return a generator derived from (seed, purpose): independent streams of randomness."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(purpose.encode())) % 2**62)


def base_rates(cfg: Config) -> torch.Tensor:
    """Return the K per-device stream rates the config asks for."""  # (K,)
    k = cfg.devices.count
    spec = cfg.streams.rates
    if spec.values is not None:
        return torch.tensor(spec.values, dtype=torch.float64)
    if spec.preset is not None:
        return preset_rates(spec.preset, k)
    assert spec.dist is not None
    return distribution_rates(spec.dist, spec.mean, spec.std, k)


def rate_schedule(cfg: Config) -> RateSchedule:
    """Return the (possibly time-varying) rate schedule."""
    k = cfg.devices.count
    sched = read_trace(cfg.streams.trace, k) if cfg.streams.trace else None
    if sched is None:
        sched = RateSchedule.constant(base_rates(cfg))
    steps = cfg.streams.schedule
    return sched.scaled([s.at_s for s in steps], [s.scale for s in steps])


def batch_rule(cfg: Config) -> BatchRule:
    """Return the policy's batch/weighting/LR rule."""
    p = cfg.policy
    scaling = resolved_lr_scaling(cfg)
    return BatchRule(
        p.name,
        p.batch,
        p.b_min,
        p.b_max,
        cfg.streams.window_s,
        scaling,
        warmup_steps=p.warmup_steps,
        scale_max=p.lr_scale_max or None,  # 0: uncapped
    )


def buffer_policy(cfg: Config) -> str:
    """Return the buffer policy: configured, or the policy's default."""
    return resolved_buffer_policy(cfg)


def compressor_name(cfg: Config) -> str:
    """Return the compressor: configured, or the policy's default (POLICIES: scadles topk)."""
    name = cfg.compress.name or POLICIES.get(cfg.policy.name).compressor
    return "topk_layer" if name == "topk" and cfg.compress.per_layer else name


def compresses(cfg: Config) -> bool:
    """Return whether the run compresses at all (else the dense union-batch exchange); the
    time-aware switch always may (its candidates)."""
    return switch_name(cfg) == "time_aware" or compressor_name(cfg) not in DENSE


def switch_name(cfg: Config) -> str:
    """Return the compression switch: configured, or the policy's default."""
    return cfg.compress.policy or POLICIES.get(cfg.policy.name).switch


def _unbiased(name: str, feedback: bool | None) -> bool:
    """Return whether the compressor `name` is built in its unbiased (P/k-scaled) form.

    Rand-k is unbiased unless error feedback is asked for: feedback needs a contraction (the
    unscaled draw, ||C(x) - x||^2 = (1 - k/P) ||x||^2), and on the demo model the unscaled draw
    with feedback collapsed to chance at every ratio up to 0.25 (docs/COMPRESSION.md).
    """
    return name == "randk" and not feedback


def exchange(
    cfg: Config,
    model: torch.nn.Module,
    k: int,
    comm_params: float,
    coll: Collective | None = None,
    part_sizes: list[int] | None = None,
    costs: Callable[[int, float], CostModel] | None = None,
) -> Exchange | DenseExchange:
    """Return the gradient exchange: dense SGD, or compression with feedback and a switch.

    part_sizes: the training samples of every device's partition (a device's own epochs), if known.
    costs(candidates, scale): the time-aware switch's cost model (default: measured seconds).
    """
    c = cfg.compress
    name = compressor_name(cfg)
    coll = coll or LocalCollective()
    devices = device_slice(k, coll.rank, coll.world)
    if not compresses(cfg):
        return DenseExchange(model, comm_params, coll, devices)
    sizes, shapes = layer_sizes(model), layer_shapes(model)
    kind = switch_name(cfg)
    named_ones = [s.split(":")[0] for s in c.candidates] if kind == "time_aware" else [name]
    if c.error_feedback and "randk" in named_ones:
        log.warning(
            "randk with compress.error_feedback = true: the unscaled draw with error feedback "
            "collapsed to chance on the demo model at ratios <= 0.25 (docs/COMPRESSION.md); "
            "leave compress.error_feedback unset for the unbiased, P/k-scaled draw"
        )

    def make(ratio: float) -> Compressor:
        return make_compressor(
            name,
            ratio=ratio,
            layers=sizes,
            shapes=shapes,
            rank=c.rank,
            levels=c.levels,
            bucket=c.bucket,
            unbiased=_unbiased(name, c.error_feedback),
        )

    def named(cname: str, kw: dict[str, Any]) -> Compressor:
        opts: dict[str, Any] = {"levels": c.levels, "bucket": c.bucket, "rank": c.rank} | kw
        opts["unbiased"] = _unbiased(cname, c.error_feedback)
        return make_compressor(cname, layers=sizes, shapes=shapes, **opts)

    scale = comm_params / max(sum(sizes), 1)
    n = len(c.candidates)
    cost_model = costs(n, scale) if costs is not None else MeasuredCosts(n, c.probe_every)
    levels, switch = SWITCHES.get(kind)(
        SwitchArgs(
            ratio=c.ratio,
            delta=c.delta,
            ewma=c.ewma,
            eta=c.eta,
            critical_ratio=c.critical_ratio,
            per_layer=c.per_layer,
            layers=tuple(sizes),
            devices=k,
            make=make,
            reduce=coll.all_reduce if coll.world > 1 else None,
            sizes=None if part_sizes is None else torch.tensor(part_sizes[devices[0] : devices[1]]),
            candidates=c.candidates,
            hysteresis=c.hysteresis,
            probe_every=c.probe_every,
            named=named,
            costs=cost_model,
            weights=batch_rule(cfg).device_weights,
        )
    )
    for lv in levels:
        if isinstance(lv, PowerSGD):  # the same warm starts on every rank (and in one process)
            lv.warm_gen = generator(cfg.train.seed, f"powersgd-warm-start/rank{lv.rank}")
        if isinstance(lv, PowerSGD) and coll.world > 1:
            lv.reduce = coll.all_reduce  # both rounds summed over the ranks
    p = sum(sizes)
    feedback = c.error_feedback
    if feedback is None:  # error feedback corrects bias; an unbiased code needs none
        feedback = not any(getattr(lv, "unbiased", False) for lv in levels)
    memory = ErrorFeedback.zeros(devices[1] - devices[0], p, enabled=feedback)
    dev = device_of(model)  # per-device state lives beside the gradients (run.device)
    memory.residual = memory.residual.to(dev)
    t = cfg.train
    velocity = (
        LocalMomentum(
            devices[1] - devices[0], p, t.momentum, t.weight_decay, masking=c.momentum_masking
        )
        if c.momentum_correction
        else None
    )
    if velocity is not None:
        velocity.velocity = velocity.velocity.to(dev)
    log.info("compression: %s at ratio %g, switch %s", name, c.ratio, kind)
    grads = PerDeviceGrads(model)
    style = exchange_style(kind, c.dense_feedback)
    return Exchange(grads, levels, switch, memory, scale, coll, devices, velocity, style)


def injection(cfg: Config, data: Dataset, parts: list[torch.Tensor]) -> Injection | None:
    """Return the data-injection stage (paper 2.3), or None."""
    inj = cfg.inject
    build = INJECTIONS.get(inj.name)
    return build(inj.alpha, inj.beta, data.y_train, data.num_classes, parts)


def partitions(cfg: Config, data: Dataset) -> list[torch.Tensor]:
    """Return each device's training indices."""
    return partition(
        data.y_train,
        cfg.devices.count,
        cfg.devices.partition,
        generator(cfg.train.seed, "partition"),
        num_classes=data.num_classes,
        dirichlet_alpha=cfg.devices.dirichlet_alpha,
        shards_per_device=cfg.devices.shards_per_device,
    )


def dataset(cfg: Config) -> Dataset:
    """Load the configured dataset."""
    d = cfg.data
    return load_dataset(
        d.name, path=d.path, n_train=d.n_train, n_test=d.n_test, seed=cfg.train.seed
    )


def run_device(name: str) -> torch.device:
    """Return the device run.device names: auto is cuda when torch sees a GPU, else cpu."""
    cuda = torch.cuda.is_available()
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"run.device: unknown device {name!r}; known: auto, cpu, cuda")
    if name == "cuda" and not cuda:
        raise UserError(
            "run.device: 'cuda' asked for, but torch.cuda.is_available() is false here; "
            "allowed on this machine: auto, cpu"
        )
    return torch.device("cuda" if cuda and name != "cpu" else "cpu")


def device_of(model: torch.nn.Module) -> torch.device:
    """Return the device of model's first parameter (cpu for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _model(
    cfg: Config,
    data: Dataset,
    coll: Collective | None,
    model: torch.nn.Module | None = None,
    device: torch.device | None = None,
) -> torch.nn.Module:
    """Return the user's model or build the configured one, on `device` (the one place the model
    is placed; its weights are drawn on the CPU first, so a seed gives the same weights on every
    device); in real mode every rank starts from rank 0's weights."""
    m = cfg.model
    if model is None:
        model = build_model(
            m.name,
            data.input_shape,
            data.num_classes,
            norm=m.norm,
            width=m.width,
            groups=m.groups,
            gen=generator(cfg.train.seed, "model"),
        )
    if device is not None:
        model = model.to(device)
    if coll is not None and coll.world > 1:
        with torch.no_grad():
            for prm in model.parameters():
                prm.copy_(coll.broadcast(prm))
    return model


def _optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Return SGD with momentum and weight decay, the same for every policy.

    Under momentum correction the exchange applies both per device before compression, so the
    optimizer steps plain SGD.
    """
    t = cfg.train
    if cfg.compress.momentum_correction and compresses(cfg):
        return torch.optim.SGD(model.parameters(), lr=t.lr)
    return torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )


def profiles(cfg: Config, k: int) -> clock.DeviceProfiles:
    """Return the device profiles of the clock section."""
    c = cfg.clock
    return clock.make_profiles(
        c.profile,
        k,
        csv=c.csv,
        seconds_per_sample=c.seconds_per_sample,
        overhead_s=c.overhead_s,
        bandwidth_bps=c.bandwidth_bps,
        latency_s=c.latency_s,
    )


def comm_size(cfg: Config, data: Dataset, model: torch.nn.Module) -> tuple[int, int]:
    """Return (parameters, parameter tensors) communication is accounted at.

    clock.emulate_params unset: the model's own; an integer: that many parameters in the model's
    own tensors; a name: `scadles.nn.emulated_size` (the paper's sizes for resnet152 / vgg19_bn,
    else that registered model at this data shape with the run's model.norm, width, groups).
    """
    own = tensor_size(model)
    emulated, m = cfg.clock.emulate_params, cfg.model
    if emulated is None:
        return own
    if isinstance(emulated, int):
        return emulated, own[1]
    return emulated_size(
        emulated, data.input_shape, data.num_classes, norm=m.norm, width=m.width, groups=m.groups
    )


def _comm_params(cfg: Config, data: Dataset, model: torch.nn.Module) -> float:
    """Return the parameter count communication is accounted at."""
    real = param_count(model)
    params, tensors = comm_size(cfg, data, model)
    log.info(
        "model %s: %d parameters; communication at %d parameters in %d tensors",
        cfg.model.name,
        real,
        params,
        tensors,
    )
    return float(params)


def _check_devices(cfg: Config, data: Dataset) -> None:
    k = cfg.devices.count
    if k > len(data.y_train):
        raise UserError(
            f"devices.count must be <= the training set size {len(data.y_train)}, got {k}"
        )


SourceFactory = Callable[[list[int], list[str]], LiveSource]  # (global devices, streams) -> source


def engine(
    cfg: Config,
    data: Dataset | None = None,
    coll: Collective | None = None,
    *,
    model: torch.nn.Module | None = None,
    source: LiveSource | SourceFactory | None = None,
    positions: Mapping[str, int] | None = None,
    defer_acks: bool = False,
    start_s: float = 0.0,
) -> Engine:
    """Build the engine of this process: the simulated feed, or a live one when live.source
    is not "sim" (or a source is given); `model` replaces the configured one (its weights are
    used as they are, and in real mode rank 0's are broadcast).

    For a live source, `positions` and `start_s` continue a run from a checkpoint.
    """
    device = run_device(cfg.run.device)
    if device.type == "cuda" and cfg.run.deterministic:  # cuBLAS' deterministic workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when it starts
    data = data if data is not None else dataset(cfg)
    _check_devices(cfg, data)
    seed, k, t = cfg.train.seed, cfg.devices.count, cfg.train
    live = source is not None or cfg.live.source != "sim"
    coll = coll or LocalCollective()
    devices = device_slice(k, coll.rank, coll.world)
    timed: ThrottledCollective | None = None
    if live:
        timed = _throttled(cfg, coll, devices[0])
        coll = timed
    net = _model(cfg, data, coll, model, device)
    comm_params = _comm_params(cfg, data, net)
    feed: Feed
    step_clock: StepClock
    sim_costs: Callable[[int, float], CostModel] | None = None
    sizes: list[int] | None = None  # each device's partition, where the feed replays one
    if live:
        assert timed is not None
        feed = _live_feed(cfg, data, timed, source, positions, defer_acks, start_s)
        step_clock = WallClock(timed, timed, start_s)
    else:
        parts = partitions(cfg, data)
        sizes = [len(p) for p in parts]
        rule = batch_rule(cfg)
        need, key = (rule.batch, "policy.batch") if rule.fixed else (rule.b_min, "policy.b_min")
        fewest = min((len(p) for p in parts), default=0)
        if fewest < need:  # the device replays its few samples within one batch
            log.warning(
                "devices.count=%d leaves a device %d training samples (data.n_train=%d), "
                "fewer than one batch (%s=%d): it repeats samples within a batch",
                k,
                fewest,
                len(data.y_train),
                key,
                need,
            )
        feed = SimFeed(
            data=data,
            replay=ReplayOrder(parts, seed),
            arrivals=Arrivals.start(
                rate_schedule(cfg), cfg.streams.arrivals, generator(seed, "arrivals")
            ),
            buffer=StreamBuffer.empty(k, buffer_policy(cfg), cfg.buffer.capacity),
            rule=batch_rule(cfg),
            profiles=profiles(cfg, k),
            gen=generator(seed, "streams"),
            injection=injection(cfg, data, parts),
            inject_gen=generator(seed, "inject"),
            sample_bytes=cfg.data.sample_bytes or data.sample_bytes,
            devices=devices,
        )
        messages = comm_size(cfg, data, net)[1]  # one message per tensor [authors' code]
        costs = compress_costs(comm_params, powersgd_rank(cfg))  # charged at the accounted size
        step_clock = VirtualClock(profiles(cfg, k), messages, costs)
        sim_costs = _sim_costs(profiles(cfg, k), messages, comm_params)
    purpose = "compress" if coll.world == 1 else f"compress/rank{coll.rank}"
    return Engine(
        model=net,
        optimizer=_optimizer(cfg, net),
        data=data,
        feed=feed,
        clock=step_clock,
        rule=batch_rule(cfg),
        schedule=Schedule(t.lr, tuple(t.milestones), t.gamma),
        exchange=exchange(cfg, net, k, comm_params, coll, sizes, sim_costs),
        compress_gen=generator(seed, purpose),
        eval_batch=cfg.eval.batch_size,
        augment=make_augment(cfg.data.augment, data.x_train, f"data.name = {cfg.data.name!r}"),
        augment_gen=generator(seed, purpose.replace("compress", "augment")),
        deterministic=cfg.run.deterministic,
    )


def powersgd_rank(cfg: Config) -> int:
    """Return the PowerSGD rank the clock charges: compress.rank, or the time-aware candidates'."""
    c = cfg.compress
    if switch_name(cfg) != "time_aware":
        return c.rank
    ranks = [
        kw["rank"]
        for n, kw in map(lambda s: parse_candidate("", s), c.candidates)
        if n == "powersgd"
    ]
    return max(ranks, default=c.rank)


def _sim_costs(
    prof: clock.DeviceProfiles, messages: int, comm_params: float
) -> Callable[[int, float], CostModel]:
    """Return the time-aware cost model of the virtual clock: its link model and compute."""

    def make(n: int, scale: float) -> CostModel:
        def comm(collective: str, nbytes: torch.Tensor) -> float:
            return clock.comm_time(prof, collective, nbytes * scale, messages)

        def squeeze(comp: Compressor) -> float:
            rank = int(getattr(comp, "rank", 1))
            return compress_time(getattr(comp, "name", ""), comm_params, rank)

        return SimCosts(n, prof.k, comm, squeeze)

    return make


def _throttled(cfg: Config, coll: Collective, first: int) -> ThrottledCollective:
    """Wrap the collective to time it and, with live.bandwidth, emulate this rank's uplink."""
    bucket = None
    if cfg.live.bandwidth:  # emulate this rank's uplink: its first device's profile
        uplink = float(profiles(cfg, cfg.devices.count).uplink_bps[first]) / 8.0
        steps = cfg.live.bandwidth_schedule

        def scale(t: float) -> float:  # the last step at or before t, 1 before the first
            return next((st.scale for st in reversed(steps) if st.at_s <= t), 1.0)

        bucket = TokenBucket(uplink, burst_bytes=uplink * 0.01, scale=scale if steps else None)
    return ThrottledCollective(coll, bucket)


def _live_feed(
    cfg: Config,
    data: Dataset,
    coll: ThrottledCollective,
    source: LiveSource | SourceFactory | None,
    positions: Mapping[str, int] | None,
    defer_acks: bool,
    start_s: float,
) -> LiveFeed:
    """Open this rank's live streams (the configured source, or the user's) as a feed."""
    k, lv = cfg.devices.count, cfg.live
    lo, hi = device_slice(k, coll.rank, coll.world)
    sched = rate_schedule(cfg)
    streams = stream_names(range(lo, hi), lv.prefix)
    kind = lv.source if source is None else "user"
    if source is None:
        parts = partitions(cfg, data)[lo:hi] if lv.source == "replay" else []
        local = [(data.x_train[p], data.y_train[p]) for p in parts]
        opened = open_source(
            lv.source,
            url=lv.url or "",
            streams=streams,
            shape=tuple(data.input_shape),
            num_classes=data.num_classes,
            max_bytes=lv.max_message_bytes,
            positions=positions,
            group=lv.group,
            consumer=f"rank{coll.rank}",
            replay=(local, sched, cfg.train.seed) if lv.source == "replay" else None,
            devices=list(range(lo, hi)),
            start_s=start_s,  # a resumed run's replay continues a time-varying schedule
        )
    elif callable(source) and not hasattr(source, "poll"):
        opened = source(list(range(lo, hi)), streams)
    else:
        opened = source  # type: ignore[assignment]
    if opened.devices != hi - lo:
        raise UserError(
            f"live source: serves {opened.devices} devices, this process needs {hi - lo}"
        )
    return LiveFeed(
        source=opened,
        rates=sched,
        buffer=LiveBuffer(hi - lo, buffer_policy(cfg), cfg.buffer.capacity),
        rule=batch_rule(cfg),
        coll=coll,
        k=k,
        shape=tuple(data.input_shape),
        stall_s=lv.stall_s,
        defer_acks=defer_acks,
        streams=streams,
        kind=kind,
    )
