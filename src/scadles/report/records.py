"""Per-step and per-evaluation records, streaming JSONL writers, the run summary and comparisons.

JSON written here is strict: a non-finite float (a diverged loss, say) is written as ``null``.
Time to target is interpolated between evaluations (`crossing`), so it does not depend on how
often a run evaluates; its bracket says how far the evaluation grid leaves it open.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from scadles.errors import UserError
from scadles.textfile import decode, show

TARGET_METRICS = ("top1", "top5")


@dataclass(frozen=True, slots=True)
class StepReport:
    """One synchronous step: one line of steps.jsonl (times in simulated seconds)."""

    step: int
    sim_time_s: float  # clock at the end of the step
    step_time_s: float
    wait_s: float  # max over devices
    compute_s: float  # max over devices
    comm_s: float
    lr: float
    loss: float
    prequential_acc: float  # accuracy on the batch before training on it
    batch_total: int
    batch_sizes: list[int]  # per device
    buffer_total: int  # samples held after the step
    buffer_sizes: list[int]  # per device
    arrived: int
    dropped: int
    bytes_sent: float
    floats_sent: float
    compressed: bool
    epoch: float  # sample-epochs so far
    injected: int  # samples devices received by data injection this step
    injection_bytes: float  # bytes those samples crossed links with
    host_s: float  # wall-clock seconds the host spent on the step
    switch_signal: float | None = None  # the compression switch's raw signal, mean over devices
    compress_s: float = 0.0  # modelled compression compute per device (scadles.timing)
    choice: str | None = None  # the exchange used: compressor, or time-aware candidate; dense None


@dataclass(frozen=True, slots=True)
class EvalReport:
    """One evaluation on the held-out set: one line of evals.jsonl (accuracies are fractions)."""

    step: int
    sim_time_s: float
    epoch: float
    top1: float
    top5: float
    loss: float
    samples_trained: int


def _finite(obj: Any) -> Any:
    """Return obj with non-finite floats replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _default(obj: Any) -> Any:
    """Convert tensors, numpy values and paths for json.dumps."""
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_dict(obj: Any) -> dict[str, Any]:
    """Return a dataclass instance's fields (shallow) or a dict as a plain dict."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in fields(obj)}
    if isinstance(obj, dict):
        return obj
    raise TypeError(f"expected a dataclass instance or dict, got {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = None) -> str:
    """Serialize a dataclass or dict as strict JSON."""
    return json.dumps(_finite(to_dict(obj)), default=_default, allow_nan=False, indent=indent)


class JsonlWriter:
    """Append one JSON object per line to a file, flushing each line so a crash loses nothing."""

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = self.path.open("a" if append else "w", encoding="utf-8")

    def write(self, obj: Any) -> None:
        """Append obj (a dataclass instance or dict) as one line and flush."""
        if self._f is None:
            raise ValueError(f"write to closed JsonlWriter({self.path})")
        self._f.write(dumps(obj) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file; further writes fail."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _create_temp(p: Path) -> tuple[int, str]:
    """Create a new temporary file beside p with the mode a plain open would give (0666 less
    the umask: 0644 as a rule; mkstemp's 0600 would survive the rename); return (fd, path)."""
    for _ in range(100):
        tmp = p.parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {p}")


def write_json(path: str | Path, obj: Any) -> None:
    """Write obj as indented JSON atomically (temp file in the same folder, then os.replace)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(p)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(obj, indent=2) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSONL file one at a time, skipping blank lines (UserError naming
    the file and line when a line is not UTF-8 text or not a JSON object)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found: {p}")
    with p.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            line = decode(raw, f"{show(p)} line {n}")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{p} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{p} line {n}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Return every object of a JSONL file."""
    return list(iter_jsonl(path))


def _num(x: float | None) -> float:
    """Return x, or NaN for a missing value."""
    return math.nan if x is None else float(x)


@dataclass(frozen=True, slots=True)
class Crossing:
    """When an evaluated metric first reached the target (simulated seconds).

    time_s interpolates linearly in time between the last evaluation below the target and the
    first at or above it; lower_s and upper_s are those two evaluations' times (the bracket the
    evaluation grid leaves); step is the first evaluation at or above the target.
    """

    time_s: float
    lower_s: float
    upper_s: float
    step: int

    @property
    def before_training(self) -> bool:
        """Say whether the target was met by the evaluation before any step (step 0)."""
        return self.step == 0


def crossing(
    below: tuple[float, float] | None, hit: tuple[float, float], target: float, step: int
) -> Crossing:
    """Return the crossing from the last (time, metric) below target and the first at or above.

    With no evaluation below (the target held at the first evaluation), the crossing is that
    evaluation's time: bracket [t, t] at step 0, else [0, t] (the run started earlier unseen).
    [ours] At step 0 the target was met before training (`before_training`): the time is that
    evaluation's (0 on a fresh clock) and no speedup is defined from it (`speedup_note`).
    A non-finite metric below leaves nothing to interpolate: the crossing is the upper end.
    """
    t1, a1 = hit
    if below is None:
        return Crossing(t1, t1 if step == 0 else 0.0, t1, step)
    t0, a0 = below
    if not (math.isfinite(a0) and a1 > a0):
        return Crossing(t1, t0, t1, step)
    t = t0 + (target - a0) / (a1 - a0) * (t1 - t0)
    return Crossing(min(max(t, t0), t1), t0, t1, step)


def time_to_target(
    evals: Iterable[Mapping[str, Any]], target: float, metric: str = "top1"
) -> Crossing | None:
    """Return the crossing of target by evals (evals.jsonl rows, in order), or None if never."""
    below: tuple[float, float] | None = None
    for ev in evals:
        t, a = _num(ev.get("sim_time_s")), _num(ev.get(metric))
        if a >= target:
            return crossing(below, (t, a), target, int(ev.get("step", 0)))
        below = (t, a)
    return None


_STEP_SUMS = (  # summary key, StepReport field: summed over steps
    ("samples_trained", "batch_total"),
    ("host_seconds", "host_s"),
    ("bytes_sent", "bytes_sent"),
    ("floats_sent", "floats_sent"),
    ("samples_arrived", "arrived"),
    ("samples_dropped", "dropped"),
    ("wait_time_s", "wait_s"),
    ("compute_time_s", "compute_s"),
    ("comm_time_s", "comm_s"),
    ("injection_bytes", "injection_bytes"),
)


class SummaryAccumulator:
    """Fold step and eval records into summary.json's numbers (no history beyond one eval period).

    time_to_target_s: the crossing of the target by the metric (top1 or top5), interpolated
    between evaluations (`crossing`); time_to_target_bounds_s: the two evaluations' times;
    steps_to_target: the step of the first evaluation at or above the target;
    target_reached_before_training: that evaluation was the one before any step (step 0).
    floats_to_target / bytes_to_target: the steps that ended by the crossing, plus the crossing
    step's share in proportion to the part of its duration before the crossing; to do this, the
    steps since the last evaluation below the target are kept until the next evaluation.
    wait_time_s: the total over steps of the per-step max wait.
    prequential_accuracy: the per-step prequential accuracy weighted by batch size.
    """

    def __init__(self, target_accuracy: float | None = None, metric: str = "top1") -> None:
        if metric not in TARGET_METRICS:
            allowed = ", ".join(TARGET_METRICS)
            raise UserError(f"eval.metric must be one of {allowed}, got {metric!r}")
        self.target_accuracy, self.metric = target_accuracy, metric
        self.sums: dict[str, float] = {key: 0 for key, _ in _STEP_SUMS}
        self.steps = self.compressed_steps = self.injected = self.evals = 0
        self.buffer_peak = self.buffer_final = self.preq_samples = 0
        self.sim_time_s = self.epoch = self.preq_correct = 0.0
        self.final: tuple[float, float, float] | None = None  # top1, top5, loss of the last eval
        self.best_top1: float | None = None
        # the last evaluation below the target: (sim time, metric, floats sent, bytes sent)
        self.below: tuple[float, float, float, float] | None = None
        self.trail: list[tuple[float, float, float]] = []  # steps since: (end time, floats, bytes)
        self.crossed: Crossing | None = None  # a new name: older checkpoints held a tuple
        self.sent_at_target: tuple[float, float] | None = None  # (floats, bytes) sent until then

    def update(self, step: StepReport, *, injected: int = 0) -> None:
        """Add one step; injected counts the samples that data injection copied in this step."""
        for key, attr in _STEP_SUMS:
            self.sums[key] += getattr(step, attr)
        self.steps += 1
        self.compressed_steps += int(step.compressed)
        self.injected += injected + step.injected
        self.buffer_peak = max(self.buffer_peak, step.buffer_total)
        self.buffer_final = step.buffer_total
        self.sim_time_s = max(self.sim_time_s, step.sim_time_s)
        self.epoch = step.epoch
        if step.batch_total > 0 and math.isfinite(step.prequential_acc):
            self.preq_correct += step.prequential_acc * step.batch_total
            self.preq_samples += step.batch_total
        if self.below is not None and self.crossed is None:
            self.trail.append((step.sim_time_s, step.floats_sent, step.bytes_sent))

    def update_eval(self, ev: EvalReport) -> None:
        """Add one evaluation; the first to reach the target fixes the crossing."""
        self.evals += 1
        self.sim_time_s = max(self.sim_time_s, ev.sim_time_s)
        self.final = (ev.top1, ev.top5, ev.loss)
        if math.isfinite(ev.top1) and (self.best_top1 is None or ev.top1 > self.best_top1):
            self.best_top1 = ev.top1
        metric = ev.top1 if self.metric == "top1" else ev.top5
        target = self.target_accuracy
        if self.crossed is not None or target is None:
            return
        if metric >= target:
            below = None if self.below is None else self.below[:2]
            self.crossed = crossing(below, (ev.sim_time_s, metric), target, ev.step)
            self.sent_at_target = self._sent_until(self.crossed.time_s)
        else:
            self.below = (ev.sim_time_s, metric, self.sums["floats_sent"], self.sums["bytes_sent"])
        self.trail = []

    def _sent_until(self, t: float) -> tuple[float, float]:
        """Return (floats, bytes) sent by time t: whole steps ended by t, the next one in part."""
        if self.below is None:  # no evaluation below: every step so far ended by t
            return self.sums["floats_sent"], self.sums["bytes_sent"]
        start, _, floats, nbytes = self.below
        for end, f, b in self.trail:
            share = 1.0 if end <= t else (t - start) / (end - start)
            floats, nbytes = floats + share * f, nbytes + share * b
            if end > t:
                break
            start = end
        return floats, nbytes

    def finish(self, *, policy: str, mode: str, **fields: Any) -> dict[str, Any]:
        """Return summary.json's dict; fields add keys or replace computed ones."""
        top1, top5, loss = self.final if self.final is not None else (None, None, None)
        hit, sent = self.crossed, self.sent_at_target
        preq = self.preq_correct / self.preq_samples if self.preq_samples else None
        out: dict[str, Any] = {
            "policy": policy,
            "mode": mode,
            "steps": self.steps,
            "sim_time_s": self.sim_time_s,
            **self.sums,
            "final_accuracy": top1,
            "final_top5": top5,
            "final_eval_loss": loss,
            "best_accuracy": self.best_top1,
            "target_accuracy": self.target_accuracy,
            "target_metric": self.metric,
            "time_to_target_s": hit.time_s if hit else None,
            "time_to_target_bounds_s": [hit.lower_s, hit.upper_s] if hit else None,
            "steps_to_target": hit.step if hit else None,
            "target_reached_before_training": hit.before_training if hit else False,
            "floats_to_target": sent[0] if sent else None,
            "bytes_to_target": sent[1] if sent else None,
            "compressed_fraction": self.compressed_steps / self.steps if self.steps else 0.0,
            "buffer_peak_samples": self.buffer_peak,
            "buffer_final_samples": self.buffer_final,
            "samples_held": self.buffer_final,
            "samples_injected": self.injected,
            "prequential_accuracy": preq,
            "epochs": self.epoch,
            "evals": self.evals,
        }
        out.update(fields)
        return out


def reached_before_training(summary: Mapping[str, Any]) -> bool:
    """Say whether a summary's target was met by the evaluation before any step (step 0); an
    older summary without the flag says so by steps_to_target 0."""
    flag = summary.get("target_reached_before_training")
    if isinstance(flag, bool):
        return flag
    return summary.get("time_to_target_s") is not None and summary.get("steps_to_target") == 0


def speedup(
    base: Mapping[str, Any], cand: Mapping[str, Any]
) -> tuple[float | None, list[float | None] | None]:
    """Return base / cand time to target and its bracket [base low / cand high, base high /
    cand low] from the summaries' time_to_target_bounds_s (None: unknown; a high of None: the
    candidate may have crossed at time 0, so the ratio has no upper bound). The ratio is None
    where `speedup_note` says why: a run never reached the target, or met it before training."""
    b, c = base.get("time_to_target_s"), cand.get("time_to_target_s")
    if b is None or c is None or c <= 0:
        return None, None
    if reached_before_training(base) or reached_before_training(cand):
        return None, None
    b_lh, c_lh = base.get("time_to_target_bounds_s"), cand.get("time_to_target_bounds_s")
    if not (isinstance(b_lh, list | tuple) and isinstance(c_lh, list | tuple)):
        return b / c, None  # summaries written before the bracket existed
    (b_lo, b_hi), (c_lo, c_hi) = b_lh, c_lh
    return b / c, [b_lo / c_hi, b_hi / c_lo if c_lo > 0 else None]


def speedup_reason(base: Mapping[str, Any], cand: Mapping[str, Any]) -> str | None:
    """Return in a few words why `speedup` is None, or None when it is defined: 'no time' (a
    summary without the key), 'not reached', 'before training' or 'at time 0'."""
    if speedup(base, cand)[0] is not None:
        return None
    if "time_to_target_s" not in base or "time_to_target_s" not in cand:
        return "no time"
    if base["time_to_target_s"] is None or cand["time_to_target_s"] is None:
        return "not reached"
    if reached_before_training(base) or reached_before_training(cand):
        return "before training"
    return "at time 0"  # a candidate crossing at simulated time 0 after a step


def speedup_note(
    runs: Mapping[str, Mapping[str, Any]], baseline: str = "ddl", candidate: str = "scadles"
) -> str | None:
    """Return one line saying why the candidate's speedup is undefined, or None when defined.

    [ours] A target met by the evaluation before any step (step 0) says nothing about how fast
    training reaches it, so it leaves the speedup undefined rather than 0 or infinite.
    """
    base, cand = runs.get(baseline, {}), runs.get(candidate, {})
    reason = speedup_reason(base, cand)
    pair = ((baseline, base), (candidate, cand))
    if reason == "before training":
        who = [n for n, s in pair if reached_before_training(s)]
        verb = "reached" if len(who) == 1 else "both reached"
        return f"{' and '.join(who)} {verb} the target before training (the step-0 evaluation)"
    if reason == "not reached":
        who = [n for n, s in pair if s.get("time_to_target_s") is None]
        return f"{' and '.join(who)} did not reach the target"
    if reason == "no time":
        who = [n for n, s in pair if "time_to_target_s" not in s]
        return f"{' and '.join(who)}: no time to target in the summary"
    if reason == "at time 0":
        return f"{candidate} reached the target at simulated time 0"
    return None


def comparison(
    runs: dict[str, dict[str, Any]], baseline: str = "ddl", candidate: str = "scadles"
) -> dict[str, Any]:
    """Compare run summaries: speedup = baseline / candidate time to target (with its bracket;
    None with speedup_note saying why), accuracy delta = candidate - baseline final top-1."""
    base, cand = runs.get(baseline, {}), runs.get(candidate, {})
    target = cand.get("target_accuracy", base.get("target_accuracy"))
    ratio, bounds = speedup(base, cand)
    b_acc, c_acc = base.get("final_accuracy"), cand.get("final_accuracy")
    delta = c_acc - b_acc if b_acc is not None and c_acc is not None else None
    return {
        "target_accuracy": target,
        "baseline": baseline,
        "candidate": candidate,
        "runs": runs,
        "speedup": ratio,
        "speedup_bounds": bounds,
        "speedup_note": speedup_note(runs, baseline, candidate),
        "accuracy_delta": delta,
    }
