"""The configuration's value types: one frozen dataclass per TOML section.

Names (datasets, models, presets, ...) are not listed here: the checks read the registries
(``scadles.registry``) when a config is validated.
"""

from dataclasses import dataclass, field

from scadles.data.rates import RATE_PRESETS
from scadles.policies import POLICIES


@dataclass(frozen=True, slots=True)
class RateSpec:
    """Per-device stream rates: a preset, an explicit list of K rates, or a distribution."""

    preset: str | None = None
    values: tuple[float, ...] | None = None
    dist: str | None = None  # "normal" | "uniform"; filled from the preset table for presets
    mean: float = 0.0
    std: float = 0.0


@dataclass(frozen=True, slots=True)
class ScheduleStep:
    """Multiply every device's rate by `scale` from simulated time `at_s` on."""

    at_s: float
    scale: float


def preset_spec(name: str) -> RateSpec:
    """Return the RateSpec of a named preset (RATE_PRESETS), with its distribution filled in."""
    p = RATE_PRESETS.get(name)  # dist is None for a list preset (authors-*)
    return RateSpec(preset=name, dist=p.dist, mean=p.mean, std=p.std)


DEFAULT_RATES = preset_spec("normal-S1")


@dataclass(frozen=True, slots=True)
class DataConfig:
    """`[data]`: which data set, where its files are, how much of it to use."""

    name: str = "mnist1d"
    path: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    sample_bytes: int | None = None
    augment: str = "none"  # training batches only: none | crop | crop_flip


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """`[model]`: the network and its normalisation."""

    name: str = "cnn1d"
    norm: str = "none"
    width: int = 32
    groups: int = 8


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    """`[devices]`: how many devices and how the training set is split among them."""

    count: int = 16
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    shards_per_device: int = 2


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """`[streams]`: per-device stream rates, arrival process and rate changes over time."""

    rates: RateSpec = DEFAULT_RATES
    arrivals: str = "deterministic"
    window_s: float = 1.0
    schedule: tuple[ScheduleStep, ...] = ()
    trace: str | None = None


@dataclass(frozen=True, slots=True)
class BufferConfig:
    """`[buffer]`: what a device keeps of its stream between steps."""

    policy: str | None = None  # None: the policy's default (scadles truncation, ddl persistence)
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """`[policy]`: ScaDLES or the conventional DDL baseline, and their batch bounds."""

    name: str = "scadles"
    batch: int = 64
    b_min: int = 8
    b_max: int = 1024
    lr_scaling: bool | None = None  # None: true for scadles, false for ddl
    warmup_steps: int = 0  # linear warm-up of an LR scale above 1 over this many steps
    lr_scale_max: float = 2.0  # the largest LR scale; 0: uncapped (the paper's rule)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """`[train]`: optimiser, learning-rate schedule and budget (steps or simulated time)."""

    seed: int = 1234
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = ()
    gamma: float = 0.2
    steps: int | None = None
    diverge_steps: int = 10  # diverged training losses in a row that stop the run (0: never)
    diverge_factor: float = 5.0  # a loss above this times the first finite loss is diverged
    max_time_s: float | None = None


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """`[eval]`: how often to evaluate and the accuracy that counts as reached."""

    every: int = 50
    target_accuracy: float = 0.9
    batch_size: int = 2048
    metric: str = "top1"


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """`[clock]`: the simulated device profile (compute, bandwidth, latency)."""

    profile: str = "paper"
    csv: str | None = None
    emulate_params: int | str | None = None  # parameters, or a model name (scadles.nn.sizes)
    seconds_per_sample: float | None = None
    overhead_s: float | None = None
    bandwidth_bps: float | None = None
    latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class InjectConfig:
    """`[inject]`: randomized data injection against non-IID data (paper 2.3)."""

    name: str = "none"  # none | peers (the paper's text) | class_pool (the authors' code)
    alpha: float = 0.5
    beta: float = 0.5


@dataclass(frozen=True, slots=True)
class CompressConfig:
    """`[compress]`: gradient compression, error feedback and the switch that turns it on."""

    name: str | None = None  # None: by policy (scadles -> topk, ddl -> none)
    ratio: float = 0.1
    delta: float = 0.3
    ewma: float = 0.9
    policy: str | None = None  # switch; None: by policy (scadles -> ours, ddl -> fixed)
    error_feedback: bool | None = None  # None: on for biased compressors, off for unbiased
    dense_feedback: str | None = None  # flush | keep; None: the rule's (code keeps, others flush)
    momentum_correction: bool = False  # DGC: momentum and weight decay per device, before Top-k
    momentum_masking: bool = False  # DGC factor masking: clear velocity where a step sent it
    per_layer: bool = False
    rank: int = 1
    levels: int = 256
    bucket: int = 512  # QSGD: coordinates per norm (the QSGD paper's bucketing)
    eta: float = 0.5
    critical_ratio: float = 1.0
    # time_aware: the exchanges it picks from, its hysteresis, steps between its probes
    candidates: tuple[str, ...] = ("none", "fp16", "topk:0.1", "powersgd:4")
    hysteresis: float = 0.1
    probe_every: int = 20


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """`[live]`: where real-time streams come from (sim = modelled arrivals, no broker)."""

    source: str = "sim"  # sim | replay (producer threads in-process) | kafka | redis
    url: str | None = None  # kafka: host:port; redis: redis://host:port/db
    prefix: str = "scadles-device"  # stream/topic of device i: f"{prefix}-{i}"
    group: str = "scadles"  # Redis consumer group
    stall_s: float = 30.0  # end the run when a waiting device receives nothing this long
    max_message_bytes: int = 1 << 20  # larger messages are skipped and counted
    bandwidth: bool = False  # token-bucket each rank's traffic to its profile's uplink
    # with bandwidth: the uplink times `scale` from `at_s` wall seconds of this process's run on
    bandwidth_schedule: tuple[ScheduleStep, ...] = ()


@dataclass(frozen=True, slots=True)
class RunConfig:
    """`[run]`: simulated or real distributed mode; progress display; where tensors live."""

    mode: str = "sim"
    progress: bool = True
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda
    deterministic: bool = True  # steps under torch's deterministic algorithms (warn only)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: one frozen value per TOML section (and where it came from)."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    devices: DevicesConfig = DevicesConfig()
    streams: StreamsConfig = StreamsConfig()
    buffer: BufferConfig = BufferConfig()
    policy: PolicyConfig = PolicyConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    clock: ClockConfig = ClockConfig()
    compress: CompressConfig = CompressConfig()
    inject: InjectConfig = InjectConfig()
    live: LiveConfig = LiveConfig()
    run: RunConfig = RunConfig()
    # Provenance, not configuration: the sections `load_config` took whole from the defaults
    # above because the file (and --set) had none. Never compared, never in config.json.
    defaults: tuple[str, ...] = field(default=(), compare=False)


def resolved_buffer_policy(cfg: Config) -> str:
    """Return the buffer policy in force: the configured one, else the training policy's default."""
    if cfg.buffer.policy is not None:
        return cfg.buffer.policy
    return POLICIES.get(cfg.policy.name).buffer  # paper §2.2, §5.7


def resolved_lr_scaling(cfg: Config) -> bool:
    """Return whether linear LR scaling is on: the configured value, else only for scadles."""
    if cfg.policy.lr_scaling is not None:
        return cfg.policy.lr_scaling
    return POLICIES.get(cfg.policy.name).lr_scaling
